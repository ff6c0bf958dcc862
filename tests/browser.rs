//! Headless Chromium against the real binary: the viewer page plays a local camera and
//! a partner's camera (across the QUIC link) over WebRTC (WHEP), says why it cannot
//! play a camera (not visible to the user, unknown, H.265), and the status page plays
//! the tiles on screen. The first tests prove the harness (`tests/support/browser.rs`)
//! and that this Chromium decodes H.264 over WebRTC at all.
//!
//! Each test prints what it measured (`browser <what> ttff_ms=... lag_ms=...
//! frames=...`); run with `--no-capture` to read it.

mod support;

use std::time::Duration;

use passerelle::demo::{CSU_OPERATOR_TOKEN, MetzKit, SNCF};
use serde_json::Value;
use support::Gateway;
use support::browser::{Browser, Page, failure_screenshot_path};
use support::metz::{Chain, loopback_listeners, start_site};

/// The bound of every wait on a page.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames a viewer must decode to count as playing: two seconds of the 25 fps fixtures,
/// so at least one whole GOP after the first keyframe.
const FRAMES: u64 = 50;
/// The bound on playing [`FRAMES`]: a keyframe comes every 2 s, then 2 s of frames.
const PLAY_TIMEOUT: Duration = Duration::from_secs(40);
/// The bound on [`FRAMES`] more frames once playing: 2 s at 25 fps, the page publishing
/// its numbers every second, and room for a loaded machine.
const STEADY_TIMEOUT: Duration = Duration::from_secs(8);
/// A local agent of the SNCF gateway in [`sncf_with_viewer`].
const VIEWER_TOKEN: &str = "browser-viewer-token-0123456789abcdef";
/// The camera [`VIEWER_TOKEN`] may watch: H.264 Main, 640x360, 25 fps.
const CAMERA: &str = "metz-ville/quai-1";

// ---------------------------------------------------------------------------------------
// The harness itself

/// A page that logs, throws and computes: the client evaluates (promises awaited),
/// polls, collects the console and uncaught exceptions, and takes a PNG screenshot.
#[test]
fn harness_evaluates_polls_and_collects_console() {
    let browser = Browser::launch();
    println!("chromium {}", browser.version());
    assert!(
        browser.version().starts_with("Chrome/"),
        "{}",
        browser.version()
    );
    let html = "<title>t</title><p id=p>hello</p><script>\
        console.log('booted', 42);\
        setTimeout(() => { window.later = 'done'; }, 300);\
        setTimeout(() => { throw new Error('boom'); }, 0);\
        </script>";
    let mut page = browser.open(&format!("data:text/html,{html}"));
    assert_eq!(
        page.evaluate("document.getElementById('p').textContent"),
        "hello"
    );
    assert_eq!(
        page.evaluate("new Promise(r => setTimeout(() => r(6 * 7), 50))"),
        42
    );
    assert_eq!(page.evaluate("undefined"), Value::Null);
    let error = page.try_evaluate("null.x").expect_err("null.x throws");
    assert!(error.contains("TypeError"), "{error}");
    assert_eq!(
        page.wait_for("window.later", PAGE_TIMEOUT).expect("later"),
        "done"
    );
    let never = page
        .wait_for("window.never", Duration::from_millis(300))
        .expect_err("window.never is never set");
    assert!(never.contains("not true within"), "{never}");
    let console = page.console_text();
    assert!(console.contains("console.log: booted 42"), "{console}");
    assert!(console.contains("uncaught: Error: boom"), "{console}");

    let dir = tempfile::tempdir().expect("temp dir");
    let png = dir.path().join("page.png");
    page.screenshot(&png).expect("screenshot");
    let bytes = std::fs::read(&png).expect("png");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
}

/// A page dropped while its test panics saves a screenshot (and prints its console).
#[test]
fn a_page_of_a_panicking_test_leaves_a_screenshot() {
    let browser = Browser::launch();
    let path = failure_screenshot_path();
    let _ = std::fs::remove_file(&path);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _page = browser.open("data:text/html,<h1>failing</h1>");
        panic!("a failing check, on purpose");
    }));
    assert!(outcome.is_err());
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let _ = std::fs::remove_file(&path);
}

