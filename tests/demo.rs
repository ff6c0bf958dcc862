//! `passerelle demo`, as a new user runs it: the printed CSU URLs play, the camera that
//! is not granted answers 404.

mod support;

use std::time::Duration;

use support::{Transport, ffprobe_count_frames};

#[test]
fn the_demo_chain_plays_granted_cameras_and_refuses_the_control_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = support::start_demo(&dir.path().join("demo"));
    let url = |camera: &str| format!("rtsp://operateur:demo@{}/{camera}", demo.addr("rtsp"));

    let printed = demo.stdout_log();
    assert!(
        printed.contains(&url("sncf/metz-ville/quai-1")),
        "{printed}"
    );
    let report = ffprobe_count_frames(
        &url("sncf/metz-ville/quai-1"),
        Transport::Tcp,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert!(report.frames >= 50, "{report:?}");
    let error = ffprobe_count_frames(
        &url("sncf/poste-de-commande/salle"),
        Transport::Tcp,
        Duration::from_secs(30),
    )
    .expect_err("not granted");
    assert!(error.contains("404"), "{error}");
}
