//! The per-connection RTSP request state machine: pure, `now` passed in.
//!
//! [`ConnectionCore`] holds the RTSP sessions of one TCP connection (a session lives and
//! dies with the connection that made it: its id is a capability of that connection only).
//!
//! How to drive it:
//! 1. Feed each request from the [`super::demux::Demuxer`] to
//!    [`ConnectionCore::handle_request`]. It answers with a [`Step`]:
//!    - [`Step::Reply`] / [`Step::Close`]: send the reply (then close the connection);
//!    - [`Step::Describe`], [`Step::Setup`], [`Step::Play`]: the request is valid as far as
//!      the core can tell (credentials, camera id, user's camera patterns, session and
//!      state); the caller does the I/O part (camera lookup, waiting for codec parameters,
//!      binding UDP ports, the viewing-session hook) and then calls
//!      [`ConnectionCore::finish_describe`], [`ConnectionCore::finish_setup`] or
//!      [`ConnectionCore::finish_play`], or [`ConnectionCore::reply_error`] if that part
//!      failed;
//!    - [`Step::Pause`] / [`Step::Teardown`]: stop the session's media (and for teardown
//!      release everything held for it), then send the reply.
//! 2. Call [`ConnectionCore::handle_activity`] when anything arrives from the client that
//!    is not a request (interleaved RTCP), [`ConnectionCore::touch`] for RTCP received on a
//!    session's UDP socket.
//! 3. At [`ConnectionCore::next_timeout`], drain [`ConnectionCore::poll_timeout`]: each key
//!    returned is a session that timed out and is already forgotten by the core.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use rtsp_types::{Method, Version, headers};

use super::auth::{AuthError, Authenticator};
use super::demux::RawRequest;
use super::transport::{self, RequestedTransport, TransportError};
use super::{RtspUser, sdp};
use crate::ids::CameraId;
use crate::media::StreamInfo;

/// Methods the server implements, for `Public` (RFC 2326 §12.28).
pub const PUBLIC: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER";

/// After this many refused credentials on one connection, the 401 is the last answer:
/// the connection is closed, so guessing passwords costs a TCP handshake per try.
pub const MAX_AUTH_FAILURES: u32 = 10;

/// Most RTSP sessions on one connection (a player uses one; a VMS a handful).
pub const MAX_SESSIONS_PER_CONNECTION: usize = 16;

/// Longest request-URI accepted before the camera id is even looked at (414).
pub const MAX_URI_LEN: usize = 1024;

/// One answer, written by [`Reply::write_to`]. Own type rather than `rtsp_types::Response`
/// because that one merges repeated headers, and challenges are clearer as one
/// `WWW-Authenticate` header per scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    /// A body-less reply echoing `cseq` (RFC 2326 §12.17) when there is one.
    pub fn new(status: u16, cseq: Option<&str>) -> Reply {
        let mut headers = Vec::with_capacity(6);
        if let Some(c) = cseq {
            headers.push(("CSeq", c.to_owned()));
        }
        headers.push(("Server", "passerelle".to_owned()));
        Reply {
            status,
            headers,
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body and its `Content-Type`.
    pub fn body(mut self, content_type: &'static str, body: Vec<u8>) -> Reply {
        self.headers.push(("Content-Type", content_type.to_owned()));
        self.body = body;
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Appends the reply as RTSP/1.0 text.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.put_slice(b"RTSP/1.0 ");
        out.put_slice(self.status.to_string().as_bytes());
        out.put_u8(b' ');
        out.put_slice(reason(self.status).as_bytes());
        out.put_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        if !self.body.is_empty() {
            out.put_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.put_slice(b"\r\n");
        out.put_slice(&self.body);
    }
}

/// Reason phrases (RFC 2326 §7.1.1).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        414 => "Request-URI Too Large",
        451 => "Parameter Not Understood",
        453 => "Not Enough Bandwidth",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "RTSP Version Not Supported",
        551 => "Option not supported",
        _ => "Unknown",
    }
}

/// Credentials a request was refused with: the user when it is a configured one, and
/// why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedCredentials {
    pub user: Option<String>,
    pub reason: &'static str,
}