/// Two peer connections in one page send a canvas to each other in H.264 Main only:
/// this Chromium offers H.264 (Constrained Baseline and Main) and decodes it.
#[test]
fn chromium_decodes_h264_over_webrtc_loopback() {
    let browser = Browser::launch();
    let mut page = browser.open("data:text/html,<title>loopback</title>");
    let profiles = page.evaluate(
        "RTCRtpReceiver.getCapabilities('video').codecs
            .filter(c => c.mimeType === 'video/H264').map(c => c.sdpFmtpLine)",
    );
    println!(
        "chromium {} H.264 receive profiles: {profiles}",
        browser.version()
    );
    let profiles = profiles.to_string();
    for profile in ["profile-level-id=42e01f", "profile-level-id=4d001f"] {
        assert!(profiles.contains(profile), "no {profile} in {profiles}");
    }
    page.evaluate(LOOPBACK_JS);
    let stats = page
        .wait_for(
            "(async () => {
                const stats = await window.loopback.getStats();
                for (const r of stats.values()) {
                    if (r.type === 'inbound-rtp' && r.kind === 'video' && r.framesDecoded >= 50) {
                        return { frames: r.framesDecoded, codec: stats.get(r.codecId).mimeType,
                                 fmtp: stats.get(r.codecId).sdpFmtpLine,
                                 decoder: r.decoderImplementation,
                                 width: r.frameWidth, height: r.frameHeight };
                    }
                }
                return null;
            })()",
            PAGE_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    println!("loopback decoded: {stats}");
    assert_eq!(stats["codec"], "video/H264", "{stats}");
    let fmtp = stats["fmtp"].as_str().unwrap_or_default();
    assert!(
        fmtp.contains("profile-level-id=4d"),
        "not Main profile: {stats}"
    );
}

/// Sends a 25 fps canvas from one peer connection to another, H.264 Main only, and leaves
/// the receiving one in `window.loopback`.
const LOOPBACK_JS: &str = "(async () => {
    const canvas = document.createElement('canvas');
    canvas.width = 320; canvas.height = 240;
    document.body.append(canvas);
    const g = canvas.getContext('2d');
    let n = 0;
    setInterval(() => {
        n += 1;
        g.fillStyle = `hsl(${(n * 7) % 360} 80% 50%)`;
        g.fillRect(0, 0, 320, 240);
        g.fillStyle = 'black';
        g.fillText(String(n), 10, 20);
    }, 40);
    const track = canvas.captureStream(25).getVideoTracks()[0];
    const send = new RTCPeerConnection(), receive = new RTCPeerConnection();
    send.onicecandidate = e => e.candidate && receive.addIceCandidate(e.candidate);
    receive.onicecandidate = e => e.candidate && send.addIceCandidate(e.candidate);
    const transceiver = send.addTransceiver(track, { direction: 'sendonly' });
    // Main profile only, the profile of the camera fixtures.
    transceiver.setCodecPreferences(RTCRtpReceiver.getCapabilities('video').codecs
        .filter(c => c.mimeType === 'video/H264' && c.sdpFmtpLine.includes('profile-level-id=4d')));
    await send.setLocalDescription();
    await receive.setRemoteDescription(send.localDescription);
    await receive.setLocalDescription();
    await send.setRemoteDescription(receive.localDescription);
    window.loopback = receive;
    return true;
})()";

// ---------------------------------------------------------------------------------------
// The viewer page /view/<camera-id>

/// The SNCF gateway alone, its cameras from the simulator, with one local agent
/// ([`VIEWER_TOKEN`]) who may watch `metz-ville/**` only. Returns (simulator, gateway).
fn sncf_with_viewer() -> (Gateway, Gateway) {
    let kit = MetzKit::new().expect("kit");
    let camsim = Gateway::camsim(&[]);
    let mut site = kit
        .sncf(loopback_listeners(), camsim.addr("rtsp"))
        .expect("sncf");
    site.config.push_str(
        "\n[[user]]\nname = \"viewer\"\nkind = \"agent\"\npassword_file = \"secrets/viewer.password\"\ntoken_file = \"secrets/viewer.token\"\ncameras = [\"metz-ville/**\"]\n",
    );
    site.files.push((
        "secrets/viewer.password".into(),
        b"viewer-password\n".to_vec(),
    ));
    site.files.push((
        "secrets/viewer.token".into(),
        format!("{VIEWER_TOKEN}\n").into_bytes(),
    ));
    let gateway = start_site(&site, &[]);
    (camsim, gateway)
}

