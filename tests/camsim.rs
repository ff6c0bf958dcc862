//! The camera simulator, played by the real clients a site uses: ffprobe and GStreamer.

mod support;

use std::time::Duration;

use support::{Codec, Gateway, Transport, ffprobe_count_frames, gst_play};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

fn url(sim: &Gateway, credentials: &str, camera: &str) -> String {
    format!("rtsp://{credentials}@{}/{camera}", sim.addr("rtsp"))
}

#[test]
fn h264_main_decodes_over_tcp_and_udp() {
    let sim = Gateway::camsim(&[]);
    for transport in [Transport::Tcp, Transport::Udp] {
        let report = ffprobe_count_frames(
            &url(&sim, "admin:admin", "metz-ville/quai-1"),
            transport,
            CLIENT_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        assert!(report.frames >= 50, "{transport:?}: {report:?}");
        assert_eq!(report.codec_name, "h264");
        assert_eq!(report.profile, "Main");
        assert_eq!((report.width, report.height), (640, 360));
        assert_eq!(report.errors, "", "{transport:?}");
    }
}

#[test]
fn h265_decodes_and_gstreamer_plays_both_codecs() {
    let sim = Gateway::camsim(&[
        "--camera",
        "a/h264=h264-main",
        "--camera",
        "a/h265=h265-main",
    ]);
    let report = ffprobe_count_frames(
        &url(&sim, "admin:admin", "a/h265"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect("ffprobe");
    assert_eq!(report.codec_name, "hevc");
    assert!(report.frames >= 50, "{report:?}");

    let gst_url = |camera: &str| url(&sim, "admin:admin", camera);
    gst_play(
        &gst_url("a/h264"),
        Codec::H264,
        Transport::Tcp,
        50,
        CLIENT_TIMEOUT,
    )
    .expect("H.264 over TCP");
    gst_play(
        &gst_url("a/h264"),
        Codec::H264,
        Transport::Udp,
        50,
        CLIENT_TIMEOUT,
    )
    .expect("H.264 over UDP");
    gst_play(
        &gst_url("a/h265"),
        Codec::H265,
        Transport::Tcp,
        50,
        CLIENT_TIMEOUT,
    )
    .expect("H.265 over TCP");
}

#[test]
fn wrong_credentials_and_unknown_cameras_are_refused() {
    let sim = Gateway::camsim(&[]);
    let error = ffprobe_count_frames(
        &url(&sim, "admin:wrong", "metz-ville/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect_err("a wrong password is refused");
    assert!(error.contains("401"), "{error}");
    let error = ffprobe_count_frames(
        &url(&sim, "admin:admin", "metz-ville/nope"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect_err("an unknown camera is refused");
    assert!(error.contains("404"), "{error}");
}
