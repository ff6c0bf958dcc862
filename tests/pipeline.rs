//! The core pipeline end to end on loopback: camera simulator → SNCF gateway → QUIC with
//! mutual TLS → CSU gateway → RTSP, played by ffprobe and GStreamer, with the SNCF
//! policy deciding what crosses.

mod support;

use std::time::{Duration, Instant};

use passerelle::demo::{CSU_OPERATOR, MetzKit};
use support::metz::{Chain, label, loopback_listeners, metric, metrics, start_site};
use support::watch::Watcher;
use support::{Codec, Gateway, RtspSource, Transport, ffprobe_count_frames, gst_play, http_get};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits (bounded) until the CSU has the SNCF catalog: the link is up.
fn wait_for_catalog(csu: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if csu.stderr_log().contains("partner catalog received") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the CSU never received the SNCF catalog:\n{}",
        csu.stderr_log()
    );
}

/// Waits (bounded) until every counter an operator needs has grown between two reads of
/// both sites' metrics, checks the gauges, and returns the last expositions.
fn assert_operator_series(chain: &Chain) -> (String, String) {
    let camera = label("camera", "metz-ville/quai-1");
    let imported = label("camera", "sncf/metz-ville/quai-1");
    let to_csu = label("peer", "csu.metz.example");
    let to_sncf = label("peer", "sncf.metz.example");
    let local = label("peer", "local");
    // (site, series, labels) of counters that must grow while the viewer watches.
    let growing: [(&str, &str, Vec<&str>); 7] = [
        ("SNCF", "passerelle_ingest_packets_total", vec![&camera]),
        ("SNCF", "passerelle_ingest_bytes_total", vec![&camera]),
        (
            "SNCF",
            "passerelle_forwarded_packets_total",
            vec![&camera, &to_csu],
        ),
        (
            "SNCF",
            "passerelle_forwarded_bytes_total",
            vec![&camera, &to_csu],
        ),
        ("CSU", "passerelle_ingest_packets_total", vec![&imported]),
        (
            "CSU",
            "passerelle_forwarded_packets_total",
            vec![&imported, &local],
        ),
        (
            "CSU",
            "passerelle_forwarded_bytes_total",
            vec![&imported, &local],
        ),
    ];
    let read = || (metrics(&chain.sncf), metrics(&chain.csu));
    let value = |texts: &(String, String), site: &str, name: &str, labels: &[&str]| {
        let text = if site == "SNCF" { &texts.0 } else { &texts.1 };
        metric(text, name, labels)
    };
    let first = read();
    for (site, name, labels) in &growing {
        assert!(
            value(&first, site, name, labels).is_some_and(|v| v > 0.0),
            "{site}: {name}{labels:?} missing or zero"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let last = loop {
        let now = read();
        let stuck: Vec<_> = growing
            .iter()
            .filter(|(site, name, labels)| {
                value(&now, site, name, labels) <= value(&first, site, name, labels)
            })
            .collect();
        if stuck.is_empty() {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "not growing while watched: {stuck:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Gauges and counters that may stay at zero on loopback, but must be exported.
    let (sncf, csu) = &last;
    let lost = metric(sncf, "passerelle_ingest_lost_packets_total", &[&camera]);
    let jitter = metric(sncf, "passerelle_ingest_jitter_seconds", &[&camera]);
    println!("SNCF ingest of {camera}: lost {lost:?}, jitter {jitter:?} s");
    assert_eq!(lost, Some(0.0), "no loss over loopback TCP:\n{sncf}");
    assert!(
        jitter.is_some_and(|j| (0.0..1.0).contains(&j)),
        "jitter {jitter:?}:\n{sncf}"
    );
    for (site, text, peer) in [("SNCF", sncf, &to_csu), ("CSU", csu, &to_sncf)] {
        assert_eq!(
            metric(text, "passerelle_peer_connected", &[peer]),
            Some(1.0),
            "{site}"
        );
        let rtt = metric(text, "passerelle_peer_rtt_seconds", &[peer]);
        let cwnd = metric(text, "passerelle_peer_congestion_window_bytes", &[peer]);
        let peer_lost = metric(text, "passerelle_peer_lost_packets_total", &[peer]);
        println!("{site} path to {peer}: rtt {rtt:?} s, cwnd {cwnd:?} bytes, lost {peer_lost:?}");
        assert!(
            rtt.is_some_and(|r| r > 0.0 && r < 1.0),
            "{site}: rtt {rtt:?}"
        );
        assert!(cwnd.is_some_and(|c| c > 0.0), "{site}: cwnd {cwnd:?}");
        assert!(peer_lost.is_some(), "{site}: no lost-packets counter");
    }
    assert_eq!(
        metric(
            sncf,
            "passerelle_camera_state",
            &[&camera, &label("state", "playing")]
        ),
        Some(1.0)
    );
    assert_eq!(metric(sncf, "passerelle_camera_up", &[&camera]), Some(1.0));
    last
}

#[test]
fn a_granted_camera_plays_at_the_csu_over_tcp_and_udp_and_the_agent_reaches_the_sncf() {
    let chain = Chain::start(&[]);
    let started = Instant::now();
    for transport in [Transport::Tcp, Transport::Udp] {
        let report = ffprobe_count_frames(
            &chain.csu_url("sncf/metz-ville/quai-1"),
            transport,
            CLIENT_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{transport:?}: {e}\nCSU:\n{}", chain.csu.stderr_log()));
        println!("{transport:?}: {report:?}");
        assert!(report.frames >= 50, "{transport:?}: {report:?}");
        assert_eq!(report.codec_name, "h264");
        assert_eq!(report.profile, "Main");
        assert_eq!(report.audio_streams, 0, "no audio is re-published");
    }
    println!("two cold-then-warm plays took {:?}", started.elapsed());

    // The CSU's local user is the agent of the viewing session decided at the SNCF.
    let sncf_log = chain.sncf.stderr_log();
    assert!(
        sncf_log
            .lines()
            .any(|l| l.contains("viewing session opened")
                && l.contains("agent=operateur")
                && l.contains("metz-ville/quai-1")),
        "{sncf_log}"
    );
    // Readiness is local; the policy and the link are in the body.
    let ready = http_get(
        chain.csu.addr("management"),
        "/readyz",
        Duration::from_secs(5),
    )
    .expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let body: serde_json::Value = serde_json::from_str(&ready.body).expect("json");
    assert_eq!(body["details"]["policy"]["state"], "in_force", "{body}");
    assert_eq!(
        body["details"]["links"][0]["partner"], "sncf.metz.example",
        "{body}"
    );
    assert_eq!(body["details"]["links"][0]["connected"], true, "{body}");

    // While a viewer watches, the series an operator reads to find a fault are there
    // and the counters grow: at the SNCF (camera ingest, quality, forwarding, the QUIC
    // path to the CSU) and at the CSU (what arrives over the link, local forwarding).
    let viewer = Watcher::start(&chain.csu_url("sncf/metz-ville/quai-1"));
    viewer.wait_for(25, CLIENT_TIMEOUT);
    let (sncf_metrics, csu_metrics) = assert_operator_series(&chain);
    drop(viewer);
    // The exposition is valid for Prometheus (names, HELP, types, units).
    for (site, text) in [("SNCF", &sncf_metrics), ("CSU", &csu_metrics)] {
        let mut promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is installed (scripts/test installs prometheus)");
        std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), text.as_bytes())
            .expect("feed promtool");
        let out = promtool.wait_with_output().expect("promtool ran");
        assert!(
            out.status.success(),
            "{site}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let forwarded = metric(
        &sncf_metrics,
        "passerelle_forwarded_packets_total",
        &["camera=\"metz-ville/quai-1\"", "peer=\"csu.metz.example\""],
    );
    println!("packets forwarded SNCF -> CSU: {forwarded:?}");
    assert!(forwarded.is_some_and(|n| n > 100.0), "{sncf_metrics}");
}

#[test]
fn h265_plays_and_gstreamer_plays_through_the_chain() {
    let chain = Chain::start(&[]);
    let report = ffprobe_count_frames(
        &chain.csu_url("sncf/metz-ville/parvis"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect("H.265 through the chain");
    assert_eq!(report.codec_name, "hevc");
    assert!(report.frames >= 50, "{report:?}");
    gst_play(
        &chain.csu_url("sncf/metz-ville/quai-1"),
        Codec::H264,
        Transport::Tcp,
        50,
        CLIENT_TIMEOUT,
    )
    .expect("GStreamer over TCP");
    gst_play(
        &chain.csu_url("sncf/metz-ville/parvis"),
        Codec::H265,
        Transport::Udp,
        50,
        CLIENT_TIMEOUT,
    )
    .expect("GStreamer H.265 over UDP");
}

#[test]
fn a_camera_not_granted_is_404_absent_from_the_catalog_and_never_crosses() {
    let chain = Chain::start(&[]);
    let error = ffprobe_count_frames(
        &chain.csu_url("sncf/poste-de-commande/salle"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect_err("the control room camera is not granted");
    assert!(error.contains("404"), "{error}");
    // A granted camera plays meanwhile, so packets do cross the link.
    ffprobe_count_frames(
        &chain.csu_url("sncf/woippy/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect("woippy");

    let sncf = metrics(&chain.sncf);
    let csu = metrics(&chain.csu);
    assert!(
        metric(
            &sncf,
            "passerelle_forwarded_packets_total",
            &["woippy/quai-1"]
        )
        .is_some_and(|n| n > 0.0)
    );
    assert_eq!(
        metric(
            &sncf,
            "passerelle_forwarded_packets_total",
            &["poste-de-commande"]
        ),
        None,
        "{sncf}"
    );
    assert_eq!(
        metric(
            &csu,
            "passerelle_ingest_packets_total",
            &["poste-de-commande"]
        ),
        None,
        "{csu}"
    );
    assert!(
        metric(
            &csu,
            "passerelle_ingest_packets_total",
            &["sncf/woippy/quai-1"]
        )
        .is_some_and(|n| n > 0.0)
    );
}

#[test]
fn with_the_link_mtu_pinned_at_1200_packets_are_resplit_and_still_decode() {
    let pinned = [
        ("PASSERELLE__QUIC__INITIAL_MTU", "1200"),
        ("PASSERELLE__QUIC__MAX_MTU", "1200"),
        ("PASSERELLE__QUIC__MTU_DISCOVERY", "false"),
    ];
    let chain = Chain::start(&pinned);
    let report = ffprobe_count_frames(
        &chain.csu_url("sncf/metz-ville/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect("plays with a 1200-byte MTU");
    assert!(report.frames >= 50, "{report:?}");
    let resplit = metric(
        &metrics(&chain.sncf),
        "passerelle_resplit_packets_total",
        &["metz-ville/quai-1"],
    );
    println!("re-split packets: {resplit:?}");
    assert!(resplit.is_some_and(|n| n > 0.0), "nothing re-split");
}

#[test]
fn a_camera_with_an_audio_track_reaches_the_csu_as_video_only() {
    // An independent RTSP camera (GStreamer's server) offering H.264 and PCMA audio.
    let camera = RtspSource::start();
    let kit = MetzKit::new().expect("kit");
    let camsim = Gateway::camsim(&[]);
    let mut sncf_files = kit
        .sncf(loopback_listeners(), camsim.addr("rtsp"))
        .expect("sncf");
    sncf_files.config.push_str(&format!(
        "\n[[camera]]\nid = \"metz-ville/sonorisee\"\nurl = \"{}\"\n",
        camera.url("h264-main-audio")
    ));
    let sncf = start_site(&sncf_files, &[]);
    let csu = start_site(
        &kit.csu(loopback_listeners(), sncf.addr("quic"))
            .expect("csu"),
        &[],
    );
    wait_for_catalog(&csu);

    let direct = ffprobe_count_frames(
        &camera.url("h264-main-audio"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect("the camera itself");
    assert_eq!(
        direct.audio_streams, 1,
        "the source does offer audio: {direct:?}"
    );
    let (user, password) = CSU_OPERATOR;
    let url = format!(
        "rtsp://{user}:{password}@{}/sncf/metz-ville/sonorisee",
        csu.addr("rtsp")
    );
    let report = ffprobe_count_frames(&url, Transport::Tcp, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\nSNCF:\n{}", sncf.stderr_log()));
    assert!(report.frames >= 25, "{report:?}");
    assert_eq!(
        report.audio_streams, 0,
        "audio crossed the boundary: {report:?}"
    );
    assert_eq!(report.video_streams, 1);
}