/// `http://<[http] listener><path>#token=<token>`: the pages read the token from the
/// fragment, which never reaches the server.
fn page_url(gateway: &Gateway, path: &str, token: &str) -> String {
    format!("http://{}{path}#token={token}", gateway.addr("http"))
}

/// Waits until the viewer has decoded [`FRAMES`] frames, or its player failed or was
/// ended; returns `window.passerelleStats` then. Panics with it on any other outcome.
fn wait_until_playing(page: &mut Page) -> Value {
    let stats = page
        .wait_for(
            &format!(
                "(() => {{ const s = window.passerelleStats;
                    return s && (s.framesDecoded >= {FRAMES} || s.state === 'failed' || s.state === 'ended')
                        ? s : null; }})()"
            ),
            PLAY_TIMEOUT,
        )
        .unwrap_or_else(|e| {
            let last = page.try_evaluate("window.passerelleStats");
            panic!("{e}\npasserelleStats: {last:?}")
        });
    assert_eq!(
        stats["state"], "playing",
        "the viewer did not play: {stats}"
    );
    stats
}

/// Waits until the viewer decodes [`FRAMES`] more frames after `stats` (its first
/// frames come in a burst: the gateway replays the current GOP to a new viewer), within
/// [`STEADY_TIMEOUT`]; returns `window.passerelleStats` then.
fn wait_while_playing_on(page: &mut Page, stats: &Value) -> Value {
    let target = stats["framesDecoded"].as_u64().unwrap_or(0) + FRAMES;
    page.wait_for(
        &format!(
            "(() => {{ const s = window.passerelleStats;
                return s.framesDecoded >= {target} || s.state === 'failed' || s.state === 'ended'
                    ? s : null; }})()"
        ),
        STEADY_TIMEOUT,
    )
    .and_then(|later| match later["state"].as_str() {
        Some("playing") => Ok(later),
        _ => Err(format!("the viewer stopped playing: {later}")),
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// What the lead quotes: time to first frame (from page load), then, once playing
/// steadily, the lag (jitter-buffer delay over the last second, and behind the camera's
/// clock when the sender reports it), frames, frame rate and losses.
fn print_numbers(what: &str, first: &Value, steady: &Value) {
    let ms = |value: &Value| value.as_f64().map_or("-".to_owned(), |v| format!("{v:.0}"));
    println!(
        "browser {what} ttff_ms={} lag_ms={} playout_lag_ms={} frames={} fps={} whep_ms={} packets_lost={} size={}x{} codec={:?}",
        ms(&first["ttffMs"]),
        ms(&steady["lagMs"]),
        ms(&steady["playoutLagMs"]),
        steady["framesDecoded"],
        ms(&steady["fps"]),
        ms(&first["whepMs"]),
        steady["packetsLost"],
        steady["width"],
        steady["height"],
        steady["codec"].as_str().unwrap_or_default(),
    );
}

/// Checks the numbers of a viewer playing the H.264 Main fixture, and that the page and
/// its `<video>` show it: the overlay gone, frames presented at the camera's size.
fn assert_plays_the_fixture(page: &mut Page, stats: &Value) {
    assert!(
        stats["framesDecoded"].as_u64().unwrap_or(0) >= FRAMES,
        "{stats}"
    );
    assert_eq!(stats["width"], 640, "{stats}");
    assert_eq!(stats["height"], 360, "{stats}");
    let codec = stats["codec"].as_str().unwrap_or_default();
    // The page words the codec its own way; it names H264 and the profile-level-id,
    // whose first byte 4d is Main and second 00 no constraint.
    assert!(codec.contains("H264"), "{stats}");
    assert!(
        codec.to_ascii_lowercase().contains("4d00"),
        "not H.264 Main: {stats}"
    );
    assert!(stats["ttffMs"].as_f64().is_some_and(|t| t > 0.0), "{stats}");
    let shown = page.evaluate(
        "(() => { const v = document.getElementById('video');
            return { paused: v.paused, width: v.videoWidth, height: v.videoHeight,
                     time: v.currentTime,
                     stage: document.getElementById('stage').dataset.state,
                     overlay: document.getElementById('player-message').hidden }; })()",
    );
    assert_eq!(shown["stage"], "playing", "{shown}");
    assert_eq!(
        shown["overlay"], true,
        "the overlay still covers the video: {shown}"
    );
    assert_eq!(
        shown["paused"], false,
        "muted autoplay did not start: {shown}"
    );
    assert_eq!(shown["width"], 640, "{shown}");
    assert_eq!(shown["height"], 360, "{shown}");
    assert!(shown["time"].as_f64().unwrap_or(0.0) > 0.0, "{shown}");
    // The picture itself: the fixture's frame has contrast, a black or uniform frame
    // (what a decoder fed garbage shows) has none.
    let luma = page.evaluate(
        "(() => { const v = document.getElementById('video');
            const c = document.createElement('canvas'); c.width = 64; c.height = 36;
            const g = c.getContext('2d'); g.drawImage(v, 0, 0, 64, 36);
            const d = g.getImageData(0, 0, 64, 36).data;
            let min = 255, max = 0;
            for (let i = 0; i < d.length; i += 4) {
                const y = (d[i] * 299 + d[i + 1] * 587 + d[i + 2] * 114) / 1000;
                min = Math.min(min, y); max = Math.max(max, y);
            }
            return { min, max }; })()",
    );
    let contrast = luma["max"].as_f64().unwrap_or(0.0) - luma["min"].as_f64().unwrap_or(0.0);
    assert!(contrast > 50.0, "the video shows a flat picture: {luma}");
}

