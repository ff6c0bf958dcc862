//! Onward sharing across a chain (issue 3, item 6): four gateways of the Metz topology
//! on loopback, SNCF → CSU → CCOR and CSU → CORG, with real RTSP clients.
//!
//! The SNCF grants the CSU Metz Ville and Metz Nord with `onward = [ccor]`, and Woippy,
//! Ars and Peltre with no onward. The CSU re-shares only where its own policy and the
//! SNCF's onward both allow: the CCOR plays Metz Ville and Metz Nord through the CSU,
//! never Woippy, Ars, Peltre or another commune's camera; the CORG gets no SNCF camera,
//! even under a CSU policy that grants it `sncf/**`. Each session on a re-shared camera
//! is decided and journaled at the SNCF, with the CCOR as origin.

mod support;

use std::time::{Duration, Instant};

use passerelle::demo::{
    CCOR, CCOR_AGENT, CORG, CORG_AGENT, CSU, MetzKit, Receivers, SNCF, csu_policy, sncf_policy,
};
use support::metz::{label, loopback_listeners, metric, metric_sum, metrics, start_site};
use support::watch::{Watcher, journal_records, journal_time};
use support::{Gateway, Transport, ffprobe_count_frames, http_get, run_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_passerelle");
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a catalog may take to settle across the chain.
const SETTLE: Duration = Duration::from_secs(20);

/// The SNCF cameras the SNCF lets the CSU re-share to the CCOR (camsim ids).
const ONWARD_TO_CCOR: [&str; 3] = ["metz-ville/quai-1", "metz-ville/parvis", "metz-nord/hall"];
/// The SNCF cameras the SNCF lets no one beyond the CSU see.
const CSU_ONLY: [&str; 3] = ["woippy/quai-1", "ars-sur-moselle/quai-1", "peltre/parvis"];
/// The CSU's own cameras: Metz (for the CCOR and the CORG), Marly (the CORG only).
const CITY_METZ: &str = "metz/place-saint-louis";
const CITY_MARLY: &str = "marly/mairie";

struct Topology {
    kit: MetzKit,
    _camsim: Gateway,
    sncf: Gateway,
    csu: Gateway,
    ccor: Gateway,
    corg: Gateway,
}

/// Starts the four gateways; `csu_policy_toml` replaces the CSU's demo policy.
fn topology(csu_policy_toml: Option<&str>) -> Topology {
    topology_with(None, csu_policy_toml)
}

/// Starts the four gateways, with the SNCF's and the CSU's demo policies replaced
/// when given.
fn topology_with(sncf_policy_toml: Option<&str>, csu_policy_toml: Option<&str>) -> Topology {
    let kit = MetzKit::new().expect("kit");
    let receivers = Receivers::new().expect("receivers");
    let camsim = Gateway::camsim(&[]);
    let mut sncf_files = kit
        .sncf(loopback_listeners(), camsim.addr("rtsp"))
        .expect("sncf");
    if let Some(policy) = sncf_policy_toml {
        kit.replace_policy(&mut sncf_files, policy, true)
            .expect("sncf policy");
    }
    let sncf = start_site(&sncf_files, &[]);
    let csu = start_site(
        &kit.csu_hub(
            loopback_listeners(),
            sncf.addr("quic"),
            camsim.addr("rtsp"),
            &receivers,
            csu_policy_toml,
        )
        .expect("csu"),
        &[],
    );
    let ccor = start_site(
        &receivers
            .ccor(&kit, loopback_listeners(), csu.addr("quic"))
            .expect("ccor"),
        &[],
    );
    let corg = start_site(
        &receivers
            .corg(&kit, loopback_listeners(), csu.addr("quic"))
            .expect("corg"),
        &[],
    );
    Topology {
        kit,
        _camsim: camsim,
        sncf,
        csu,
        ccor,
        corg,
    }
}

/// An RTSP URL on `site` with its agent's account.
fn url(site: &Gateway, (user, password): (&str, &str), camera: &str) -> String {
    format!("rtsp://{user}:{password}@{}/{camera}", site.addr("rtsp"))
}

/// How many cameras `site`'s latest catalog from `partner` lists (`/readyz`'s body).
fn peer_catalog_len(site: &Gateway, partner: &str) -> Option<u64> {
    let ready = http_get(site.addr("management"), "/readyz", Duration::from_secs(5)).ok()?;
    let body: serde_json::Value = serde_json::from_str(&ready.body).ok()?;
    body["details"]["links"]
        .as_array()?
        .iter()
        .find(|link| link["partner"] == partner && link["connected"] == true)?["peer_catalog_len"]
        .as_u64()
}

/// Waits (bounded) until `site` holds a catalog of exactly `len` cameras from `partner`.
fn wait_for_catalog(site: &Gateway, who: &str, partner: &str, len: u64) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let got = peer_catalog_len(site, partner);
        if got == Some(len) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who}: the catalog from {partner} never had {len} cameras (last: {got:?}):\n{}",
            site.stderr_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the chain to settle: the CSU holds the six station cameras the SNCF
