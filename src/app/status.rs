//! The status API's view of the running gateway: the gateway's cameras, links and
//! policy, and the WebRTC server's session count once it is attached.

use std::sync::{Arc, OnceLock};

use super::gateway::Gateway;
use crate::status::{CameraView, LinkView, PolicyView, SiteStatus, WebrtcView};

/// Counts the open WebRTC sessions.
pub(super) type SessionCount = Box<dyn Fn() -> usize + Send + Sync>;

pub(super) struct AppStatus {
    gateway: Arc<Gateway>,
    max_webrtc_sessions: u32,
    /// Set once the WebRTC server runs; `None` means no session can exist.
    webrtc_sessions: OnceLock<SessionCount>,
}

impl AppStatus {
    pub(super) fn new(gateway: Arc<Gateway>, max_webrtc_sessions: u32) -> AppStatus {
        AppStatus {
            gateway,
            max_webrtc_sessions,
            webrtc_sessions: OnceLock::new(),
        }
    }

    /// Attaches the WebRTC server's session count (once, at start).
    pub(super) fn attach_webrtc(&self, sessions: SessionCount) {
        let _ = self.webrtc_sessions.set(sessions);
    }
}

impl SiteStatus for AppStatus {
    fn site(&self) -> String {
        self.gateway.site().to_string()
    }

    fn cameras(&self) -> Vec<CameraView> {
        self.gateway.camera_views()
    }

    fn links(&self) -> Vec<LinkView> {
        self.gateway.link_views()
    }

    fn policy(&self) -> PolicyView {
        self.gateway.policy_view()
    }

    fn webrtc(&self) -> WebrtcView {
        WebrtcView {
            sessions: self.webrtc_sessions.get().map_or(0, |count| count()),
            max_sessions: self.max_webrtc_sessions,
        }
    }
}