/// A local camera of a gateway plays in the viewer page over WHEP.
#[test]
fn the_viewer_plays_a_local_camera() {
    let (_camsim, sncf) = sncf_with_viewer();
    let browser = Browser::launch();
    let mut page = browser.open(&page_url(&sncf, &format!("/view/{CAMERA}"), VIEWER_TOKEN));
    let first = wait_until_playing(&mut page);
    assert_plays_the_fixture(&mut page, &first);
    let steady = wait_while_playing_on(&mut page, &first);
    print_numbers("local", &first, &steady);
    assert_eq!(steady["packetsLost"], 0, "loss on loopback: {steady}");
}

/// A camera of the SNCF plays in the CSU's viewer page: camera -> SNCF -> QUIC -> CSU
/// -> WebRTC.
#[test]
fn the_viewer_plays_a_partner_camera_across_the_quic_link() {
    let chain = Chain::start(&[]);
    let browser = Browser::launch();
    let mut page = browser.open(&page_url(
        &chain.csu,
        &format!("/view/sncf/{CAMERA}"),
        CSU_OPERATOR_TOKEN,
    ));
    let first = wait_until_playing(&mut page);
    assert_plays_the_fixture(&mut page, &first);
    let steady = wait_while_playing_on(&mut page, &first);
    print_numbers("sncf->csu", &first, &steady);
    assert_eq!(steady["packetsLost"], 0, "loss on loopback: {steady}");
}