/// What the caller does next with a request; see the module doc.
#[derive(Debug)]
pub enum Step {
    /// Send this reply.
    Reply(Reply),
    /// Send this reply, then close the connection.
    Close(Reply),
    /// Look the camera up and wait for its codec parameters.
    Describe(DescribeJob),
    /// Look the camera and track up, bind UDP ports if asked.
    Setup(SetupJob),
    /// Open the viewing session, subscribe, start sending.
    Play(PlayJob),
    /// Stop sending the session's media and close its viewing session; keep the session.
    Pause {
        /// The session.
        key: SessionKey,
        /// The answer, to send once media has stopped.
        reply: Reply,
    },
    /// Stop and forget the session (the core already has).
    Teardown {
        /// The session.
        key: SessionKey,
        /// The answer, to send once the session's resources are released.
        reply: Reply,
    },
}

/// Identifies a session inside the process (the RTSP session id is the random text).
pub type SessionKey = u64;

/// A DESCRIBE that passed every check the core can make.
#[derive(Debug, Clone)]
pub struct DescribeJob {
    /// To echo.
    pub cseq: String,
    /// The camera to describe.
    pub camera: CameraId,
    /// Who asks.
    pub user: Arc<RtspUser>,
    /// `Content-Base`: `rtsp://HOST/<camera-id>/`.
    pub content_base: String,
}

/// A SETUP that passed every check the core can make.
#[derive(Debug, Clone)]
pub struct SetupJob {
    /// To echo.
    pub cseq: String,
    /// The camera.
    pub camera: CameraId,
    /// The track from `/track=N`; `None` for the aggregate URL, which names the only track
    /// of a single-track camera.
    pub track: Option<usize>,
    /// Who asks (the session's user when the session exists).
    pub user: Arc<RtspUser>,
    /// The session to add the track to, `None` to make a new session.
    pub session: Option<SessionKey>,
    /// The transport asked for.
    pub transport: RequestedTransport,
    base_url: String,
}

/// What the caller found out while doing the I/O part of a SETUP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupGrant {
    /// The track index, resolved against the camera's tracks.
    pub track: usize,
    /// For UDP: the server's RTP and RTCP ports, already bound.
    pub server_ports: Option<(u16, u16)>,
}

/// A PLAY that passed every check the core can make.
#[derive(Debug, Clone)]
pub struct PlayJob {
    /// To echo.
    pub cseq: String,
    /// The session.
    pub key: SessionKey,
    /// The camera.
    pub camera: CameraId,
    /// The session's user, for the viewing-session hook.
    pub user: Arc<RtspUser>,
    /// The session's legs, in SETUP order.
    pub legs: Vec<Leg>,
}

/// Where the first packet of a leg starts, for `RTP-Info` (RFC 2326 §12.33).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayStart {
    /// Sequence number of the first packet the leg will send.
    pub seq: u16,
    /// Its RTP timestamp, if a packet is already at hand.
    pub rtptime: Option<u32>,
}

/// One track of a session as set up: its own RTP session (SSRC and numbering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// Index of the track in the camera's mount.
    pub track: usize,
    /// Where its packets go.
    pub transport: LegTransport,
    /// Random SSRC of this leg.
    pub ssrc: u32,
    /// Random first sequence number of this leg.
    pub first_seq: u16,
}

/// How a leg's packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegTransport {
    /// `$` frames on the RTSP connection.
    Interleaved {
        /// Channel of RTP.
        rtp: u8,
        /// Channel of RTCP.
        rtcp: u8,
    },
    /// UDP to the client's own address (never a `destination=`).
    Udp {
        /// The client's RTP address.
        client_rtp: SocketAddr,
        /// The client's RTCP address.
        client_rtcp: SocketAddr,
        /// The server's RTP port.
        server_rtp: u16,
        /// The server's RTCP port.
        server_rtcp: u16,
    },
}

