//! WebRTC viewers over WHEP, end to end: the real binary on loopback, viewers made with
//! the crate's webrtc-rs WHEP client (`passerelle::webrtc::client`), cameras from the
//! camera simulator, directly or through a partner (SNCF → CSU).
//!
//! Each scenario: a partner's H.264 Main and H.265 cameras play, both journals record the
//! session and DELETE ends it; refusals (400, 401, 403, 404, 405, 406, 414, 415) and an
//! `on_request` camera watched once an intervention gives the reason; several viewers of
//! one camera while another stalls; the session cap, DELETE and a stop with sessions
//! open; a camera with B-frames (made with ffmpeg, served by GStreamer) ending its session
//! with the reason, then refused with 422.

mod support;

use std::time::{Duration, Instant};

use passerelle::demo::{CSU_OPERATOR_TOKEN, MetzKit, SiteFiles};
use passerelle::webrtc::client::{ClientError, ClientOffer, HttpReply, WhepClient, request};
use support::Gateway;
use support::metz::{Chain, label, loopback_listeners, metric, metrics, start_site};
use support::watch::{journal_records, wait_for_journal_line};

/// Bound on a viewer's first packets (ICE, DTLS, a cold camera, its next keyframe).
const PLAY_TIMEOUT: Duration = Duration::from_secs(20);
/// The token of the local agent added to the SNCF site in the single-site scenarios.
const SNCF_AGENT_TOKEN: &str = "sncf-agent-token-0123456789abcdef";
/// A CSU agent who may watch Woippy only.
const WOIPPY_AGENT_TOKEN: &str = "woippy-agent-token-0123456789abcdef";
/// A CSU service account (a VMS), with a token.
const VMS_TOKEN: &str = "vms-csu-token-0123456789abcdef";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn json(reply: &HttpReply) -> serde_json::Value {
    serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} {:?}", reply.status, reply.body))
}

/// The refusal of a connect that was expected to fail: its status and JSON message.
fn refused(result: Result<WhepClient, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Refused { status, body }) => {
            let value: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("error body not JSON ({e}): {body:?}"));
            let message = value["error"].as_str().expect("error message").to_owned();
            (status, message)
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(client) => panic!("expected a refusal, got session {}", client.location()),
    }
}

async fn connect(
    gateway: &Gateway,
    camera: &str,
    token: &str,
    offer: &ClientOffer,
) -> Result<WhepClient, ClientError> {
    WhepClient::connect(gateway.addr("http"), camera, token, offer).await
}

/// Waits (bounded) for `count` packets, with the viewer's stats in the failure.
async fn wait_for_packets(client: &WhepClient, count: u64) {
    assert!(
        client.wait_for_packets(count, PLAY_TIMEOUT).await,
        "fewer than {count} packets within {PLAY_TIMEOUT:?}: {:?}",
        client.stats()
    );
}