/// A camera outside the viewer's patterns and one that does not exist (`404`, the
/// gateway tells them apart to nobody), and an H.265 camera this browser cannot decode
/// (`406`, never transcoded): the page says why in its error box, and no video plays.
/// The camera the viewer may watch then plays in the same browser, so the refusals are
/// the gateway's word on those cameras, not a WHEP endpoint that refuses everything.
#[test]
fn the_viewer_shows_why_a_camera_cannot_play_and_plays_nothing() {
    let (_camsim, sncf) = sncf_with_viewer();
    let browser = Browser::launch();
    let cases = [
        ("woippy/quai-1", 404, "woippy/quai-1"),
        ("nowhere/no-camera", 404, "nowhere/no-camera"),
        ("metz-ville/parvis", 406, "H.265"),
    ];
    for (camera, status, said) in cases {
        let mut page = browser.open(&page_url(&sncf, &format!("/view/{camera}"), VIEWER_TOKEN));
        let stats = page
            .wait_for(
                "(() => { const s = window.passerelleStats;
                    return s && s.state !== 'idle' && s.state !== 'connecting' ? s : null; })()",
                PAGE_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("{camera}: {e}"));
        assert_eq!(stats["state"], "failed", "{camera}: {stats}");
        assert_eq!(stats["errorStatus"], status, "{camera}: {stats}");
        let shown = page.evaluate(
            "(() => { const $ = (id) => document.getElementById(id); const v = $('video');
                return { box: !$('player-error').hidden,
                         status: $('player-error-status').textContent,
                         message: $('player-error-message').textContent,
                         overlay: $('player-message').textContent,
                         stage: $('stage').dataset.state,
                         width: v.videoWidth, source: v.srcObject !== null }; })()",
        );
        println!("{camera}: {shown}");
        assert_eq!(shown["box"], true, "{camera}: no error box: {shown}");
        let title = shown["status"].as_str().unwrap_or_default();
        assert!(
            title.starts_with(&status.to_string()),
            "{camera}: the error box does not name the status {status}: {shown}"
        );
        let overlay = shown["overlay"].as_str().unwrap_or_default();
        assert!(overlay.starts_with(title), "{camera}: {shown}");
        let message = shown["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(said),
            "{camera}: the message does not say {said:?}: {shown}"
        );
        assert_eq!(stats["error"], message, "{camera}: {shown}");
        assert_eq!(shown["stage"], "failed", "{camera}: {shown}");
        assert_eq!(shown["width"], 0, "{camera}: a video plays: {shown}");
        assert_eq!(
            shown["source"], false,
            "{camera}: a stream is attached: {shown}"
        );
        assert!(
            stats["framesDecoded"].is_null() || stats["framesDecoded"] == 0,
            "{camera}: {stats}"
        );
    }
    let mut allowed = browser.open(&page_url(&sncf, &format!("/view/{CAMERA}"), VIEWER_TOKEN));
    let stats = wait_until_playing(&mut allowed);
    assert_plays_the_fixture(&mut allowed, &stats);
}

/// The SNCF shares Metz Ville on request (DESIGN.md's first SNCF grant): the CSU's
/// viewer is refused with a `403` that says so and links to opening an intervention;
/// once the operator opens one naming the camera, "Play again" plays it.
#[test]
fn an_on_request_camera_plays_once_an_intervention_names_it() {
    let chain = Chain::start_with(&[], support::metz::sncf_on_request, |_| {});
    let camera = format!("sncf/{CAMERA}");
    let browser = Browser::launch();
    let mut page = browser.open(&page_url(
        &chain.csu,
        &format!("/view/{camera}"),
        CSU_OPERATOR_TOKEN,
    ));
    let refused = page
        .wait_for(
            "(() => { const s = window.passerelleStats;
                return s && s.state !== 'idle' && s.state !== 'connecting' ? s : null; })()",
            PAGE_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused["state"], "failed", "{refused}");
    assert_eq!(refused["errorStatus"], 403, "{refused}");
    let shown = page.evaluate(
        "(() => { const $ = (id) => document.getElementById(id);
            return { status: $('player-error-status').textContent,
                     link: $('player-error-link')?.getAttribute('href') ?? null,
                     play: $('play').textContent, disabled: $('play').disabled }; })()",
    );
    println!("on request, no intervention: {shown}");
    let title = shown["status"].as_str().unwrap_or_default();
    assert!(title.starts_with("403"), "{shown}");
    assert_eq!(
        shown["link"],
        format!("/#intervene={}", camera.replace('/', "%2F")),
        "{shown}"
    );
    assert_eq!(shown["disabled"], false, "{shown}");

    support::open_intervention(
        &chain.csu,
        CSU_OPERATOR_TOKEN,
        "Malaise voyageur quai 1",
        &["sncf/metz-ville/**"],
    );

    page.evaluate("document.getElementById('play').click()");
    let first = wait_until_playing(&mut page);
    print_numbers("on-request", &first, &first);
    assert_plays_the_fixture(&mut page, &first);
}

// ---------------------------------------------------------------------------------------
// The status page /

