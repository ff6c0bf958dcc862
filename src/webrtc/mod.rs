//! WebRTC viewers over WHEP (draft-ietf-wish-whep), served on the `[http]` listener.
//!
//! Layer 2 (I/O adapter). Meets the cameras through [`CameraDirectory`] only, like the
//! RTSP server; never imports another adapter.
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /whep/<camera-id>`, `Content-Type: application/sdp`, the offer | `201`, the answer (`application/sdp`), `Location: /whep/session/<uuid>` |
//! | `GET /whep/session/<uuid>` | `200`, `{"camera", "state": "connecting"\|"playing"\|"ended", "reason"}` |
//! | `DELETE /whep/session/<uuid>` | `204` once the session has ended |
//! | `PATCH /whep/session/<uuid>` (trickle ICE) | `405`: the answer already carries every candidate (host candidates only, gathered in milliseconds) |
//!
//! Every request needs a user's bearer token; a session is seen and ended by its own user
//! only (`404` for others). Errors are `{"error": "<message>"}`: `400` a malformed camera
//! id or offer, `404` a camera that does not exist or that the user may not watch, `403`
//! a camera the user may not watch now (an `on_request` grant without an intervention),
//! `406` no offered format can carry the camera's stream (the message names the camera's
//! profile), `413` an offer over 64 KiB, `414` an overlong camera id, `415` not
//! `application/sdp`, `422` a camera whose stream cannot play in a browser (B-frames),
//! `503` every session slot or port in use, the camera unavailable, or the gateway
//! stopping.
//!
//! How to drive it (the composition layer): [`WhepService::new`] with the directory, the
//! `[webrtc]` settings and the IP address to bind media sockets on (the `[http]`
//! listener's); merge [`WhepService::routes`] into the HTTP server; call
//! [`WhepService::shutdown`] when stopping, before the journal closes.
//!
//! Each session has its own peer connection, UDP socket (a port of `[webrtc].udp_ports`)
//! and task ([`session`]); the view is opened ([`CameraDirectory::open_view`]: journal,
//! `ViewOpen` upstream) before the answer is returned and held until the session ends.
//!
//! Metrics: `passerelle_viewers{camera,kind}` (shared with the RTSP server; `kind` is the
//! agent kind), `passerelle_webrtc_sessions`, `passerelle_webrtc_sessions_refused_total{reason}`,
//! `passerelle_webrtc_sessions_ended_total{reason}`, `passerelle_webrtc_pli_total{camera}`,
//! `passerelle_webrtc_connect_seconds`.

pub mod client;
pub mod negotiate;
mod relay;
mod session;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::config::{PortRange, UserKind, WebrtcSettings};
use crate::http::{ApiError, Caller, HttpUser, labelled};
use crate::ids::CameraId;
use crate::media::StreamInfo;
use crate::policy::AgentKind;
use crate::viewing::{CameraDirectory, ViewRefusal, Viewer};
use negotiate::{CameraVideo, NegotiationError, OfferError};
use relay::Unplayable;

/// The offer route's template (also its metrics label).
pub const WHEP_CAMERA: &str = "/whep/{*camera}";
/// A session's route template.
pub const WHEP_SESSION: &str = "/whep/session/{id}";

/// Largest offer accepted (Chromium's are about 5 KiB).
const OFFER_LIMIT: usize = 64 * 1024;

/// How long a POST waits for a cold camera to describe its stream (the RTSP server's
/// default `describe_timeout`).
const DESCRIBE_WAIT: Duration = Duration::from_secs(8);

/// Ports tried per POST when some are taken by other programs.
const PORT_ATTEMPTS: usize = 8;

/// How long an ended session stays visible to `GET`, and how many are kept.
const ENDED_RETENTION: Duration = Duration::from_secs(600);
const ENDED_KEPT: usize = 1024;

/// How long `DELETE` waits for the session to release everything.
const DELETE_WAIT: Duration = Duration::from_secs(5);

/// How long [`WhepService::shutdown`] waits for the sessions to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The WHEP endpoint and its sessions. Cheap to clone.
pub struct WhepService<D: CameraDirectory> {
    shared: Arc<Shared<D>>,
}

impl<D: CameraDirectory> Clone for WhepService<D> {
    fn clone(&self) -> Self {
        WhepService {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<D: CameraDirectory> fmt::Debug for WhepService<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhepService")
            .field("bind_ip", &self.shared.bind_ip)
            .field("sessions", &self.session_count())
            .finish_non_exhaustive()
    }
}

impl<D: CameraDirectory> WhepService<D> {
    /// A service finding cameras in `directory`, with media sockets on `bind_ip` (the
    /// `[http]` listener's address: loopback in tests).
    pub fn new(directory: Arc<D>, settings: WebrtcSettings, bind_ip: IpAddr) -> WhepService<D> {
        metrics::gauge!("passerelle_webrtc_sessions").set(0.0);
        WhepService {
            shared: Arc::new(Shared {
                directory,
                bind_ip,
                permits: Arc::new(Semaphore::new(settings.max_sessions as usize)),
                ports: Arc::new(PortPool::new(settings.udp_ports)),
                settings,
                sessions: Mutex::new(HashMap::new()),
                open: AtomicUsize::new(0),
                unplayable: Mutex::new(HashMap::new()),
                shutdown: watch::Sender::new(false),
            }),
        }
    }

    /// The routes to merge into the `[http]` server.
    pub fn routes(&self) -> Router {
        Router::new()
            .route(WHEP_CAMERA, labelled(WHEP_CAMERA, post(create::<D>)))
            .route(
                WHEP_SESSION,
                labelled(WHEP_SESSION, get(show::<D>).delete(end::<D>)),
            )
            .layer(DefaultBodyLimit::max(OFFER_LIMIT))
            .with_state(Arc::clone(&self.shared))
    }

    /// Sessions answered and not ended yet.
    pub fn session_count(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Refuses new sessions, ends every session (each releases its viewing session, so
    /// its end is journaled) and waits for them, bounded.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let all = self
            .shared
            .permits
            .acquire_many(self.shared.settings.max_sessions);
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            tracing::warn!(
                sessions = self.session_count(),
                "WebRTC sessions did not end in time"
            );
        }
    }
}

/// A session's id: a random UUID (RFC 9562 version 4), unguessable, so a `Location`
/// reveals nothing about other sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> SessionId {
        let mut bytes: [u8; 16] = rand::random();
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
        SessionId(bytes)
    }

    /// Parses the hyphenated lower-case form; `None` for anything else.
    pub fn parse(text: &str) -> Option<SessionId> {
        let bytes = text.as_bytes();
        if bytes.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut digits = Vec::with_capacity(32);
        for (i, &c) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            digits.push(match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return None,
            });
        }
        for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
            *byte = (pair[0] << 4) | pair[1];
        }
        Some(SessionId(out))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Where a session is, as `GET /whep/session/<id>` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SessionState {
    /// Answered; ICE and DTLS under way.
    Connecting,
    /// Media flowing.
    Playing,
    /// Over; `reason` says why.
    Ended,
}

#[derive(Debug, Clone)]
struct SessionStatus {
    state: SessionState,
    reason: Option<String>,
    ended_at: Option<Instant>,
}

/// One session as the HTTP side sees it.
pub(crate) struct SessionEntry {
    id: SessionId,
    camera: CameraId,
    user: String,
    status: watch::Sender<SessionStatus>,
    stop: watch::Sender<bool>,
}

pub(crate) struct Shared<D> {
    directory: Arc<D>,
    settings: WebrtcSettings,
    bind_ip: IpAddr,
    sessions: Mutex<HashMap<SessionId, Arc<SessionEntry>>>,
    /// Session slots (`[webrtc].max_sessions`), held from the POST to the session's end.
    permits: Arc<Semaphore>,
    open: AtomicUsize,
    ports: Arc<PortPool>,
    /// Cameras found unplayable in a browser, with the parameter sets they had and the
    /// reason: later POSTs get 422 until the camera's parameter sets change (its encoder
    /// was reconfigured).
    unplayable: Mutex<HashMap<CameraId, (Vec<Bytes>, String)>>,
    shutdown: watch::Sender<bool>,
}

impl<D> Shared<D> {
    fn lock_sessions(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<SessionEntry>>> {
        // Entries are replaced whole; a panic elsewhere leaves the map consistent.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn mark_unplayable(&self, camera: &CameraId, info: &StreamInfo, why: &Unplayable) {
        self.unplayable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(
                camera.clone(),
                (info.parameter_sets.clone(), why.to_string()),
            );
    }

    /// Why `camera` cannot play, if a session found out with the parameter sets it has
    /// now.
    fn unplayable(&self, camera: &CameraId, info: &StreamInfo) -> Option<String> {
        let mut known = self
            .unplayable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match known.get(camera) {
            Some((sets, why)) if *sets == info.parameter_sets => Some(why.clone()),
            Some(_) => {
                known.remove(camera);
                None
            }
            None => None,
        }
    }

    fn session_opened(&self) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("passerelle_webrtc_sessions").set(open as f64);
    }

    fn session_closed(&self) {
        let open = self.open.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        metrics::gauge!("passerelle_webrtc_sessions").set(open as f64);
    }

    /// Forgets sessions ended long ago, and the oldest beyond [`ENDED_KEPT`].
    fn prune(&self, now: Instant) {
        let mut sessions = self.lock_sessions();
        sessions.retain(|_, entry| {
            entry
                .status
                .borrow()
                .ended_at
                .is_none_or(|at| now.duration_since(at) < ENDED_RETENTION)
        });
        let mut ended: Vec<(Instant, SessionId)> = sessions
            .iter()
            .filter_map(|(id, entry)| Some((entry.status.borrow().ended_at?, *id)))
            .collect();
        if ended.len() > ENDED_KEPT {
            ended.sort_by_key(|(at, _)| *at);
            for (_, id) in &ended[..ended.len() - ENDED_KEPT] {
                sessions.remove(id);
            }
        }
    }
}

/// Why a POST was refused: the answer and the metrics label.
struct Refusal {
    error: ApiError,
    reason: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: &str) -> Refusal {
        Refusal {
            error: ApiError::new(status, message),
            reason,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        metrics::counter!("passerelle_webrtc_sessions_refused_total", "reason" => self.reason)
            .increment(1);
        self.error.into_response()
    }
}

/// The client's address, when the server records it.
struct PeerAddr(SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<PeerAddr, Self::Rejection> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |info| info.0),
        ))
    }
}

/// `POST /whep/<camera-id>`.
async fn create<D: CameraDirectory>(
    State(shared): State<Arc<Shared<D>>>,
    Caller(user): Caller,
    PeerAddr(peer): PeerAddr,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let posted = Instant::now();
    if *shared.shutdown.borrow() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the gateway is stopping",
        ));
    }
    // The raw path, not percent-decoded: `%2F` or `%2e` is no camera id character.
    let text = uri.path().strip_prefix("/whep/").unwrap_or_default();
    let camera: CameraId = text.parse().map_err(|error: crate::ids::IdError| {
        let status = if error.is_too_long() {
            StatusCode::URI_TOO_LONG
        } else {
            StatusCode::BAD_REQUEST
        };
        Refusal::new(
            status,
            "bad_camera_id",
            &format!("{text:?} is not a camera id: {error}"),
        )
    })?;
    let not_found = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no camera {camera} here"),
        )
    };
    if !user.may_watch(&camera) {
        return Err(not_found());
    }
    let sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !sdp {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_offer",
            "expected Content-Type: application/sdp",
        ));
    }
    let offer = String::from_utf8(body.to_vec()).map_err(|_| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_offer",
            "the offer is not UTF-8",
        )
    })?;
    let offered = negotiate::offered_video(&offer).map_err(|error: OfferError| {
        Refusal::new(StatusCode::BAD_REQUEST, "bad_offer", &error.to_string())
    })?;
    // The rest runs to its end even if the client goes away meanwhile: a peer connection
    // or a viewing session is never left half made (the session then ends at its connect
    // timeout).
    let answered = tokio::spawn(answer(Offer {
        shared,
        user,
        peer,
        camera,
        sdp: offer,
        offered,
        posted,
    }))
    .await;
    answered.unwrap_or_else(|error| {
        tracing::error!(%error, "WHEP offer task failed");
        Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "setup_failed",
            "the WebRTC session could not be set up",
        ))
    })
}

/// A checked offer, for [`answer`].
struct Offer<D> {
    shared: Arc<Shared<D>>,
    user: Arc<HttpUser>,
    peer: SocketAddr,
    camera: CameraId,
    sdp: String,
    offered: Vec<negotiate::OfferedCodec>,
    posted: Instant,
}

/// Takes a session slot, negotiates with the camera's stream, builds the peer
/// connection, opens the view and starts the session's task.
async fn answer<D: CameraDirectory>(offer: Offer<D>) -> Result<Response, Refusal> {
    let Offer {
        shared,
        user,
        peer,
        camera,
        sdp: offer,
        offered,
        posted,
    } = offer;
    let not_found = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no camera {camera} here"),
        )
    };
    let permit = Arc::clone(&shared.permits)
        .try_acquire_owned()
        .map_err(|_| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "max_sessions",
                &format!(
                    "all {} WebRTC sessions of this gateway are in use; try again later",
                    shared.settings.max_sessions
                ),
            )
        })?;
    let channel = shared
        .directory
        .mount(&camera)
        .and_then(|mount| mount.tracks.into_iter().next())
        .ok_or_else(not_found)?;
    let info = channel.wait_info(DESCRIBE_WAIT).await.ok_or_else(|| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &format!("camera {camera} is not available now"),
        )
    })?;
    if let Some(why) = shared.unplayable(&camera, &info) {
        return Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unplayable",
            &why,
        ));
    }
    let choice = negotiate::choose(&CameraVideo::of(&info), &offered).map_err(
        |error: NegotiationError| {
            Refusal::new(
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                &error.to_string(),
            )
        },
    )?;
    let (peer_connection, port) = open_on_a_free_port(&shared, &choice, offer).await?;
    let kind = match user.kind {
        UserKind::Agent => AgentKind::Agent,
        UserKind::Service => AgentKind::Service,
    };
    let viewer = Viewer {
        name: user.name.clone(),
        kind,
        peer,
    };
    let guard = match shared.directory.open_view(&viewer, &camera).await {
        Ok(guard) => guard,
        Err(refusal) => {
            peer_connection.close().await;
            return Err(view_refused(&camera, &refusal));
        }
    };
    let mut answer = peer_connection.answer.clone();
    if let Some(public) = shared.settings.public_address {
        answer = negotiate::rewrite_candidates(&answer, public);
    }
    let id = SessionId::random();
    let entry = Arc::new(SessionEntry {
        id,
        camera: camera.clone(),
        user: user.name.clone(),
        status: watch::Sender::new(SessionStatus {
            state: SessionState::Connecting,
            reason: None,
            ended_at: None,
        }),
        stop: watch::Sender::new(false),
    });
    shared.prune(posted);
    shared.lock_sessions().insert(id, Arc::clone(&entry));
    shared.session_opened();
    tracing::info!(%camera, user = %user.name, session = %id, port = port.port, "WebRTC session answered");
    tokio::spawn(session::run(session::Session {
        shared: Arc::clone(&shared),
        entry,
        peer: peer_connection,
        channel,
        info,
        guard,
        kind_label: kind.as_str(),
        posted,
        port,
        permit,
    }));
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, format!("/whep/session/{id}")),
        ],
        answer,
    )
        .into_response())
}

/// Builds the peer connection on the next free port of the range, skipping ports other
/// programs hold.
async fn open_on_a_free_port<D>(
    shared: &Shared<D>,
    choice: &negotiate::Choice,
    offer: String,
) -> Result<(session::Peer, PortLease), Refusal> {
    let unavailable =
        |message: &str| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "no_port", message);
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS.min(shared.settings.udp_ports.len()) {
        let Some(port) = PortPool::lease(&shared.ports) else {
            return Err(unavailable(
                "every WebRTC port of this gateway is in use; try again later",
            ));
        };
        let bind = SocketAddr::new(shared.bind_ip, port.port);
        match session::open_peer(choice, offer.clone(), bind).await {
            Ok(peer) => return Ok((peer, port)),
            Err(error @ session::SetupError::Build { .. }) => {
                tracing::debug!(%error, "WebRTC port not usable, trying another");
                last_error = Some(error);
            }
            Err(error @ session::SetupError::Offer(_)) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_offer",
                    &error.to_string(),
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "WebRTC session setup failed");
                return Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "setup_failed",
                    &format!("the WebRTC session could not be set up: {error}"),
                ));
            }
        }
    }
    if let Some(error) = last_error {
        tracing::warn!(%error, "no usable WebRTC port");
    }
    Err(unavailable(
        "no WebRTC port of this gateway could be bound; try again later",
    ))
}

fn view_refused(camera: &CameraId, refusal: &ViewRefusal) -> Refusal {
    match refusal {
        ViewRefusal::NotFound => Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no camera {camera} here"),
        ),
        ViewRefusal::Forbidden { reason } => {
            tracing::info!(%camera, reason, "WebRTC viewing refused");
            Refusal::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!(
                    "camera {camera} may not be watched now: open an intervention giving the reason, or wait for the hours its convention allows"
                ),
            )
        }
        ViewRefusal::Unavailable => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &format!("camera {camera} is not available now"),
        ),
    }
}

#[derive(Serialize)]
struct SessionBody<'a> {
    camera: &'a str,
    state: SessionState,
    reason: Option<&'a str>,
}

/// The caller's session `id`, or 404.
fn own_session<D>(shared: &Shared<D>, user: &str, id: &str) -> Result<Arc<SessionEntry>, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such WebRTC session");
    let id = SessionId::parse(id).ok_or_else(not_found)?;
    let entry = shared
        .lock_sessions()
        .get(&id)
        .cloned()
        .ok_or_else(not_found)?;
    if entry.user != user {
        return Err(not_found());
    }
    Ok(entry)
}

/// `GET /whep/session/<id>`.
async fn show<D: CameraDirectory>(
    State(shared): State<Arc<Shared<D>>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let entry = own_session(&shared, &user.name, &id)?;
    let status = entry.status.borrow().clone();
    let camera = entry.camera.to_string();
    Ok(axum::Json(SessionBody {
        camera: &camera,
        state: status.state,
        reason: status.reason.as_deref(),
    })
    .into_response())
}

/// `DELETE /whep/session/<id>`: ends the session and waits (bounded) until it has
/// released everything, its journal record included.
async fn end<D: CameraDirectory>(
    State(shared): State<Arc<Shared<D>>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let entry = own_session(&shared, &user.name, &id)?;
    let mut status = entry.status.subscribe();
    if status.borrow().state == SessionState::Ended {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "the WebRTC session has already ended",
        ));
    }
    entry.stop.send_replace(true);
    let ended = status.wait_for(|s| s.state == SessionState::Ended);
    if tokio::time::timeout(DELETE_WAIT, ended).await.is_err() {
        tracing::warn!(session = %entry.id, "WebRTC session slow to end after DELETE");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The `[webrtc].udp_ports` not in use, handed out round-robin so a port just released
/// (to which a browser may still send) is not reused at once.
struct PortPool {
    range: PortRange,
    state: Mutex<PoolState>,
}

struct PoolState {
    used: BTreeSet<u16>,
    next: u16,
}

/// A port of the pool; dropping it returns the port.
pub(crate) struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
}

impl PortPool {
    fn new(range: PortRange) -> PortPool {
        PortPool {
            range,
            state: Mutex::new(PoolState {
                used: BTreeSet::new(),
                next: range.first(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next free port, `None` when all are leased.
    fn lease(pool: &Arc<PortPool>) -> Option<PortLease> {
        let (first, last) = (pool.range.first(), pool.range.last());
        let mut state = pool.lock();
        let mut port = state.next.clamp(first, last);
        for _ in 0..pool.range.len() {
            let candidate = port;
            port = if candidate == last {
                first
            } else {
                candidate + 1
            };
            if state.used.insert(candidate) {
                state.next = port;
                return Some(PortLease {
                    pool: Arc::clone(pool),
                    port: candidate,
                });
            }
        }
        None
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.lock().used.remove(&self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_random_v4_uuids_and_parse_back() {
        let id = SessionId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
        assert_eq!(SessionId::parse(&text), Some(id));
        assert_ne!(SessionId::random(), id);
        for bad in [
            "",
            "not-a-uuid",
            &text.to_uppercase(),
            &text.replace('-', ""),
            &format!("{}x", &text[..35]),
            &format!("{}_{}", &text[..8], &text[9..]),
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ports_are_leased_round_robin_and_returned_on_drop() {
        let pool = Arc::new(PortPool::new(PortRange::new(5000, 5002).unwrap()));
        let a = PortPool::lease(&pool).unwrap();
        let b = PortPool::lease(&pool).unwrap();
        let c = PortPool::lease(&pool).unwrap();
        assert_eq!((a.port, b.port, c.port), (5000, 5001, 5002));
        assert!(PortPool::lease(&pool).is_none());
        drop(b);
        let again = PortPool::lease(&pool).unwrap();
        assert_eq!(again.port, 5001);
        drop(a);
        drop(c);
        // Round-robin: after 5001 comes 5002, not the 5000 released first.
        assert_eq!(PortPool::lease(&pool).unwrap().port, 5002);
    }
}
