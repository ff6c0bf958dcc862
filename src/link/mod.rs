//! The QUIC link between gateways (layer 2): one endpoint that accepts and dials, the
//! control protocol of DESIGN.md "Wire protocol", and RTP over QUIC for media.
//!
//! # Shape
//!
//! [`LinkHandle::bind`] binds one `quinn::Endpoint` on `[quic] listen`: it accepts
//! partners' links and dials ours from the same port. Each configured partner has one
//! *partner task* that owns everything about that partner: its current connection, the
//! streams and viewing sessions on it in both directions, and the dialler. Handles
//! ([`LinkHandle`], [`ViewGuard`]) talk to partner tasks by message. Per connection, a
//! control-writer task and a media sender task ([`flow`]) run beside it.
//!
//! The composition layer plugs in two traits: [`CatalogProvider`] (what our policy gives
//! a partner: catalog, streams, viewing decisions) and [`Importer`] (the local channels
//! of the cameras we import). The link never reads the policy itself.
//!
//! # A connection, step by step
//!
//! 1. QUIC handshake (TLS 1.3, mutual, ALPN `passerelle/1`).
//! 2. The peer is identified with [`tls::identify_connection`] **before any control
//!    message is read**; a refusal closes with its [`tls::CloseCode`]. A link we dialled
//!    must name the partner we dialled ([`LinkCloseCode::WrongPeer`]).
//! 3. The dialler opens the bidirectional control stream; both sides send `Hello`
//!    (version, site id, features, policy serial) and read the peer's: it must name the
//!    site of the certificate ([`LinkCloseCode::HelloMismatch`]). Steps 1–3 are bounded
//!    by `handshake_timeout`.
//! 4. Both sides send a `Catalog` of what their policy grants the other (possibly
//!    empty), and a `CatalogUpdate` after every [`LinkHandle::policy_changed`]. The
//!    peer's first message after `Hello` must be its `Catalog`. A camera whose
//!    restrictions need a feature the peer did not declare in its `Hello` is withheld
//!    ([`Restrictions::enforced_by`](crate::control::Restrictions::enforced_by)), by the
//!    provider and again by the link, and the peer may subscribe only to cameras of the
//!    last catalog it was sent: a withheld camera is `NOT_GRANTED` even by its id.
//! 5. Steady state, in both directions at once (each side may provide and import):
//!    - the importing side sends `Subscribe {camera}` once per camera (ONE stream per
//!      camera per link, however many viewers); the provider asks
//!      [`CatalogProvider::stream`], waits (bounded) for a cold camera's description,
//!      and answers `SubscribeOk {flow_id, codec, parameter sets}` or
//!      `SubscribeError {code}`;
//!    - each local viewer is a `ViewOpen {view_id, camera, agent, kind, reason, ...}`
//!      that the provider decides with [`CatalogProvider::open_view`] and answers with
//!      `ViewAnswer`. **No packet of a camera crosses before at least one viewing
//!      session on it is allowed**: the provider subscribes to the camera's channel on
//!      the first allowed view and stops at the last `ViewClose`;
//!    - a re-shared camera's session is carried on hop by hop: the provider's decision
//!      is pending ([`ViewDecision::Relayed`]) while the same session (agent, kind,
//!      reason, intervention, origin) is opened at the camera's own site over our link
//!      with it; `ViewAnswer` goes back only once that site answered. The upstream
//!      [`ViewGuard`] is held while the session lives; when the upstream ends it, the
//!      session is revoked here too (a second `ViewAnswer`), and when the session
//!      closes here, the guard's drop closes it upstream;
//!    - the provider revokes a view it allowed by sending a second `ViewAnswer` with a
//!      refusal (ViewClose ids always name the *sender's* views), and ends a whole
//!      stream with `StreamEnded {code}`; the importer ends with `Unsubscribe` once its
//!      last view closed;
//!    - `KeyframeRequest` goes upstream when the imported channel asks for one.
//! 6. Malformed control bytes close the connection with
//!    [`LinkCloseCode::MalformedControl`], a misplaced message with
//!    [`LinkCloseCode::UnexpectedMessage`]; other links are untouched.
//!
//! # Media
//!
//! Each packet is one RoQ datagram (a varint flow id, then RTP with this leg's own SSRC
//! and sequence, or RTCP sender reports on the same flow), or with
//! `media_transport = stream` a unidirectional stream per flow. Packets in a channel
//! already fit a datagram (re-split once in the channel); one that does not fit the
//! current path is counted as dropped with reason `too_large`. Received packets are
//! parsed, classified and published into the local channel of the imported camera, whose
//! id is the partner's prefix followed by the provider's id. Unknown flows and
//! malformed packets are dropped and counted, never fatal.
//!
//! # Reconnecting
//!
//! A partner with dial addresses is dialled at start and re-dialled after every drop,
//! with exponential back-off and jitter ([`crate::backoff`]). Its addresses are tried in
//! turn, starting after the address of the last dialled link that was lost: with the
//! two gateways of an active/standby pair listed (same site id, same certificate), a
//! dead active is detected by QUIC's idle timeout (within `keep_alive` + `idle_timeout`:
//! the timer restarts at the first keep-alive sent into the silence) and the standby
//! is dialled first. Viewing sessions that were open survive a drop as
//! [`ViewState::Reconnecting`]: on the next connection their cameras are subscribed
//! again and the sessions re-opened; a session the provider now refuses ends
//! ([`ViewGuard::ended`]).
//!
//! One live link per partner. A second link with the same partner is settled by a
//! stated tie-break, the loser closed with [`LinkCloseCode::Duplicate`]:
//! - dialled by opposite sides (both dialled at once): the link dialled by the site with
//!   the smaller id (byte order) is kept;
//! - dialled by the same side from the same address: the new link replaces the current
//!   one (the peer restarted);
//! - dialled by the same side from another address (the other gateway of a pair):
//!   the current link is kept; the other gateway keeps re-dialling with back-off and
//!   gets in once the current link is gone.
//!
//! # Metrics
//!
//! `passerelle_peer_connected{peer}`, `passerelle_peer_rtt_seconds{peer}`,
//! `passerelle_access_denied_total{peer,reason}` (TLS refusals, refused streams and
//! viewing sessions), forwarded counters through the channel's subscriptions,
//! `passerelle_dropped_packets_total{camera,peer,reason="too_large"}`, and
//! `passerelle_link_received_dropped_total{peer,reason}` (`unknown_flow`, `malformed`,
//! `backlog`).