/// The CSU's status page lists the SNCF's cameras in tiles that link to the viewer,
/// plays the tiles on screen, and shows the link to the SNCF and the policy's serial.
#[test]
fn the_status_page_lists_cameras_plays_visible_tiles_and_shows_links_and_policy() {
    let chain = Chain::start(&[]);
    let browser = Browser::launch();
    let mut page = browser.open(&page_url(&chain.csu, "/", CSU_OPERATOR_TOKEN));
    let status = page
        .wait_for(
            "(() => { const s = window.passerelleStatus;
                return s && s.cameras > 0 && s.links > 0
                    && Object.values(s.tiles ?? {}).some((t) => t.framesDecoded > 0) ? s : null; })()",
            PLAY_TIMEOUT,
        )
        .unwrap_or_else(|e| {
            let last = page.try_evaluate("window.passerelleStatus");
            panic!("{e}\npasserelleStatus: {last:?}")
        });
    println!("status page: {status}");
    assert_eq!(status["policy"], "valid", "{status}");
    let tiles = status["tiles"].as_object().expect("tiles");
    let quai = format!("sncf/{CAMERA}");
    assert!(tiles.contains_key(&quai), "no {quai} tile: {status}");
    for (camera, tile) in tiles {
        if tile["framesDecoded"].as_u64().unwrap_or(0) > 0 {
            println!(
                "browser tile {camera} ttff_ms={:.0} frames={}",
                tile["ttffMs"].as_f64().unwrap_or(f64::NAN),
                tile["framesDecoded"]
            );
        }
    }

    let dom = page.evaluate(
        "(() => { const $ = (id) => document.getElementById(id);
            const tiles = [...document.querySelectorAll('#cameras li.tile')];
            return { tiles: tiles.map((t) => ({ camera: t.dataset.camera, player: t.dataset.player,
                                              href: t.querySelector('a.tile-id')?.getAttribute('href') })),
                     links: [...document.querySelectorAll('#links-body tr')]
                         .map((r) => ({ peer: r.dataset.peer, state: r.dataset.state })),
                     serial: $('policy-serial').textContent,
                     policyShown: !$('policy').hidden,
                     site: $('site-id').textContent }; })()",
    );
    println!("status page DOM: {dom}");
    let dom_tiles = dom["tiles"].as_array().expect("tiles");
    assert_eq!(dom_tiles.len(), tiles.len(), "{dom}");
    let quai_tile = dom_tiles
        .iter()
        .find(|t| t["camera"] == quai.as_str())
        .unwrap_or_else(|| panic!("no tile for {quai}: {dom}"));
    assert_eq!(quai_tile["href"], format!("/view/{quai}"), "{dom}");
    assert!(
        dom_tiles.iter().any(|t| t["player"] == "playing"),
        "no tile shows playing: {dom}"
    );
    let links = dom["links"].as_array().expect("links");
    assert!(
        links
            .iter()
            .any(|l| l["peer"] == SNCF && l["state"] == "up"),
        "no link up to {SNCF}: {dom}"
    );
    assert_eq!(dom["policyShown"], true, "{dom}");
    assert_eq!(dom["serial"], "1", "{dom}");
    assert_eq!(dom["site"], passerelle::demo::CSU, "{dom}");

    // Lazy: a tile wholly below the screen has no player until it is scrolled to.
    let below: Vec<String> = serde_json::from_value(page.evaluate(
        "[...document.querySelectorAll('#cameras li.tile')]
            .filter((t) => t.getBoundingClientRect().top >= window.innerHeight)
            .map((t) => t.dataset.camera)",
    ))
    .expect("camera ids");
    println!("tiles below the screen: {below:?}");
    for camera in &below {
        let tile = &status["tiles"][camera];
        assert_eq!(tile["player"], "off", "{camera} plays off screen: {status}");
    }
    let last = dom_tiles
        .last()
        .and_then(|t| t["camera"].as_str())
        .expect("a last tile")
        .to_owned();
    page.evaluate(&format!(
        "document.querySelector('#cameras li.tile[data-camera=\"{last}\"]').scrollIntoView()"
    ));
    let tile = page
        .wait_for(
            &format!(
                "(() => {{ const t = window.passerelleStatus.tiles['{last}'];
                    return t && (t.framesDecoded > 0 || t.player === 'failed') ? t : null; }})()"
            ),
            PLAY_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("the last tile, {last}, never played once shown: {e}"));
    assert!(
        tile["framesDecoded"].as_u64().unwrap_or(0) > 0,
        "{last}: {tile}"
    );

    // The only tile that may fail is the H.265 camera, which this browser cannot decode.
    let status = page.evaluate("window.passerelleStatus");
    for (camera, tile) in status["tiles"].as_object().expect("tiles") {
        if tile["player"] == "failed" {
            assert_eq!(camera, "sncf/metz-ville/parvis", "{status}");
            assert_eq!(tile["errorStatus"], 406, "{status}");
        }
    }
}