/// One RTSP session as the core keeps it.
#[derive(Debug, Clone)]
pub struct Session {
    /// Process-internal key.
    pub key: SessionKey,
    /// The `Session:` id: 64 random bits in hex.
    pub id: String,
    /// The camera (all tracks of a session belong to one camera).
    pub camera: CameraId,
    /// Who set it up.
    pub user: Arc<RtspUser>,
    /// `rtsp://HOST/<camera-id>`, for `RTP-Info` URLs.
    pub base_url: String,
    /// Tracks set up, in order.
    pub legs: Vec<Leg>,
    /// Between PLAY and PAUSE/TEARDOWN.
    pub playing: bool,
    last_activity: Instant,
}

impl Session {
    /// Whether the session expires without requests. A playing session whose media is
    /// all interleaved does not: the connection is its liveness (clients receiving RTP
    /// over TCP need not send keep-alives while data flows, and many VMSs do not), a
    /// client that stops reading is closed by the write-stall timeout and a vanished
    /// host by TCP keep-alive.
    fn can_time_out(&self) -> bool {
        !(self.playing
            && self
                .legs
                .iter()
                .all(|l| matches!(l.transport, LegTransport::Interleaved { .. })))
    }
}

/// The sessions and counters of one RTSP connection; see the module doc.
#[derive(Debug)]
pub struct ConnectionCore {
    auth: Arc<Authenticator>,
    peer: SocketAddr,
    local: SocketAddr,
    session_timeout: Duration,
    sessions: Vec<Session>,
    next_key: SessionKey,
    auth_failures: u32,
    /// The last refused credentials, until the server takes them for the journal.
    refused_credentials: Option<RefusedCredentials>,
}

/// A request-URI split into what the server routes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `rtsp://HOST[:PORT]` as the client wrote it.
    pub origin: String,
    /// The camera.
    pub camera: CameraId,
    /// `/track=N`, if present.
    pub track: Option<usize>,
}

/// Why a request-URI names no camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not `rtsp://HOST/<camera-id>[/track=N]`, or not a valid camera id (400).
    #[error("request-URI names no valid camera")]
    Malformed,
    /// The URI or the camera id is longer than allowed (414).
    #[error("request-URI too long")]
    TooLong,
}

impl TargetError {
    /// The RTSP status answered.
    pub fn status(self) -> u16 {
        match self {
            TargetError::Malformed => 400,
            TargetError::TooLong => 414,
        }
    }
}

impl Target {
    /// Splits `rtsp://host/<camera-id>[/track=N][/]`.
    pub fn parse(uri: Option<&str>) -> Result<Target, TargetError> {
        use TargetError::{Malformed, TooLong};
        let uri = uri.ok_or(Malformed)?;
        if uri.len() > MAX_URI_LEN {
            return Err(TooLong);
        }
        let (scheme, rest) = uri.split_once("://").ok_or(Malformed)?;
        if !scheme.eq_ignore_ascii_case("rtsp") && !scheme.eq_ignore_ascii_case("rtsps") {
            return Err(Malformed);
        }
        let slash = rest.find('/').ok_or(Malformed)?;
        let origin = &uri[..scheme.len() + 3 + slash];
        // Queries and fragments select nothing here.
        let path = rest[slash + 1..]
            .split(['?', '#'])
            .next()
            .unwrap_or_default();
        let path = path.strip_suffix('/').unwrap_or(path);
        let (path, track) = match path.rsplit_once('/') {
            Some((head, last)) if last.starts_with("track=") => (head, Some(last)),
            _ if path.starts_with("track=") => ("", Some(path)),
            _ => (path, None),
        };
        let track = match track {
            None => None,
            Some(t) => {
                let n = &t["track=".len()..];
                if n.is_empty() || n.len() > 3 || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Malformed);
                }
                Some(n.parse().map_err(|_| Malformed)?)
            }
        };
        let camera = path
            .parse::<CameraId>()
            .map_err(|e| if e.is_too_long() { TooLong } else { Malformed })?;
        Ok(Target {
            origin: origin.to_owned(),
            camera,
            track,
        })
    }

    /// `rtsp://HOST/<camera-id>`.
    pub fn base_url(&self) -> String {
        format!("{}/{}", self.origin, self.camera)
    }
}