pub mod close;
pub mod flow;
mod partner;
pub mod settings;
mod socket;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use close::{LinkCloseCode, describe_close_code};
pub use flow::MediaError;
pub use settings::{DEFAULT_DSCP_TOS, DialTarget, LinkSettings, MediaTransport, PartnerLink};

use crate::channel::Channel;
use crate::control::{
    CatalogCamera, Checkpoint, ControlReader, ControlStreamError, ErrorCode, Feature, Hello,
    Message, PROTO_VERSION,
};
use crate::ids::{CameraId, SiteId};
use crate::log_limit::KeyedLogLimiter;
use crate::policy::ViewingSession;
use crate::tls::{self, Direction, LinkTls, PeerIdentity, PeerRefusal};
use partner::{Command, PartnerTask};

/// What this site offers a partner. The composition layer implements it with the policy
/// store, the journal and the camera channels; every call is synchronous and quick (a
/// re-shared camera's viewing decision hands back a future instead of waiting).
///
/// The cameras offered may be our own or, re-shared, cameras we import (DESIGN.md
/// "Onward sharing"): the link treats both alike, except that a re-shared camera's
/// viewing sessions are decided upstream too ([`ViewDecision::Relayed`]) and its
/// stream reads the imported channel, which the upstream session keeps fed.
pub trait CatalogProvider: Send + Sync + 'static {
    /// Serial of the policy in force (sent in `Hello`), `None` without a valid policy.
    fn policy_serial(&self) -> Option<u64>;

    /// An inbound link was refused before any control message (certificate from no
    /// partner's CA, unknown peer, wrong CA...): for the journal's per-minute
    /// aggregation. `peer` is a configured partner or `unknown`. Nothing by default.
    fn handshake_refused(&self, peer: &str, reason: &str) {
        let _ = (peer, reason);
    }

    /// The cameras our policy grants `partner` now, in our ids, with codec parameters
    /// and restrictions. A camera whose restrictions need a feature `features` lacks is
    /// withheld, never sent unrestricted.
    fn catalog(&self, partner: &SiteId, features: &[Feature]) -> Vec<CatalogCamera>;

    /// May `partner` have a stream of `camera` now, given the streams it already holds
    /// on this link (`active`, for `max_streams`)? The channel to read it from, or the
    /// refusal. Also called again after each policy change for every live stream.
    fn stream(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        active: &[CameraId],
    ) -> Result<Channel, ErrorCode>;

    /// Decides a viewing session of `camera` requested by `partner`, and journals the
    /// decision (before any packet flows).
    ///
    /// For one of our own cameras the decision is [`ViewDecision::Now`]. For a camera
    /// we import and re-share, our policy decides first (refusing at once if it says
    /// no), then the session is carried to the camera's own site and the decision is
    /// [`ViewDecision::Relayed`]: see its contract.
    fn open_view(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: &ViewingSession,
    ) -> ViewDecision;

    /// Re-decides a session `open_view` allowed, after a policy change; journals
    /// nothing (a refusal is followed by `close_view`).
    fn check_view(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: &ViewingSession,
    ) -> Result<(), ErrorCode>;

    /// A session `open_view` allowed has ended (journal its end).
    fn close_view(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: &ViewingSession,
        end: ViewEnd,
    );
}

