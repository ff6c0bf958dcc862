//! The per-camera supervisor task: probe, connect, forward, linger, back off.

use std::ops::ControlFlow;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt as _, StreamExt as _};
use metrics::{Counter, Gauge};
use retina::client::{
    Credentials, Described, PacketItem, PlayOptions, Playing, Session, SessionOptions,
    SetupOptions, Transport,
};
use retina::rtcp::ReceivedCompoundPacket;
use retina::rtp::ReceivedPacket;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use url::Url;

use super::continuity::TimestampContinuity;
use super::jitter::Jitter;
use super::redact::{redact_url, scrub, secrets, without_userinfo};
use super::sdp::{Offered, VideoChoice, choose_video};
use super::{CameraState, CameraStatus, IngestError, IngestSettings, IngestTransport, RtspStep};
use crate::backoff::Backoff;
use crate::channel::Channel;
use crate::ids::CameraId;
use crate::log_limit::LogLimiter;
use crate::media::h26x;
use crate::media::rtp::{RtcpPacket, parse_rtcp};
use crate::media::{Codec, MediaPacket, StreamInfo};

/// A session that played this long was healthy: its failure restarts the back-off from
/// the floor instead of growing it.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// At most one log line of each kind per camera per interval; the others are counted.
const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Packets handled per wake-up before the supervisor looks at shutdown, viewers and
/// timers again, and lets other cameras' tasks run.
const PACKET_BATCH: usize = 64;

/// How a session (or the wait for one) ended.
enum Ended {
    /// Shutdown was signalled.
    Shutdown,
    /// An on-demand camera lost its last viewer `linger` ago.
    Lingered,
    /// The session failed after playing for `played`.
    Failed {
        error: IngestError,
        played: Duration,
    },
}

impl Ended {
    fn failed(error: IngestError) -> Self {
        Ended::Failed {
            error,
            played: Duration::ZERO,
        }
    }
}

/// The camera as the RTSP client sees it: URL without userinfo, credentials apart, and
/// what every error and log line shows instead.
struct Target {
    camera: CameraId,
    url: Url,
    credentials: Option<Credentials>,
    redacted: String,
    secrets: Vec<String>,
}

impl Target {
    fn new(settings: &IngestSettings) -> Self {
        let credentials = settings
            .credentials
            .as_ref()
            .map(|(username, password)| Credentials {
                username: username.clone(),
                password: password.clone(),
            });
        Target {
            camera: settings.camera.clone(),
            url: without_userinfo(&settings.url),
            redacted: redact_url(&settings.url),
            secrets: secrets(
                &settings.url,
                credentials.as_ref().map(|c| c.password.as_str()),
            ),
            credentials,
        }
    }

    fn session_options(&self) -> SessionOptions {
        SessionOptions::default()
            .creds(self.credentials.clone())
            .user_agent(concat!("passerelle/", env!("CARGO_PKG_VERSION")).to_owned())
    }

    fn rtsp_error(&self, step: RtspStep, error: &retina::Error) -> IngestError {
        IngestError::Rtsp {
            camera: self.camera.clone(),
            url: self.redacted.clone(),
            step,
            status: error.status_code(),
            detail: scrub(&error.to_string(), &self.secrets),
        }
    }

    fn timeout(&self, step: RtspStep, after: Duration) -> IngestError {
        IngestError::Timeout {
            camera: self.camera.clone(),
            url: self.redacted.clone(),
            step,
            after,
        }
    }
}

/// The stream being pulled.
struct Video {
    index: usize,
    codec: Codec,
    clock_rate: u32,
}

/// Per-packet state: everything the hot path touches.
struct Forwarder {
    channel: Channel,
    camera: CameraId,
    redacted: String,
    timestamps: TimestampContinuity,
    jitter: Jitter,
    quality: StreamMetrics,
    malformed: Counter,
    malformed_log: LogLimiter,
    last_packet: Instant,
    arena: PacketArena,
}

/// What the camera's stream looks like on arrival, before anything is dropped.
struct StreamMetrics {
    /// `passerelle_ingest_bytes_total{camera}`: RTP payload bytes.
    bytes: Counter,
    /// `passerelle_ingest_lost_packets_total{camera}`: sequence-number gaps.
    lost: Counter,
    /// `passerelle_ingest_jitter_seconds{camera}`: RFC 3550 interarrival jitter.
    jitter: Gauge,
}

