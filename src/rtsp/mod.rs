//! The RTSP server re-publishing cameras to the site's VMS and players
//! (`rtsp://HOST:8554/<camera-id>`, track control URLs ending in `/track=N`).
//!
//! - [`demux`]: splits a connection's bytes into RTSP requests and `$`-interleaved frames.
//! - [`auth`]: Digest (RFC 2617) and Basic authentication of `[[user]]`s.
//! - [`sdp`]: the DESCRIBE body.
//! - [`transport`]: the `Transport` header of SETUP.
//! - [`session`]: the per-connection request state machine (pure, `now` passed in).
//! - `leg`: one track's RTP/RTCP sender (tokio).
//! - `server`: [`RtspServer`], the listener and one task per connection (tokio).
//!
//! The server knows cameras only through a [`CameraDirectory`], implemented by the
//! composition layer: [`CameraDirectory::mount`] gives the channels of a camera's tracks,
//! [`CameraDirectory::open_view`] opens the viewing session (policy and journal) at PLAY
//! and returns a guard held until the session stops.
//!
//! Status codes:
//! - 401: DESCRIBE or a new SETUP without valid credentials (OPTIONS needs none; requests
//!   on an existing session are authorised by the session, which belongs to its
//!   connection); `stale=true` for an expired nonce. After
//!   [`session::MAX_AUTH_FAILURES`] refused credentials the connection is closed.
//! - 404: a camera that does not exist *or* that the user may not see (never 403, which
//!   would confirm it exists), a track the camera does not have.
//! - 400: a malformed camera id or URI, no `CSeq`, SETUP without `Transport`;
//!   414: an overlong URI or camera id. Credentials are checked first.
//! - 403: only when the viewing-session hook refuses a camera the user knows.
//! - 503: a cold camera (no codec parameters within `describe_timeout`), the hook's
//!   "unavailable", no session slot or UDP port pair left.
//! - 451 GET_PARAMETER asking for parameters, 453 too many sessions on one connection,
//!   454 unknown session, 455 SETUP while playing / of another camera / of a track twice,
//!   459 aggregate SETUP of a multi-track camera, 461 no supported transport, 501
//!   ANNOUNCE, RECORD, SET_PARAMETER, REDIRECT and unknown methods, 505 RTSP/2.0, 551
//!   any `Require`.
//!
//! Sessions live and die with their connection. A session times out after
//! `session_timeout` without a request or client RTCP, except while it plays over
//! interleaved TCP: then the connection is its liveness. A playing session holds its
//! [`CameraDirectory::Guard`]; PAUSE, TEARDOWN, timeout and disconnect drop it. If a
//! track's channel closes (camera removed) the connection is closed, so VMSs reconnect.

pub mod auth;
pub mod demux;
pub mod sdp;
pub mod session;
pub mod transport;

mod leg;
mod server;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::ids::{CameraId, CameraPattern};
use crate::policy::AgentKind;

pub use server::{RtspServer, RtspServerError, RtspUsersHandle};

pub use crate::viewing::{CameraDirectory, Mount, ViewRefusal, Viewer};

/// Validated settings of the RTSP server (`[rtsp]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspSettings {
    /// Where RTSP/TCP listens; its IP is also the address UDP media sockets bind to.
    pub listen: SocketAddr,
    /// Server ports for RTP/RTCP over UDP, used in even/odd pairs.
    pub udp_ports: RangeInclusive<u16>,
    /// Advertised in `Session: id;timeout=N`: a session without any request (or RTCP from
    /// the client) for this long is torn down (RFC 2326 §12.37, default 60 s).
    pub session_timeout: Duration,
    /// How long DESCRIBE waits for a cold camera's codec parameters before 503.
    pub describe_timeout: Duration,
    /// Accept HTTP Basic credentials (the password crosses the network in clear) and offer
    /// them after Digest in challenges.
    pub allow_basic: bool,
    /// Concurrent TCP connections; more are accepted and closed at once.
    pub max_connections: usize,
    /// Concurrent RTSP sessions, all connections together; past it SETUP answers 503.
    pub max_sessions: usize,
    /// A connection that has no session and sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// The IP TOS / IPv6 traffic-class byte of RTP and RTCP sent over UDP: the DSCP
    /// shifted left by two (the same class as the links, `[quic] dscp`; AF41 by
    /// default); 0 leaves them unmarked.
    pub dscp_tos: u8,
}

impl Default for RtspSettings {
    fn default() -> Self {
        RtspSettings {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8554)),
            udp_ports: 30000..=30999,
            session_timeout: Duration::from_secs(60),
            describe_timeout: Duration::from_secs(8),
            allow_basic: true,
            max_connections: 1024,
            max_sessions: 2048,
            idle_timeout: Duration::from_secs(60),
            // AF41 (RFC 2597, codepoint 34): interactive video, as `[quic] dscp`.
            dscp_tos: 34 << 2,
        }
    }
}

/// A local account allowed to pull cameras over RTSP (`[[user]]`).
#[derive(Clone, PartialEq, Eq)]
pub struct RtspUser {
    /// The user name, also the agent id in viewing sessions.
    pub name: String,
    /// A person or a declared service account.
    pub kind: AgentKind,
    /// What the user authenticates with.
    pub secret: Secret,
    /// The cameras the user may know about; any other camera answers 404.
    pub cameras: Vec<CameraPattern>,
}

impl RtspUser {
    /// Whether `camera` is one the user may know about.
    pub fn may_see(&self, camera: &CameraId) -> bool {
        self.cameras.iter().any(|p| p.matches(camera))
    }
}

impl fmt::Debug for RtspUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtspUser")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("secret", &self.secret)
            .field("cameras", &self.cameras)
            .finish()
    }
}

/// A user's credential as configured. Never printed: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The password itself (from its file).
    Password(String),
    /// `MD5(name:passerelle:password)` in hex ([`auth::digest_ha1`]), so the password is
    /// not stored on the gateway. Works for Digest and for Basic.
    Ha1(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(<redacted>)"),
            Secret::Ha1(_) => f.write_str("Ha1(<redacted>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let user = RtspUser {
            name: "alice".into(),
            kind: AgentKind::Agent,
            secret: Secret::Password("hunter2".into()),
            cameras: vec!["metz/**".parse().unwrap()],
        };
        let text = format!("{user:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("alice"));
        assert!(user.may_see(&"metz/cam-1".parse().unwrap()));
        assert!(!user.may_see(&"sncf/woippy/quai".parse().unwrap()));
    }
}
