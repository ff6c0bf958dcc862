//! The partner task: everything about one partner, in one task.
//!
//! # Driving it
//!
//! [`PartnerTask::run`] loops over its inputs until its command channel closes or a
//! `Shutdown` command arrives:
//! - commands from handles ([`Command`]): open/close viewing sessions, policy and TLS
//!   changes, links established by the accept loop;
//! - internal events ([`Event`]) from helpers it spawned: a dial's outcome, a cold
//!   camera's description, a keyframe request of an imported channel. Each carries
//!   the connection generation it belongs to; stale ones are ignored;
//! - on the live connection: control messages, datagrams, media streams, and the ends
//!   of outgoing flows reported by the sender task;
//! - timers: the next dial, the RTT sample, the peer certificate's expiry.
//!
//! # States
//!
//! ```text
//!            dial timer / accepted link
//!   Down ─────────────────────────────────► Live(generation n)
//!    ▲  ◄── connection lost / closed ───────┘   (re-dial after back-off if we dial)
//! ```
//!
//! Viewing sessions of our users ([`LocalView`]) live across connections:
//! `Waiting` (needs its camera's stream) → `Asked` (ViewOpen sent) → `Open`; a drop
//! puts `Open` sessions back to `Waiting` (state `Reconnecting`) and ends those still
//! being opened for the first time. Everything else (streams both ways, the peer's
//! sessions on our cameras) belongs to one connection and ends with it.
//!
//! The peer's sessions on our cameras, for each `ViewOpen`:
//!
//! ```text
//!  ViewOpen ─ provider.open_view ─┬─ Now(Ok) ──────────────────────────────► allowed
//!                                 ├─ Now(Err) ─────────────────────────────► refused
//!                                 └─ Relayed ─► pending ─ Event::ViewDecided ┬► allowed (holds the upstream ViewGuard)
//!                                               │                            └► refused
//!                                               └─ ViewClose / stream or link ends: task aborted
//!  allowed ─ ViewClose, Unsubscribe, policy change, link down ──► ended (close_view)
//!  allowed (relayed) ─ Event::UpstreamEnded ──► revoked: ViewAnswer{refusal}, close_view
//! ```
//!
//! `ViewAnswer` is sent once, on leaving `pending`; `allowed` sessions are the only
//! ones that open the gate of their camera's flow. A pending decision that comes back
//! for a session no longer pending (closed meanwhile, or an older connection) is
//! closed at once with `close_view`, so what the provider journaled open also ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use metrics::{Counter, Gauge};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::close::{LinkCloseCode, describe_close_code};
use super::flow::{self, InFlow, MediaError, OutFlowEnd, OutFlowStart};
use super::settings::PartnerLink;
use super::{
    Context, Established, LinkStatus, RelayedView, ViewDecision, ViewEnd, ViewGuard, ViewState,
    establish,
};
use crate::backoff::Backoff;
use crate::channel::{Channel, SinkLabel};
use crate::control::{
    ControlReader, ControlStreamError, ErrorCode, Feature, FlowId, Message, RequestId, StreamEnded,
    Subscribe, SubscribeError, SubscribeOk, ViewAnswer, ViewId, ViewOpen,
};
use crate::ids::{CameraId, SiteId};
use crate::media::StreamInfo;
use crate::policy::ViewingSession;
use crate::roq;
use crate::tls::{self, Direction};

/// Control messages queued for the writer before the peer counts as not reading.
const CONTROL_BACKLOG: usize = 4096;

/// Packets from media streams queued for the partner task.
const STREAM_MEDIA_BACKLOG: usize = 1024;

/// Datagrams handled in one turn of the loop before it looks at its other inputs.
const DATAGRAM_BATCH: usize = 64;

/// How often the RTT gauge is sampled.
const RTT_INTERVAL: Duration = Duration::from_secs(2);

/// One link's QUIC path statistics, sampled every [`RTT_INTERVAL`].
struct PathGauges {
    rtt: Gauge,
    cwnd: Gauge,
    lost: metrics::Counter,
    /// The connection generation and lost-packet count read last: each connection
    /// counts from zero, the counter only grows.
    lost_seen: (u64, u64),
}

impl PathGauges {
    fn new(peer: &str) -> Self {
        PathGauges {
            rtt: metrics::gauge!("passerelle_peer_rtt_seconds", "peer" => peer.to_owned()),
            cwnd: metrics::gauge!("passerelle_peer_congestion_window_bytes", "peer" => peer.to_owned()),
            lost: metrics::counter!("passerelle_peer_lost_packets_total", "peer" => peer.to_owned()),
            lost_seen: (0, 0),
        }
    }
}

/// Least time between two log lines about dropped received packets.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What handles and the accept loop ask of a partner task.
pub(crate) enum Command {
    OpenView {
        key: u64,
        /// The provider's id.
        camera: CameraId,
        /// Our id (prefix included).
        local_camera: CameraId,
        session: ViewingSession,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
        state: watch::Sender<ViewState>,
    },
    CloseView {
        key: u64,
    },
    PolicyChanged,
    TlsReloaded,
    Send(Message),
    Established(Box<Established>),
    Shutdown,
}

/// What helper tasks report back.
enum Event {
    Dialled(Result<Box<Established>, String>),
    StreamReady {
        generation: u64,
        camera: CameraId,
        flow_id: FlowId,
        info: Option<StreamInfo>,
    },
    KeyframeWanted {
        generation: u64,
        flow_id: FlowId,
    },
    /// The camera site answered a peer's session on a re-shared camera.
    ViewDecided(Box<ViewDecided>),
    /// The upstream session a peer's session on a re-shared camera rests on ended.
    UpstreamEnded {
        generation: u64,
        view_id: ViewId,
        code: ErrorCode,
    },
}

/// The outcome of a [`ViewDecision::Relayed`], back in the partner task.
struct ViewDecided {
    generation: u64,
    view_id: ViewId,
    camera: CameraId,
    session: ViewingSession,
    result: Result<ViewGuard, ErrorCode>,
}

/// One thing the loop woke up for.
enum Input {
    Command(Option<Command>),
    Event(Event),
    Control(Result<Option<Message>, ControlStreamError>),
    Datagram(Result<Bytes, quinn::ConnectionError>),
    MediaStream(Result<quinn::RecvStream, quinn::ConnectionError>),
    StreamMedia(u64, Bytes),
    FlowEnded(FlowId, OutFlowEnd),
    Dial,
    Rtt,
    CertificateExpiry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ViewPhase {
    /// Needs its camera's stream on the live link (or a live link).
    Waiting,
    /// `ViewOpen` sent on the live link, no answer yet.
    Asked,
    /// Allowed.
    Open,
}

/// A viewing session of one of our users on the partner's camera.
struct LocalView {
    camera: CameraId,
    local_camera: CameraId,
    session: ViewingSession,
    /// Present until the first answer: the caller of `open_view` waits on it.
    reply: Option<oneshot::Sender<Result<(), ErrorCode>>>,
    state: watch::Sender<ViewState>,
    phase: ViewPhase,
}

/// A camera we import on the live link.
struct Import {
    channel: Channel,
    state: ImportState,
}

enum ImportState {
    /// `Subscribe` sent, no answer yet (the request is in `Live::requests`).
    Subscribing,
    Active {
        flow_id: FlowId,
        keyframes: JoinHandle<()>,
    },
}

/// A camera we provide on the live link.
struct Provided {
    flow_id: FlowId,
    channel: Channel,
    /// Known once the camera has described its stream.
    info: Option<StreamInfo>,
    /// Subscribe requests waiting for `info`.
    waiting: Vec<RequestId>,
    /// The peer's allowed viewing sessions on it.
    views: Vec<ViewId>,
    /// Set while packets flow: dropping the sender stops the flow.
    running: Option<(oneshot::Sender<()>, Arc<Notify>)>,
}

/// A viewing session the peer opened on one of our cameras, allowed.
struct PeerView {
    camera: CameraId,
    session: ViewingSession,
    /// For a re-shared camera: dropping it ends the task holding the upstream session
    /// ([`hold_upstream`]), which closes that session.
    #[expect(
        dead_code,
        reason = "held for its Drop, which releases the upstream session"
    )]
    upstream: Option<oneshot::Sender<()>>,
}