impl ConnectionCore {
    /// The credentials refused by the last request, if any (taken once).
    pub fn take_refused_credentials(&mut self) -> Option<RefusedCredentials> {
        self.refused_credentials.take()
    }

    /// The core of one connection from `peer` accepted on `local`.
    pub fn new(
        auth: Arc<Authenticator>,
        peer: SocketAddr,
        local: SocketAddr,
        session_timeout: Duration,
    ) -> Self {
        ConnectionCore {
            auth,
            peer,
            local,
            session_timeout,
            sessions: Vec::new(),
            next_key: 1,
            auth_failures: 0,
            refused_credentials: None,
        }
    }

    /// The sessions of this connection.
    pub fn sessions(&self) -> &[Session] {
        &self.sessions
    }

    /// One session by key.
    pub fn session(&self, key: SessionKey) -> Option<&Session> {
        self.sessions.iter().find(|s| s.key == key)
    }

    /// Decides what to do with one request; see the module doc.
    pub fn handle_request(&mut self, req: &RawRequest, now: Instant) -> Step {
        let Some(cseq) = header(req, &headers::CSEQ) else {
            return Step::Reply(Reply::new(400, None));
        };
        let cseq = cseq.to_owned();
        if req.request.version() != Version::V1_0 {
            return Step::Reply(Reply::new(505, Some(&cseq)));
        }
        if let Some(required) = header(req, &headers::REQUIRE) {
            // No option tags are supported (RFC 2326 §12.32).
            return Step::Reply(Reply::new(551, Some(&cseq)).header("Unsupported", required));
        }
        match req.method() {
            Method::Options => self.handle_options(req, cseq, now),
            Method::Describe => self.handle_describe(req, cseq, now),
            Method::Setup => self.handle_setup(req, cseq, now),
            Method::Play => self.handle_play(req, cseq, now),
            Method::Pause => self.handle_pause(req, cseq, now),
            Method::Teardown => self.handle_teardown(req, cseq),
            Method::GetParameter => self.handle_get_parameter(req, cseq, now),
            Method::Announce
            | Method::Record
            | Method::SetParameter
            | Method::Redirect
            | Method::PlayNotify
            | Method::Extension(_) => {
                Step::Reply(Reply::new(501, Some(&cseq)).header("Public", PUBLIC))
            }
        }
    }

    fn handle_options(&mut self, req: &RawRequest, cseq: String, now: Instant) -> Step {
        // Answered without credentials: it names no camera and reveals nothing. With a
        // Session header it is a keep-alive (RFC 2326 §10.1).
        if let Some(id) = session_id(req) {
            match self.find_mut(id) {
                Some(s) => s.last_activity = now,
                None => return Step::Reply(Reply::new(454, Some(&cseq))),
            }
        }
        Step::Reply(Reply::new(200, Some(&cseq)).header("Public", PUBLIC))
    }

    fn handle_get_parameter(&mut self, req: &RawRequest, cseq: String, now: Instant) -> Step {
        // The usual keep-alive (Axis, ffmpeg, live555). No parameters are supported.
        if let Some(id) = session_id(req) {
            match self.find_mut(id) {
                Some(s) => s.last_activity = now,
                None => return Step::Reply(Reply::new(454, Some(&cseq))),
            }
        }
        let status = if req.request.body().is_empty() {
            200
        } else {
            451
        };
        Step::Reply(Reply::new(status, Some(&cseq)))
    }

    fn handle_describe(&mut self, req: &RawRequest, cseq: String, now: Instant) -> Step {
        let user = match self.authenticate(req, &cseq, now) {
            Ok(u) => u,
            Err(step) => return step,
        };
        let target = match Target::parse(req.uri.as_deref()) {
            Ok(t) => t,
            Err(e) => return Step::Reply(Reply::new(e.status(), Some(&cseq))),
        };
        // A track URL describes nothing; a camera the user may not see does not exist.
        if target.track.is_some() || !user.may_see(&target.camera) {
            return Step::Reply(Reply::new(404, Some(&cseq)));
        }
        Step::Describe(DescribeJob {
            cseq,
            content_base: format!("{}/", target.base_url()),
            camera: target.camera,
            user,
        })
    }