/// Waits (bounded) until `name{labels}` reads `value` on `gateway`.
fn wait_for_metric_value(gateway: &Gateway, name: &str, labels: &[&str], value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(gateway);
        let now = metric(&text, name, labels).unwrap_or(0.0);
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {now}, expected {value}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The SNCF site alone, its cameras from a camera simulator, with a local agent who has
/// a bearer token; `edit` changes its configuration before it starts.
fn sncf_alone(edit: impl FnOnce(&mut SiteFiles)) -> (Gateway, Gateway) {
    let kit = MetzKit::new().expect("kit");
    let camsim = Gateway::camsim(&[]);
    let mut site = kit
        .sncf(loopback_listeners(), camsim.addr("rtsp"))
        .expect("sncf");
    site.files.push((
        "secrets/agent.token".into(),
        format!("{SNCF_AGENT_TOKEN}\n").into_bytes(),
    ));
    site.config.push_str(
        "\n[[user]]\nname = \"agent.sncf\"\nkind = \"agent\"\ntoken_file = \"secrets/agent.token\"\ncameras = [\"**\"]\n",
    );
    edit(&mut site);
    let sncf = start_site(&site, &[]);
    (camsim, sncf)
}

#[test]
fn a_partners_h264_main_and_h265_cameras_play_and_both_journals_record_the_session() {
    let chain = Chain::start(&[]);
    let rt = runtime();
    let quai = "sncf/metz-ville/quai-1";
    let (main, hevc) = rt.block_on(async {
        let main = connect(
            &chain.csu,
            quai,
            CSU_OPERATOR_TOKEN,
            &ClientOffer::chromium(),
        )
        .await
        .expect("H.264 Main plays");
        // The camera's own profile (Main, 4d401e) as Chromium offers it.
        assert!(
            main.answer().contains("profile-level-id=4d001f"),
            "{}",
            main.answer()
        );
        assert!(
            main.answer().contains("127.0.0.1") && main.answer().contains("typ host"),
            "host candidates on loopback: {}",
            main.answer()
        );
        assert!(main.location().starts_with("/whep/session/"));
        let hevc = connect(
            &chain.csu,
            "sncf/metz-ville/parvis",
            CSU_OPERATOR_TOKEN,
            &ClientOffer::h265(),
        )
        .await
        .expect("H.265 plays");
        wait_for_packets(&main, 150).await;
        wait_for_packets(&hevc, 150).await;
        for (name, client) in [("H.264", &main), ("H.265", &hevc)] {
            let stats = client.stats();
            let first = stats.first.expect("a first packet");
            assert!(
                first.parameter_set || first.keyframe_start,
                "{name}: the first packet starts the picture: {stats:?}"
            );
            assert!(stats.keyframes >= 1, "{name}: {stats:?}");
            assert_eq!(stats.sequence_gaps, 0, "{name}: {stats:?}");
            println!("{name}: {stats:?}");
        }
        assert_eq!(
            main.stats().payload_type,
            Some(102),
            "4d001f's payload type"
        );
        // A keyframe request (PLI) reaches the gateway, which counts it.
        assert!(main.request_keyframe().await.expect("PLI"), "no track yet");
        let status = json(&main.status().await.expect("GET"));
        assert_eq!(status["camera"], quai);
        assert_eq!(status["state"], "playing");
        assert!(status["reason"].is_null(), "{status}");
        (main, hevc)
    });
    wait_for_metric_value(
        &chain.csu,
        "passerelle_webrtc_pli_total",
        &[&label("camera", quai)],
        1.0,
    );
    let main_location = main.location().to_owned();
    rt.block_on(async {
        assert_eq!(main.close().await.expect("DELETE"), 204);
        assert_eq!(hevc.close().await.expect("DELETE"), 204);
    });

    // Ended, and why, for the viewer page; for its own user only.
    let http = chain.csu.addr("http");
    rt.block_on(async {
        let status = request(http, "GET", &main_location, Some(CSU_OPERATOR_TOKEN), None)
            .await
            .expect("GET");
        assert_eq!(status.status, 200, "{}", status.body);
        let status = json(&status);
        assert_eq!(status["state"], "ended");
        assert_eq!(status["reason"], "ended by the viewer");
        let again = request(
            http,
            "DELETE",
            &main_location,
            Some(CSU_OPERATOR_TOKEN),
            None,
        )
        .await
        .expect("DELETE");
        assert_eq!(again.status, 404);
        let anonymous = request(http, "GET", &main_location, None, None)
            .await
            .expect("GET");
        assert_eq!(anonymous.status, 401);
    });

    // Both journals: the CSU's (the viewer's site) and the SNCF's (the camera's), which
    // the session reached as ViewOpen over the link.
    let csu_opened = wait_for_journal_line(&chain.csu, |l| {
        l.contains("\"kind\":\"session_opened\"") && l.contains(&format!("\"camera\":\"{quai}\""))
    });
    assert!(
        csu_opened.contains("\"agent\":\"operateur\""),
        "{csu_opened}"
    );
    let sncf_opened = wait_for_journal_line(&chain.sncf, |l| {
        l.contains("\"kind\":\"session_opened\"") && l.contains("\"camera\":\"metz-ville/quai-1\"")
    });
    assert!(
        sncf_opened.contains("\"origin\":\"csu.metz.example\""),
        "{sncf_opened}"
    );
    for (site, camera) in [(&chain.csu, quai), (&chain.sncf, "metz-ville/quai-1")] {
        let ended = wait_for_journal_line(site, |l| {
            l.contains("\"kind\":\"session_ended\"")
                && l.contains(&format!("\"camera\":\"{camera}\""))
        });
        println!("journal: {ended}");
    }
    let text = metrics(&chain.csu);
    assert_eq!(
        metric(
            &text,
            "passerelle_viewers",
            &[&label("camera", quai), &label("kind", "agent")]
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(metric(&text, "passerelle_webrtc_sessions", &[]), Some(0.0));
    assert!(
        metric(
            &text,
            "passerelle_webrtc_sessions_ended_total",
            &[&label("reason", "deleted")]
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
}

#[test]
fn refusals_are_clear_and_an_on_request_camera_plays_once_an_intervention_gives_the_reason() {
    let chain = Chain::start_with(&[], support::metz::sncf_on_request, |csu| {
        csu.files.push((
            "secrets/woippy.token".into(),
            format!("{WOIPPY_AGENT_TOKEN}\n").into_bytes(),
        ));
        csu.files.push((
            "secrets/vms.token".into(),
            format!("{VMS_TOKEN}\n").into_bytes(),
        ));
        csu.config.push_str(
                "\n[[user]]\nname = \"agent.woippy\"\nkind = \"agent\"\ntoken_file = \"secrets/woippy.token\"\ncameras = [\"sncf/woippy/**\"]\n\
                 \n[[user]]\nname = \"vms-csu\"\nkind = \"service\"\ntoken_file = \"secrets/vms.token\"\ncameras = [\"**\"]\n",
            );
    });
    let csu = &chain.csu;
    let http = csu.addr("http");
    let rt = runtime();
    let chromium = ClientOffer::chromium();
    let quai = "sncf/metz-ville/quai-1";
    rt.block_on(async {
        // No token.
        let anonymous = request(
            http,
            "POST",
            &format!("/whep/{quai}"),
            None,
            Some(("application/sdp", "v=0\r\n")),
        )
        .await
        .expect("POST");
        assert_eq!(anonymous.status, 401);
        // Malformed and overlong camera ids.
        let (status, message) =
            refused(connect(csu, "sncf/Metz/quai", CSU_OPERATOR_TOKEN, &chromium).await);
        assert_eq!(status, 400, "{message}");
        assert!(message.contains("not a camera id"), "{message}");
        let (status, _) =
            refused(connect(csu, "sncf/%2e%2e/quai", CSU_OPERATOR_TOKEN, &chromium).await);
        assert_eq!(status, 400);
        let long = format!("sncf/{}", "a".repeat(300));
        let (status, _) = refused(connect(csu, &long, CSU_OPERATOR_TOKEN, &chromium).await);
        assert_eq!(status, 414);
        // Unknown, outside the user's patterns, not granted by the camera's site: 404 alike.
        for (camera, token) in [
            ("sncf/nowhere/cam", CSU_OPERATOR_TOKEN),
            (quai, WOIPPY_AGENT_TOKEN),
            ("sncf/poste-de-commande/salle", CSU_OPERATOR_TOKEN),
        ] {
            let (status, message) = refused(connect(csu, camera, token, &chromium).await);
            assert_eq!(status, 404, "{camera}: {message}");
            assert_eq!(message, format!("no camera {camera} here"));
        }
        // Not an SDP offer.
        let not_sdp = request(
            http,
            "POST",
            "/whep/sncf/woippy/quai-1",
            Some(WOIPPY_AGENT_TOKEN),
            Some(("application/json", "{}")),
        )
        .await
        .expect("POST");
        assert_eq!(not_sdp.status, 415, "{}", not_sdp.body);
        let garbage = request(
            http,
            "POST",
            "/whep/sncf/woippy/quai-1",
            Some(WOIPPY_AGENT_TOKEN),
            Some(("application/sdp", "hello")),
        )
        .await
        .expect("POST");
        assert_eq!(garbage.status, 400, "{}", garbage.body);
        assert!(
            json(&garbage)["error"]
                .as_str()
                .is_some_and(|m| m.contains("not an SDP offer"))
        );
        // The browser offers no profile able to decode the Main camera: 406 naming it.
        let (status, message) = refused(
            connect(
                csu,
                "sncf/woippy/quai-1",
                WOIPPY_AGENT_TOKEN,
                &ClientOffer::h264(&["42e01f"]),
            )
            .await,
        );
        assert_eq!(status, 406, "{message}");
        assert!(message.contains("H.264 Main (4d401e)"), "{message}");
        // An H.265 camera to a browser offering only H.264.
        let (status, message) =
            refused(connect(csu, "sncf/metz-ville/parvis", CSU_OPERATOR_TOKEN, &chromium).await);
        assert_eq!(status, 406, "{message}");
        assert!(message.contains("H.265"), "{message}");
        // A live grant plays for the restricted agent.
        let woippy = connect(csu, "sncf/woippy/quai-1", WOIPPY_AGENT_TOKEN, &chromium)
            .await
            .expect("live grant");
        wait_for_packets(&woippy, 25).await;
        // Another user cannot see or end it.
        let other = request(
            http,
            "DELETE",
            woippy.location(),
            Some(CSU_OPERATOR_TOKEN),
            None,
        )
        .await
        .expect("DELETE");
        assert_eq!(other.status, 404);
        // No trickle ICE: the answer carried every candidate.
        let patch = request(
            http,
            "PATCH",
            woippy.location(),
            Some(WOIPPY_AGENT_TOKEN),
            Some(("application/trickle-ice-sdpfrag", "a=end-of-candidates\r\n")),
        )
        .await
        .expect("PATCH");
        assert_eq!(patch.status, 405);
        assert_eq!(woippy.close().await.expect("DELETE"), 204);

        // On request, without an intervention: known, but not now.
        let (status, message) = refused(connect(csu, quai, CSU_OPERATOR_TOKEN, &chromium).await);
        assert_eq!(status, 403, "{message}");
        assert!(message.contains("intervention"), "{message}");
    });

    // The agent opens an intervention with its bearer token.
    let intervention = support::open_intervention(
        csu,
        CSU_OPERATOR_TOKEN,
        "malaise voyageur quai 1",
        &["sncf/metz-ville/**"],
    );

    rt.block_on(async {
        let viewer = connect(csu, quai, CSU_OPERATOR_TOKEN, &chromium)
            .await
            .expect("with an intervention");
        wait_for_packets(&viewer, 50).await;
        // A service account never satisfies an on-request grant.
        let (status, _) = refused(connect(csu, quai, VMS_TOKEN, &chromium).await);
        assert_eq!(status, 403);
        assert_eq!(viewer.close().await.expect("DELETE"), 204);
    });
    // The camera's site journaled the reason and the intervention with the session.
    for site in [&chain.csu, &chain.sncf] {
        let line = wait_for_journal_line(site, |l| {
            l.contains("\"kind\":\"session_opened\"") && l.contains("metz-ville/quai-1")
        });
        assert!(line.contains("malaise voyageur quai 1"), "{line}");
        assert!(line.contains(&intervention), "{line}");
    }
    let text = metrics(csu);
    for (reason, at_least) in [
        ("bad_camera_id", 3.0),
        ("not_found", 3.0),
        ("bad_offer", 2.0),
        ("not_acceptable", 2.0),
        ("forbidden", 2.0),
    ] {
        let n = metric(
            &text,
            "passerelle_webrtc_sessions_refused_total",
            &[&label("reason", reason)],
        )
        .unwrap_or(0.0);
        assert!(n >= at_least, "{reason}: {n}\n{text}");
    }
}

#[test]
fn several_viewers_share_a_camera_and_a_stalled_one_costs_the_others_nothing() {
    let (_camsim, sncf) = sncf_alone(|_| {});
    let camera = "metz-ville/quai-1";
    let rt = runtime();
    // The stalled viewer lives on a runtime that is no longer driven once it plays: its
    // connection stops reading its socket and answering ICE, as a frozen browser would.
    let stalled_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let offer = ClientOffer::chromium();
    let viewers: Vec<WhepClient> = rt.block_on(async {
        let mut viewers = Vec::new();
        for _ in 0..4 {
            viewers.push(
                connect(&sncf, camera, SNCF_AGENT_TOKEN, &offer)
                    .await
                    .expect("viewer"),
            );
        }
        for viewer in &viewers {
            wait_for_packets(viewer, 50).await;
        }
        viewers
    });
    let stalled = stalled_rt.block_on(async {
        let stalled = connect(&sncf, camera, SNCF_AGENT_TOKEN, &offer)
            .await
            .expect("viewer");
        wait_for_packets(&stalled, 50).await;
        stalled
    });
    let stalled_location = stalled.location().to_owned();
    wait_for_metric_value(
        &sncf,
        "passerelle_viewers",
        &[&label("camera", camera)],
        5.0,
    );

    // From here on the stalled viewer reads nothing. The others get every packet the
    // camera sends, as fast as it sends them.
    let window = Duration::from_secs(4);
    let ingest = |text: &str| {
        metric(
            text,
            "passerelle_ingest_packets_total",
            &[&label("camera", camera)],
        )
        .unwrap_or(0.0)
    };
    let before: Vec<_> = viewers.iter().map(WhepClient::stats).collect();
    let ingest_before = ingest(&metrics(&sncf));
    std::thread::sleep(window);
    let ingest_after = ingest(&metrics(&sncf));
    let camera_packets = ingest_after - ingest_before;
    assert!(
        camera_packets >= 100.0,
        "the camera sent {camera_packets} packets in {window:?}"
    );
    for (viewer, before) in viewers.iter().zip(&before) {
        let after = viewer.stats();
        let received = (after.packets - before.packets) as f64;
        println!(
            "viewer {}: {received} packets in {window:?}, camera {camera_packets}",
            viewer.location()
        );
        // Re-splitting can only add packets; a small margin for packets in flight at the
        // window's edges.
        assert!(
            received >= 0.9 * camera_packets,
            "{received} of {camera_packets}: {after:?}"
        );
        assert_eq!(after.sequence_gaps, 0, "{after:?}");
    }

    // The stalled viewer's session ends when ICE gives up on it; the others play on.
    let http = sncf.addr("http");
    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = loop {
        let status = rt
            .block_on(request(
                http,
                "GET",
                &stalled_location,
                Some(SNCF_AGENT_TOKEN),
                None,
            ))
            .expect("GET");
        let status = json(&status);
        if status["state"] == "ended" {
            break status["reason"].as_str().unwrap_or_default().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the stalled session never ended: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(reason.contains("lost"), "{reason}");
    wait_for_metric_value(
        &sncf,
        "passerelle_viewers",
        &[&label("camera", camera)],
        4.0,
    );
    rt.block_on(async {
        let before: Vec<u64> = viewers.iter().map(|v| v.stats().packets).collect();
        for (viewer, before) in viewers.iter().zip(before) {
            wait_for_packets(viewer, before + 25).await;
        }
        for viewer in viewers {
            assert_eq!(viewer.close().await.expect("DELETE"), 204);
        }
    });
    drop(stalled);
    drop(stalled_rt);
    wait_for_metric_value(
        &sncf,
        "passerelle_viewers",
        &[&label("camera", camera)],
        0.0,
    );
}

#[test]
fn sessions_are_capped_deleted_and_ended_at_stop_each_with_a_journal_record() {
    let (_camsim, mut sncf) = sncf_alone(|site| {
        site.config = site
            .config
            .replacen("[webrtc]\n", "[webrtc]\nmax_sessions = 2\n", 1);
    });
    let camera = "metz-ville/quai-1";
    let rt = runtime();
    let offer = ClientOffer::chromium();
    let kept = rt.block_on(async {
        let first = connect(&sncf, camera, SNCF_AGENT_TOKEN, &offer)
            .await
            .expect("first");
        let second = connect(&sncf, camera, SNCF_AGENT_TOKEN, &offer)
            .await
            .expect("second");
        let (status, message) = refused(connect(&sncf, camera, SNCF_AGENT_TOKEN, &offer).await);
        assert_eq!(status, 503, "{message}");
        assert!(message.contains("all 2 WebRTC sessions"), "{message}");
        wait_for_packets(&first, 25).await;
        wait_for_packets(&second, 25).await;
        // DELETE frees the slot.
        assert_eq!(first.close().await.expect("DELETE"), 204);
        let third = connect(&sncf, camera, SNCF_AGENT_TOKEN, &offer)
            .await
            .expect("a slot is free");
        wait_for_packets(&third, 25).await;
        assert_eq!(third.close().await.expect("DELETE"), 204);
        second
    });
    wait_for_metric_value(
        &sncf,
        "passerelle_viewers",
        &[&label("camera", camera)],
        1.0,
    );
    wait_for_metric_value(&sncf, "passerelle_webrtc_sessions", &[], 1.0);
    let text = metrics(&sncf);
    assert!(
        metric(
            &text,
            "passerelle_webrtc_sessions_refused_total",
            &[&label("reason", "max_sessions")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // Two sessions ended by DELETE are on record.
    let ended = |records: &[serde_json::Value]| {
        records
            .iter()
            .filter(|r| r["kind"] == "session_ended" && r["camera"] == camera)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ended(&journal_records(&sncf)) < 2 {
        assert!(Instant::now() < deadline, "two session ends not journaled");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Stopped with a session open: its end is on record before the process stop.
    sncf.stop();
    drop(kept);
    let records = journal_records(&sncf);
    let opened: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "session_opened" && r["camera"] == camera)
        .filter_map(|r| r["session"].as_str())
        .collect();
    assert_eq!(opened.len(), 3, "{records:#?}");
    let stop = records
        .iter()
        .position(|r| r["kind"] == "process_stop")
        .expect("process_stop");
    for session in opened {
        let end = records
            .iter()
            .position(|r| r["kind"] == "session_ended" && r["session"] == session)
            .unwrap_or_else(|| panic!("no end for {session}"));
        assert!(end < stop, "session {session} ended after the process stop");
    }
}

/// GStreamer's RTSP server (`tests/support/rtsp_source.py`) serving the fixtures of
/// `dir`; killed with this value (and with the test process, by `setpriv`).
struct Source {
    child: std::process::Child,
    port: u16,
}

impl Source {
    fn start(dir: &std::path::Path) -> Source {
        use std::os::unix::process::CommandExt;
        let ready = dir.join("ready.json");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_source.py");
        let mut command = std::process::Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--", "/usr/bin/python3"])
            .arg(script)
            .arg("--fixtures")
            .arg(dir)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0);
        let child = command.spawn().expect("rtsp_source.py");
        let mut source = Source { child, port: 0 };
        let deadline = Instant::now() + Duration::from_secs(10);
        source.port = loop {
            let port = std::fs::read_to_string(&ready)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|value| value["port"].as_u64())
                .and_then(|port| u16::try_from(port).ok());
            if let Some(port) = port {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "rtsp_source.py not ready in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        source
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_camera_with_b_frames_ends_its_session_with_the_reason_and_is_then_refused() {
    // A Main-profile stream with B-frames (x264, 2 B-frames between P-frames) in a
    // Matroska file, served by GStreamer with its presentation times, as a camera sends
    // them: the RTP timestamps of B pictures go back.
    let dir = tempfile::tempdir().expect("temp dir");
    let encoded = support::run_bounded(
        "ffmpeg",
        &[
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=25",
            "-frames:v",
            "100",
            "-c:v",
            "libx264",
            "-profile:v",
            "main",
            "-bf",
            "2",
            "-g",
            "50",
            "-f",
            "matroska",
            dir.path().join("h264-bframes.mkv").to_str().expect("utf-8"),
        ],
        Duration::from_secs(30),
    )
    .expect("ffmpeg runs");
    assert!(encoded.status.success(), "{}", encoded.stderr);
    for file in [
        "h264-main.h264",
        "h264-baseline.h264",
        "h265-main.h265",
        "audio.pcma",
    ] {
        std::fs::copy(support::fixture(file), dir.path().join(file)).expect("fixture");
    }
    let source = Source::start(dir.path());
    let camera = "essai/b-frames";
    let (_camsim, sncf) = sncf_alone(|site| {
        site.config.push_str(&format!(
            "\n[[camera]]\nid = \"{camera}\"\nurl = \"rtsp://127.0.0.1:{}/h264-bframes\"\n",
            source.port
        ));
    });
    let rt = runtime();
    let offer = ClientOffer::chromium();
    let viewer = rt
        .block_on(connect(&sncf, camera, SNCF_AGENT_TOKEN, &offer))
        .expect("the camera is not known to be unplayable yet");
    let deadline = Instant::now() + PLAY_TIMEOUT;
    let status = loop {
        let status = json(&rt.block_on(viewer.status()).expect("GET"));
        if status["state"] == "ended" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the session did not end: {status} {:?}",
            viewer.stats()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let reason = status["reason"].as_str().expect("reason");
    assert!(reason.contains("B-frames"), "{reason}");
    // The keyframe went out before the first B slice showed the problem.
    assert!(viewer.stats().keyframes >= 1, "{:?}", viewer.stats());
    let (status, message) = refused(rt.block_on(connect(&sncf, camera, SNCF_AGENT_TOKEN, &offer)));
    assert_eq!(status, 422, "{message}");
    assert_eq!(message, reason);
    // A camera without B-frames still plays.
    let fine = rt
        .block_on(connect(
            &sncf,
            "metz-ville/quai-1",
            SNCF_AGENT_TOKEN,
            &offer,
        ))
        .expect("no B-frames");
    rt.block_on(wait_for_packets(&fine, 25));
    let text = metrics(&sncf);
    assert!(
        metric(
            &text,
            "passerelle_webrtc_sessions_ended_total",
            &[&label("reason", "unplayable")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}