/// A viewing session the peer opened on a re-shared camera, allowed by our policy and
/// waiting for the camera site's answer ([`Event::ViewDecided`]).
struct PendingView {
    camera: CameraId,
    /// Awaits the answer; aborting it (the peer closed the session, the stream or the
    /// link ended) drops the upstream session still opening.
    task: JoinHandle<()>,
}

/// The live connection and everything that ends with it.
struct Live {
    generation: u64,
    connection: quinn::Connection,
    direction: Direction,
    /// For a link we dialled, the index of the partner address it went to.
    target: Option<usize>,
    /// The features the peer declared in its `Hello`.
    features: Vec<Feature>,
    reader: ControlReader<quinn::RecvStream>,
    writer: mpsc::Sender<Message>,
    got_catalog: bool,
    // Importing.
    imports: HashMap<CameraId, Import>,
    requests: HashMap<RequestId, CameraId>,
    in_flows: HashMap<u64, (InFlow, CameraId)>,
    next_request: u64,
    // Providing.
    provided: HashMap<CameraId, Provided>,
    provided_ids: HashMap<FlowId, CameraId>,
    peer_views: HashMap<ViewId, PeerView>,
    pending_views: HashMap<ViewId, PendingView>,
    /// The cameras of the last catalog sent: the only ones the peer may subscribe to.
    offered: HashSet<CameraId>,
    next_flow: u64,
    sender: mpsc::UnboundedSender<OutFlowStart>,
    flow_ended: mpsc::UnboundedReceiver<(FlowId, OutFlowEnd)>,
    stream_media_tx: mpsc::Sender<(u64, Bytes)>,
    stream_media: mpsc::Receiver<(u64, Bytes)>,
    tasks: Vec<JoinHandle<()>>,
    last_drop_log: Option<Instant>,
}

impl Drop for Live {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for pending in self.pending_views.values() {
            pending.task.abort();
        }
        for import in self.imports.values() {
            if let ImportState::Active { keyframes, .. } = &import.state {
                keyframes.abort();
            }
        }
    }
}

/// Received packets dropped, by reason.
struct DropCounters {
    unknown_flow: Counter,
    malformed: Counter,
    backlog: Counter,
}