    /// The DESCRIBE answer once the caller has every track's codec parameters.
    pub fn finish_describe(
        &self,
        job: &DescribeJob,
        session_id: u64,
        tracks: &[StreamInfo],
    ) -> Reply {
        let body = sdp::describe(job.camera.as_str(), self.local.ip(), session_id, tracks);
        Reply::new(200, Some(&job.cseq))
            .header("Content-Base", job.content_base.clone())
            .body("application/sdp", body.into_bytes())
    }

    fn handle_setup(&mut self, req: &RawRequest, cseq: String, now: Instant) -> Step {
        let existing = match session_id(req) {
            Some(id) => match self.find_mut(id) {
                Some(s) => {
                    s.last_activity = now;
                    Some(s.clone())
                }
                None => return Step::Reply(Reply::new(454, Some(&cseq))),
            },
            None => None,
        };
        let user = match &existing {
            // The session, bound to this connection, is the credential.
            Some(s) => s.user.clone(),
            None => match self.authenticate(req, &cseq, now) {
                Ok(u) => u,
                Err(step) => return step,
            },
        };
        let target = match Target::parse(req.uri.as_deref()) {
            Ok(t) => t,
            Err(e) => return Step::Reply(Reply::new(e.status(), Some(&cseq))),
        };
        if !user.may_see(&target.camera) {
            return Step::Reply(Reply::new(404, Some(&cseq)));
        }
        if let Some(s) = &existing {
            // One session is one camera; tracks are added before PLAY, once each.
            let same_track = target.track.unwrap_or(0);
            if s.camera != target.camera
                || s.playing
                || s.legs.iter().any(|l| l.track == same_track)
            {
                return Step::Reply(Reply::new(455, Some(&cseq)));
            }
        } else if self.sessions.len() >= MAX_SESSIONS_PER_CONNECTION {
            return Step::Reply(Reply::new(453, Some(&cseq)));
        }
        let transport = match transport::parse(header(req, &headers::TRANSPORT)) {
            Ok(t) => t,
            Err(TransportError::Missing) => return Step::Reply(Reply::new(400, Some(&cseq))),
            Err(TransportError::Unsupported(_)) => {
                return Step::Reply(Reply::new(461, Some(&cseq)));
            }
        };
        Step::Setup(SetupJob {
            cseq,
            base_url: target.base_url(),
            camera: target.camera,
            track: target.track,
            user,
            session: existing.map(|s| s.key),
            transport,
        })
    }

    /// Records the leg of a SETUP once the caller resolved its track and bound its ports;
    /// returns the answer and the leg. Fails with the answer if the session went away or
    /// the track is already set up.
    pub fn finish_setup(
        &mut self,
        job: &SetupJob,
        grant: SetupGrant,
        now: Instant,
    ) -> Result<(SessionKey, Leg, Reply), Reply> {
        let transport = match (job.transport, grant.server_ports) {
            (RequestedTransport::Udp { rtp, rtcp }, Some((server_rtp, server_rtcp))) => {
                LegTransport::Udp {
                    client_rtp: SocketAddr::new(self.peer.ip(), rtp),
                    client_rtcp: SocketAddr::new(self.peer.ip(), rtcp),
                    server_rtp,
                    server_rtcp,
                }
            }
            (RequestedTransport::Interleaved(asked), None) => {
                let (rtp, rtcp) = self
                    .free_channels(asked)
                    .ok_or_else(|| Reply::new(453, Some(&job.cseq)))?;
                LegTransport::Interleaved { rtp, rtcp }
            }
            _ => return Err(Reply::new(500, Some(&job.cseq))),
        };
        let leg = Leg {
            track: grant.track,
            transport,
            ssrc: rand::random(),
            first_seq: rand::random(),
        };
        let timeout = self.session_timeout.as_secs();
        let key = match job.session {
            Some(key) => {
                let Some(s) = self.sessions.iter_mut().find(|s| s.key == key) else {
                    return Err(Reply::new(454, Some(&job.cseq)));
                };
                if s.playing || s.legs.iter().any(|l| l.track == grant.track) {
                    return Err(Reply::new(455, Some(&job.cseq)));
                }
                s.legs.push(leg.clone());
                s.last_activity = now;
                key
            }
            None => {
                let key = self.next_key;
                self.next_key += 1;
                self.sessions.push(Session {
                    key,
                    id: format!("{:016X}", rand::random::<u64>()),
                    camera: job.camera.clone(),
                    user: job.user.clone(),
                    base_url: job.base_url.clone(),
                    legs: vec![leg.clone()],
                    playing: false,
                    last_activity: now,
                });
                key
            }
        };
        let id = self.session(key).map(|s| s.id.clone()).unwrap_or_default();
        let transport = match leg.transport {
            LegTransport::Interleaved { rtp, rtcp } => {
                transport::reply_interleaved(rtp, rtcp, leg.ssrc)
            }
            LegTransport::Udp {
                client_rtp,
                client_rtcp,
                server_rtp,
                server_rtcp,
            } => transport::reply_udp(
                (client_rtp.port(), client_rtcp.port()),
                (server_rtp, server_rtcp),
                leg.ssrc,
            ),
        };
        let reply = Reply::new(200, Some(&job.cseq))
            .header("Transport", transport)
            .header("Session", format!("{id};timeout={timeout}"));
        Ok((key, leg, reply))
    }

