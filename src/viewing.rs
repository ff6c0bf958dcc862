//! What the servers that re-publish cameras (RTSP, WebRTC) need from the site: the
//! cameras they may serve and the viewing sessions they open.
//!
//! Layer 1. Implemented by the composition layer (`app`), which wires it to the channels,
//! the policy and the journal; the adapters meet here instead of importing each other.

use std::future::Future;
use std::net::SocketAddr;

use crate::channel::Channel;
use crate::ids::CameraId;
use crate::policy::AgentKind;

/// How a server finds cameras and opens viewing sessions; implemented by the
/// composition layer (`app`), which wires it to the channels and the policy.
pub trait CameraDirectory: Send + Sync + 'static {
    /// Held for the life of a viewing session: from PLAY until PAUSE, TEARDOWN, session
    /// timeout or disconnect, when it is dropped.
    type Guard: Send + 'static;

    /// The tracks served at `camera`, `None` if there is no such camera (404). Called
    /// at DESCRIBE and SETUP; must not block.
    fn mount(&self, camera: &CameraId) -> Option<Mount>;

    /// Opens a viewing session for `viewer` on `camera`, before the first packet is sent
    /// at PLAY. The server has already checked the user's credentials and camera patterns.
    fn open_view(
        &self,
        viewer: &Viewer,
        camera: &CameraId,
    ) -> impl Future<Output = Result<Self::Guard, ViewRefusal>> + Send;

    /// A client was refused with wrong credentials: `user` when it names a configured
    /// user. For the journal's per-minute aggregation; does nothing by default.
    fn credentials_refused(&self, user: Option<&str>, reason: &str) {
        let _ = (user, reason);
    }
}

/// What is served at one camera path: one or more tracks, each fed by its own channel.
/// Track `N` is `rtsp://HOST/<camera-id>/track=N`. The gateway publishes video only (one
/// track); the camera simulator may add an audio track beside it.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The tracks, in SDP order.
    pub tracks: Vec<Channel>,
}

/// The authenticated user behind a PLAY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The `[[user]]` name: the agent id of the viewing session.
    pub name: String,
    /// Person or declared service.
    pub kind: AgentKind,
    /// Where the RTSP connection comes from.
    pub peer: SocketAddr,
}

/// Why [`CameraDirectory::open_view`] refused a PLAY.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewRefusal {
    /// The viewer may not know the camera, or it is gone: 404, like a camera that never
    /// existed.
    #[error("camera not found for this viewer")]
    NotFound,
    /// A camera the viewer knows but may not watch now (outside hours, no reason given):
    /// 403.
    #[error("viewing refused: {reason}")]
    Forbidden {
        /// For the log; not sent to the client.
        reason: String,
    },
    /// The camera or the link to its site is unavailable: 503.
    #[error("camera unavailable")]
    Unavailable,
}

impl ViewRefusal {
    /// The status answered (RTSP and HTTP share these codes).
    pub fn status(&self) -> u16 {
        match self {
            ViewRefusal::NotFound => 404,
            ViewRefusal::Forbidden { .. } => 403,
            ViewRefusal::Unavailable => 503,
        }
    }
}