pub(crate) struct PartnerTask {
    id: SiteId,
    label: Arc<str>,
    addresses: bool,
    partner: PartnerLink,
    context: Arc<Context>,
    commands: mpsc::UnboundedReceiver<Command>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    status: watch::Sender<LinkStatus>,
    backoff: Backoff,
    next_dial: Option<Instant>,
    dialling: bool,
    /// The partner address the next dial tries first: the one after the address of
    /// the last dialled link that was lost, so a dead gateway of an active/standby
    /// pair is tried last.
    first_target: usize,
    generation: u64,
    live: Option<Live>,
    views: BTreeMap<u64, LocalView>,
    connected: Gauge,
    path: PathGauges,
    drops: DropCounters,
    /// Fires at the live peer certificate's expiry; re-armed when a link comes up or
    /// is identified again. Kept across loop turns: no timer is registered per packet.
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl PartnerTask {
    pub(crate) fn new(
        partner: PartnerLink,
        context: Arc<Context>,
        commands: mpsc::UnboundedReceiver<Command>,
        status: watch::Sender<LinkStatus>,
    ) -> Self {
        let label: Arc<str> = Arc::from(partner.id.as_str());
        let peer = label.to_string();
        let (events_tx, events) = mpsc::unbounded_channel();
        let settings = &context.settings;
        let connected = metrics::gauge!("passerelle_peer_connected", "peer" => peer.clone());
        connected.set(0.0);
        let dropped = |reason: &'static str| metrics::counter!("passerelle_link_received_dropped_total", "peer" => peer.clone(), "reason" => reason);
        PartnerTask {
            id: partner.id.clone(),
            addresses: !partner.addresses.is_empty(),
            backoff: Backoff::new(settings.reconnect_min, settings.reconnect_max),
            next_dial: (!partner.addresses.is_empty()).then(Instant::now),
            dialling: false,
            first_target: 0,
            generation: 0,
            live: None,
            views: BTreeMap::new(),
            path: PathGauges::new(&peer),
            drops: DropCounters {
                unknown_flow: dropped("unknown_flow"),
                malformed: dropped("malformed"),
                backlog: dropped("backlog"),
            },
            connected,
            expiry: Box::pin(tokio::time::sleep_until(expiry_instant(i64::MAX))),
            label,
            partner,
            context,
            commands,
            events_tx,
            events,
            status,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut rtt = tokio::time::interval(RTT_INTERVAL);
        rtt.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let input = self.next_input(&mut rtt).await;
            match input {
                Input::Command(None) | Input::Command(Some(Command::Shutdown)) => break,
                Input::Command(Some(command)) => self.handle_command(command),
                Input::Event(event) => self.handle_event(event),
                Input::Control(Ok(Some(message))) => self.handle_control(message),
                Input::Control(Ok(None)) => {
                    self.close_live(
                        LinkCloseCode::ControlStreamEnded,
                        "the peer ended the control stream",
                    );
                }
                Input::Control(Err(ControlStreamError::Frame(error))) => {
                    let why = format!("malformed control message: {error}");
                    self.close_live(LinkCloseCode::MalformedControl, &why);
                }
                Input::Control(Err(ControlStreamError::Io(error))) => self.lost(&error.to_string()),
                Input::Datagram(Ok(datagram)) => {
                    self.handle_datagram(datagram);
                    self.drain_datagrams();
                }
                Input::Datagram(Err(error)) => self.lost(&error.to_string()),
                Input::MediaStream(Ok(recv)) => self.handle_media_stream(recv),
                Input::MediaStream(Err(error)) => self.lost(&error.to_string()),
                Input::StreamMedia(flow_id, packet) => self.handle_media(flow_id, packet),
                Input::FlowEnded(flow_id, end) => self.handle_flow_ended(flow_id, end),
                Input::Dial => self.start_dial(),
                Input::Rtt => self.sample_path(),
                Input::CertificateExpiry => self.recheck_identity(),
            }
        }
        self.shutdown();
    }

    /// Exports the live connection's path statistics (RTT, congestion window, lost
    /// packets) and puts the RTT and stream count in the link's status.
    fn sample_path(&mut self) {
        let Some(live) = &self.live else { return };
        let stats = live.connection.stats();
        let rtt = live.connection.rtt();
        self.path.rtt.set(rtt.as_secs_f64());
        self.path.cwnd.set(stats.path.cwnd as f64);
        let (generation, seen) = self.path.lost_seen;
        let before = if generation == live.generation {
            seen
        } else {
            0
        };
        self.path
            .lost
            .increment(stats.path.lost_packets.saturating_sub(before));
        self.path.lost_seen = (live.generation, stats.path.lost_packets);
        let streams = live.in_flows.len() + live.provided.len();
        self.status.send_modify(|status| {
            status.rtt = Some(rtt);
            status.streams = streams;
        });
    }

    async fn next_input(&mut self, rtt: &mut tokio::time::Interval) -> Input {
        let dial_at = match (&self.live, self.dialling, self.next_dial) {
            (None, false, Some(at)) if self.addresses => Some(at),
            _ => None,
        };
        let Some(live) = &mut self.live else {
            return tokio::select! {
                command = self.commands.recv() => Input::Command(command),
                Some(event) = self.events.recv() => Input::Event(event),
                _ = sleep_until(dial_at) => Input::Dial,
            };
        };
        let expiry = self.expiry.as_mut();
        let Live {
            connection,
            reader,
            flow_ended,
            stream_media,
            ..
        } = live;
        tokio::select! {
            command = self.commands.recv() => Input::Command(command),
            Some(event) = self.events.recv() => Input::Event(event),
            message = reader.read() => Input::Control(message),
            datagram = connection.read_datagram() => Input::Datagram(datagram),
            recv = connection.accept_uni() => Input::MediaStream(recv),
            Some((flow_id, packet)) = stream_media.recv() => Input::StreamMedia(flow_id, packet),
            Some((flow_id, end)) = flow_ended.recv() => Input::FlowEnded(flow_id, end),
            _ = rtt.tick() => Input::Rtt,
            _ = expiry => Input::CertificateExpiry,
        }
    }

    // ---- commands and events ----

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::OpenView {
                key,
                camera,
                local_camera,
                session,
                reply,
                state,
            } => {
                if self.live.is_none() {
                    let _ = reply.send(Err(ErrorCode::CameraUnavailable));
                    return;
                }
                if self.views.len() >= self.context.settings.max_views_per_link {
                    let _ = reply.send(Err(ErrorCode::MaxStreams));
                    return;
                }
                self.views.insert(
                    key,
                    LocalView {
                        camera,
                        local_camera,
                        session,
                        reply: Some(reply),
                        state,
                        phase: ViewPhase::Waiting,
                    },
                );
                self.request_view(key);
            }
            Command::CloseView { key } => self.close_local_view(key),
            Command::PolicyChanged => self.policy_changed(),
            Command::TlsReloaded => self.recheck_identity(),
            Command::Send(message) => {
                if self.live.is_some() {
                    self.send(message);
                }
            }
            Command::Established(established) => self.install(*established),
            // Handled by the loop.
            Command::Shutdown => {}
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Dialled(Ok(established)) => {
                self.dialling = false;
                self.install(*established);
            }
            Event::Dialled(Err(error)) => {
                self.dialling = false;
                let delay = self.backoff.next_delay(rand::random());
                self.next_dial = Some(Instant::now() + delay);
                tracing::warn!(partner = %self.id, %error, retry_in = ?delay, "dialling partner failed");
            }
            Event::StreamReady {
                generation,
                camera,
                flow_id,
                info,
            } => {
                if self.generation == generation {
                    self.stream_ready(&camera, flow_id, info);
                }
            }
            Event::KeyframeWanted {
                generation,
                flow_id,
            } => {
                if self.generation == generation && self.live.is_some() {
                    self.send(Message::KeyframeRequest { flow_id });
                }
            }
            Event::ViewDecided(decided) => self.handle_view_decided(*decided),
            Event::UpstreamEnded {
                generation,
                view_id,
                code,
            } => self.handle_upstream_ended(generation, view_id, code),
        }
    }

    // ---- connection lifecycle ----

    fn start_dial(&mut self) {
        self.dialling = true;
        self.next_dial = None;
        let context = Arc::clone(&self.context);
        let partner = self.partner.clone();
        let events = self.events_tx.clone();
        let first = self.first_target;
        tokio::spawn(async move {
            let result = dial(&context, &partner, first).await.map(Box::new);
            let _ = events.send(Event::Dialled(result));
        });
    }

    /// Takes a link that passed identification and `Hello`.
    fn install(&mut self, established: Established) {
        let Established {
            connection,
            identity,
            direction,
            target,
            hello,
            reader,
            send,
        } = established;
        let remote = connection.remote_address();
        if let Some(live) = &self.live {
            if !self.new_link_wins(live, direction, remote) {
                tracing::info!(partner = %self.id, ?direction, %remote, current = %live.connection.remote_address(), "second link with partner closed (tie-break)");
                LinkCloseCode::Duplicate.close(&connection);
                return;
            }
            tracing::info!(partner = %self.id, ?direction, %remote, "new link replaces the current one");
            LinkCloseCode::Duplicate.close(&live.connection);
            self.drop_live("replaced by a new link", false);
        }
        self.generation += 1;
        let settings = &self.context.settings;
        let (writer, writer_rx) = mpsc::channel(CONTROL_BACKLOG);
        let (sender, sender_rx) = mpsc::unbounded_channel();
        let (ended_tx, flow_ended) = mpsc::unbounded_channel();
        let (stream_media_tx, stream_media) = mpsc::channel(STREAM_MEDIA_BACKLOG);
        let tasks = vec![
            tokio::spawn(run_writer(send, settings.max_control_message, writer_rx)),
            tokio::spawn(flow::run_sender(
                connection.clone(),
                settings.media_transport,
                Arc::clone(&self.label),
                Arc::from(settings.site.as_str()),
                sender_rx,
                ended_tx,
            )),
        ];
        tracing::info!(
            partner = %self.id,
            %remote,
            ?direction,
            certificate = %identity.certificate.sha256,
            peer_policy_serial = ?hello.policy_serial,
            features = ?hello.features,
            "link up"
        );
        self.live = Some(Live {
            generation: self.generation,
            connection,
            direction,
            target,
            features: hello.features.clone(),
            reader,
            writer,
            got_catalog: false,
            imports: HashMap::new(),
            requests: HashMap::new(),
            in_flows: HashMap::new(),
            next_request: 1,
            provided: HashMap::new(),
            provided_ids: HashMap::new(),
            peer_views: HashMap::new(),
            pending_views: HashMap::new(),
            offered: HashSet::new(),
            next_flow: 0,
            sender,
            flow_ended,
            stream_media_tx,
            stream_media,
            tasks,
            last_drop_log: None,
        });
        self.expiry
            .as_mut()
            .reset(expiry_instant(identity.certificate.not_after));
        self.backoff.reset();
        self.connected.set(1.0);
        self.status.send_modify(|status| {
            status.connected = true;
            status.direction = Some(direction);
            status.remote = Some(remote);
            status.certificate_sha256 = Some(identity.certificate.sha256.clone());
            status.since = Some(jiff::Timestamp::now());
            status.peer_policy_serial = hello.policy_serial;
            status.peer_catalog_len = 0;
        });
        self.offer_catalog(true);
        // Sessions that survived a drop are opened again.
        let waiting: Vec<u64> = self.views.keys().copied().collect();
        for key in waiting {
            self.request_view(key);
        }
    }

    /// The tie-break of the module doc. Links dialled by opposite sides: the one the
    /// smaller site id dialled wins. Dialled by the same side: from the same address, the
    /// new link replaces the current one (the peer restarted); from another address
    /// (the other gateway of a pair) the current one stays.
    fn new_link_wins(&self, current: &Live, new: Direction, remote: SocketAddr) -> bool {
        if current.direction == new {
            return current.connection.remote_address() == remote;
        }
        let we_are_smaller = self.context.settings.site < self.id;
        // The winning link is the one we dialled iff we are the smaller site.
        (new == Direction::Outbound) == we_are_smaller
    }

    /// Closes the live connection with `code` (a protocol error or a refusal).
    fn close_live(&mut self, code: LinkCloseCode, why: &str) {
        if let Some(live) = &self.live {
            tracing::warn!(partner = %self.id, code = code.reason(), why, "closing link");
            code.close(&live.connection);
        }
        self.drop_live(why, true);
    }

    /// The connection is gone (closed by the peer, timed out), or its control stream
    /// was reset, which ends the link too.
    fn lost(&mut self, error: &str) {
        if self
            .live
            .as_ref()
            .is_some_and(|live| live.connection.close_reason().is_none())
        {
            let why = format!("control stream failed: {error}");
            self.close_live(LinkCloseCode::ControlStreamEnded, &why);
            return;
        }
        let reason = self
            .live
            .as_ref()
            .and_then(|live| live.connection.close_reason())
            .map(|reason| match reason {
                quinn::ConnectionError::ApplicationClosed(close) => {
                    describe_close_code(close.error_code.into_inner())
                }
                other => other.to_string(),
            })
            .unwrap_or_else(|| error.to_owned());
        tracing::warn!(partner = %self.id, %reason, "link down");
        self.drop_live(&reason, true);
    }

    /// Forgets the live connection: ends what belongs to it, keeps our open sessions
    /// for the next one, and schedules a dial if we dial this partner.
    fn drop_live(&mut self, why: &str, redial: bool) {
        let Some(mut live) = self.live.take() else {
            return;
        };
        if let Some(target) = live.target {
            self.first_target = (target + 1) % self.partner.addresses.len().max(1);
        }
        for (_, view) in live.peer_views.drain() {
            self.context.provider.close_view(
                &self.id,
                &view.camera,
                &view.session,
                ViewEnd::LinkDown,
            );
        }
        let keys: Vec<u64> = self.views.keys().copied().collect();
        for key in keys {
            let Some(view) = self.views.get_mut(&key) else {
                continue;
            };
            if view.reply.is_some() {
                // Still opening for the first time: the caller gets its answer now.
                self.end_local_view(key, ErrorCode::CameraUnavailable);
            } else {
                view.phase = ViewPhase::Waiting;
                view.state.send_replace(ViewState::Reconnecting);
            }
        }
        for (_, import) in live.imports.drain() {
            if let ImportState::Active { keyframes, .. } = &import.state {
                keyframes.abort();
            }
            import.channel.reset_cache();
        }
        drop(live);
        self.connected.set(0.0);
        self.status
            .send_modify(|status| *status = LinkStatus::down(self.id.clone()));
        self.context.importer.catalog_changed(&self.id, &[]);
        tracing::debug!(partner = %self.id, why, "link state dropped");
        if redial && self.addresses {
            let delay = self.backoff.next_delay(rand::random());
            self.next_dial = Some(Instant::now() + delay);
        }
    }

    fn shutdown(&mut self) {
        if let Some(live) = &self.live {
            LinkCloseCode::Shutdown.close(&live.connection);
        }
        if let Some(mut live) = self.live.take() {
            for (_, view) in live.peer_views.drain() {
                self.context.provider.close_view(
                    &self.id,
                    &view.camera,
                    &view.session,
                    ViewEnd::ShuttingDown,
                );
            }
        }
        for (_, view) in std::mem::take(&mut self.views) {
            match view.reply {
                Some(reply) => {
                    let _ = reply.send(Err(ErrorCode::ShuttingDown));
                }
                None => {
                    view.state
                        .send_replace(ViewState::Ended(ErrorCode::ShuttingDown));
                }
            }
        }
        self.connected.set(0.0);
        self.status
            .send_modify(|status| *status = LinkStatus::down(self.id.clone()));
    }

    /// Identifies the peer again (TLS reload, certificate expiry); closes on refusal.
    fn recheck_identity(&mut self) {
        let Some(live) = &self.live else { return };
        let tls = self.context.tls();
        let result = tls::identify_connection(
            &live.connection,
            tls.peer_trust(),
            live.direction,
            rustls::pki_types::UnixTime::now(),
        );
        match result {
            Ok(identity) if identity.site == self.id => {
                self.expiry
                    .as_mut()
                    .reset(expiry_instant(identity.certificate.not_after));
            }
            Ok(identity) => {
                let why = format!("certificate now names {}", identity.site);
                self.close_live(LinkCloseCode::WrongPeer, &why);
            }
            Err(refusal) => {
                let code = refusal.close_code();
                tracing::warn!(partner = %self.id, %refusal, "live link refused on re-check");
                super::count_refusal(&self.label, code.reason());
                live.connection
                    .close(code.var_int(), code.reason().as_bytes());
                self.drop_live(&refusal.to_string(), true);
            }
        }
    }

    // ---- control messages ----

    /// Queues a message for the writer; a peer that stopped reading is closed.
    fn send(&mut self, message: Message) {
        let Some(live) = &self.live else { return };
        match live.writer.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close_live(LinkCloseCode::ControlBacklog, "control backlog overflowed");
            }
            // The writer stopped on a stream error: the read side sees it too.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn handle_control(&mut self, message: Message) {
        let Some(live) = &mut self.live else { return };
        if !live.got_catalog {
            if let Message::Catalog(cameras) = message {
                live.got_catalog = true;
                self.peer_catalog(cameras);
            } else {
                let why = format!("{} before the peer's catalog", message.kind());
                self.close_live(LinkCloseCode::UnexpectedMessage, &why);
            }
            return;
        }
        match message {
            Message::Hello(_) | Message::Catalog(_) => {
                let why = format!("second {}", message.kind());
                self.close_live(LinkCloseCode::UnexpectedMessage, &why);
            }
            Message::CatalogUpdate(cameras) => self.peer_catalog(cameras),
            Message::Subscribe(Subscribe { request_id, camera }) => {
                self.handle_subscribe(request_id, camera);
            }
            Message::SubscribeOk(ok) => self.handle_subscribe_ok(ok),
            Message::SubscribeError(SubscribeError { request_id, code }) => {
                self.handle_subscribe_error(request_id, code);
            }
            Message::Unsubscribe { flow_id } => self.handle_unsubscribe(flow_id),
            Message::ViewOpen(open) => self.handle_view_open(open),
            Message::ViewAnswer(answer) => self.handle_view_answer(answer),
            Message::ViewClose { view_id } => self.handle_peer_view_close(view_id),
            Message::KeyframeRequest { flow_id } => {
                let running = live
                    .provided_ids
                    .get(&flow_id)
                    .and_then(|camera| live.provided.get(camera))
                    .and_then(|provided| provided.running.as_ref());
                if let Some((_, keyframe)) = running {
                    keyframe.notify_one();
                }
            }
            Message::StreamEnded(StreamEnded { flow_id, code }) => {
                self.handle_stream_ended(flow_id, code);
            }
            Message::Checkpoint(checkpoint) => {
                tracing::info!(
                    partner = %self.id,
                    journal = %checkpoint.journal_id,
                    sequence = checkpoint.sequence,
                    "journal checkpoint received"
                );
                self.context.importer.checkpoint(&self.id, checkpoint);
            }
        }
    }

    fn peer_catalog(&mut self, cameras: Vec<crate::control::CatalogCamera>) {
        tracing::info!(partner = %self.id, cameras = cameras.len(), "partner catalog");
        self.status
            .send_modify(|status| status.peer_catalog_len = cameras.len());
        self.context.importer.catalog_changed(&self.id, &cameras);
    }

    // ---- importing: our users' sessions on the partner's cameras ----

    /// Moves a `Waiting` session forward on the live link: subscribes its camera if
    /// needed, or sends its `ViewOpen` if the stream is there.
    fn request_view(&mut self, key: u64) {
        let Some(live) = &mut self.live else { return };
        let Some(view) = self.views.get_mut(&key) else {
            return;
        };
        if view.phase != ViewPhase::Waiting {
            return;
        }
        match live.imports.get(&view.camera) {
            Some(Import {
                state: ImportState::Active { .. },
                ..
            }) => {
                view.phase = ViewPhase::Asked;
                let open = Message::ViewOpen(ViewOpen {
                    view_id: ViewId(key),
                    camera: view.camera.clone(),
                    session: view.session.clone(),
                });
                self.send(open);
            }
            Some(Import {
                state: ImportState::Subscribing,
                ..
            }) => {}
            None => {
                let Some(channel) = self.context.importer.channel(&self.id, &view.local_camera)
                else {
                    self.end_local_view(key, ErrorCode::NotGranted);
                    return;
                };
                let request_id = RequestId(live.next_request);
                live.next_request += 1;
                live.requests.insert(request_id, view.camera.clone());
                live.imports.insert(
                    view.camera.clone(),
                    Import {
                        channel,
                        state: ImportState::Subscribing,
                    },
                );
                let subscribe = Message::Subscribe(Subscribe {
                    request_id,
                    camera: view.camera.clone(),
                });
                self.send(subscribe);
            }
        }
    }

    fn handle_subscribe_ok(&mut self, ok: SubscribeOk) {
        let Some(live) = &mut self.live else { return };
        let SubscribeOk {
            request_id,
            flow_id,
            info,
        } = ok;
        let camera = live.requests.remove(&request_id);
        let import = camera
            .as_ref()
            .and_then(|camera| live.imports.get_mut(camera));
        let (Some(camera), Some(import)) = (camera.clone(), import) else {
            let why = format!("subscribe_ok for unknown request {}", request_id.0);
            self.close_live(LinkCloseCode::UnexpectedMessage, &why);
            return;
        };
        if live.in_flows.contains_key(&flow_id.value()) {
            let why = format!("subscribe_ok reuses flow {flow_id} for another camera");
            self.close_live(LinkCloseCode::UnexpectedMessage, &why);
            return;
        }
        import.channel.set_info(info.clone());
        let keyframes = tokio::spawn(forward_keyframe_requests(
            import.channel.watch_keyframe_requests(),
            self.events_tx.clone(),
            live.generation,
            flow_id,
        ));
        import.state = ImportState::Active { flow_id, keyframes };
        live.in_flows.insert(
            flow_id.value(),
            (
                InFlow {
                    flow_id,
                    channel: import.channel.clone(),
                    codec: info.codec,
                },
                camera.clone(),
            ),
        );
        tracing::info!(partner = %self.id, %camera, flow = %flow_id, codec = info.codec.encoding_name(), "stream subscribed");
        let keys: Vec<u64> = self
            .views
            .iter()
            .filter(|(_, view)| view.camera == camera)
            .map(|(key, _)| *key)
            .collect();
        if keys.is_empty() {
            // Every session closed while subscribing.
            self.unsubscribe_if_unused(&camera);
        }
        for key in keys {
            self.request_view(key);
        }
    }

    fn handle_subscribe_error(&mut self, request_id: RequestId, code: ErrorCode) {
        let Some(live) = &mut self.live else { return };
        let Some(camera) = live.requests.remove(&request_id) else {
            let why = format!("subscribe_error for unknown request {}", request_id.0);
            self.close_live(LinkCloseCode::UnexpectedMessage, &why);
            return;
        };
        live.imports.remove(&camera);
        tracing::info!(partner = %self.id, %camera, code = code.as_str(), "stream refused by partner");
        self.end_views_of(&camera, code);
    }

    fn handle_view_answer(&mut self, answer: ViewAnswer) {
        let ViewAnswer { view_id, refusal } = answer;
        let key = view_id.0;
        let Some(view) = self.views.get_mut(&key) else {
            // Closed on our side before the answer came.
            return;
        };
        match (refusal, view.phase) {
            (None, ViewPhase::Asked) => {
                view.phase = ViewPhase::Open;
                view.state.send_replace(ViewState::Open);
                let delivered = match view.reply.take() {
                    Some(reply) => reply.send(Ok(())).is_ok(),
                    None => true,
                };
                tracing::info!(partner = %self.id, camera = %view.local_camera, agent = %view.session.agent, "viewing session open");
                if !delivered {
                    // The caller gave up waiting: close at once.
                    self.close_local_view(key);
                }
            }
            (Some(code), ViewPhase::Asked | ViewPhase::Open) => {
                tracing::info!(partner = %self.id, camera = %view.local_camera, agent = %view.session.agent, code = code.as_str(), "viewing session refused or revoked by partner");
                let camera = view.camera.clone();
                self.end_local_view(key, code);
                self.unsubscribe_if_unused(&camera);
            }
            // An answer to a session not asked on this link: tolerated (a stale answer
            // from before a drop cannot arrive on a new link, so this is harmless).
            (_, _) => {}
        }
    }

    fn handle_stream_ended(&mut self, flow_id: FlowId, code: ErrorCode) {
        let Some(live) = &mut self.live else { return };
        let Some((_, camera)) = live.in_flows.remove(&flow_id.value()) else {
            return;
        };
        if let Some(Import {
            channel,
            state: ImportState::Active { keyframes, .. },
        }) = live.imports.remove(&camera)
        {
            keyframes.abort();
            // What the channel cached must not greet the next viewer as if live.
            channel.reset_cache();
        }
        tracing::info!(partner = %self.id, %camera, code = code.as_str(), "stream ended by partner");
        self.end_views_of(&camera, code);
    }

    /// The guard was dropped: closes the session upstream and, with the last session on
    /// the camera, the stream.
    fn close_local_view(&mut self, key: u64) {
        let Some(view) = self.views.remove(&key) else {
            return;
        };
        if matches!(view.phase, ViewPhase::Asked | ViewPhase::Open) {
            self.send(Message::ViewClose {
                view_id: ViewId(key),
            });
        }
        self.unsubscribe_if_unused(&view.camera);
    }

    /// Ends one of our sessions for `code` (the partner refused or ended it, or the
    /// link dropped before its first answer): its caller or guard learns why.
    fn end_local_view(&mut self, key: u64, code: ErrorCode) {
        let Some(view) = self.views.remove(&key) else {
            return;
        };
        match view.reply {
            Some(reply) => {
                let _ = reply.send(Err(code));
            }
            None => {
                view.state.send_replace(ViewState::Ended(code));
            }
        }
    }

    fn end_views_of(&mut self, camera: &CameraId, code: ErrorCode) {
        let keys: Vec<u64> = self
            .views
            .iter()
            .filter(|(_, view)| view.camera == *camera)
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            self.end_local_view(key, code);
        }
    }

    fn unsubscribe_if_unused(&mut self, camera: &CameraId) {
        if self.views.values().any(|view| view.camera == *camera) {
            return;
        }
        let Some(live) = &mut self.live else { return };
        let active = matches!(
            live.imports.get(camera),
            Some(Import {
                state: ImportState::Active { .. },
                ..
            })
        );
        if !active {
            // Not subscribed, or still subscribing: the answer handles it.
            return;
        }
        let Some(Import {
            channel,
            state: ImportState::Active { flow_id, keyframes },
        }) = live.imports.remove(camera)
        else {
            return;
        };
        keyframes.abort();
        // What the channel cached must not greet the next viewer as if live.
        channel.reset_cache();
        live.in_flows.remove(&flow_id.value());
        tracing::info!(partner = %self.id, %camera, flow = %flow_id, "stream unsubscribed");
        self.send(Message::Unsubscribe { flow_id });
    }

    // ---- providing: the partner's requests on our cameras ----

    fn handle_subscribe(&mut self, request_id: RequestId, camera: CameraId) {
        let Some(live) = &mut self.live else { return };
        if let Some(provided) = live.provided.get_mut(&camera) {
            // One stream per camera per link: a second subscribe shares the flow.
            match &provided.info {
                Some(info) => {
                    let ok = Message::SubscribeOk(SubscribeOk {
                        request_id,
                        flow_id: provided.flow_id,
                        info: info.clone(),
                    });
                    self.send(ok);
                }
                None => provided.waiting.push(request_id),
            }
            return;
        }
        let decision = if live.provided.len() >= self.context.settings.max_flows_per_link {
            Err(ErrorCode::MaxStreams)
        } else {
            let active: Vec<CameraId> = live.provided.keys().cloned().collect();
            let decision = self.context.provider.stream(&self.id, &camera, &active);
            // Never a camera withheld from the peer's catalog, whatever its id.
            match decision {
                Ok(_) if !live.offered.contains(&camera) => Err(ErrorCode::NotGranted),
                other => other,
            }
        };
        let channel = match decision {
            Ok(channel) => channel,
            Err(code) => {
                tracing::info!(partner = %self.id, %camera, code = code.as_str(), "stream refused");
                super::count_refusal(&self.label, code.as_str());
                self.send(Message::SubscribeError(SubscribeError { request_id, code }));
                return;
            }
        };
        // Flow ids count up from 0: the smallest varints first (RoQ §5.1). 2^62 flows
        // on one link cannot happen.
        let Some(flow_id) = FlowId::new(live.next_flow) else {
            self.send(Message::SubscribeError(SubscribeError {
                request_id,
                code: ErrorCode::MaxStreams,
            }));
            return;
        };
        live.next_flow += 1;
        let info = channel.info();
        live.provided_ids.insert(flow_id, camera.clone());
        live.provided.insert(
            camera.clone(),
            Provided {
                flow_id,
                channel: channel.clone(),
                info: None,
                waiting: vec![request_id],
                views: Vec::new(),
                running: None,
            },
        );
        tracing::info!(partner = %self.id, %camera, flow = %flow_id, "stream granted");
        if info.is_some() {
            self.stream_ready(&camera, flow_id, info);
            return;
        }
        // A cold on-demand camera: a short subscription wakes it, and the answer waits
        // (bounded) for its description.
        let events = self.events_tx.clone();
        let generation = live.generation;
        let timeout = self.context.settings.stream_info_timeout;
        let label = SinkLabel {
            peer: self.label.to_string(),
        };
        live.tasks.push(tokio::spawn(async move {
            let wake = channel.subscribe(label);
            let info = channel.wait_info(timeout).await;
            drop(wake);
            let _ = events.send(Event::StreamReady {
                generation,
                camera,
                flow_id,
                info,
            });
        }));
    }

    fn stream_ready(&mut self, camera: &CameraId, flow_id: FlowId, info: Option<StreamInfo>) {
        let Some(live) = &mut self.live else { return };
        let Some(provided) = live
            .provided
            .get_mut(camera)
            .filter(|p| p.flow_id == flow_id)
        else {
            return;
        };
        let waiting = std::mem::take(&mut provided.waiting);
        let Some(info) = info else {
            tracing::warn!(partner = %self.id, %camera, "camera not described in time, stream refused");
            for request_id in waiting {
                self.send(Message::SubscribeError(SubscribeError {
                    request_id,
                    code: ErrorCode::CameraUnavailable,
                }));
            }
            self.remove_provided(camera, ViewEnd::Withdrawn(ErrorCode::CameraUnavailable));
            return;
        };
        provided.info = Some(info.clone());
        for request_id in waiting {
            self.send(Message::SubscribeOk(SubscribeOk {
                request_id,
                flow_id,
                info: info.clone(),
            }));
        }
        self.update_gate(camera);
    }

    fn handle_view_open(&mut self, open: ViewOpen) {
        let Some(live) = &mut self.live else { return };
        let ViewOpen {
            view_id,
            camera,
            session,
        } = open;
        if live.peer_views.contains_key(&view_id) || live.pending_views.contains_key(&view_id) {
            let why = format!("view {} opened twice", view_id.0);
            self.close_live(LinkCloseCode::UnexpectedMessage, &why);
            return;
        }
        tracing::info!(
            %camera,
            partner = %self.id,
            agent = %session.agent,
            kind = session.kind.as_str(),
            reason = session.reason.as_deref().unwrap_or(""),
            intervention = session.intervention.as_deref().unwrap_or(""),
            origin = %session.origin,
            "viewing session requested"
        );
        let decision = if !live.provided.contains_key(&camera) {
            ViewDecision::Now(Err(ErrorCode::UnknownFlow))
        } else if live.peer_views.len() + live.pending_views.len()
            >= self.context.settings.max_views_per_link
        {
            ViewDecision::Now(Err(ErrorCode::MaxStreams))
        } else {
            self.context.provider.open_view(&self.id, &camera, &session)
        };
        match decision {
            ViewDecision::Now(Ok(())) => self.allow_peer_view(view_id, camera, session, None),
            ViewDecision::Now(Err(code)) => self.refuse_peer_view(view_id, &camera, &session, code),
            ViewDecision::Relayed(pending) => {
                self.relay_peer_view(view_id, camera, session, pending);
            }
        }
    }

    /// Answers an allowed session and lets its camera's packets flow.
    fn allow_peer_view(
        &mut self,
        view_id: ViewId,
        camera: CameraId,
        session: ViewingSession,
        upstream: Option<oneshot::Sender<()>>,
    ) {
        let Some(live) = &mut self.live else { return };
        tracing::info!(%camera, partner = %self.id, agent = %session.agent, relayed = upstream.is_some(), "viewing session allowed");
        if let Some(provided) = live.provided.get_mut(&camera) {
            provided.views.push(view_id);
        }
        live.peer_views.insert(
            view_id,
            PeerView {
                camera: camera.clone(),
                session,
                upstream,
            },
        );
        self.send(Message::ViewAnswer(ViewAnswer {
            view_id,
            refusal: None,
        }));
        self.update_gate(&camera);
    }

    fn refuse_peer_view(
        &mut self,
        view_id: ViewId,
        camera: &CameraId,
        session: &ViewingSession,
        code: ErrorCode,
    ) {
        tracing::info!(%camera, partner = %self.id, agent = %session.agent, code = code.as_str(), "viewing session refused");
        super::count_refusal(&self.label, code.as_str());
        self.send(Message::ViewAnswer(ViewAnswer {
            view_id,
            refusal: Some(code),
        }));
    }

    /// A session on a re-shared camera that our policy allowed: waits (in a task, the
    /// loop goes on) for the camera site's answer, which comes back as
    /// [`Event::ViewDecided`].
    fn relay_peer_view(
        &mut self,
        view_id: ViewId,
        camera: CameraId,
        session: ViewingSession,
        pending: RelayedView,
    ) {
        let Some(live) = &mut self.live else { return };
        tracing::info!(%camera, partner = %self.id, agent = %session.agent, origin = %session.origin, "viewing session carried to the camera's site");
        let events = self.events_tx.clone();
        let provider = Arc::clone(&self.context.provider);
        let partner = self.id.clone();
        let generation = live.generation;
        let pending_camera = camera.clone();
        let task = tokio::spawn(async move {
            let result = pending.await;
            // No await point from here on: an abort cannot split "journaled" from
            // "reported".
            let decided = Event::ViewDecided(Box::new(ViewDecided {
                generation,
                view_id,
                camera,
                session,
                result,
            }));
            if let Err(mpsc::error::SendError(Event::ViewDecided(decided))) = events.send(decided)
                && decided.result.is_ok()
            {
                // The partner task is gone (shutting down): end what was journaled.
                provider.close_view(
                    &partner,
                    &decided.camera,
                    &decided.session,
                    ViewEnd::ShuttingDown,
                );
            }
        });
        live.pending_views.insert(
            view_id,
            PendingView {
                camera: pending_camera,
                task,
            },
        );
    }

    fn handle_view_decided(&mut self, decided: ViewDecided) {
        let ViewDecided {
            generation,
            view_id,
            camera,
            session,
            result,
        } = decided;
        let same_link = self
            .live
            .as_ref()
            .is_some_and(|live| live.generation == generation);
        let pending = match &mut self.live {
            Some(live) if same_link => live.pending_views.remove(&view_id),
            _ => None,
        };
        if pending.is_none() {
            // The peer closed the session, or its stream or link ended, while the
            // camera's site was deciding: what was opened there ends now.
            if let Ok(guard) = result {
                let end = if same_link {
                    ViewEnd::Closed
                } else {
                    ViewEnd::LinkDown
                };
                self.context
                    .provider
                    .close_view(&self.id, &camera, &session, end);
                drop(guard);
            }
            return;
        }
        let guard = match result {
            Ok(guard) => guard,
            Err(code) => {
                self.refuse_peer_view(view_id, &camera, &session, code);
                return;
            }
        };
        // Decided again now: the policy or the stream may have changed while waiting.
        let still = match &self.live {
            Some(live) if live.provided.contains_key(&camera) => self
                .context
                .provider
                .check_view(&self.id, &camera, &session),
            _ => Err(ErrorCode::Withdrawn),
        };
        if let Err(code) = still {
            self.context
                .provider
                .close_view(&self.id, &camera, &session, ViewEnd::Withdrawn(code));
            drop(guard);
            self.refuse_peer_view(view_id, &camera, &session, code);
            return;
        }
        let Some(live) = &mut self.live else { return };
        let (stop_tx, stop) = oneshot::channel();
        live.tasks.retain(|task| !task.is_finished());
        live.tasks.push(tokio::spawn(hold_upstream(
            guard,
            stop,
            self.events_tx.clone(),
            generation,
            view_id,
        )));
        self.allow_peer_view(view_id, camera, session, Some(stop_tx));
    }

    /// The camera's site ended the upstream session of a re-shared camera's session
    /// (withdrawn there, stream ended): the session is revoked here too.
    fn handle_upstream_ended(&mut self, generation: u64, view_id: ViewId, code: ErrorCode) {
        let Some(live) = &mut self.live else { return };
        if live.generation != generation {
            return;
        }
        let Some(view) = live.peer_views.remove(&view_id) else {
            return;
        };
        if let Some(provided) = live.provided.get_mut(&view.camera) {
            provided.views.retain(|v| *v != view_id);
        }
        // The peer had it until now: `NOT_GRANTED` reads `WITHDRAWN`.
        let code = match code {
            ErrorCode::NotGranted => ErrorCode::Withdrawn,
            other => other,
        };
        tracing::info!(camera = %view.camera, partner = %self.id, agent = %view.session.agent, code = code.as_str(), "viewing session revoked: the camera's site ended it");
        self.send(Message::ViewAnswer(ViewAnswer {
            view_id,
            refusal: Some(code),
        }));
        self.context.provider.close_view(
            &self.id,
            &view.camera,
            &view.session,
            ViewEnd::Withdrawn(code),
        );
        self.update_gate(&view.camera);
    }

    fn handle_peer_view_close(&mut self, view_id: ViewId) {
        let Some(live) = &mut self.live else { return };
        if let Some(pending) = live.pending_views.remove(&view_id) {
            // Still deciding upstream: nothing was journaled open here yet.
            pending.task.abort();
            tracing::info!(camera = %pending.camera, partner = %self.id, "viewing session closed before the camera's site answered");
            return;
        }
        let Some(view) = live.peer_views.remove(&view_id) else {
            return;
        };
        if let Some(provided) = live.provided.get_mut(&view.camera) {
            provided.views.retain(|v| *v != view_id);
        }
        tracing::info!(camera = %view.camera, partner = %self.id, agent = %view.session.agent, "viewing session closed");
        self.context
            .provider
            .close_view(&self.id, &view.camera, &view.session, ViewEnd::Closed);
        self.update_gate(&view.camera);
    }

    fn handle_unsubscribe(&mut self, flow_id: FlowId) {
        let Some(live) = &mut self.live else { return };
        let Some(camera) = live.provided_ids.get(&flow_id).cloned() else {
            return;
        };
        tracing::info!(partner = %self.id, %camera, flow = %flow_id, "stream unsubscribed by partner");
        self.remove_provided(&camera, ViewEnd::Unsubscribed);
    }

    fn handle_flow_ended(&mut self, flow_id: FlowId, end: OutFlowEnd) {
        let Some(live) = &mut self.live else { return };
        let Some(camera) = live.provided_ids.get(&flow_id).cloned() else {
            return;
        };
        if end == OutFlowEnd::ChannelClosed {
            tracing::info!(partner = %self.id, %camera, flow = %flow_id, "camera channel closed, stream ended");
            self.send(Message::StreamEnded(StreamEnded {
                flow_id,
                code: ErrorCode::CameraUnavailable,
            }));
            self.remove_provided(&camera, ViewEnd::Withdrawn(ErrorCode::CameraUnavailable));
        }
    }

    /// Starts the flow when it has a description and an allowed session; stops it
    /// when its last session closed. No packet crosses without an allowed session.
    fn update_gate(&mut self, camera: &CameraId) {
        let Some(live) = &mut self.live else { return };
        let Some(provided) = live.provided.get_mut(camera) else {
            return;
        };
        let wanted = provided.info.is_some() && !provided.views.is_empty();
        match (wanted, provided.running.is_some()) {
            (true, false) => {
                let subscription = provided.channel.subscribe(SinkLabel {
                    peer: self.label.to_string(),
                });
                let (stop_tx, stop) = oneshot::channel();
                let keyframe = Arc::new(Notify::new());
                let start = OutFlowStart {
                    flow_id: provided.flow_id,
                    camera: camera.clone(),
                    subscription,
                    stop,
                    keyframe: Arc::clone(&keyframe),
                };
                if live.sender.send(start).is_ok() {
                    provided.running = Some((stop_tx, keyframe));
                }
            }
            (false, true) => provided.running = None,
            _ => {}
        }
    }

    /// Ends one of our streams: stops its flow and ends its sessions.
    fn remove_provided(&mut self, camera: &CameraId, end: ViewEnd) {
        let Some(live) = &mut self.live else { return };
        let Some(provided) = live.provided.remove(camera) else {
            return;
        };
        live.provided_ids.remove(&provided.flow_id);
        live.pending_views.retain(|_, pending| {
            let keep = pending.camera != *camera;
            if !keep {
                pending.task.abort();
            }
            keep
        });
        for view_id in provided.views {
            if let Some(view) = live.peer_views.remove(&view_id) {
                self.context
                    .provider
                    .close_view(&self.id, &view.camera, &view.session, end);
            }
        }
    }

    /// Sends the catalog our provider gives the peer (`Catalog` first, then
    /// `CatalogUpdate`), withholding any camera whose restrictions the peer did not
    /// declare it enforces, and remembers what was offered.
    fn offer_catalog(&mut self, first: bool) {
        let Some(live) = &mut self.live else { return };
        let mut catalog = self.context.provider.catalog(&self.id, &live.features);
        let listed = catalog.len();
        catalog.retain(|camera| camera.restrictions.enforced_by(&live.features));
        if catalog.len() < listed {
            tracing::warn!(
                partner = %self.id,
                withheld = listed - catalog.len(),
                "cameras with restrictions the partner does not enforce withheld"
            );
        }
        live.offered = catalog.iter().map(|camera| camera.id.clone()).collect();
        self.send(if first {
            Message::Catalog(catalog)
        } else {
            Message::CatalogUpdate(catalog)
        });
    }

    fn policy_changed(&mut self) {
        if self.live.is_none() {
            return;
        }
        self.offer_catalog(false);
        // Streams the new policy refuses end; `NOT_GRANTED` reads `WITHDRAWN` to the
        // partner, who had it until now.
        let streams: Vec<(CameraId, FlowId)> = self.live.as_ref().map_or_else(Vec::new, |live| {
            live.provided
                .iter()
                .map(|(camera, provided)| (camera.clone(), provided.flow_id))
                .collect()
        });
        for (camera, flow_id) in streams {
            let others: Vec<CameraId> = self.live.as_ref().map_or_else(Vec::new, |live| {
                live.provided
                    .keys()
                    .filter(|c| **c != camera)
                    .cloned()
                    .collect()
            });
            let offered = self
                .live
                .as_ref()
                .is_some_and(|live| live.offered.contains(&camera));
            let decision = if offered {
                self.context
                    .provider
                    .stream(&self.id, &camera, &others)
                    .map(drop)
            } else {
                Err(ErrorCode::NotGranted)
            };
            if let Err(code) = decision {
                let code = match code {
                    ErrorCode::NotGranted => ErrorCode::Withdrawn,
                    other => other,
                };
                tracing::info!(partner = %self.id, %camera, code = code.as_str(), "stream withdrawn after a policy change");
                self.send(Message::StreamEnded(StreamEnded { flow_id, code }));
                self.remove_provided(&camera, ViewEnd::Withdrawn(code));
            }
        }
        // Sessions on the streams left are decided again; a refusal revokes the
        // session with a second `ViewAnswer`.
        let views: Vec<(ViewId, CameraId, ViewingSession)> =
            self.live.as_ref().map_or_else(Vec::new, |live| {
                live.peer_views
                    .iter()
                    .map(|(id, view)| (*id, view.camera.clone(), view.session.clone()))
                    .collect()
            });
        for (view_id, camera, session) in views {
            let Err(code) = self
                .context
                .provider
                .check_view(&self.id, &camera, &session)
            else {
                continue;
            };
            tracing::info!(partner = %self.id, %camera, agent = %session.agent, code = code.as_str(), "viewing session revoked after a policy change");
            if let Some(live) = &mut self.live {
                live.peer_views.remove(&view_id);
                if let Some(provided) = live.provided.get_mut(&camera) {
                    provided.views.retain(|v| *v != view_id);
                }
            }
            self.send(Message::ViewAnswer(ViewAnswer {
                view_id,
                refusal: Some(code),
            }));
            self.context
                .provider
                .close_view(&self.id, &camera, &session, ViewEnd::Withdrawn(code));
            self.update_gate(&camera);
        }
    }

    // ---- media in ----

    /// Handles the datagrams already received, up to a bound, without going back
    /// through the loop's `select!` for each.
    fn drain_datagrams(&mut self) {
        use futures::FutureExt;
        for _ in 0..DATAGRAM_BATCH {
            let Some(live) = &self.live else { return };
            match live.connection.read_datagram().now_or_never() {
                Some(Ok(datagram)) => self.handle_datagram(datagram),
                // An error shows again on the loop's next turn.
                _ => return,
            }
        }
    }

    fn handle_datagram(&mut self, datagram: Bytes) {
        match roq::decode_datagram(datagram) {
            Ok((flow_id, packet)) => self.handle_media(flow_id, packet),
            Err(source) => self.media_dropped(&MediaError::Roq { flow_id: 0, source }),
        }
    }

    fn handle_media(&mut self, flow_id: u64, packet: Bytes) {
        let Some(live) = &self.live else { return };
        let result = match live.in_flows.get(&flow_id) {
            Some((flow, _)) => flow.handle_packet(packet),
            None => Err(MediaError::UnknownFlow { flow_id }),
        };
        if let Err(error) = result {
            self.media_dropped(&error);
        }
    }

    fn media_dropped(&mut self, error: &MediaError) {
        match error {
            MediaError::UnknownFlow { .. } => self.drops.unknown_flow.increment(1),
            _ => self.drops.malformed.increment(1),
        }
        let Some(live) = &mut self.live else { return };
        let now = Instant::now();
        if live
            .last_drop_log
            .is_none_or(|at| now.duration_since(at) >= DROP_LOG_INTERVAL)
        {
            live.last_drop_log = Some(now);
            tracing::warn!(partner = %self.id, %error, reason = error.reason(), "received media packet dropped (rate-limited log)");
        }
    }

    fn handle_media_stream(&mut self, recv: quinn::RecvStream) {
        let Some(live) = &mut self.live else { return };
        live.tasks.retain(|task| !task.is_finished());
        live.tasks.push(tokio::spawn(flow::read_media_stream(
            recv,
            roq::DEFAULT_MAX_STREAM_PACKET_LEN,
            live.stream_media_tx.clone(),
            self.drops.backlog.clone(),
        )));
    }
}

