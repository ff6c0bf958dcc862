//! Camera ingest: pulls one IP camera's video over RTSP (the `retina` client) into its
//! [`Channel`].
//!
//! One supervisor task per camera ([`spawn`]) owns the camera's RTSP sessions:
//!
//! - **What is pulled.** The first H.264 or H.265 video stream of the camera's SDP is set
//!   up, over TCP-interleaved RTP by default or UDP. Audio and metadata streams are never
//!   set up (recording sound is outside video-protection authorisations); a camera with
//!   no carriable video stream is `failed`, with a log line saying what it offered.
//! - **When.** On demand (the default), the camera is pulled while the channel has
//!   subscribers, and for `linger` after the last one leaves; then the session is torn
//!   down. Always-on cameras are pulled all the time.
//! - **Probe.** While not playing, a DESCRIBE every `probe_interval` (and one at start)
//!   keeps `passerelle_camera_state{camera,state}` and `passerelle_camera_up{camera}`
//!   fresh and gives the channel the codec and parameter sets from the SDP, so the
//!   catalog can describe the camera and a broken camera is found before an emergency.
//! - **Packets.** Each video RTP packet becomes a [`MediaPacket`] whose payload is
//!   copied once into a shared 64 KiB buffer (one allocation per buffer, not per
//!   packet), classified by [`h26x::classify`]. A payload that
//!   does not classify is dropped and counted in `passerelle_malformed_packets_total`.
//!   RTCP sender reports go to [`Channel::sender_report`].
//! - **Quality.** Per camera, as received: `passerelle_ingest_bytes_total` (RTP payload
//!   bytes), `passerelle_ingest_lost_packets_total` (sequence-number gaps) and
//!   `passerelle_ingest_jitter_seconds` (RFC 3550 §6.4.1 interarrival jitter from arrival
//!   times and RTP timestamps), updated per packet without allocating.
//! - **Time.** Timestamps keep the camera's clock, offset across sessions so they never
//!   step backwards: a new session continues just after the last forwarded packet, plus
//!   the wall time elapsed (`continuity`). The channel's keyframe cache is reset at the
//!   discontinuity; sender reports get the same offset.
//! - **Failures.** Errors (refused connection, RTSP error, garbage, end of stream, no
//!   packet for `stall_timeout`) end the session; the next attempt waits an exponential
//!   back-off with jitter (0.5 s doubling to 30 s by default). Logs name the camera and
//!   its redacted URL, never credentials, and are rate-limited.
//! - **Keyframe requests** from the channel are not forwarded: the RTSP client cannot
//!   send RTCP feedback, and most cameras ignore it; the channel's keyframe cache is what
//!   new viewers start from.
//!
//! Layer 2: imports the channel and the media core, nothing from the other adapters.

mod continuity;
mod jitter;
mod redact;
mod sdp;
mod supervisor;

use std::fmt;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use url::Url;

use crate::channel::Channel;
use crate::ids::CameraId;
#[cfg(doc)]
use crate::media::{MediaPacket, h26x};

pub use redact::redact_url;

/// How RTP comes from a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IngestTransport {
    /// Interleaved in the RTSP TCP connection (RFC 2326 §10.12): crosses NAT and
    /// firewalls, no loss, no reordering.
    #[default]
    Tcp,
    /// RTP/RTCP over UDP. The client has no reorder buffer: late packets are dropped.
    Udp,
}

/// Validated settings of one camera's ingest, built by the composition layer from the
/// camera's configuration (credentials already read from their file).
#[derive(Clone)]
pub struct IngestSettings {
    /// The camera's id: the label of its metrics and log lines.
    pub camera: CameraId,
    /// Its RTSP URL. User name and password in the URL are removed, never used: they
    /// belong in `credentials`.
    pub url: Url,
    /// User name and password for Digest (or Basic) authentication. A secret: never
    /// logged, redacted from `Debug`.
    pub credentials: Option<(String, String)>,
    /// Pulled only while watched (plus `linger`), or always.
    pub on_demand: bool,
    /// How RTP comes from the camera.
    pub transport: IngestTransport,
    /// How long an on-demand camera stays pulled after its last viewer leaves.
    pub linger: Duration,
    /// Interval of the DESCRIBE probe while the camera is not playing.
    pub probe_interval: Duration,
    /// How long each RTSP step (connect and DESCRIBE, SETUP, PLAY) may take.
    pub request_timeout: Duration,
    /// A playing session that brings no video packet for this long is restarted.
    pub stall_timeout: Duration,
    /// First reconnect delay after a failure; doubles at each further failure.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl IngestSettings {
    /// Settings for `camera` at `url` with the defaults: on demand, TCP, 30 s linger,
    /// 60 s probe, 10 s per request, 10 s stall timeout, back-off 0.5 s to 30 s.
    pub fn new(camera: CameraId, url: Url) -> Self {
        IngestSettings {
            camera,
            url,
            credentials: None,
            on_demand: true,
            transport: IngestTransport::Tcp,
            linger: Duration::from_secs(30),
            probe_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for IngestSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestSettings")
            .field("camera", &self.camera)
            .field("url", &redact_url(&self.url))
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("on_demand", &self.on_demand)
            .field("transport", &self.transport)
            .field("linger", &self.linger)
            .field("probe_interval", &self.probe_interval)
            .field("request_timeout", &self.request_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .finish()
    }
}

/// A camera's ingest state, as in `passerelle_camera_state{camera,state}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CameraState {
    /// Not pulled: nobody watches an on-demand camera. Its last probe succeeded (or none
    /// has run yet).
    Idle,
    /// Connecting: DESCRIBE, SETUP and PLAY in progress.
    Connecting,
    /// Pulling video into the channel.
    Playing,
    /// The last attempt or probe failed; retrying.
    Failed,
}

impl CameraState {
    /// Every state, in metric order.
    pub const ALL: [CameraState; 4] = [
        CameraState::Idle,
        CameraState::Connecting,
        CameraState::Playing,
        CameraState::Failed,
    ];

    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Idle => "idle",
            CameraState::Connecting => "connecting",
            CameraState::Playing => "playing",
            CameraState::Failed => "failed",
        }
    }
}