/// Packets copied into large shared buffers. retina hands each packet over in its own
/// `Vec`, and a `Bytes` made from a `Vec` allocates again on its first clone (the
/// fan-out); a ~1 KB copy into a 64 KiB chunk costs less than that allocation and makes
/// one allocation per chunk instead of one per packet.
#[derive(Default)]
struct PacketArena {
    chunk: BytesMut,
}

impl PacketArena {
    const CHUNK: usize = 64 * 1024;

    fn copy(&mut self, payload: &[u8]) -> Bytes {
        if self.chunk.capacity() - self.chunk.len() < payload.len() {
            self.chunk = BytesMut::with_capacity(Self::CHUNK.max(payload.len()));
        }
        self.chunk.extend_from_slice(payload);
        self.chunk.split().freeze()
    }
}

impl Forwarder {
    /// Forwards one RTP packet of the video stream; packets of any other stream (none
    /// is set up) are ignored.
    fn rtp(&mut self, packet: ReceivedPacket, video: &Video) {
        if packet.stream_id() != video.index {
            return;
        }
        let now = Instant::now();
        self.last_packet = now;
        let header = packet.header();
        let camera_timestamp = header.timestamp();
        let marker = header.mark();
        let quality = &self.quality;
        quality.bytes.increment(packet.payload().len() as u64);
        // Packets missing before this one, from the sequence numbers (retina).
        let lost = packet.loss();
        if lost > 0 {
            quality.lost.increment(u64::from(lost));
        }
        quality
            .jitter
            .set(self.jitter.update(camera_timestamp, now));
        let payload = self.arena.copy(packet.payload());
        match h26x::classify(video.codec, &payload) {
            Ok(info) => {
                let mapped = self.timestamps.map(camera_timestamp, now);
                if mapped.discontinuity {
                    self.channel.reset_cache();
                }
                self.channel.publish(MediaPacket {
                    payload,
                    timestamp: mapped.timestamp,
                    marker,
                    keyframe_start: info.keyframe_start,
                    parameter_set: info.parameter_set,
                });
            }
            Err(error) => {
                self.malformed.increment(1);
                if let Some(suppressed) = self.malformed_log.check(now) {
                    tracing::warn!(
                        camera = %self.camera,
                        url = %self.redacted,
                        ssrc = %format_args!("{:08x}", header.ssrc()),
                        sequence = header.sequence_number(),
                        %error,
                        suppressed,
                        "malformed video payload dropped"
                    );
                }
            }
        }
    }

    /// Passes the camera's sender reports on, with the packets' offset.
    fn rtcp(&mut self, compound: &ReceivedCompoundPacket, video: &Video) {
        if compound.stream_id() != video.index {
            return;
        }
        for packet in parse_rtcp(compound.raw()).flatten() {
            if let RtcpPacket::SenderReport(report) = packet
                && let Some(rtp) = self.timestamps.map_sender_report(report.rtp_timestamp)
            {
                self.channel.sender_report(report.ntp_timestamp, rtp);
            }
        }
    }
}

struct CameraMetrics {
    /// One gauge per [`CameraState::ALL`] entry.
    states: Vec<Gauge>,
    up: Gauge,
}

/// One camera's supervisor.
///
/// Drive it with [`Supervisor::run`] until shutdown. It loops: while the camera is
/// wanted (always-on, or an on-demand camera with viewers) it connects, forwards until
/// the session ends, and backs off after a failure; otherwise it waits for a viewer,
/// probing every `probe_interval`.
pub(super) struct Supervisor {
    settings: IngestSettings,
    target: Target,
    channel: Channel,
    shutdown: watch::Receiver<bool>,
    subscribers: watch::Receiver<usize>,
    status: watch::Sender<CameraStatus>,
    metrics: CameraMetrics,
    backoff: Backoff,
    forward: Forwarder,
    failure_log: LogLimiter,
    playing_log: LogLimiter,
    sdp_log: LogLimiter,
}

