//! The ingest supervisor against real RTSP servers on 127.0.0.1: passerelle's own RTSP
//! server fed by the camera simulator, GStreamer's (`tests/support`) for a camera with an
//! audio track, and fake cameras written here for bad input. Every wait is bounded.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, timeout};
use url::Url;

use passerelle::camsim::BuiltinFixture;
use passerelle::channel::{Channel, ChannelSettings, SinkEvent, SinkLabel, Subscription};
use passerelle::ids::CameraId;
use passerelle::ingest::{
    self, CameraState, CameraStatus, IngestHandle, IngestSettings, IngestTransport,
};
use passerelle::media::rtp::{RtpHeader, SenderReport, ntp_from_unix};
use passerelle::media::{Codec, MediaPacket, h26x};
use passerelle::policy::AgentKind;
use passerelle::rtsp::{
    CameraDirectory, Mount, RtspServer, RtspSettings, RtspUser, Secret, ViewRefusal, Viewer,
};

const USER: &str = "ingest";
const PASSWORD: &str = "camera-secret-7f3a";
/// RTP ticks per picture at 25 fps (90 kHz clock).
const TICKS_PER_FRAME: u32 = 3600;

// ---------------------------------------------------------------------------------------
// H.264 and H.265 from the camera simulator

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_and_h265_reach_the_channel_with_codec_and_parameter_sets() {
    metrics();
    let camsim = Camsim::start(
        any_port(),
        &[
            ("sim/h264", BuiltinFixture::H264Main),
            ("sim/h265", BuiltinFixture::H265Main),
        ],
    )
    .await;
    let mut running = Vec::new();
    for (source, fixture, codec) in [
        ("sim/h264", BuiltinFixture::H264Main, Codec::H264),
        ("sim/h265", BuiltinFixture::H265Main, Codec::H265),
    ] {
        let camera = format!("gw/codec/{}", source.trim_start_matches("sim/"));
        let mut settings = test_settings(&camera, &camsim.url(source));
        settings.on_demand = false;
        let ingest = Ingest::spawn(settings);
        let sub = ingest.channel.subscribe(SinkLabel::local());
        running.push((ingest, sub, fixture, codec));
    }
    for (ingest, mut sub, fixture, codec) in running {
        let expected = fixture.load().stream_info();
        let info = ingest
            .channel
            .wait_info(Duration::from_secs(10))
            .await
            .expect("stream description from the camera's SDP");
        assert_eq!(info.codec, codec);
        assert_eq!(info.clock_rate, 90_000);
        assert_eq!(
            info.parameter_sets, expected.parameter_sets,
            "{codec:?} parameter sets from the SDP fmtp"
        );

        let packets = collect_packets(&mut sub, 150, Duration::from_secs(15)).await;
        assert_starts_at_keyframe(&packets);
        let keyframes = packets.iter().filter(|p| p.keyframe_start).count();
        assert!(keyframes >= 1);
        let mut in_band_sets = 0;
        for p in &packets {
            let info = h26x::classify(codec, &p.payload)
                .unwrap_or_else(|e| panic!("{codec:?} packet does not classify: {e}"));
            assert_eq!(info.keyframe_start, p.keyframe_start);
            assert_eq!(info.parameter_set, p.parameter_set);
            if p.parameter_set {
                in_band_sets += 1;
                assert!(
                    expected.parameter_sets.contains(&p.payload),
                    "in-band parameter set is one of the fixture's"
                );
            }
        }
        assert!(in_band_sets >= 2, "the keyframe's in-band parameter sets");
        assert_monotonic(packets.iter().map(|p| p.timestamp));
        // Several pictures went by, each 3600 ticks apart.
        let span = packets
            .last()
            .unwrap()
            .timestamp
            .wrapping_sub(packets[0].timestamp);
        assert!(
            span >= 10 * TICKS_PER_FRAME && span.is_multiple_of(TICKS_PER_FRAME),
            "{span}"
        );
        assert_eq!(ingest.handle.status().state, CameraState::Playing);
        assert!(ingest.handle.status().up);
        let camera = ingest.camera.clone();
        ingest.stop().await;
        let text = metrics().render();
        assert_eq!(
            metric(
                &text,
                "passerelle_malformed_packets_total",
                &[("camera", &camera)]
            )
            .unwrap_or(0.0),
            0.0,
            "nothing malformed from {camera}"
        );
        assert!(
            metric(
                &text,
                "passerelle_ingest_packets_total",
                &[("camera", &camera)]
            )
            .is_some_and(|n| n >= 150.0),
            "ingest packets counted for {camera}"
        );
    }
    camsim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_transport_delivers_video_too() {
    metrics();
    let camsim = Camsim::start(any_port(), &[("sim/udp", BuiltinFixture::H264Main)]).await;
    let mut settings = test_settings("gw/udp", &camsim.url("sim/udp"));
    settings.on_demand = false;
    settings.transport = IngestTransport::Udp;
    let ingest = Ingest::spawn(settings);
    let mut sub = ingest.channel.subscribe(SinkLabel::local());
    let packets = collect_packets(&mut sub, 100, Duration::from_secs(15)).await;
    assert_starts_at_keyframe(&packets);
    for p in &packets {
        h26x::classify(Codec::H264, &p.payload).expect("valid H.264 payload over UDP");
    }
    assert_monotonic(packets.iter().map(|p| p.timestamp));
    ingest.stop().await;
    camsim.stop().await;
}

// ---------------------------------------------------------------------------------------
// On demand

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_connects_on_the_first_viewer_and_disconnects_after_linger() {
    metrics();
    let camsim = Camsim::start(any_port(), &[("sim/od", BuiltinFixture::H264Main)]).await;
    let source = camsim.source("sim/od");
    let linger = Duration::from_millis(1500);
    let mut settings = test_settings("gw/on-demand", &camsim.url("sim/od"));
    settings.linger = linger;
    let ingest = Ingest::spawn(settings);

    // The probe at start describes the camera without playing it.
    let status = wait_status(
        &ingest.handle,
        "probe succeeded",
        Duration::from_secs(10),
        |s| s.state == CameraState::Idle && s.up,
    )
    .await;
    assert!(status.up);
    assert_eq!(
        ingest.channel.info(),
        Some(BuiltinFixture::H264Main.load().stream_info()),
        "the probe's SDP gives codec and parameter sets"
    );
    let text = metrics().render();
    for (state, value) in [
        ("idle", 1.0),
        ("connecting", 0.0),
        ("playing", 0.0),
        ("failed", 0.0),
    ] {
        assert_eq!(
            metric(
                &text,
                "passerelle_camera_state",
                &[("camera", "gw/on-demand"), ("state", state)]
            ),
            Some(value),
            "state {state}"
        );
    }
    assert_eq!(
        metric(&text, "passerelle_camera_up", &[("camera", "gw/on-demand")]),
        Some(1.0)
    );
    // Nobody watches: no RTSP session at the camera for a while.
    let quiet_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < quiet_until {
        assert_eq!(source.subscriber_count(), 0, "pulled without a viewer");
        assert_eq!(ingest.handle.status().state, CameraState::Idle);
        sleep(Duration::from_millis(50)).await;
    }

    // The first viewer brings the camera up.
    let mut sub = ingest.channel.subscribe(SinkLabel::local());
    wait_until(
        "the camera plays to the gateway",
        Duration::from_secs(10),
        || source.subscriber_count() == 1,
    )
    .await;
    let packets = collect_packets(&mut sub, 20, Duration::from_secs(10)).await;
    assert_starts_at_keyframe(&packets);
    wait_status(&ingest.handle, "playing", Duration::from_secs(5), |s| {
        s.state == CameraState::Playing
    })
    .await;

    // The last viewer leaves: the session lingers, then is torn down.
    drop(sub);
    let left = Instant::now();
    sleep(linger / 2).await;
    assert_eq!(
        ingest.handle.status().state,
        CameraState::Playing,
        "still lingering"
    );
    assert_eq!(source.subscriber_count(), 1, "still lingering");
    wait_until(
        "the camera's session is torn down",
        linger + Duration::from_secs(5),
        || source.subscriber_count() == 0,
    )
    .await;
    let after = left.elapsed();
    assert!(
        after >= linger,
        "torn down after {after:?}, before the {linger:?} linger"
    );
    wait_status(&ingest.handle, "idle again", Duration::from_secs(2), |s| {
        s.state == CameraState::Idle && s.up
    })
    .await;

    // A viewer coming back gets the camera again, not the old session's pictures.
    let mut again = ingest.channel.subscribe(SinkLabel::local());
    let fresh = collect_packets(&mut again, 10, Duration::from_secs(10)).await;
    assert_eq!(
        source.subscriber_count(),
        1,
        "packets came from a new session"
    );
    assert_starts_at_keyframe(&fresh);
    assert!(
        fresh[0]
            .timestamp
            .wrapping_sub(packets.last().unwrap().timestamp) as i32
            > 0,
        "the new session continues the timeline"
    );
    drop(again);
    ingest.stop().await;
    camsim.stop().await;
}

// ---------------------------------------------------------------------------------------
// Audio and other non-video tracks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_video_track_is_set_up_when_the_camera_offers_audio_first() {
    metrics();
    let healthy = Healthy::start("gw/audio-first/healthy").await;
    let fake = FakeCamera::start(Script::AudioFirst).await;
    let mut settings = test_settings("gw/audio-first", &fake.url("cam"));
    settings.on_demand = false;
    let ingest = Ingest::spawn(settings);
    let mut sub = ingest.channel.subscribe(SinkLabel::local());
    let packets = collect_packets(&mut sub, 30, Duration::from_secs(10)).await;
    for p in &packets {
        h26x::classify(Codec::H264, &p.payload).expect("only video reaches the channel");
    }
    let setups = fake.stats.setups.lock().unwrap().clone();
    assert_eq!(
        setups,
        [format!("rtsp://{}/cam/trackID=video", fake.addr)],
        "SETUP for the video track only: never audio or metadata"
    );
    assert_eq!(ingest.channel.info().map(|i| i.codec), Some(Codec::H264));
    healthy.assert_flowing(Duration::from_secs(1)).await;
    ingest.stop().await;
    healthy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_without_video_is_failed_and_nothing_is_set_up() {
    metrics();
    let fake = FakeCamera::start(Script::AudioOnly).await;
    let mut settings = test_settings("gw/audio-only", &fake.url("cam"));
    settings.on_demand = false;
    let ingest = Ingest::spawn(settings);
    let status = wait_status(&ingest.handle, "failed", Duration::from_secs(10), |s| {
        s.state == CameraState::Failed
    })
    .await;
    assert!(status.up, "the camera answered; it just has no video");
    // Retried with back-off, never set up.
    wait_until("a retry", Duration::from_secs(10), || {
        fake.stats.connections.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(fake.stats.setups.lock().unwrap().is_empty());
    assert!(ingest.channel.info().is_none());
    assert!(!ingest.handle.is_finished());
    let text = metrics().render();
    assert_eq!(
        metric(
            &text,
            "passerelle_camera_state",
            &[("camera", "gw/audio-only"), ("state", "failed")]
        ),
        Some(1.0)
    );
    ingest.stop().await;
}

/// GStreamer's RTSP server serves the fixture with a G.711 track beside the video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_camera_with_audio_yields_video_only() {
    metrics();
    // Started on the test's own thread: the server dies with the thread that made it.
    let source = support::RtspSource::start();
    for (mount, codec) in [
        ("h264-main-audio", Codec::H264),
        ("h265-main-audio", Codec::H265),
    ] {
        let camera = format!("gw/gst/{mount}");
        // This GStreamer server sends nothing at all in about a third of the sessions
        // where a client sets up the video alone (sockets idle on both ends). The stall
        // timeout is what recovers a real camera doing that; a short one here keeps the
        // test quick.
        let mut settings = test_settings(&camera, &source.url(mount));
        settings.credentials = None;
        settings.on_demand = false;
        let ingest = Ingest::spawn(settings);
        let mut sub = ingest.channel.subscribe(SinkLabel::local());
        let packets = collect_packets(&mut sub, 100, Duration::from_secs(40)).await;
        for p in &packets {
            h26x::classify(codec, &p.payload)
                .unwrap_or_else(|e| panic!("{mount}: non-video packet forwarded? {e}"));
        }
        assert_monotonic(packets.iter().map(|p| p.timestamp));
        assert_eq!(ingest.channel.info().map(|i| i.codec), Some(codec));
        let text = metrics().render();
        assert_eq!(
            metric(
                &text,
                "passerelle_malformed_packets_total",
                &[("camera", &camera)]
            )
            .unwrap_or(0.0),
            0.0,
            "{mount}: an audio packet would not classify as video"
        );
        ingest.stop().await;
    }
}

// ---------------------------------------------------------------------------------------
// Reconnects and time

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_camera_is_reconnected_and_timestamps_never_go_backwards() {
    metrics();
    let camsim = Camsim::start(any_port(), &[("sim/restart", BuiltinFixture::H264Main)]).await;
    let addr = camsim.addr;
    let reports = spawn_sender_reports(camsim.source("sim/restart").clone());
    let mut settings = test_settings("gw/restart", &camsim.url("sim/restart"));
    settings.on_demand = false;
    let ingest = Ingest::spawn(settings);
    let mut sub = ingest.channel.subscribe(SinkLabel::local());
    let mut seen = Seen::default();
    seen.collect(&mut sub, 60, Duration::from_secs(10)).await;

    // The camera goes away...
    reports.abort();
    camsim.stop().await;
    wait_status(&ingest.handle, "failed", Duration::from_secs(10), |s| {
        s.state == CameraState::Failed && !s.up
    })
    .await;
    sleep(Duration::from_millis(700)).await;
    seen.drain(&mut sub);
    let before = seen.packets.len();

    // ...and comes back on the same address with a new RTP clock.
    let camsim = Camsim::start(addr, &[("sim/restart", BuiltinFixture::H264Main)]).await;
    let reports = spawn_sender_reports(camsim.source("sim/restart").clone());
    wait_status(
        &ingest.handle,
        "playing again",
        Duration::from_secs(15),
        |s| s.state == CameraState::Playing,
    )
    .await;
    seen.collect(&mut sub, before + 60, Duration::from_secs(15))
        .await;
    wait_until(
        "a sender report after the restart",
        Duration::from_secs(10),
        || {
            seen.drain(&mut sub);
            seen.reports_after(before) > 0
        },
    )
    .await;

    assert_monotonic(seen.packets.iter().map(|p| p.timestamp));
    // The restart shows as a step of at least the outage, not a jump back.
    let step = seen.packets[before]
        .timestamp
        .wrapping_sub(seen.packets[before - 1].timestamp);
    assert!(
        (90_000 / 2..90_000 * 60).contains(&step),
        "step across the restart: {step} ticks"
    );
    // Sender reports carry the same offset as the packets. After the restart a sink
    // waits for the next keyframe (up to a 2 s GOP) while reports still pass, so a
    // report may lead the last packet seen by up to a GOP and a second.
    for (rtp, last_packet) in &seen.reports {
        let off = rtp.wrapping_sub(*last_packet) as i32;
        assert!(
            off.unsigned_abs() <= 3 * 90_000,
            "sender report rtp {rtp} vs last packet {last_packet}"
        );
    }
    reports.abort();
    ingest.stop().await;
    camsim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_closing_mid_stream_is_reconnected_with_continuous_time_and_reports() {
    metrics();
    let healthy = Healthy::start("gw/close/healthy").await;
    let fake = FakeCamera::start(Script::CloseAfter(12)).await;
    let mut settings = test_settings("gw/close", &fake.url("cam"));
    settings.on_demand = false;
    let ingest = Ingest::spawn(settings);
    let mut sub = ingest.channel.subscribe(SinkLabel::local());
    let mut packets: Vec<MediaPacket> = Vec::new();
    let mut reports: Vec<(u64, u32)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Four sessions of 12 packets, each a fresh connection with a new random clock.
    while packets.len() < 48 {
        let event = timeout(deadline - Instant::now(), sub.recv())
            .await
            .expect("packets from four sessions")
            .expect("channel open");
        match event {
            SinkEvent::Packet(p) => packets.push(p),
            SinkEvent::SenderReport { ntp, rtp } => reports.push((ntp, rtp)),
            SinkEvent::Dropped(n) => panic!("{n} packets dropped"),
        }
    }
    assert!(fake.stats.connections.load(Ordering::SeqCst) >= 4);
    assert_monotonic(packets.iter().map(|p| p.timestamp));
    let session_starts: Vec<u32> = packets
        .iter()
        .filter(|p| p.keyframe_start)
        .map(|p| p.timestamp)
        .collect();
    assert!(session_starts.len() >= 4, "{session_starts:?}");
    // Each session: the camera sends its report right after its first packet, with that
    // packet's RTP time; the gateway must show it with the same offset.
    assert!(reports.len() >= 3, "{reports:?}");
    for (ntp, rtp) in &reports {
        assert!(
            session_starts.contains(rtp),
            "sender report rtp {rtp} is not a session's first timestamp {session_starts:?}"
        );
        assert_eq!(ntp >> 32, FAKE_NTP_SECONDS, "NTP time passes unchanged");
    }
    let status = ingest.handle.status();
    assert_ne!(status.state, CameraState::Idle, "{status:?}");
    healthy.assert_flowing(Duration::from_secs(1)).await;
    ingest.stop().await;
    healthy.stop().await;
}

// ---------------------------------------------------------------------------------------
// Bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answers_are_retried_with_backoff_while_a_healthy_camera_keeps_flowing() {
    metrics();
    let healthy = Healthy::start("gw/garbage/healthy").await;
    let fake = FakeCamera::start(Script::Garbage).await;
    let mut settings = test_settings("gw/garbage", &fake.url("cam"));
    settings.on_demand = false;
    let ingest = Ingest::spawn(settings);
    let status = wait_status(&ingest.handle, "failed", Duration::from_secs(10), |s| {
        s.state == CameraState::Failed
    })
    .await;
    assert!(!status.up);
    let started = Instant::now();
    wait_until("three retries", Duration::from_secs(10), || {
        fake.stats.connections.load(Ordering::SeqCst) >= 4
    })
    .await;
    // Back-off: 0.1 s doubling (±jitter) means three retries take at least 0.35 s.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    healthy.assert_flowing(Duration::from_secs(2)).await;
    assert!(!ingest.handle.is_finished(), "the supervisor survived");
    assert!(ingest.channel.info().is_none());
    ingest.stop().await;
    healthy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_counted_and_dropped_and_a_corrupt_header_restarts_the_session() {
    metrics();
    let healthy = Healthy::start("gw/malformed/healthy").await;
    let cycles = 20;
    let fake = FakeCamera::start(Script::Malformed { cycles }).await;
    let camera = "gw/malformed";
    let mut settings = test_settings(camera, &fake.url("cam"));
    settings.on_demand = false;
    let ingest = Ingest::spawn(settings);
    let mut sub = ingest.channel.subscribe(SinkLabel::local());

    // The first session: each cycle has one IDR, four malformed payloads, one P slice.
    let packets = collect_packets(&mut sub, 2 * cycles, Duration::from_secs(10)).await;
    for (i, p) in packets.iter().enumerate() {
        assert!(h26x::classify(Codec::H264, &p.payload).is_ok());
        assert_eq!(p.keyframe_start, i.is_multiple_of(2), "packet {i}");
    }
    wait_until(
        "every malformed payload counted",
        Duration::from_secs(5),
        || {
            metric(
                &metrics().render(),
                "passerelle_malformed_packets_total",
                &[("camera", camera)],
            ) == Some(4.0 * cycles as f64)
        },
    )
    .await;
    assert_eq!(fake.stats.malformed_sent.load(Ordering::SeqCst), 4 * cycles);

    // The corrupt RTP header after the script ends the session; the camera is retried
    // and plays again (later sessions send valid video only).
    wait_until(
        "a reconnect after the corrupt header",
        Duration::from_secs(10),
        || fake.stats.connections.load(Ordering::SeqCst) >= 2,
    )
    .await;
    let more = collect_packets(&mut sub, 10, Duration::from_secs(10)).await;
    assert_monotonic(packets.iter().chain(more.iter()).map(|p| p.timestamp));
    assert_eq!(
        metric(
            &metrics().render(),
            "passerelle_malformed_packets_total",
            &[("camera", camera)]
        ),
        Some(4.0 * cycles as f64),
        "nothing else counted"
    );
    healthy.assert_flowing(Duration::from_secs(1)).await;
    assert!(!ingest.handle.is_finished());
    ingest.stop().await;
    healthy.stop().await;
}

// ---------------------------------------------------------------------------------------
// Credentials

/// Runs on one thread so that the supervisors' log lines reach this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn credentials_are_used_but_never_logged() {
    metrics();
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let camsim = Camsim::start(any_port(), &[("sim/creds", BuiltinFixture::H264Main)]).await;
    let wrong_password = "wrong-password-91c2";
    let mut wrong = test_settings("gw/creds/wrong", &camsim.url("sim/creds"));
    wrong.credentials = Some((USER.to_owned(), wrong_password.to_owned()));
    wrong.on_demand = false;
    let wrong = Ingest::spawn(wrong);

    // Secrets in the URL are stripped and redacted; the credentials come from settings.
    let leaky_url = format!(
        "rtsp://leaky:url-secret-55d0@{}/sim/creds?token=query-secret-0b7e",
        camsim.addr
    );
    let mut leaky = test_settings("gw/creds/leaky", &leaky_url);
    leaky.on_demand = false;
    let leaky = Ingest::spawn(leaky);

    let status = wait_status(&wrong.handle, "refused", Duration::from_secs(10), |s| {
        s.state == CameraState::Failed
    })
    .await;
    assert!(!status.up);
    wait_until(
        "a log line about the refusal",
        Duration::from_secs(10),
        || {
            let text = captured.text();
            text.contains("gw/creds/wrong") && text.contains("401")
        },
    )
    .await;
    wait_until(
        "a log line about the other camera",
        Duration::from_secs(10),
        || captured.text().contains("gw/creds/leaky"),
    )
    .await;
    wrong.stop().await;
    leaky.stop().await;
    camsim.stop().await;
    let text = captured.text();
    for secret in [
        wrong_password,
        PASSWORD,
        "url-secret-55d0",
        "query-secret-0b7e",
    ] {
        assert!(!text.contains(secret), "{secret} logged:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------
// Ingest under test

/// One supervisor with its channel and shutdown switch.
struct Ingest {
    camera: String,
    channel: Channel,
    handle: IngestHandle,
    shutdown: watch::Sender<bool>,
}

impl Ingest {
    fn spawn(settings: IngestSettings) -> Ingest {
        let camera = settings.camera.to_string();
        let channel = Channel::new(settings.camera.clone(), ChannelSettings::default());
        let (shutdown, stop) = watch::channel(false);
        let handle = ingest::spawn(settings, channel.clone(), stop);
        Ingest {
            camera,
            channel,
            handle,
            shutdown,
        }
    }

    /// Signals shutdown; the supervisor must stop promptly.
    async fn stop(self) {
        let _ = self.shutdown.send(true);
        timeout(Duration::from_secs(5), self.handle.join())
            .await
            .expect("the supervisor stops within 5 s of shutdown")
            .expect("the supervisor did not panic");
    }
}

/// Short delays so a test sees several retries: back-off 0.1 s to 1 s, 3 s timeouts.
fn test_settings(camera: &str, camera_url: &str) -> IngestSettings {
    let mut settings = IngestSettings::new(cam(camera), url(camera_url));
    settings.credentials = Some((USER.to_owned(), PASSWORD.to_owned()));
    settings.linger = Duration::from_secs(1);
    settings.probe_interval = Duration::from_secs(3600);
    settings.request_timeout = Duration::from_secs(3);
    settings.stall_timeout = Duration::from_secs(3);
    settings.backoff_min = Duration::from_millis(100);
    settings.backoff_max = Duration::from_secs(1);
    settings
}

/// A camera-simulator camera ingested always-on, whose packets are counted.
struct Healthy {
    camsim: Camsim,
    ingest: Ingest,
    count: Arc<AtomicUsize>,
    counter: JoinHandle<()>,
}

impl Healthy {
    async fn start(camera: &str) -> Healthy {
        let camsim = Camsim::start(any_port(), &[("sim/healthy", BuiltinFixture::H264Main)]).await;
        let mut settings = test_settings(camera, &camsim.url("sim/healthy"));
        settings.on_demand = false;
        let ingest = Ingest::spawn(settings);
        let mut sub = ingest.channel.subscribe(SinkLabel::local());
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        let counter = tokio::spawn(async move {
            while let Some(event) = sub.recv().await {
                if let SinkEvent::Packet(_) = event {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let healthy = Healthy {
            camsim,
            ingest,
            count,
            counter,
        };
        wait_until("the healthy camera flows", Duration::from_secs(10), || {
            healthy.count.load(Ordering::SeqCst) > 0
        })
        .await;
        healthy
    }

    /// At 25 pictures per second, `over` brings at least one packet per picture; half
    /// of that is asked, leaving room for a loaded machine.
    async fn assert_flowing(&self, over: Duration) {
        let before = self.count.load(Ordering::SeqCst);
        sleep(over).await;
        let got = self.count.load(Ordering::SeqCst) - before;
        let pictures = (over.as_millis() / 40) as usize;
        assert!(
            got >= pictures / 2,
            "healthy camera: {got} packets in {over:?}"
        );
        assert_eq!(self.ingest.handle.status().state, CameraState::Playing);
    }

    async fn stop(self) {
        self.counter.abort();
        self.ingest.stop().await;
        self.camsim.stop().await;
    }
}

/// Packets and sender reports as a subscriber saw them.
#[derive(Default)]
struct Seen {
    packets: Vec<MediaPacket>,
    /// Each report's RTP time, with the timestamp of the last packet before it.
    reports: Vec<(u32, u32)>,
    /// Index in `packets` at which each report was seen.
    report_at: Vec<usize>,
}

impl Seen {
    fn record(&mut self, event: SinkEvent) {
        match event {
            SinkEvent::Packet(p) => self.packets.push(p),
            SinkEvent::SenderReport { rtp, .. } => {
                if let Some(last) = self.packets.last() {
                    self.reports.push((rtp, last.timestamp));
                    self.report_at.push(self.packets.len());
                }
            }
            SinkEvent::Dropped(n) => panic!("{n} packets dropped"),
        }
    }

    async fn collect(&mut self, sub: &mut Subscription, until: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.packets.len() < until {
            let event = timeout(
                deadline.saturating_duration_since(Instant::now()),
                sub.recv(),
            )
            .await
            .unwrap_or_else(|_| panic!("{} of {until} packets in {within:?}", self.packets.len()))
            .expect("channel open");
            self.record(event);
        }
    }

    /// Takes what is queued without waiting.
    fn drain(&mut self, sub: &mut Subscription) {
        let mut events = Vec::new();
        use futures::FutureExt as _;
        while let Some(true) = sub.recv_batch(&mut events, 256).now_or_never() {
            for event in events.drain(..) {
                self.record(event);
            }
        }
    }

    fn reports_after(&self, index: usize) -> usize {
        self.report_at.iter().filter(|&&at| at > index).count()
    }
}

/// Publishes sender reports on a source channel, with its latest packet's RTP time, as
/// a camera would every few hundred milliseconds.
fn spawn_sender_reports(source: Channel) -> JoinHandle<()> {
    let mut sub = source.subscribe(SinkLabel::local());
    tokio::spawn(async move {
        let mut n = 0u32;
        while let Some(event) = sub.recv().await {
            if let SinkEvent::Packet(p) = event {
                n += 1;
                if n.is_multiple_of(10) {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    source.sender_report(ntp_from_unix(now), p.timestamp);
                }
            }
        }
    })
}

async fn collect_packets(sub: &mut Subscription, n: usize, within: Duration) -> Vec<MediaPacket> {
    let mut seen = Seen::default();
    seen.collect(sub, n, within).await;
    seen.packets
}

/// A new sink gets the parameter sets, then a keyframe (RFC 6184/7798 decoders need both).
fn assert_starts_at_keyframe(packets: &[MediaPacket]) {
    let first = packets
        .iter()
        .find(|p| !p.parameter_set)
        .expect("a picture among the packets");
    assert!(first.keyframe_start, "a new sink starts at a keyframe");
}

/// Timestamps never step backwards (RFC 3550 modulo-2^32 comparison).
fn assert_monotonic(timestamps: impl Iterator<Item = u32>) {
    let mut previous: Option<u32> = None;
    for (i, ts) in timestamps.enumerate() {
        if let Some(p) = previous {
            let step = ts.wrapping_sub(p) as i32;
            assert!(step >= 0, "timestamp {i} steps back from {p} to {ts}");
        }
        previous = Some(ts);
    }
}

async fn wait_status(
    handle: &IngestHandle,
    what: &str,
    within: Duration,
    wanted: impl Fn(&CameraStatus) -> bool,
) -> CameraStatus {
    let mut status = handle.watch_status();
    match timeout(within, status.wait_for(|s| wanted(s))).await {
        Ok(Ok(s)) => *s,
        _ => panic!(
            "{what}: status still {:?} after {within:?}",
            handle.status()
        ),
    }
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Metrics

/// The process-wide recorder, installed before any test makes a channel or supervisor.
fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder in this test binary")
    })
}

/// The value of `name{labels...}` in a Prometheus text exposition.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

// ---------------------------------------------------------------------------------------
// The camera simulator behind passerelle's RTSP server

struct TestDirectory {
    mounts: HashMap<CameraId, Mount>,
}

impl CameraDirectory for TestDirectory {
    type Guard = ();

    fn mount(&self, camera: &CameraId) -> Option<Mount> {
        self.mounts.get(camera).cloned()
    }

    async fn open_view(&self, _viewer: &Viewer, _camera: &CameraId) -> Result<(), ViewRefusal> {
        Ok(())
    }
}

/// Simulated cameras served over RTSP, as a site's real cameras would be.
struct Camsim {
    addr: SocketAddr,
    sources: HashMap<String, Channel>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    players: Vec<JoinHandle<()>>,
}

impl Camsim {
    async fn start(listen: SocketAddr, cameras: &[(&str, BuiltinFixture)]) -> Camsim {
        let mut mounts = HashMap::new();
        let mut sources = HashMap::new();
        let mut players = Vec::new();
        for &(id, fixture) in cameras {
            let channel = Channel::new(cam(id), ChannelSettings::default());
            players.push(tokio::spawn(fixture.load().play(channel.clone())));
            mounts.insert(
                cam(id),
                Mount {
                    tracks: vec![channel.clone()],
                },
            );
            sources.insert(id.to_owned(), channel);
        }
        let settings = RtspSettings {
            listen,
            udp_ports: 43000..=43999,
            describe_timeout: Duration::from_secs(3),
            ..RtspSettings::default()
        };
        let users = vec![RtspUser {
            name: USER.to_owned(),
            kind: AgentKind::Service,
            secret: Secret::Password(PASSWORD.to_owned()),
            cameras: vec!["**".parse().unwrap()],
        }];
        let server = RtspServer::bind(settings, users, Arc::new(TestDirectory { mounts }))
            .await
            .expect("RTSP server binds");
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Camsim {
            addr,
            sources,
            stop: Some(stop),
            server: Some(server),
            players,
        }
    }

    fn url(&self, camera: &str) -> String {
        format!("rtsp://{}/{camera}", self.addr)
    }

    fn source(&self, camera: &str) -> &Channel {
        &self.sources[camera]
    }

    /// Stops the server (closing every connection) and the simulated cameras.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            timeout(Duration::from_secs(10), server)
                .await
                .expect("RTSP server stops")
                .expect("RTSP server did not panic");
        }
        for player in self.players.drain(..) {
            player.abort();
        }
    }
}

impl Drop for Camsim {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
        for player in &self.players {
            player.abort();
        }
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn cam(id: &str) -> CameraId {
    id.parse().unwrap()
}

fn url(text: &str) -> Url {
    Url::parse(text).unwrap()
}

// ---------------------------------------------------------------------------------------
// Fake cameras

/// What a fake camera does on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Reads the request, answers bytes that are not RTSP, closes.
    Garbage,
    /// Plays this many packets (an IDR, its sender report, then P slices), then closes.
    CloseAfter(usize),
    /// First session: `cycles` of {IDR, four malformed payloads, P slice}, then an RTP
    /// header of version 1. Later sessions: valid video only.
    Malformed { cycles: usize },
    /// Offers audio, video and metadata, in that order; plays H.264 on what is set up.
    AudioFirst,
    /// Offers audio and metadata only.
    AudioOnly,
}

/// The NTP seconds of the fake cameras' sender reports.
const FAKE_NTP_SECONDS: u64 = 3_900_000_000;

#[derive(Default)]
struct FakeStats {
    connections: AtomicUsize,
    /// The URL of every SETUP request.
    setups: Mutex<Vec<String>>,
    malformed_sent: AtomicUsize,
}

/// A small RTSP server that speaks just enough for the client, then misbehaves.
struct FakeCamera {
    addr: SocketAddr,
    stats: Arc<FakeStats>,
    task: JoinHandle<()>,
}

impl FakeCamera {
    async fn start(script: Script) -> FakeCamera {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(FakeStats::default());
        let shared = stats.clone();
        let task = tokio::spawn(async move {
            // Aborting the accept task drops the set, which aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let session = shared.connections.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(serve_fake(stream, script, session, shared.clone()));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        FakeCamera { addr, stats, task }
    }

    fn url(&self, path: &str) -> String {
        format!("rtsp://{}/{path}", self.addr)
    }
}

impl Drop for FakeCamera {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Request {
    method: String,
    uri: String,
    cseq: String,
    transport: Option<String>,
}

/// Takes one request (or skips one interleaved frame) from `buf`.
fn take_request(buf: &mut BytesMut) -> Option<Option<Request>> {
    if buf.first() == Some(&b'$') {
        if buf.len() < 4 {
            return None;
        }
        let len = 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() < len {
            return None;
        }
        let _ = buf.split_to(len);
        return Some(None);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let body = header("Content-Length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if buf.len() < end + body {
        return None;
    }
    let _ = buf.split_to(end + body);
    let mut first = head.lines().next().unwrap_or_default().split_whitespace();
    Some(Some(Request {
        method: first.next().unwrap_or_default().to_owned(),
        uri: first.next().unwrap_or_default().to_owned(),
        cseq: header("CSeq").unwrap_or_default(),
        transport: header("Transport"),
    }))
}

fn fake_sdp(script: Script) -> String {
    let mut sdp = String::from(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=fake\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=control:*\r\n",
    );
    let audio = "m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=control:trackID=audio\r\n";
    let video = "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
                 a=fmtp:96 packetization-mode=1;profile-level-id=4D001F;sprop-parameter-sets=Z00AH5WoFAFuQA==,aO48gA==\r\n\
                 a=control:trackID=video\r\n";
    let meta = "m=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\na=control:trackID=meta\r\n";
    match script {
        Script::AudioFirst => {
            sdp.push_str(audio);
            sdp.push_str(video);
            sdp.push_str(meta);
        }
        Script::AudioOnly => {
            sdp.push_str(audio);
            sdp.push_str(meta);
        }
        _ => sdp.push_str(video),
    }
    sdp
}

/// Serves one connection of a fake camera.
async fn serve_fake(mut stream: TcpStream, script: Script, session: usize, stats: Arc<FakeStats>) {
    if script == Script::Garbage {
        let mut request = [0u8; 2048];
        let _ = timeout(Duration::from_secs(2), stream.read(&mut request)).await;
        let mut garbage = b"HTTP/1.1 418 I'm a teapot\r\n\x00\x01\xff".to_vec();
        let mut x: u32 = 0x2545_f491;
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            garbage.push(x as u8);
        }
        let _ = stream.write_all(&garbage).await;
        return;
    }
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(4096);
    let mut channel: Option<u8> = None;
    let mut playing = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut player = FakePlayer::new(script, session);
    loop {
        tokio::select! {
            read = stream.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
                while let Some(request) = take_request(&mut buf) {
                    let Some(request) = request else { continue };
                    let mut reply = format!("RTSP/1.0 200 OK\r\nCSeq: {}\r\n", request.cseq);
                    let mut body = String::new();
                    match request.method.as_str() {
                        "DESCRIBE" => {
                            body = fake_sdp(script);
                            reply.push_str(&format!(
                                "Content-Base: {}/\r\nContent-Type: application/sdp\r\n",
                                request.uri.trim_end_matches('/')
                            ));
                        }
                        "SETUP" => {
                            stats.setups.lock().unwrap().push(request.uri.clone());
                            let interleaved = request
                                .transport
                                .as_deref()
                                .and_then(|t| t.split(';').find_map(|p| p.strip_prefix("interleaved=")))
                                .and_then(|p| p.split('-').next())
                                .and_then(|n| n.parse::<u8>().ok());
                            let Some(n) = interleaved else {
                                reply = format!("RTSP/1.0 461 Unsupported Transport\r\nCSeq: {}\r\n", request.cseq);
                                reply.push_str("\r\n");
                                let _ = stream.write_all(reply.as_bytes()).await;
                                continue;
                            };
                            channel = Some(n);
                            reply.push_str(&format!(
                                "Session: FAKE{session};timeout=60\r\nTransport: RTP/AVP/TCP;unicast;interleaved={}-{}\r\n",
                                n,
                                n + 1
                            ));
                        }
                        "PLAY" => {
                            reply.push_str(&format!("Session: FAKE{session}\r\n"));
                            playing = channel.is_some();
                        }
                        "TEARDOWN" => {
                            reply.push_str("\r\n");
                            let _ = stream.write_all(reply.as_bytes()).await;
                            return;
                        }
                        _ => reply.push_str("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"),
                    }
                    reply.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
            _ = ticker.tick(), if playing => {
                let Some(n) = channel else { continue };
                match player.next(n, &mut out, &stats) {
                    Step::Send => {}
                    Step::SendThenClose => {
                        let _ = stream.write_all(&out).await;
                        return;
                    }
                    Step::SendThenIdle => playing = false,
                }
                if stream.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
        }
    }
}

enum Step {
    Send,
    SendThenClose,
    /// Send, then stop sending (the connection stays open until the client leaves).
    SendThenIdle,
}

/// The media side of a fake camera: RTP and RTCP frames, interleaved.
struct FakePlayer {
    script: Script,
    session: usize,
    tick: usize,
    base: u32,
    ssrc: u32,
    seq: u16,
}

/// A valid IDR slice and P slice: classification reads only the NAL header.
const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff, 0x01, 0x02];
const P_SLICE: &[u8] = &[0x41, 0x9a, 0x02, 0x04, 0x08, 0x10];
/// Payloads that no H.264 packetization allows.
const MALFORMED: [&[u8]; 4] = [
    // Empty.
    &[],
    // NAL type 30: reserved, not a packet type of RFC 6184 §5.2.
    &[0x1e, 0x01, 0x02],
    // FU-A without its FU header.
    &[0x7c],
    // STAP-A whose unit claims 16 bytes where 1 remains.
    &[0x78, 0x00, 0x10, 0x65],
];

impl FakePlayer {
    fn new(script: Script, session: usize) -> Self {
        FakePlayer {
            script,
            session,
            tick: 0,
            base: rand::random(),
            ssrc: rand::random(),
            seq: rand::random(),
        }
    }

    fn rtp(&mut self, channel: u8, out: &mut BytesMut, payload: &[u8], timestamp: u32) {
        let header = RtpHeader {
            marker: true,
            payload_type: 96,
            sequence: self.seq,
            timestamp,
            ssrc: self.ssrc,
        };
        self.seq = self.seq.wrapping_add(1);
        out.put_u8(b'$');
        out.put_u8(channel);
        out.put_u16((12 + payload.len()) as u16);
        header.write_into(out);
        out.put_slice(payload);
    }

    fn sender_report(&self, channel: u8, out: &mut BytesMut, rtp: u32) {
        let start = out.len();
        out.put_slice(&[b'$', channel + 1, 0, 0]);
        SenderReport {
            ssrc: self.ssrc,
            ntp_timestamp: (FAKE_NTP_SECONDS << 32) | self.session as u64,
            rtp_timestamp: rtp,
            packet_count: 1,
            octet_count: IDR.len() as u32,
        }
        .write_into(out);
        let len = (out.len() - start - 4) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends this tick's frames to `out`.
    fn next(&mut self, channel: u8, out: &mut BytesMut, stats: &FakeStats) -> Step {
        let tick = self.tick;
        self.tick += 1;
        let ts = self.base.wrapping_add(tick as u32 * TICKS_PER_FRAME);
        match self.script {
            Script::Malformed { cycles } if self.session == 0 => {
                if tick < cycles {
                    self.rtp(channel, out, IDR, ts);
                    for payload in MALFORMED {
                        self.rtp(channel, out, payload, ts);
                        stats.malformed_sent.fetch_add(1, Ordering::SeqCst);
                    }
                    self.rtp(channel, out, P_SLICE, ts.wrapping_add(TICKS_PER_FRAME / 2));
                    Step::Send
                } else {
                    // Version 1 in the first byte: not an RTP packet the client can read.
                    out.put_slice(&[b'$', channel, 0, 12]);
                    out.put_slice(&[0x40, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
                    Step::SendThenIdle
                }
            }
            Script::CloseAfter(n) => {
                if tick == 0 {
                    self.rtp(channel, out, IDR, ts);
                    self.sender_report(channel, out, ts);
                } else {
                    self.rtp(channel, out, P_SLICE, ts);
                }
                if tick + 1 >= n {
                    Step::SendThenClose
                } else {
                    Step::Send
                }
            }
            _ => {
                let payload = if tick.is_multiple_of(25) {
                    IDR
                } else {
                    P_SLICE
                };
                self.rtp(channel, out, payload, ts);
                Step::Send
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Log capture

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}
