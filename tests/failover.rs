//! Two gateways per site: the SNCF as an active/standby pair (one site id, one
//! certificate, both pulling the camera simulator), the CSU dialling both addresses.
//! The active one is killed (SIGKILL, a crash) while a CSU operator watches an SNCF
//! camera: the link fails over to the standby, the camera is subscribed again, and the
//! stream resumes through it. The failover time is printed.

mod support;

use std::time::{Duration, Instant};

use passerelle::demo::{MetzKit, SiteFiles};
use support::metz::{loopback_listeners, metric, metrics, start_site, wait_for_log_line};
use support::watch::Watcher;
use support::{Gateway, http_get};

const CAMERA: &str = "metz-ville/quai-1";

/// Quick failure detection for the test. The idle timer restarts at the first keep-alive
/// sent into the silence, so a crash is noticed after keep-alive + idle timeout at most:
/// 2.5 s here, 10 s with the defaults (2 s and 8 s; measured: 10.5 s to failover, the
/// same ffprobe reading on).
const QUIC_TUNING: [(&str, &str); 2] = [
    ("PASSERELLE__QUIC__KEEP_ALIVE", "500ms"),
    ("PASSERELLE__QUIC__IDLE_TIMEOUT", "2s"),
];

/// How long the stream may take to come back through the standby: the idle timeout,
/// a re-dial, a subscription and the standby's cached keyframe, with a wide margin.
const FAILOVER_BOUND: Duration = Duration::from_secs(15);

/// `camera` pulled all the time rather than on demand: a hot standby has its keyframe
/// cache ready when the link fails over to it.
fn always_on(site: &mut SiteFiles, camera: &str) {
    let line = format!("id = \"{camera}\"\n");
    let at = site.config.find(&line).expect("the camera is configured") + line.len();
    site.config.insert_str(at, "on_demand = false\n");
}

/// The CSU's view of the SNCF link: (state, remote address).
fn sncf_link(csu: &Gateway) -> (String, String) {
    let response = http_get(
        csu.addr("management"),
        "/api/v1/links",
        Duration::from_secs(5),
    )
    .expect("links");
    let body: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
    let link = &body["links"][0];
    assert_eq!(link["peer"], "sncf.metz.example", "{body}");
    (
        link["state"].as_str().unwrap_or_default().to_owned(),
        link["remote"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Packets of the camera the CSU received from the link so far.
fn received(csu: &Gateway) -> f64 {
    metric(
        &metrics(csu),
        "passerelle_ingest_packets_total",
        &[&format!("camera=\"sncf/{CAMERA}\"")],
    )
    .unwrap_or(0.0)
}

#[test]
fn killing_the_active_gateway_of_a_pair_fails_the_stream_over_to_the_standby() {
    let kit = MetzKit::new().expect("kit");
    let camsim = Gateway::camsim(&[]);
    let mut active_files = kit
        .sncf(loopback_listeners(), camsim.addr("rtsp"))
        .expect("sncf");
    always_on(&mut active_files, CAMERA);
    // The standby: the same site (certificate, key, policy), its own listeners.
    let mut standby_files = kit
        .sncf(loopback_listeners(), camsim.addr("rtsp"))
        .expect("sncf");
    standby_files.files = active_files.files.clone();
    always_on(&mut standby_files, CAMERA);
    let mut active = start_site(&active_files, &QUIC_TUNING);
    let standby = start_site(&standby_files, &QUIC_TUNING);
    let (active_quic, standby_quic) = (active.addr("quic"), standby.addr("quic"));

    let mut csu_files = kit.csu(loopback_listeners(), active_quic).expect("csu");
    let one = format!("addresses = [\"{active_quic}\"]");
    assert!(csu_files.config.contains(&one), "{}", csu_files.config);
    csu_files.config = csu_files.config.replace(
        &one,
        &format!("addresses = [\"{active_quic}\", \"{standby_quic}\"]"),
    );
    let csu = start_site(&csu_files, &QUIC_TUNING);
    wait_for_log_line(&csu, "CSU", |l| {
        l.contains("partner catalog received") && !l.contains("cameras=0")
    });
    assert_eq!(
        sncf_link(&csu),
        ("up".to_owned(), active_quic.to_string()),
        "the first address is dialled first"
    );

    // A CSU operator watches an SNCF camera, through the active gateway.
    let (user, password) = passerelle::demo::CSU_OPERATOR;
    let url = format!(
        "rtsp://{user}:{password}@{}/sncf/{CAMERA}",
        csu.addr("rtsp")
    );
    let viewer = Watcher::start(&url);
    viewer.wait_for(50, Duration::from_secs(20));
    assert!(
        active.stderr_log().contains("viewing session opened"),
        "the session was opened at the active gateway"
    );
    assert!(!standby.stderr_log().contains("viewing session opened"));

    // The active gateway crashes.
    let before = received(&csu);
    let killed = Instant::now();
    active.signal("KILL");
    assert!(
        active.wait_exit(Duration::from_secs(5)).is_some(),
        "SIGKILL kills"
    );
    let viewer_at_kill = viewer.count();

    // Packets stop at the CSU (a few were in flight), then grow again: that first new
    // packet came through the standby.
    let mut last = before;
    let mut quiet_since = Instant::now();
    let mut stalled = false;
    let resumed = loop {
        let now = received(&csu);
        let at = Instant::now();
        if now > last {
            if stalled {
                break at;
            }
            quiet_since = at;
        } else if at.duration_since(quiet_since) >= Duration::from_millis(1000) {
            stalled = true;
        }
        last = now;
        assert!(
            killed.elapsed() < FAILOVER_BOUND,
            "the stream did not resume within {FAILOVER_BOUND:?} (stalled: {stalled}); CSU:\n{}",
            csu.stderr_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let failover = resumed.duration_since(killed);
    println!(
        "failover: {} ms from SIGKILL to the first packet through the standby \
         (keep_alive 500ms, idle_timeout 2s)",
        failover.as_millis()
    );

    // What the CSU saw, for the breakdown: the idle timeout, the re-dial, the link up.
    for line in csu.stderr_log().lines().filter(|l| {
        [
            "link down",
            "link up",
            "stream subscribed",
            "dialling partner failed",
        ]
        .iter()
        .any(|what| l.contains(what))
    }) {
        println!("CSU: {}", line.trim());
    }

    // The link is up with the standby, the session was opened again there, and the
    // packets keep coming.
    assert_eq!(sncf_link(&csu), ("up".to_owned(), standby_quic.to_string()));
    wait_for_log_line(&standby, "standby", |l| {
        l.contains("viewing session opened") && l.contains("agent=operateur") && l.contains(CAMERA)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while received(&csu) < last + 100.0 {
        assert!(Instant::now() < deadline, "the stream did not keep flowing");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The viewer's RTSP session outlived the failover: the same ffprobe keeps reading.
    viewer.wait_for(viewer_at_kill + 50, Duration::from_secs(10));
    println!(
        "viewer: {} packets before the kill, {} now",
        viewer_at_kill,
        viewer.count()
    );
}