/// grants it (never the control room), the CCOR the CSU's Metz camera and the three
/// SNCF cameras re-shared to it; then asserts that the CORG's catalog stays at its
/// two city cameras.
fn settle(topology: &Topology) {
    wait_for_catalog(&topology.csu, "CSU", SNCF, 6);
    // Metz Ville (2), Metz Nord (1), the CSU's Metz camera.
    wait_for_catalog(&topology.ccor, "CCOR", CSU, 4);
    wait_for_catalog(&topology.corg, "CORG", CSU, 2);
    // The CSU sent every partner its update when the SNCF catalog came; the CORG's
    // must not grow after it.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(peer_catalog_len(&topology.corg, CSU), Some(2));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `session_opened` records of `site` for `camera`.
fn sessions_opened(site: &Gateway, camera: &str) -> Vec<serde_json::Value> {
    journal_records(site)
        .into_iter()
        .filter(|r| r["kind"] == "session_opened" && r["camera"] == camera)
        .collect()
}

fn forwarded(text: &str, camera: &str, peer: &str) -> f64 {
    metric_sum(
        text,
        "passerelle_forwarded_packets_total",
        &[&label("camera", camera), &label("peer", peer)],
    )
}

#[test]
fn the_ccor_plays_the_sncf_cameras_onward_and_nothing_else_crosses() {
    let topology = topology(None);
    settle(&topology);

    // The CCOR plays Metz Ville and Metz Nord through the CSU, and its own commune.
    let mut decoded = Vec::new();
    let city = format!("csu/{CITY_METZ}");
    for (camera, codec) in [
        ("csu/sncf/metz-ville/quai-1", "h264"),
        ("csu/sncf/metz-ville/parvis", "hevc"),
        ("csu/sncf/metz-nord/hall", "h264"),
        (city.as_str(), "h264"),
    ] {
        let report = ffprobe_count_frames(
            &url(&topology.ccor, CCOR_AGENT, camera),
            Transport::Tcp,
            CLIENT_TIMEOUT,
        )
        .unwrap_or_else(|e| {
            panic!(
                "{camera} at the CCOR: {e}\nCCOR:\n{}\nCSU:\n{}",
                topology.ccor.stderr_log(),
                topology.csu.stderr_log()
            )
        });
        println!("CCOR {camera}: {report:?}");
        assert!(report.frames >= 50, "{camera}: {report:?}");
        assert_eq!(report.codec_name, codec, "{camera}");
        decoded.push((camera.to_owned(), report.frames, report.packets));
    }

    // Never Woippy, Ars, Peltre, nor another commune's camera: unknown (404).
    for camera in CSU_ONLY
        .iter()
        .map(|c| format!("csu/sncf/{c}"))
        .chain([format!("csu/{CITY_MARLY}")])
    {
        let error = ffprobe_count_frames(
            &url(&topology.ccor, CCOR_AGENT, &camera),
            Transport::Tcp,
            CLIENT_TIMEOUT,
        )
        .expect_err("not re-shared to the CCOR");
        assert!(error.contains("404"), "{camera}: {error}");
    }

    // Packets: what the CSU forwarded to the CCOR, and what the SNCF forwarded to the
    // CSU for it. Nothing of the CSU-only cameras crossed towards the CCOR.
    let csu_metrics = metrics(&topology.csu);
    let sncf_metrics = metrics(&topology.sncf);
    for camera in ONWARD_TO_CCOR {
        let to_ccor = forwarded(&csu_metrics, &format!("sncf/{camera}"), CCOR);
        let to_csu = forwarded(&sncf_metrics, camera, CSU);
        println!("{camera}: SNCF → CSU {to_csu} packets, CSU → CCOR {to_ccor} packets");
        assert!(to_ccor > 0.0 && to_csu > 0.0, "{camera}");
    }
    for camera in CSU_ONLY {
        assert_eq!(
            forwarded(&csu_metrics, &format!("sncf/{camera}"), CCOR),
            0.0,
            "{camera}"
        );
        // Nobody at the CSU asked for them either: the SNCF never sent them.
        assert_eq!(forwarded(&sncf_metrics, camera, CSU), 0.0, "{camera}");
    }
    assert_eq!(forwarded(&csu_metrics, CITY_MARLY, CCOR), 0.0);
    assert!(forwarded(&csu_metrics, CITY_METZ, CCOR) > 0.0);
    // The CORG received nothing of the SNCF.
    assert_eq!(
        metric_sum(
            &csu_metrics,
            "passerelle_forwarded_packets_total",
            &[&label("peer", CORG), "camera=\"sncf/"]
        ),
        0.0
    );

    // The SNCF's register, the authority: the CCOR's agent, asked for by the CSU, with
    // the CCOR as origin, under the SNCF grant that names it onward.
    for camera in ONWARD_TO_CCOR {
        let opened = sessions_opened(&topology.sncf, camera);
        let record = opened
            .iter()
            .find(|r| r["agent"] == CCOR_AGENT.0)
            .unwrap_or_else(|| panic!("{camera}: no session of the CCOR agent: {opened:#?}"));
        assert_eq!(record["role"], "provider", "{record}");
        assert_eq!(record["partner"], CSU, "{record}");
        assert_eq!(record["origin"], CCOR, "{record}");
        assert_eq!(record["agent_kind"], "agent", "{record}");
        assert!(
            record["basis"]
                .as_str()
                .is_some_and(|b| b.contains("Code des transports L1632-2")),
            "{record}"
        );
    }
    // The CSU journals it too, as the provider towards the CCOR; the CCOR as viewer.
    let relayed = sessions_opened(&topology.csu, "sncf/metz-ville/quai-1");
    assert!(
        relayed.iter().any(|r| r["role"] == "provider"
            && r["partner"] == CCOR
            && r["origin"] == CCOR
            && r["agent"] == CCOR_AGENT.0),
        "{relayed:#?}"
    );
    let viewed = sessions_opened(&topology.ccor, "csu/sncf/metz-ville/quai-1");
    assert!(
        viewed
            .iter()
            .any(|r| r["role"] == "viewer" && r["partner"] == CSU && r["origin"] == CCOR),
        "{viewed:#?}"
    );
    // Every session ended is on record at the SNCF, with its end.
    let ended = journal_records(&topology.sncf)
        .into_iter()
        .filter(|r| r["kind"] == "session_ended" && r["origin"] == CCOR)
        .count();
    assert!(ended >= ONWARD_TO_CCOR.len(), "{ended} sessions ended");

    println!("CCOR decoded (camera, frames, packets): {decoded:?}");
}

#[test]
fn the_corg_gets_no_sncf_camera_even_when_the_csu_policy_would_grant_it() {
    // The CSU's policy (wrongly) grants the CORG and the CCOR every SNCF camera: the
    // SNCF's onward rules still decide. The CORG, never named, gets none; the CCOR,
    // named for Metz Ville and Metz Nord only, never Woippy, Ars or Peltre. The CORG's
    // grant comes before the national police's, which lists the same communes: only
    // the first is widened.
    let generous = csu_policy()
        .replacen(
            "cameras = [\"metz/**\", \"marly/**\"",
            "cameras = [\"sncf/**\", \"metz/**\", \"marly/**\"",
            1,
        )
        .replace(
            "cameras = [\"metz/**\", \"sncf/metz-ville/**\", \"sncf/metz-nord/**\"]",
            "cameras = [\"metz/**\", \"sncf/**\"]",
        );
    assert_eq!(generous.matches("sncf/**").count(), 2, "{generous}");
    let topology = topology(Some(&generous));
    settle(&topology);

    // The CCOR: still exactly Metz Ville and Metz Nord of the SNCF (settled at four
    // cameras with its Metz one), never the stations the SNCF keeps for the CSU.
    for camera in CSU_ONLY {
        let error = ffprobe_count_frames(
            &url(&topology.ccor, CCOR_AGENT, &format!("csu/sncf/{camera}")),
            Transport::Tcp,
            CLIENT_TIMEOUT,
        )
        .expect_err("not re-shared to the CCOR");
        assert!(error.contains("404"), "{camera}: {error}");
    }

    // The CORG link works: its own grant's city cameras play.
    for camera in [CITY_METZ, CITY_MARLY] {
        let report = ffprobe_count_frames(
            &url(&topology.corg, CORG_AGENT, &format!("csu/{camera}")),
            Transport::Tcp,
            CLIENT_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{camera} at the CORG: {e}"));
        assert!(report.frames >= 50, "{camera}: {report:?}");
    }
    // No SNCF camera: unknown at the CORG.
    for camera in ONWARD_TO_CCOR.iter().chain(CSU_ONLY.iter()) {
        let error = ffprobe_count_frames(
            &url(&topology.corg, CORG_AGENT, &format!("csu/sncf/{camera}")),
            Transport::Tcp,
            CLIENT_TIMEOUT,
        )
        .expect_err("no SNCF camera for the CORG");
        assert!(error.contains("404"), "{camera}: {error}");
    }
    // Meanwhile the CCOR still gets Metz Ville under the same CSU policy.
    let report = ffprobe_count_frames(
        &url(&topology.ccor, CCOR_AGENT, "csu/sncf/metz-ville/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect("the CCOR plays Metz Ville");
    assert!(report.frames >= 50, "{report:?}");

    let csu_metrics = metrics(&topology.csu);
    assert_eq!(
        metric_sum(
            &csu_metrics,
            "passerelle_forwarded_packets_total",
            &[&label("peer", CORG), "camera=\"sncf/"]
        ),
        0.0
    );
    assert!(forwarded(&csu_metrics, CITY_MARLY, CORG) > 0.0);
    // No session of the CORG ever reached the SNCF.
    assert!(
        !journal_records(&topology.sncf)
            .iter()
            .any(|r| r["origin"] == CORG || r["partner"] == CORG),
        "the SNCF heard of the CORG"
    );
}

#[test]
fn the_sncf_withdrawing_onward_cuts_the_ccor_within_a_second_and_the_csu_plays_on() {
    let topology = topology(None);
    settle(&topology);
    let ccor = Watcher::start(&url(
        &topology.ccor,
        CCOR_AGENT,
        "csu/sncf/metz-ville/quai-1",
    ));
    let csu = Watcher::start(&url(
        &topology.csu,
        passerelle::demo::CSU_OPERATOR,
        "sncf/metz-ville/quai-1",
    ));
    ccor.wait_for(100, CLIENT_TIMEOUT);
    csu.wait_for(100, CLIENT_TIMEOUT);

    // Serial 2: the CSU keeps Metz Ville and Metz Nord, but may no longer pass them on.
    let narrowed = sncf_policy()
        .replace("serial = 1", "serial = 2")
        .replace("onward = [\"ccor.metz.example\"]\n", "");
    assert!(!narrowed.contains("onward"));
    let staging = topology.sncf.dir().join("incoming");
    std::fs::create_dir_all(&staging).expect("staging");
    for (name, bytes) in topology.kit.signed_sncf_policy(&narrowed).expect("signed") {
        std::fs::write(staging.join(name), bytes).expect("write");
    }
    let config = topology.sncf.dir().join("passerelle.toml");
    let installed = run_bounded(
        BIN,
        &[
            "policy",
            "install",
            staging.to_str().expect("utf-8"),
            "-c",
            config.to_str().expect("utf-8"),
        ],
        Duration::from_secs(20),
    )
    .expect("passerelle runs");
    assert!(installed.status.success(), "{}", installed.stderr);
    topology.sncf.signal("HUP");
    let applied = journal_time(&topology.sncf, "policy_loaded", 2);

    // The CCOR's stream goes quiet; the CSU's own viewing plays on.
    let csu_before = csu.count();
    let cut_ms = ccor.last_packet_ms_after(applied, Duration::from_secs(5));
    println!("onward withdrawn: last packet at the CCOR {cut_ms:.1} ms after policy_loaded");
    assert!(cut_ms < 1000.0, "the CCOR got packets {cut_ms:.1} ms after");
    csu.wait_for(csu_before + 25, Duration::from_secs(5));

    // The CCOR's catalog lost every SNCF camera; the city camera stays.
    wait_for_catalog(&topology.ccor, "CCOR", CSU, 1);
    let error = ffprobe_count_frames(
        &url(&topology.ccor, CCOR_AGENT, "csu/sncf/metz-ville/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect_err("withdrawn");
    assert!(error.contains("404"), "{error}");
    assert!(
        metric(
            &metrics(&topology.csu),
            "passerelle_forwarded_packets_total",
            &[
                &label("camera", "sncf/metz-ville/quai-1"),
                &label("peer", CCOR)
            ]
        )
        .is_some_and(|n| n > 0.0)
    );
}

#[test]
fn an_on_request_restriction_travels_on_and_the_ccor_agents_reason_reaches_the_sncf() {
    // DESIGN.md's first SNCF grant: Metz Ville and Metz Nord on request, onward to the
    // CCOR. The CSU's grant to the CCOR is live: the SNCF's restriction travels on.
    let on_request = sncf_policy().replacen("mode = \"live\"", "mode = \"on_request\"", 1);
    assert_ne!(on_request, sncf_policy());
    let topology = topology_with(Some(&on_request), None);
    settle(&topology);
    let camera = "csu/sncf/metz-ville/quai-1";

    // No intervention: the camera is known at the CCOR, but may not be watched now;
    // the CSU refuses it already, the SNCF never hears of it.
    let error = ffprobe_count_frames(
        &url(&topology.ccor, CCOR_AGENT, camera),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect_err("on request, no intervention");
    assert!(error.contains("403"), "{error}");
    let refused = journal_records(&topology.csu).into_iter().find(|r| {
        r["kind"] == "session_refused"
            && r["camera"] == "sncf/metz-ville/quai-1"
            && r["partner"] == CCOR
    });
    let refused = refused.expect("the CSU journaled the refusal");
    assert_eq!(refused["refusal"], "no_intervention", "{refused}");
    assert!(sessions_opened(&topology.sncf, "metz-ville/quai-1").is_empty());

    // The CCOR agent opens an intervention at its own site.
    let reason = "colis suspect quai 1";
    let id = support::open_intervention(
        &topology.ccor,
        passerelle::demo::CCOR_AGENT_TOKEN,
        reason,
        &["csu/sncf/metz-ville/**"],
    );

    let report = ffprobe_count_frames(
        &url(&topology.ccor, CCOR_AGENT, camera),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .unwrap_or_else(|e| {
        panic!(
            "with an intervention: {e}\nCSU:\n{}",
            topology.csu.stderr_log()
        )
    });
    assert!(report.frames >= 50, "{report:?}");
    println!("CCOR on request with intervention {id}: {report:?}");

    // The reason and the intervention reached the camera's site, hop by hop.
    let opened = sessions_opened(&topology.sncf, "metz-ville/quai-1");
    let record = opened
        .iter()
        .find(|r| r["origin"] == CCOR)
        .unwrap_or_else(|| panic!("no session from the CCOR: {opened:#?}"));
    assert_eq!(record["partner"], CSU, "{record}");
    assert_eq!(record["agent"], CCOR_AGENT.0, "{record}");
    assert_eq!(record["reason"], reason, "{record}");
    assert_eq!(record["intervention"], id.as_str(), "{record}");
    let relayed = sessions_opened(&topology.csu, "sncf/metz-ville/quai-1");
    assert!(
        relayed.iter().any(|r| r["partner"] == CCOR
            && r["reason"] == reason
            && r["intervention"] == id.as_str()),
        "{relayed:#?}"
    );
}