/// A [`CatalogProvider`]'s answer to a viewing session.
pub enum ViewDecision {
    /// Decided now: `Ok` lets the session watch (it is journaled).
    Now(Result<(), ErrorCode>),
    /// A re-shared camera: the session was allowed by our policy and is being carried
    /// hop by hop to the camera's own site; this resolves once that site answered.
    ///
    /// Contract: `Ok(guard)` means the provider journaled the session opened, and
    /// `guard` is the upstream session it rests on. The link then holds `guard` for
    /// the session's life (dropping it closes the upstream session), revokes the
    /// session when the upstream ends it ([`ViewGuard::ended`]), and calls
    /// [`CatalogProvider::close_view`] exactly once when it ends, as for `Now(Ok)`. The
    /// future may be dropped before it resolves (the requester closed the session or
    /// the link dropped): it must then leave nothing journaled open, so it has no
    /// await point after journaling. `Err` is a refusal, journaled by the provider.
    Relayed(RelayedView),
}

/// The pending answer of a re-shared camera's site, see [`ViewDecision::Relayed`].
pub type RelayedView =
    std::pin::Pin<Box<dyn Future<Output = Result<ViewGuard, ErrorCode>> + Send + 'static>>;

impl std::fmt::Debug for ViewDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ViewDecision::Now(result) => f.debug_tuple("Now").field(result).finish(),
            ViewDecision::Relayed(_) => f.write_str("Relayed(..)"),
        }
    }
}

/// The receiving side's local plumbing for imported cameras.
pub trait Importer: Send + Sync + 'static {
    /// The local channel of `camera` (our id: the partner's prefix, then its id)
    /// imported from `partner`; `None` refuses (not in the partner's import list). The
    /// link publishes into it and sets its stream description.
    fn channel(&self, partner: &SiteId, camera: &CameraId) -> Option<Channel>;

    /// `partner`'s catalog (in its ids) changed; empty while the link is down.
    fn catalog_changed(&self, partner: &SiteId, cameras: &[CatalogCamera]);

    /// `partner` sent a signed head of its journal, for ours.
    fn checkpoint(&self, partner: &SiteId, checkpoint: Checkpoint) {
        let _ = (partner, checkpoint);
    }
}

/// Why a viewing session ended, for [`CatalogProvider::close_view`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewEnd {
    /// The viewer closed it.
    Closed,
    /// The importer dropped the whole stream.
    Unsubscribed,
    /// We ended it: a policy change, or the camera went away.
    Withdrawn(ErrorCode),
    /// The link dropped.
    LinkDown,
    /// This gateway is stopping.
    ShuttingDown,
}