    /// The requested interleaved pair if free on this connection, else the lowest free
    /// even/odd pair.
    fn free_channels(&self, asked: Option<(u8, u8)>) -> Option<(u8, u8)> {
        let used = |c: u8| {
            self.sessions.iter().flat_map(|s| &s.legs).any(|l| {
                matches!(l.transport, LegTransport::Interleaved { rtp, rtcp } if rtp == c || rtcp == c)
            })
        };
        if let Some((rtp, rtcp)) = asked
            && rtp != rtcp
            && !used(rtp)
            && !used(rtcp)
        {
            return Some((rtp, rtcp));
        }
        (0..=127u8)
            .map(|i| (2 * i, 2 * i + 1))
            .find(|&(a, b)| !used(a) && !used(b))
    }

    fn handle_play(&mut self, req: &RawRequest, cseq: String, now: Instant) -> Step {
        let Some(s) = session_id(req).and_then(|id| self.find_mut(id)) else {
            return Step::Reply(Reply::new(454, Some(&cseq)));
        };
        s.last_activity = now;
        let session_header = s.id.clone();
        if s.playing {
            // A repeated PLAY changes nothing on a live stream.
            return Step::Reply(
                Reply::new(200, Some(&cseq))
                    .header("Session", session_header)
                    .header("Range", "npt=now-"),
            );
        }
        Step::Play(PlayJob {
            cseq,
            key: s.key,
            camera: s.camera.clone(),
            user: s.user.clone(),
            legs: s.legs.clone(),
        })
    }

    /// Marks the session playing once the viewing session is open and media is about to
    /// flow; `starts` is per leg, in the order of [`PlayJob::legs`].
    pub fn finish_play(&mut self, job: &PlayJob, starts: &[PlayStart], now: Instant) -> Reply {
        let Some(s) = self.sessions.iter_mut().find(|s| s.key == job.key) else {
            return Reply::new(454, Some(&job.cseq));
        };
        s.playing = true;
        s.last_activity = now;
        let info: Vec<String> = s
            .legs
            .iter()
            .zip(starts)
            .map(|(leg, start)| {
                let mut one = format!("url={}/track={};seq={}", s.base_url, leg.track, start.seq);
                if let Some(ts) = start.rtptime {
                    one.push_str(&format!(";rtptime={ts}"));
                }
                one
            })
            .collect();
        Reply::new(200, Some(&job.cseq))
            .header("Session", s.id.clone())
            .header("Range", "npt=now-")
            .header("RTP-Info", info.join(","))
    }

    fn handle_pause(&mut self, req: &RawRequest, cseq: String, now: Instant) -> Step {
        let Some(s) = session_id(req).and_then(|id| self.find_mut(id)) else {
            return Step::Reply(Reply::new(454, Some(&cseq)));
        };
        s.last_activity = now;
        let reply = Reply::new(200, Some(&cseq)).header("Session", s.id.clone());
        if !s.playing {
            // PAUSE while ready is allowed and does nothing (RFC 2326 Appendix A.1).
            return Step::Reply(reply);
        }
        s.playing = false;
        Step::Pause { key: s.key, reply }
    }

