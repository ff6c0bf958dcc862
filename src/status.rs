//! The site as operators see it: its cameras, its links and the policy in force, for
//! `GET /api/v1/cameras`, `GET /api/v1/links` and `GET /api/v1/site` (the `[http]`
//! listener, per user, and the management listener, whole) and the status page.
//!
//! Layer 1. The composition layer implements [`SiteStatus`]; the HTTP and management
//! adapters serialize what it returns. Every field is a bounded, non-secret value: no
//! camera URL, no credentials.

use serde::Serialize;

/// What the status endpoints read; implemented by the composition layer.
pub trait SiteStatus: Send + Sync + 'static {
    /// This site's id.
    fn site(&self) -> String;
    /// Every camera this site can show: its own and those imported from partners.
    fn cameras(&self) -> Vec<CameraView>;
    /// Every configured partner link.
    fn links(&self) -> Vec<LinkView>;
    /// The policy in force, or why there is none.
    fn policy(&self) -> PolicyView;
    /// WebRTC sessions open now and the configured cap.
    fn webrtc(&self) -> WebrtcView;
}

/// One camera, `GET /api/v1/cameras`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CameraView {
    /// The camera id on this site (imported cameras carry their partner's prefix).
    pub id: String,
    /// `local` for this site's cameras, `partner` for imported ones.
    pub source: CameraSource,
    /// The site the camera belongs to.
    pub site: String,
    /// `h264` or `h265`; `None` while the camera has never been reached.
    pub codec: Option<&'static str>,
    /// `idle`, `connecting`, `playing`, `failed` (local cameras), or `unavailable`
    /// (an imported camera whose link is down).
    pub state: &'static str,
    /// Sinks reading the camera now: local viewers and partner streams.
    pub viewers: usize,
    /// Partners the policy in force shares the camera with now.
    pub shared_with: Vec<String>,
    /// Each viewing needs an agent with an open intervention.
    pub on_request: bool,
}

/// Where a camera comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraSource {
    /// Pulled by this site's ingest.
    Local,
    /// Imported over a partner link.
    Partner,
}

/// One partner link, `GET /api/v1/links`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkView {
    /// The partner's site id.
    pub peer: String,
    /// `up` or `down`.
    pub state: &'static str,
    /// When the live link came up (RFC 3339).
    pub since: Option<String>,
    /// Round-trip time in milliseconds, from QUIC.
    pub rtt_ms: Option<f64>,
    /// Streams the link carries, both ways.
    pub streams: usize,
    /// The peer's address on the live link.
    pub remote: Option<String>,
    /// `dialled` or `accepted`: who opened the live link.
    pub direction: Option<&'static str>,
    /// Cameras in the peer's latest catalog.
    pub peer_cameras: usize,
}

/// The policy in force, `GET /api/v1/site`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyView {
    /// `valid`, `expired`, `not_yet_valid`, `wrong_site`, or `none` before any policy
    /// was admitted (nothing crosses then).
    pub state: &'static str,
    pub serial: Option<u64>,
    /// RFC 3339.
    pub valid_from: Option<String>,
    /// RFC 3339.
    pub valid_until: Option<String>,
    /// Key ids of the signatures that made it valid.
    pub signers: Vec<String>,
    /// The last policy refused since this one was admitted, if any: why.
    pub problem: Option<String>,
}

/// WebRTC sessions, `GET /api/v1/site`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WebrtcView {
    /// Open now.
    pub sessions: usize,
    /// `[webrtc].max_sessions`.
    pub max_sessions: u32,
}