impl ViewEnd {
    /// A stable spelling for the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewEnd::Closed => "closed",
            ViewEnd::Unsubscribed => "unsubscribed",
            ViewEnd::Withdrawn(_) => "withdrawn",
            ViewEnd::LinkDown => "link_down",
            ViewEnd::ShuttingDown => "shutting_down",
        }
    }
}

/// Where a viewing session opened with [`LinkHandle::open_view`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewState {
    /// Waiting for the camera site's answer.
    Opening,
    /// Allowed; packets flow into the imported camera's channel.
    Open,
    /// The link dropped; the session is re-opened when it comes back.
    Reconnecting,
    /// Over, for this reason (a refusal after a reconnect, a withdrawn grant, the
    /// stream ended upstream).
    Ended(ErrorCode),
}

/// One live viewing session on an imported camera. Dropping it closes the session
/// (`ViewClose` upstream) and, with the last session on the camera, the stream.
#[derive(Debug)]
pub struct ViewGuard {
    key: u64,
    partner: SiteId,
    camera: CameraId,
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ViewState>,
}

impl ViewGuard {
    /// The partner providing the camera.
    pub fn partner(&self) -> &SiteId {
        &self.partner
    }

    /// The camera, in our ids.
    pub fn camera(&self) -> &CameraId {
        &self.camera
    }

    /// The session's state now.
    pub fn state(&self) -> ViewState {
        *self.state.borrow()
    }

    /// Waits until the session is over for a reason other than this guard being
    /// dropped, and returns why.
    pub async fn ended(&mut self) -> ErrorCode {
        let ended = self
            .state
            .wait_for(|state| matches!(state, ViewState::Ended(_)))
            .await;
        match ended.map(|state| *state) {
            Ok(ViewState::Ended(code)) => code,
            // The partner task is gone: the link is shutting down.
            _ => ErrorCode::ShuttingDown,
        }
    }
}

impl Drop for ViewGuard {
    fn drop(&mut self) {
        // The partner task may be gone already (shutdown): nothing left to close.
        let _ = self.commands.send(Command::CloseView { key: self.key });
    }
}

/// A partner link's state, for `GET /api/v1/links`, the journal's link up/down records
/// and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub partner: SiteId,
    pub connected: bool,
    /// Who dialled the live link.
    pub direction: Option<Direction>,
    pub remote: Option<SocketAddr>,
    /// SHA-256 of the peer's certificate on the live link, lower-case hex.
    pub certificate_sha256: Option<String>,
    /// When the live link came up.
    pub since: Option<jiff::Timestamp>,
    /// The policy serial the peer announced.
    pub peer_policy_serial: Option<u64>,
    /// Cameras in the peer's latest catalog.
    pub peer_catalog_len: usize,
    /// The live link's round-trip time, from QUIC, sampled every 2 s.
    pub rtt: Option<std::time::Duration>,
    /// Streams the live link carries, both ways.
    pub streams: usize,
}

impl LinkStatus {
    fn down(partner: SiteId) -> Self {
        LinkStatus {
            partner,
            connected: false,
            direction: None,
            remote: None,
            certificate_sha256: None,
            since: None,
            peer_policy_serial: None,
            peer_catalog_len: 0,
            rtt: None,
            streams: 0,
        }
    }
}

/// Why the link could not start.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot bind the QUIC endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("[quic] {key}: {problem}")]
    Settings {
        key: &'static str,
        problem: &'static str,
    },
    #[error("partner {0} is listed twice")]
    DuplicatePartner(SiteId),
}

/// The running link adapter. Cheap to clone; the endpoint closes when the last handle
/// is dropped or at [`LinkHandle::shutdown`].
#[derive(Clone)]
pub struct LinkHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle")
            .field("site", &self.shared.settings.site)
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

struct PartnerEntry {
    prefix: Option<CameraId>,
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<LinkStatus>,
}

/// What partner tasks and handshakes share.
pub(crate) struct Context {
    settings: Arc<LinkSettings>,
    endpoint: quinn::Endpoint,
    tls: RwLock<Arc<LinkTls>>,
    transport: Arc<quinn::TransportConfig>,
    provider: Arc<dyn CatalogProvider>,
    importer: Arc<dyn Importer>,
}