/// Waits until `at`, forever if `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When the peer certificate expires, as a tokio instant (far ahead if unknown).
fn expiry_instant(not_after: i64) -> Instant {
    let now = jiff::Timestamp::now().as_second();
    let left = not_after.saturating_sub(now).max(0);
    // Capped at a year: the re-check at that point re-arms it.
    let left = Duration::from_secs(u64::try_from(left).unwrap_or(0).min(365 * 86_400));
    Instant::now() + left + Duration::from_secs(1)
}

/// Writes queued control messages until the queue closes or the stream fails.
async fn run_writer(send: quinn::SendStream, max: usize, mut queue: mpsc::Receiver<Message>) {
    let mut writer = crate::control::ControlWriter::new(send, max);
    while let Some(message) = queue.recv().await {
        if let Err(error) = writer.write(message).await {
            tracing::debug!(%error, "control stream write failed");
            return;
        }
    }
    let _ = writer.get_mut().finish();
}

/// Holds the upstream session a peer's session on a re-shared camera rests on, until
/// `stop` fires or is dropped (the session ended here) or the upstream ends it (then
/// reported as [`Event::UpstreamEnded`]). The guard's drop closes it upstream.
async fn hold_upstream(
    mut guard: ViewGuard,
    stop: oneshot::Receiver<()>,
    events: mpsc::UnboundedSender<Event>,
    generation: u64,
    view_id: ViewId,
) {
    tokio::select! {
        code = guard.ended() => {
            let _ = events.send(Event::UpstreamEnded { generation, view_id, code });
        }
        _ = stop => {}
    }
}