    fn handle_teardown(&mut self, req: &RawRequest, cseq: String) -> Step {
        let Some(pos) =
            session_id(req).and_then(|id| self.sessions.iter().position(|s| s.id == id))
        else {
            return Step::Reply(Reply::new(454, Some(&cseq)));
        };
        let s = self.sessions.remove(pos);
        Step::Teardown {
            key: s.key,
            reply: Reply::new(200, Some(&cseq)),
        }
    }

    /// An answer with only a status, for failures of the caller's part of a job.
    pub fn reply_error(&self, cseq: &str, status: u16) -> Reply {
        Reply::new(status, Some(cseq))
    }

    /// Something other than a request came from the client on the connection (RTCP
    /// receiver reports): every session of the connection is alive.
    pub fn handle_activity(&mut self, now: Instant) {
        for s in &mut self.sessions {
            s.last_activity = now;
        }
    }

    /// RTCP from the client arrived on one session's UDP socket.
    pub fn touch(&mut self, key: SessionKey, now: Instant) {
        if let Some(s) = self.sessions.iter_mut().find(|s| s.key == key) {
            s.last_activity = now;
        }
    }

    /// When the next session times out, if any.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.sessions
            .iter()
            .filter(|s| s.can_time_out())
            .map(|s| s.last_activity + self.session_timeout)
            .min()
    }

    /// Removes and returns one session that has timed out at `now`.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<SessionKey> {
        let pos = self
            .sessions
            .iter()
            .position(|s| s.can_time_out() && s.last_activity + self.session_timeout <= now)?;
        Some(self.sessions.remove(pos).key)
    }

    /// The server's IP on this connection (for SDP and UDP binding).
    pub fn local_ip(&self) -> IpAddr {
        self.local.ip()
    }

    fn find_mut(&mut self, id: &str) -> Option<&mut Session> {
        self.sessions.iter_mut().find(|s| s.id == id)
    }

    fn authenticate(
        &mut self,
        req: &RawRequest,
        cseq: &str,
        now: Instant,
    ) -> Result<Arc<RtspUser>, Step> {
        let method: &str = req.method().into();
        let uri = req.uri.as_deref().unwrap_or("*");
        let err = match self
            .auth
            .check(method, uri, header(req, &headers::AUTHORIZATION), now)
        {
            Ok(user) => return Ok(user),
            Err(e) => e,
        };
        let stale = err == AuthError::StaleNonce;
        // A first request without credentials is the normal start of Digest; a stale
        // nonce is the normal end of one. Only wrong credentials count toward closing.
        if !matches!(err, AuthError::Missing | AuthError::StaleNonce) {
            self.auth_failures += 1;
            tracing::info!(peer = %self.peer, reason = err.reason(), "RTSP credentials refused");
            let user = match &err {
                AuthError::BadCredentials { user } if self.auth.is_known(user) => {
                    Some(user.clone())
                }
                _ => None,
            };
            self.refused_credentials = Some(RefusedCredentials {
                user,
                reason: err.reason(),
            });
        }
        let mut reply = Reply::new(401, Some(cseq));
        for c in self.auth.challenges(now, stale) {
            reply = reply.header("WWW-Authenticate", c);
        }
        if self.auth_failures >= MAX_AUTH_FAILURES {
            Err(Step::Close(reply))
        } else {
            Err(Step::Reply(reply))
        }
    }
}

fn header<'a>(req: &'a RawRequest, name: &rtsp_types::HeaderName) -> Option<&'a str> {
    req.request.header(name).map(|v| v.as_str().trim())
}

/// The id of a `Session: id[;timeout=n]` header.
fn session_id(req: &RawRequest) -> Option<&str> {
    header(req, &headers::SESSION).map(|v| v.split(';').next().unwrap_or_default().trim())
}

#[cfg(test)]
mod tests;