impl Context {
    fn tls(&self) -> Arc<LinkTls> {
        // A poisoned lock still holds a complete `Arc`: the swap is one assignment.
        Arc::clone(&self.tls.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn hello(&self) -> Hello {
        Hello {
            proto_version: PROTO_VERSION,
            site: self.settings.site.clone(),
            features: Feature::ALL.to_vec(),
            policy_serial: self.provider.policy_serial(),
        }
    }

    fn client_config(&self, partner: &SiteId) -> Option<quinn::ClientConfig> {
        let crypto = self.tls().client_config(partner)?;
        let mut config = quinn::ClientConfig::new(crypto);
        config.transport_config(Arc::clone(&self.transport));
        Some(config)
    }

    fn server_config(
        tls: &LinkTls,
        transport: &Arc<quinn::TransportConfig>,
    ) -> quinn::ServerConfig {
        let mut config = quinn::ServerConfig::with_crypto(tls.server_config());
        config.transport_config(Arc::clone(transport));
        config
    }
}

struct Shared {
    settings: Arc<LinkSettings>,
    context: Arc<Context>,
    local_addr: SocketAddr,
    partners: HashMap<SiteId, PartnerEntry>,
    next_view: AtomicU64,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.context.endpoint.close(
            LinkCloseCode::Shutdown.var_int(),
            LinkCloseCode::Shutdown.reason().as_bytes(),
        );
    }
}

impl LinkHandle {
    /// Binds the endpoint on `settings.listen`, starts accepting, and dials every
    /// partner that has addresses. Must run inside a tokio runtime.
    pub fn bind(
        settings: LinkSettings,
        tls: Arc<LinkTls>,
        provider: Arc<dyn CatalogProvider>,
        importer: Arc<dyn Importer>,
    ) -> Result<LinkHandle, LinkError> {
        let transport = settings.transport_config()?;
        let server = Context::server_config(&tls, &transport);
        let bind_error = |source| LinkError::Bind {
            addr: settings.listen,
            source,
        };
        let socket =
            socket::MarkedSocket::bind(settings.listen, settings.dscp_tos).map_err(bind_error)?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let local_addr = endpoint.local_addr().map_err(|source| LinkError::Bind {
            addr: settings.listen,
            source,
        })?;
        let settings = Arc::new(settings);
        let context = Arc::new(Context {
            settings: Arc::clone(&settings),
            endpoint: endpoint.clone(),
            tls: RwLock::new(tls),
            transport,
            provider,
            importer,
        });
        let mut partners = HashMap::new();
        let mut tasks = Vec::new();
        for partner in &settings.partners {
            let (commands, commands_rx) = mpsc::unbounded_channel();
            let (status_tx, status) = watch::channel(LinkStatus::down(partner.id.clone()));
            let entry = PartnerEntry {
                prefix: partner.prefix.clone(),
                commands,
                status,
            };
            if partners.insert(partner.id.clone(), entry).is_some() {
                return Err(LinkError::DuplicatePartner(partner.id.clone()));
            }
            let task = PartnerTask::new(
                partner.clone(),
                Arc::clone(&context),
                commands_rx,
                status_tx,
            );
            tasks.push(tokio::spawn(task.run()));
        }
        let shared = Arc::new(Shared {
            settings,
            context,
            local_addr,
            partners,
            next_view: AtomicU64::new(1),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        tasks.push(tokio::spawn(accept_loop(endpoint, Arc::downgrade(&shared))));
        *shared.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        tracing::info!(site = %shared.settings.site, %local_addr, "link endpoint listening");
        Ok(LinkHandle { shared })
    }

    /// The bound UDP address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The policy changed: every link sends a `CatalogUpdate`, and streams and viewing
    /// sessions the new policy refuses are ended. Call it on a timer too (about once a
    /// minute) so hours windows and grant ends take effect.
    pub fn policy_changed(&self) {
        for entry in self.shared.partners.values() {
            let _ = entry.commands.send(Command::PolicyChanged);
        }
    }

    /// Certificates, keys or CRLs were reloaded: new links use `tls`, and every live
    /// link is identified again under it and closed if now refused.
    pub fn tls_reloaded(&self, tls: Arc<LinkTls>) {
        let context = &self.shared.context;
        context
            .endpoint
            .set_server_config(Some(Context::server_config(&tls, &context.transport)));
        *context.tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
        for entry in self.shared.partners.values() {
            let _ = entry.commands.send(Command::TlsReloaded);
        }
    }

    /// Sends a signed head of our journal to every connected partner.
    pub fn send_checkpoint(&self, checkpoint: &Checkpoint) {
        for entry in self.shared.partners.values() {
            let _ = entry
                .commands
                .send(Command::Send(Message::Checkpoint(checkpoint.clone())));
        }
    }

    /// Every partner link's state.
    pub fn status(&self) -> Vec<LinkStatus> {
        let mut all: Vec<LinkStatus> = self
            .shared
            .partners
            .values()
            .map(|entry| entry.status.borrow().clone())
            .collect();
        all.sort_by(|a, b| a.partner.cmp(&b.partner));
        all
    }

    /// Watches one partner link's state (link up/down records).
    pub fn watch_status(&self, partner: &SiteId) -> Option<watch::Receiver<LinkStatus>> {
        self.shared
            .partners
            .get(partner)
            .map(|entry| entry.status.clone())
    }

    /// Opens a viewing session on `camera` (our id, under `partner`'s prefix) for
    /// `session`: subscribes the stream if this is its first session, sends `ViewOpen`
    /// and waits (at most `view_timeout`) for the camera site's answer.
    ///
    /// Errors: `NOT_GRANTED` when the camera is not under a partner we import from (or
    /// the importer refuses it), `CAMERA_UNAVAILABLE` when the link is down or the
    /// answer does not come in time, else the provider's refusal.
    pub async fn open_view(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: ViewingSession,
    ) -> Result<ViewGuard, ErrorCode> {
        let entry = self
            .shared
            .partners
            .get(partner)
            .ok_or(ErrorCode::NotGranted)?;
        let prefix = entry.prefix.as_ref().ok_or(ErrorCode::NotGranted)?;
        let remote = camera.strip_prefix(prefix).ok_or(ErrorCode::NotGranted)?;
        let key = self.shared.next_view.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let (state_tx, state) = watch::channel(ViewState::Opening);
        entry
            .commands
            .send(Command::OpenView {
                key,
                camera: remote,
                local_camera: camera.clone(),
                session,
                reply,
                state: state_tx,
            })
            .map_err(|_| ErrorCode::ShuttingDown)?;
        // Made before waiting, so a timeout or a cancelled caller closes the session.
        let guard = ViewGuard {
            key,
            partner: partner.clone(),
            camera: camera.clone(),
            commands: entry.commands.clone(),
            state,
        };
        match tokio::time::timeout(self.shared.settings.view_timeout, answer).await {
            Ok(Ok(Ok(()))) => Ok(guard),
            Ok(Ok(Err(code))) => Err(code),
            Ok(Err(_)) => Err(ErrorCode::ShuttingDown),
            Err(_) => {
                tracing::warn!(%partner, %camera, "no answer to a viewing session in time");
                Err(ErrorCode::CameraUnavailable)
            }
        }
    }

    /// Closes every link with [`LinkCloseCode::Shutdown`], ends every viewing session,
    /// and waits (bounded) for the peers to acknowledge.
    pub async fn shutdown(&self) {
        for entry in self.shared.partners.values() {
            let _ = entry.commands.send(Command::Shutdown);
        }
        let tasks =
            std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let endpoint = &self.shared.context.endpoint;
        let wait = async {
            for task in tasks {
                if task.is_finished() {
                    continue;
                }
                // The accept loop only ends with the endpoint.
                endpoint.close(
                    LinkCloseCode::Shutdown.var_int(),
                    LinkCloseCode::Shutdown.reason().as_bytes(),
                );
                let _ = task.await;
            }
            endpoint.wait_idle().await;
        };
        if tokio::time::timeout(Duration::from_secs(3), wait)
            .await
            .is_err()
        {
            tracing::warn!("link shutdown timed out");
        }
    }
}

/// A link that completed steps 1–3 of the module doc, ready for its partner task.
pub(crate) struct Established {
    connection: quinn::Connection,
    identity: PeerIdentity,
    direction: Direction,
    /// For a link we dialled, the index of the partner address it went to.
    target: Option<usize>,
    hello: Hello,
    reader: ControlReader<quinn::RecvStream>,
    send: quinn::SendStream,
}

/// Why a link failed before its partner task took it.
#[derive(Debug, thiserror::Error)]
enum EstablishError {
    #[error("peer refused: {0}")]
    Refused(#[from] PeerRefusal),
    #[error("dialled {expected} but its certificate is for {actual}")]
    WrongPeer { expected: SiteId, actual: SiteId },
    #[error("no control stream or Hello within the handshake timeout")]
    Timeout,
    #[error("control stream: {0}")]
    Control(#[from] ControlStreamError),
    #[error("first control message was {kind}, expected hello")]
    NotHello { kind: &'static str },
    #[error("control stream ended before hello")]
    Ended,
    #[error("Hello names {hello} but the certificate names {certificate}")]
    HelloMismatch { hello: SiteId, certificate: SiteId },
    #[error("peer speaks protocol version {0}, we speak {PROTO_VERSION}")]
    Version(u32),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
}

impl EstablishError {
    /// The partner the failure is about, when the certificate named one.
    fn peer(&self) -> Option<&SiteId> {
        match self {
            EstablishError::Refused(refusal) => refusal.partner(),
            EstablishError::WrongPeer { actual, .. } => Some(actual),
            EstablishError::HelloMismatch { certificate, .. } => Some(certificate),
            _ => None,
        }
    }

    /// Whether the peer was refused (counted in `passerelle_access_denied_total`), as
    /// opposed to a link that failed.
    fn is_refusal(&self) -> bool {
        matches!(
            self,
            EstablishError::Refused(_)
                | EstablishError::WrongPeer { .. }
                | EstablishError::HelloMismatch { .. }
        )
    }

    /// Closes the connection with the code naming this failure; returns the reason label.
    fn close(&self, connection: &quinn::Connection) -> &'static str {
        let link = |code: LinkCloseCode| {
            code.close(connection);
            code.reason()
        };
        match self {
            EstablishError::Refused(refusal) => {
                let code = refusal.close_code();
                connection.close(code.var_int(), code.reason().as_bytes());
                code.reason()
            }
            EstablishError::WrongPeer { .. } => link(LinkCloseCode::WrongPeer),
            EstablishError::Timeout => link(LinkCloseCode::HandshakeTimeout),
            EstablishError::Control(ControlStreamError::Frame(_)) => {
                link(LinkCloseCode::MalformedControl)
            }
            EstablishError::NotHello { .. } => link(LinkCloseCode::UnexpectedMessage),
            EstablishError::HelloMismatch { .. } => link(LinkCloseCode::HelloMismatch),
            EstablishError::Version(_) => link(LinkCloseCode::UnsupportedVersion),
            EstablishError::Ended | EstablishError::Control(ControlStreamError::Io(_)) => {
                link(LinkCloseCode::ControlStreamEnded)
            }
            EstablishError::Connection(_) => "connection_lost",
        }
    }
}

/// Steps 2 and 3 of the module doc on a connection whose QUIC handshake is done.
async fn establish(
    connection: &quinn::Connection,
    direction: Direction,
    expected: Option<&SiteId>,
    context: &Context,
) -> Result<Established, EstablishError> {
    let tls = context.tls();
    let identity = tls::identify_connection(
        connection,
        tls.peer_trust(),
        direction,
        rustls::pki_types::UnixTime::now(),
    )?;
    if let Some(expected) = expected
        && *expected != identity.site
    {
        return Err(EstablishError::WrongPeer {
            expected: expected.clone(),
            actual: identity.site,
        });
    }
    let max = context.settings.max_control_message;
    let exchange = async {
        let (mut send, recv) = match direction {
            Direction::Outbound => connection.open_bi().await?,
            Direction::Inbound => connection.accept_bi().await?,
        };
        let mut writer = crate::control::ControlWriter::new(&mut send, max);
        writer.write(Message::Hello(context.hello())).await?;
        let mut reader = ControlReader::new(recv, max);
        let hello = match reader.read().await? {
            Some(Message::Hello(hello)) => hello,
            Some(other) => return Err(EstablishError::NotHello { kind: other.kind() }),
            None => return Err(EstablishError::Ended),
        };
        if hello.proto_version < 1 {
            return Err(EstablishError::Version(hello.proto_version));
        }
        if hello.site != identity.site {
            return Err(EstablishError::HelloMismatch {
                hello: hello.site,
                certificate: identity.site.clone(),
            });
        }
        Ok((hello, reader, send))
    };
    let (hello, reader, send) = tokio::time::timeout(context.settings.handshake_timeout, exchange)
        .await
        .map_err(|_| EstablishError::Timeout)??;
    Ok(Established {
        connection: connection.clone(),
        identity,
        direction,
        target: None,
        hello,
        reader,
        send,
    })
}

fn count_refusal(peer: &str, reason: &'static str) {
    metrics::counter!("passerelle_access_denied_total", "peer" => peer.to_owned(), "reason" => reason)
        .increment(1);
}

/// Inbound refusals are logged once per this interval per peer (with the count held
/// back): anyone can hammer the QUIC port. Each one is still counted and journaled.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Peers whose refusals are logged apart; past it they share one line.
const REFUSAL_LOG_PEERS: usize = 64;

type RefusalLog = std::sync::Mutex<KeyedLogLimiter<String>>;

/// `Some(held back)` when a refusal about `peer` may be logged now.
fn may_log(log: &RefusalLog, peer: &str) -> Option<u64> {
    // A poisoned lock still holds whole counters.
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    log.check(peer.to_owned(), tokio::time::Instant::now())
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Weak<Shared>) {
    let refusal_log = Arc::new(RefusalLog::new(KeyedLogLimiter::new(
        REFUSAL_LOG_INTERVAL,
        REFUSAL_LOG_PEERS,
    )));
    while let Some(incoming) = endpoint.accept().await {
        let Some(strong) = shared.upgrade() else {
            incoming.refuse();
            break;
        };
        let context = Arc::clone(&strong.context);
        drop(strong);
        let shared = shared.clone();
        let refusal_log = Arc::clone(&refusal_log);
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let timeout = context.settings.handshake_timeout;
            let connection = match tokio::time::timeout(timeout, async { incoming.await }).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => {
                    // Mostly a certificate no partner's CA issued: a refusal like the
                    // others, counted so a flood shows.
                    count_refusal("unknown", "handshake_failed");
                    context
                        .provider
                        .handshake_refused("unknown", "handshake_failed");
                    if let Some(held_back) = may_log(&refusal_log, "unknown") {
                        tracing::info!(%remote, %error, held_back, "inbound QUIC handshake failed");
                    }
                    return;
                }
                Err(_) => {
                    if let Some(held_back) = may_log(&refusal_log, "unknown") {
                        tracing::info!(%remote, held_back, "inbound QUIC handshake timed out");
                    }
                    return;
                }
            };
            match establish(&connection, Direction::Inbound, None, &context).await {
                Ok(established) => {
                    let peer = established.identity.site.clone();
                    let routed = shared.upgrade().and_then(|shared| {
                        let entry = shared.partners.get(&peer)?;
                        entry
                            .commands
                            .send(Command::Established(Box::new(established)))
                            .ok()
                    });
                    if routed.is_none() {
                        // TLS trusts only configured partners, so this is a partner
                        // removed since, or a link shutting down.
                        connection.close(
                            tls::CloseCode::UnknownPeer.var_int(),
                            tls::CloseCode::UnknownPeer.reason().as_bytes(),
                        );
                    }
                }
                Err(error) => {
                    let reason = error.close(&connection);
                    let peer = error
                        .peer()
                        .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
                    if error.is_refusal() {
                        count_refusal(&peer, reason);
                        context.provider.handshake_refused(&peer, reason);
                    }
                    if let Some(held_back) = may_log(&refusal_log, &peer) {
                        tracing::warn!(%remote, %peer, %error, reason, held_back, "inbound link refused");
                    }
                }
            }
        });
    }
}