impl Supervisor {
    pub(super) fn new(
        settings: IngestSettings,
        channel: Channel,
        shutdown: watch::Receiver<bool>,
        status: watch::Sender<CameraStatus>,
    ) -> Self {
        let label = settings.camera.to_string();
        let metrics = CameraMetrics {
            states: CameraState::ALL
                .iter()
                .map(|state| {
                    metrics::gauge!("passerelle_camera_state", "camera" => label.clone(), "state" => state.as_str())
                })
                .collect(),
            up: metrics::gauge!("passerelle_camera_up", "camera" => label.clone()),
        };
        let target = Target::new(&settings);
        let forward = Forwarder {
            channel: channel.clone(),
            camera: settings.camera.clone(),
            redacted: target.redacted.clone(),
            timestamps: TimestampContinuity::new(),
            jitter: Jitter::new(),
            quality: StreamMetrics {
                bytes: metrics::counter!("passerelle_ingest_bytes_total", "camera" => label.clone()),
                lost: metrics::counter!("passerelle_ingest_lost_packets_total", "camera" => label.clone()),
                jitter: metrics::gauge!("passerelle_ingest_jitter_seconds", "camera" => label.clone()),
            },
            malformed: metrics::counter!("passerelle_malformed_packets_total", "camera" => label),
            malformed_log: LogLimiter::new(LOG_INTERVAL),
            last_packet: Instant::now(),
            arena: PacketArena::default(),
        };
        Supervisor {
            backoff: Backoff::new(settings.backoff_min, settings.backoff_max),
            subscribers: channel.watch_subscribers(),
            target,
            channel,
            shutdown,
            status,
            metrics,
            forward,
            failure_log: LogLimiter::new(LOG_INTERVAL),
            playing_log: LogLimiter::new(LOG_INTERVAL),
            sdp_log: LogLimiter::new(LOG_INTERVAL),
            settings,
        }
    }