/// Forwards an imported channel's keyframe requests (already rate-limited by the
/// channel) to the partner task, which sends them upstream.
async fn forward_keyframe_requests(
    mut requests: watch::Receiver<u64>,
    events: mpsc::UnboundedSender<Event>,
    generation: u64,
    flow_id: FlowId,
) {
    requests.borrow_and_update();
    while requests.changed().await.is_ok() {
        if events
            .send(Event::KeyframeWanted {
                generation,
                flow_id,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Dials `partner` at each of its addresses in turn, starting at index `first`; the
/// first link that completes steps 1–3 wins.
async fn dial(
    context: &Context,
    partner: &PartnerLink,
    first: usize,
) -> Result<Established, String> {
    let Some(config) = context.client_config(&partner.id) else {
        return Err("no TLS client configuration for this partner".to_owned());
    };
    let timeout = context.settings.handshake_timeout;
    let mut last_error = String::from("no address");
    let count = partner.addresses.len();
    for index in (0..count).map(|i| (first + i) % count) {
        let target = &partner.addresses[index];
        let addrs = match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
            Ok(addrs) => addrs,
            Err(error) => {
                last_error = format!("{}:{}: {error}", target.host, target.port);
                continue;
            }
        };
        for addr in addrs {
            let connecting =
                match context
                    .endpoint
                    .connect_with(config.clone(), addr, partner.id.as_str())
                {
                    Ok(connecting) => connecting,
                    Err(error) => {
                        last_error = format!("{addr}: {error}");
                        continue;
                    }
                };
            let connection = match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => {
                    last_error = format!("{addr}: {error}");
                    continue;
                }
                Err(_) => {
                    last_error = format!("{addr}: QUIC handshake timed out");
                    continue;
                }
            };
            match establish(&connection, Direction::Outbound, Some(&partner.id), context).await {
                Ok(mut established) => {
                    established.target = Some(index);
                    return Ok(established);
                }
                Err(error) => {
                    // The peer's own refusal (wrong CA, unknown peer...) arrives as an
                    // application close: name it, not the broken stream it caused.
                    let peer_close = match connection.close_reason() {
                        Some(quinn::ConnectionError::ApplicationClosed(close)) => {
                            Some(super::describe_close_code(close.error_code.into_inner()))
                        }
                        _ => None,
                    };
                    let reason = error.close(&connection);
                    if error.is_refusal() {
                        super::count_refusal(partner.id.as_str(), reason);
                    }
                    last_error = match peer_close {
                        Some(code) => format!("{addr}: the partner refused the link: {code}"),
                        None => format!("{addr}: {error}"),
                    };
                }
            }
        }
    }
    Err(last_error)
}