/// What a new user does: runs `passerelle demo`, opens the browser URL it prints, and
/// sees the cameras playing on the status page.
#[test]
fn the_url_printed_by_the_demo_shows_the_cameras_playing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = support::start_demo(&dir.path().join("demo"));
    let printed = demo.stdout_log();
    let url = printed
        .split_whitespace()
        .find(|word| word.starts_with("http://") && word.contains("/#token="))
        .unwrap_or_else(|| panic!("no browser URL printed:\n{printed}"));
    assert!(
        url.starts_with(&format!("http://{}/", demo.addr("http"))),
        "{url} is not the CSU's [http] listener:\n{printed}"
    );
    let browser = Browser::launch();
    let mut page = browser.open(url);
    let status = page
        .wait_for(
            "(() => { const s = window.passerelleStatus;
                return s && Object.values(s.tiles ?? {}).filter((t) => t.framesDecoded > 0).length >= 2
                    ? s : null; })()",
            PLAY_TIMEOUT,
        )
        .unwrap_or_else(|e| {
            let last = page.try_evaluate("window.passerelleStatus");
            panic!("{e}\npasserelleStatus: {last:?}")
        });
    println!("demo status page: {status}");
    assert_eq!(status["policy"], "valid", "{status}");
    let address = page.evaluate("location.href");
    assert!(
        !address.as_str().unwrap_or_default().contains("token="),
        "the token stays in the address bar: {address}"
    );
}

/// A camera opened in a new tab from the status page (middle click on its tile) plays
/// there with the operator's token, which never goes into the new tab's address.
#[test]
fn a_camera_opened_in_a_new_tab_plays_without_the_token_in_its_address() {
    let chain = Chain::start(&[]);
    let browser = Browser::launch();
    let mut page = browser.open(&page_url(&chain.csu, "/", CSU_OPERATOR_TOKEN));
    let quai = format!("sncf/{CAMERA}");
    let at = page
        .wait_for(
            &format!(
                "(() => {{ const a = document.querySelector('li.tile[data-camera=\"{quai}\"] a.tile-id');
                    if (!a) return null;
                    const r = a.getBoundingClientRect();
                    return {{ x: r.left + r.width / 2, y: r.top + r.height / 2 }}; }})()"
            ),
            PAGE_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("no tile link for {quai}: {e}"));
    page.middle_click(at["x"].as_f64().expect("x"), at["y"].as_f64().expect("y"))
        .expect("click");
    let mut tab = browser
        .attach(&format!("/view/{quai}"), PAGE_TIMEOUT)
        .unwrap_or_else(|e| panic!("the tile opened no tab: {e}"));
    let stats = tab
        .wait_for(
            "(() => { const s = window.passerelleStats;
                return s && s.framesDecoded > 0 ? s : null; })()",
            PLAY_TIMEOUT,
        )
        .unwrap_or_else(|e| {
            let last = tab.try_evaluate("window.passerelleStats");
            panic!("the new tab does not play: {e}\npasserelleStats: {last:?}")
        });
    println!("new tab: {stats}");
    // The address the tab was opened at, before the page could rewrite it.
    let opened_at = tab.evaluate("performance.getEntriesByType('navigation')[0].name");
    println!("new tab opened at {opened_at}");
    assert!(
        !opened_at.as_str().unwrap_or("token").contains("token"),
        "the token was in the new tab's address: {opened_at}"
    );
}