    pub(super) async fn run(mut self) {
        self.set_status(CameraState::Idle, false);
        // The first probe runs at once, so the catalog knows the camera from the start.
        let mut next_probe = Instant::now();
        while !self.stopping() {
            if self.wanted() {
                match self.pull().await {
                    Ended::Shutdown => break,
                    Ended::Lingered => {
                        tracing::debug!(camera = %self.target.camera, "no viewer left, session torn down");
                        self.backoff.reset();
                        self.set_status(CameraState::Idle, true);
                        next_probe = Instant::now() + self.settings.probe_interval;
                    }
                    Ended::Failed { error, played } => {
                        if played >= HEALTHY_SESSION {
                            self.backoff.reset();
                        }
                        let answered = matches!(error, IngestError::NoVideo { .. });
                        self.set_status(CameraState::Failed, answered);
                        let delay = self.backoff.next_delay(rand::random());
                        self.log_failure(&error, Some(delay));
                        next_probe = Instant::now() + self.settings.probe_interval;
                        if self.pause(delay).await.is_break() {
                            break;
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                () = shutdown_signalled(&mut self.shutdown) => break,
                // The sender lives in the channel, which this task holds: never closed.
                () = self.subscribers.wait_for(|viewers| *viewers > 0).map(drop) => {}
                () = sleep_until(next_probe) => {
                    if self.probe().await.is_break() {
                        break;
                    }
                    next_probe = Instant::now() + self.settings.probe_interval;
                }
            }
        }
        let up = self.status.borrow().up;
        self.set_status(CameraState::Idle, up);
        tracing::debug!(camera = %self.target.camera, "ingest stopped");
    }

    /// Whether shutdown was signalled (or its sender dropped).
    fn stopping(&self) -> bool {
        *self.shutdown.borrow() || self.shutdown.has_changed().is_err()
    }

    /// Whether the camera should be pulled now.
    fn wanted(&self) -> bool {
        !self.settings.on_demand || *self.subscribers.borrow() > 0
    }

    /// Sleeps `delay`, or until shutdown (`Break`).
    async fn pause(&mut self, delay: Duration) -> ControlFlow<()> {
        tokio::select! {
            () = shutdown_signalled(&mut self.shutdown) => ControlFlow::Break(()),
            () = sleep(delay) => ControlFlow::Continue(()),
        }
    }

    /// One DESCRIBE: refreshes the state, `up` and the channel's stream description.
    async fn probe(&mut self) -> ControlFlow<()> {
        let described = tokio::select! {
            () = shutdown_signalled(&mut self.shutdown) => return ControlFlow::Break(()),
            described = describe(&self.target, self.settings.request_timeout) => described,
        };
        match described {
            Ok((session, choice, clock_rate)) => {
                // Dropped before SETUP: there is no session to tear down.
                drop(session);
                self.publish_info(&choice, clock_rate);
                self.set_status(CameraState::Idle, true);
            }
            Err(error) => {
                let answered = matches!(error, IngestError::NoVideo { .. });
                self.set_status(CameraState::Failed, answered);
                self.log_failure(&error, None);
            }
        }
        ControlFlow::Continue(())
    }

    /// Connects and forwards until the session ends.
    async fn pull(&mut self) -> Ended {
        let up = self.status.borrow().up;
        self.set_status(CameraState::Connecting, up);
        let connected = tokio::select! {
            () = shutdown_signalled(&mut self.shutdown) => return Ended::Shutdown,
            connected = connect(&self.target, &self.settings) => connected,
        };
        let (session, choice, clock_rate) = match connected {
            Ok(connected) => connected,
            Err(error) => return Ended::failed(error),
        };
        self.publish_info(&choice, clock_rate);
        let video = Video {
            index: choice.index,
            codec: choice.codec,
            clock_rate,
        };
        self.set_status(CameraState::Playing, true);
        if let Some(suppressed) = self.playing_log.check(Instant::now()) {
            tracing::info!(
                camera = %self.target.camera,
                url = %self.target.redacted,
                codec = video.codec.encoding_name(),
                transport = ?self.settings.transport,
                suppressed,
                "camera playing"
            );
        }
        self.forward.timestamps.begin_session(video.clock_rate);
        self.forward.jitter.begin_session(video.clock_rate);
        let started = Instant::now();
        let ended = self.stream(session, &video).await;
        // The cached pictures belong to a session that is over: a viewer arriving before
        // the next one must wait for its keyframe, not replay stale video.
        self.channel.reset_cache();
        match ended {
            Ended::Failed { error, .. } => Ended::Failed {
                error,
                played: started.elapsed(),
            },
            other => other,
        }
    }

    /// Forwards the session's packets until shutdown, linger, stall or error. Dropping
    /// the session on return sends TEARDOWN.
    async fn stream(&mut self, mut session: Session<Playing>, video: &Video) -> Ended {
        let on_demand = self.settings.on_demand;
        let linger = self.settings.linger;
        let stall_after = self.settings.stall_timeout;
        let mut watching = on_demand;
        let mut lingering = on_demand && *self.subscribers.borrow_and_update() == 0;
        let linger_timer = sleep(linger);
        tokio::pin!(linger_timer);
        // One timer re-armed lazily, rather than a new one per packet.
        self.forward.last_packet = Instant::now();
        let stall_timer = sleep(stall_after);
        tokio::pin!(stall_timer);
        loop {
            tokio::select! {
                biased;
                () = shutdown_signalled(&mut self.shutdown) => return Ended::Shutdown,
                changed = self.subscribers.changed(), if watching => {
                    // The sender lives in the channel this task holds; if it ever
                    // closed, stop watching rather than spin.
                    watching = changed.is_ok();
                    let viewers = *self.subscribers.borrow_and_update();
                    if viewers > 0 {
                        lingering = false;
                    } else if !lingering {
                        lingering = true;
                        linger_timer.as_mut().reset(Instant::now() + linger);
                    }
                }
                () = &mut linger_timer, if lingering => return Ended::Lingered,
                item = session.next() => {
                    if let Some(ended) = self.handle_item(item, video) {
                        return ended;
                    }
                    // Drain what is already buffered, up to a bound.
                    for _ in 1..PACKET_BATCH {
                        let Some(item) = session.next().now_or_never() else {
                            break;
                        };
                        if let Some(ended) = self.handle_item(item, video) {
                            return ended;
                        }
                    }
                }
                () = &mut stall_timer => {
                    let deadline = self.forward.last_packet + stall_after;
                    if Instant::now() >= deadline {
                        return Ended::failed(IngestError::Stalled {
                            camera: self.target.camera.clone(),
                            url: self.target.redacted.clone(),
                            after: stall_after,
                        });
                    }
                    stall_timer.as_mut().reset(deadline);
                }
            }
        }
    }

    /// Handles one item of the session's stream; `Some` when the session is over.
    fn handle_item(
        &mut self,
        item: Option<Result<PacketItem, retina::Error>>,
        video: &Video,
    ) -> Option<Ended> {
        match item {
            Some(Ok(PacketItem::Rtp(packet))) => self.forward.rtp(packet, video),
            Some(Ok(PacketItem::Rtcp(compound))) => self.forward.rtcp(&compound, video),
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                return Some(Ended::failed(
                    self.target.rtsp_error(RtspStep::Stream, &error),
                ));
            }
            None => {
                return Some(Ended::failed(IngestError::EndOfStream {
                    camera: self.target.camera.clone(),
                    url: self.target.redacted.clone(),
                }));
            }
        }
        None
    }

    /// Gives the channel the codec and parameter sets from the SDP. Without parameter
    /// sets in the SDP, the ones the channel learned in band are kept.
    fn publish_info(&mut self, choice: &VideoChoice, clock_rate: u32) {
        if let Some(problem) = &choice.fmtp_problem
            && let Some(suppressed) = self.sdp_log.check(Instant::now())
        {
            tracing::warn!(
                camera = %self.target.camera,
                url = %self.target.redacted,
                %problem,
                suppressed,
                "SDP parameter sets unreadable; waiting for them in band"
            );
        }
        let parameter_sets: Vec<Bytes> = if choice.parameter_sets.is_empty() {
            self.channel
                .info()
                .filter(|info| info.codec == choice.codec)
                .map(|info| info.parameter_sets)
                .unwrap_or_default()
        } else {
            choice.parameter_sets.clone()
        };
        self.channel.set_info(StreamInfo {
            codec: choice.codec,
            clock_rate,
            parameter_sets,
        });
    }

    fn set_status(&mut self, state: CameraState, up: bool) {
        for (candidate, gauge) in CameraState::ALL.iter().zip(&self.metrics.states) {
            gauge.set(if *candidate == state { 1.0 } else { 0.0 });
        }
        self.metrics.up.set(if up { 1.0 } else { 0.0 });
        let status = CameraStatus { state, up };
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }

    fn log_failure(&mut self, error: &IngestError, retry_in: Option<Duration>) {
        if let Some(suppressed) = self.failure_log.check(Instant::now()) {
            tracing::warn!(
                camera = %self.target.camera,
                url = %self.target.redacted,
                retry_in = ?retry_in,
                suppressed,
                %error,
                "camera ingest failed"
            );
        }
    }
}

/// Resolves once shutdown is signalled or its sender is gone.
async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    // Err means the sender was dropped: the application is going away too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Connects and DESCRIBEs, then chooses the video stream.
async fn describe(
    target: &Target,
    request_timeout: Duration,
) -> Result<(Session<Described>, VideoChoice, u32), IngestError> {
    let described = timeout(
        request_timeout,
        Session::describe(target.url.clone(), target.session_options()),
    )
    .await;
    let session = match described {
        Err(_) => return Err(target.timeout(RtspStep::Describe, request_timeout)),
        Ok(Err(error)) => return Err(target.rtsp_error(RtspStep::Describe, &error)),
        Ok(Ok(session)) => session,
    };
    let chosen = {
        let offered: Vec<Offered<'_>> = session
            .streams()
            .iter()
            .map(|stream| Offered {
                media: stream.media(),
                encoding: stream.encoding_name(),
                payload_type: stream.rtp_payload_type(),
                control: stream.control().map(Url::as_str),
            })
            .collect();
        choose_video(&offered, session.sdp())
    };
    let choice = chosen.map_err(|offered| IngestError::NoVideo {
        camera: target.camera.clone(),
        url: target.redacted.clone(),
        offered,
    })?;
    let clock_rate = session
        .streams()
        .get(choice.index)
        .map_or(90_000, |stream| stream.clock_rate_hz());
    Ok((session, choice, clock_rate))
}

/// DESCRIBE, SETUP of the video stream only, PLAY; each step within `request_timeout`.
async fn connect(
    target: &Target,
    settings: &IngestSettings,
) -> Result<(Session<Playing>, VideoChoice, u32), IngestError> {
    let after = settings.request_timeout;
    let (mut session, choice, clock_rate) = describe(target, after).await?;
    let transport = match settings.transport {
        IngestTransport::Tcp => Transport::Tcp(Default::default()),
        IngestTransport::Udp => Transport::Udp(Default::default()),
    };
    let setup = SetupOptions::default().transport(transport);
    match timeout(after, session.setup(choice.index, setup)).await {
        Err(_) => return Err(target.timeout(RtspStep::Setup, after)),
        Ok(Err(error)) => return Err(target.rtsp_error(RtspStep::Setup, &error)),
        Ok(Ok(())) => {}
    }
    let playing = match timeout(after, session.play(PlayOptions::default())).await {
        Err(_) => return Err(target.timeout(RtspStep::Play, after)),
        Ok(Err(error)) => return Err(target.rtsp_error(RtspStep::Play, &error)),
        Ok(Ok(playing)) => playing,
    };
    Ok((playing, choice, clock_rate))
}