impl fmt::Display for CameraState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the supervisor last knew about its camera, published on a watch channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraStatus {
    pub state: CameraState,
    /// The camera answered its last probe or is playing (`passerelle_camera_up`).
    pub up: bool,
}

/// An RTSP exchange with a camera, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspStep {
    /// TCP connection and DESCRIBE.
    Describe,
    Setup,
    Play,
    /// Receiving media after PLAY.
    Stream,
}

impl fmt::Display for RtspStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RtspStep::Describe => "DESCRIBE",
            RtspStep::Setup => "SETUP",
            RtspStep::Play => "PLAY",
            RtspStep::Stream => "streaming",
        })
    }
}

/// Why a camera session or probe ended. Each variant names the camera and its redacted
/// URL, so the failure can be found in the camera's logs or a packet capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The camera did not answer a step in time.
    #[error("camera {camera} ({url}): {step} got no answer within {after:?}")]
    Timeout {
        camera: CameraId,
        url: String,
        step: RtspStep,
        after: Duration,
    },
    /// The RTSP client failed: connection refused or reset, an error status, a response
    /// or interleaved frame it could not parse, a corrupt RTP header.
    #[error("camera {camera} ({url}): {step} failed: {detail}")]
    Rtsp {
        camera: CameraId,
        url: String,
        step: RtspStep,
        /// The RTSP status, when the camera answered with an error.
        status: Option<u16>,
        /// The client's description, secrets removed, on one line.
        detail: String,
    },
    /// The SDP has no H.264/H.265 video stream passerelle can carry.
    #[error(
        "camera {camera} ({url}) offers no H.264/H.265 video stream passerelle can carry; it offers: {offered}"
    )]
    NoVideo {
        camera: CameraId,
        url: String,
        /// Each offered stream as `media/encoding`, with why a video stream was refused.
        offered: String,
    },
    /// The camera closed the session.
    #[error("camera {camera} ({url}) ended the stream")]
    EndOfStream { camera: CameraId, url: String },
    /// The session stayed open but brought no video.
    #[error("camera {camera} ({url}) sent no video packet for {after:?}")]
    Stalled {
        camera: CameraId,
        url: String,
        after: Duration,
    },
}

/// A running camera supervisor.
#[derive(Debug)]
pub struct IngestHandle {
    task: JoinHandle<()>,
    status: watch::Receiver<CameraStatus>,
}

impl IngestHandle {
    /// The camera's current status.
    pub fn status(&self) -> CameraStatus {
        *self.status.borrow()
    }

    /// Watches the camera's status (the catalog, tests).
    pub fn watch_status(&self) -> watch::Receiver<CameraStatus> {
        self.status.clone()
    }

    /// Whether the supervisor has stopped (after shutdown).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the supervisor to stop; it stops once shutdown is signalled, after
    /// tearing down its session.
    pub async fn join(self) -> Result<(), tokio::task::JoinError> {
        self.task.await
    }
}

/// Starts the supervisor of `settings.camera`, feeding `channel`, on the current tokio
/// runtime. It runs until `shutdown` turns `true` (or its sender is dropped).
pub fn spawn(
    settings: IngestSettings,
    channel: Channel,
    shutdown: watch::Receiver<bool>,
) -> IngestHandle {
    let (status_tx, status) = watch::channel(CameraStatus {
        state: CameraState::Idle,
        up: false,
    });
    let supervisor = supervisor::Supervisor::new(settings, channel, shutdown, status_tx);
    IngestHandle {
        task: tokio::spawn(supervisor.run()),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_redacts_credentials_and_url_userinfo() {
        let mut settings = IngestSettings::new(
            "metz/cam-1".parse().unwrap(),
            Url::parse("rtsp://admin:urlpass@192.0.2.1/live?pwd=querypass").unwrap(),
        );
        settings.credentials = Some(("operator".into(), "filepass".into()));
        let text = format!("{settings:?}");
        for secret in ["urlpass", "querypass", "filepass", "admin", "operator"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("metz/cam-1"), "{text}");
        assert!(text.contains("192.0.2.1/live"), "{text}");
    }

    #[test]
    fn state_labels_match_the_metric_contract() {
        let labels: Vec<_> = CameraState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(labels, ["idle", "connecting", "playing", "failed"]);
    }
}
