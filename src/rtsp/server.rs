//! The RTSP server: a TCP listener and one task per connection, plus one sender task per
//! playing track.
//!
//! A connection task reads bytes into the [`Demuxer`], feeds requests to its
//! [`ConnectionCore`] and does the I/O the core asks for: camera lookups, waiting for a
//! cold camera's parameters, UDP ports, the viewing-session hook, starting and stopping
//! [`LegSender`]s. Replies and interleaved frames share the connection's write half
//! behind a mutex taken once per reply or per batch of packets. A client that sends
//! garbage, stops reading or exceeds a limit loses its own connection and nothing else.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::auth::Authenticator;
use super::demux::{DEFAULT_MAX_MESSAGE, Demuxer, Frame, RawRequest};
use super::leg::{
    LegNotice, LegNumbering, LegOutput, LegSender, SharedWriter, WRITE_STALL_TIMEOUT,
    write_all_bounded,
};
use super::session::{
    ConnectionCore, DescribeJob, Leg, LegTransport, PlayJob, PlayStart, Reply, SessionKey,
    SetupGrant, SetupJob, Step,
};
use super::transport::RequestedTransport;
use super::{CameraDirectory, RtspSettings, RtspUser, ViewRefusal, Viewer, sdp};
use crate::channel::{Channel, SinkEvent, SinkLabel, Subscription};
use crate::ids::CameraId;
use crate::media::StreamInfo;
use crate::metrics::GaugeGuard;
use crate::policy::AgentKind;

/// How long PLAY waits for a track's first packet so that `RTP-Info` carries its
/// `rtptime`. With a warm keyframe cache the packet is already queued.
const FIRST_PACKET_WAIT: Duration = Duration::from_secs(2);

/// How long shutdown waits for connections to release their sessions.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RtspServerError {
    /// The TCP listener could not be bound.
    #[error("RTSP listener on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The UDP range holds no even/odd pair of ports.
    #[error("RTSP UDP port range {start}-{end} holds no even/odd port pair")]
    PortRange {
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
    },
}

/// The RTSP server, bound and ready to [`RtspServer::run`].
pub struct RtspServer<D: CameraDirectory> {
    listener: TcpListener,
    shared: Arc<Shared<D>>,
}

impl<D: CameraDirectory> std::fmt::Debug for RtspServer<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspServer")
            .field("local_addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// Replaces the RTSP server's users (SIGHUP): new requests authenticate against the new
/// list; sessions already playing keep going.
#[derive(Debug, Clone)]
pub struct RtspUsersHandle(Arc<Authenticator>);

impl RtspUsersHandle {
    /// Replaces the users.
    pub fn replace(&self, users: Vec<RtspUser>) {
        self.0.replace_users(users);
    }
}

struct Shared<D> {
    settings: RtspSettings,
    auth: Arc<Authenticator>,
    directory: Arc<D>,
    ports: Arc<PortPool>,
    sessions: Arc<Semaphore>,
}

impl<D: CameraDirectory> RtspServer<D> {
    /// Binds the TCP listener of `settings.listen`. UDP ports are bound per session.
    pub async fn bind(
        settings: RtspSettings,
        users: Vec<RtspUser>,
        directory: Arc<D>,
    ) -> Result<Self, RtspServerError> {
        let (start, end) = (*settings.udp_ports.start(), *settings.udp_ports.end());
        if first_even(&settings.udp_ports).is_none() {
            return Err(RtspServerError::PortRange { start, end });
        }
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| RtspServerError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let auth = Arc::new(Authenticator::new(
            users,
            settings.allow_basic,
            Instant::now().into_std(),
        ));
        let shared = Arc::new(Shared {
            ports: Arc::new(PortPool::new(settings.udp_ports.clone(), settings.dscp_tos)),
            sessions: Arc::new(Semaphore::new(settings.max_sessions)),
            settings,
            auth,
            directory,
        });
        Ok(RtspServer { listener, shared })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle replacing the users at SIGHUP, while the server runs.
    pub fn users(&self) -> RtspUsersHandle {
        RtspUsersHandle(Arc::clone(&self.shared.auth))
    }

    /// Serves until `shutdown` resolves, then closes every connection (dropping their
    /// viewing-session guards) within a few seconds.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let RtspServer { listener, shared } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let connections = Arc::new(Semaphore::new(shared.settings.max_connections));
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = connections.clone().try_acquire_owned() else {
                            metrics::counter!("passerelle_rtsp_connections_refused_total").increment(1);
                            tracing::warn!(%peer, "RTSP connection limit reached, connection closed");
                            continue;
                        };
                        tasks.spawn(serve(shared.clone(), stream, peer, stop_rx.clone(), permit));
                    }
                    Err(error) => {
                        // Out of file descriptors, most likely: back off instead of spinning.
                        tracing::warn!(%error, "RTSP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("RTSP connections still open after the shutdown grace, aborted");
            tasks.abort_all();
        }
    }
}

/// Serves one connection until it closes, fails or the server stops.
async fn serve<D: CameraDirectory>(
    shared: Arc<Shared<D>>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    // Finds a vanished client host even when no media is flowing to it.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let (mut rd, wr) = stream.into_split();
    let (notices_tx, mut notices_rx) = mpsc::channel(64);
    let _gauge = GaugeGuard::new(metrics::gauge!("passerelle_rtsp_connections"));
    let mut conn = Connection {
        core: ConnectionCore::new(
            shared.auth.clone(),
            peer,
            local,
            shared.settings.session_timeout,
        ),
        writer: Arc::new(Mutex::new(wr)),
        peer,
        local,
        sessions: HashMap::new(),
        notices: notices_tx,
        reply_buf: BytesMut::with_capacity(2048),
        shared,
    };
    let mut demux = Demuxer::new(DEFAULT_MAX_MESSAGE);
    let mut job: Option<JobFuture<D::Guard>> = None;
    let mut last_input = Instant::now();
    tracing::debug!(%peer, "RTSP connection");
    'conn: loop {
        while job.is_none() {
            match demux.poll_frame() {
                Ok(Some(frame)) => match conn.on_frame(frame).await {
                    Flow::Continue => {}
                    Flow::Job(j) => job = Some(j),
                    Flow::Close => break 'conn,
                },
                Ok(None) => break,
                Err(error) => {
                    metrics::counter!("passerelle_rtsp_protocol_errors_total", "reason" => error.reason())
                        .increment(1);
                    tracing::info!(%peer, %error, "RTSP connection closed");
                    break 'conn;
                }
            }
        }
        let deadline = conn.next_deadline(last_input);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(notice) = notices_rx.recv() => match notice {
                LegNotice::Alive(key) => conn.core.touch(key, Instant::now().into_std()),
                LegNotice::Ended(key, error) => {
                    tracing::info!(%peer, session = key, %error, "RTSP media stopped, connection closed");
                    break;
                }
            },
            done = poll_job(&mut job) => {
                job = None;
                if let Flow::Close = conn.on_job_done(done).await {
                    break;
                }
            }
            read = rd.read_buf(demux.buffer_mut()), if job.is_none() => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => last_input = Instant::now(),
            },
            _ = sleep_until(deadline) => {
                let now = Instant::now();
                while let Some(key) = conn.core.poll_timeout(now.into_std()) {
                    tracing::info!(%peer, session = key, "RTSP session timed out");
                    conn.end_session(key).await;
                }
                if conn.sessions.is_empty()
                    && now >= last_input + conn.shared.settings.idle_timeout
                {
                    tracing::debug!(%peer, "idle RTSP connection closed");
                    break;
                }
            }
        }
    }
    conn.close_all();
}

/// Sleeps until `deadline`, forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn poll_job<G>(job: &mut Option<JobFuture<G>>) -> JobDone<G> {
    match job {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

type JobFuture<G> = Pin<Box<dyn Future<Output = JobDone<G>> + Send>>;

/// The result of the asynchronous part of a request.
enum JobDone<G> {
    Describe(DescribeJob, Result<Vec<StreamInfo>, u16>),
    Play(PlayJob, Result<PlayReady<G>, ViewRefusal>),
}

struct PlayReady<G> {
    guard: G,
    /// Per leg, in the order of the job's legs.
    legs: Vec<ReadyLeg>,
}

struct ReadyLeg {
    subscription: Subscription,
    pending: Vec<SinkEvent>,
    first_timestamp: Option<u32>,
}

enum Flow<G> {
    Continue,
    Job(JobFuture<G>),
    Close,
}

struct Connection<D: CameraDirectory> {
    shared: Arc<Shared<D>>,
    core: ConnectionCore,
    writer: SharedWriter,
    peer: SocketAddr,
    local: SocketAddr,
    sessions: HashMap<SessionKey, SessionIo<D::Guard>>,
    notices: mpsc::Sender<LegNotice>,
    reply_buf: BytesMut,
}

/// What the I/O side holds for one session: released by dropping it.
struct SessionIo<G> {
    camera: CameraId,
    kind: AgentKind,
    legs: Vec<LegIo>,
    /// While playing.
    playing: Option<Playing<G>>,
    _permit: OwnedSemaphorePermit,
}

struct Playing<G> {
    stop: watch::Sender<bool>,
    _guard: G,
    _viewer: GaugeGuard,
}

struct LegIo {
    leg: Leg,
    channel: Channel,
    numbering: LegNumbering,
    udp: Option<PortLease>,
    keyframe_requests: Arc<Notify>,
    task: Option<JoinHandle<LegNumbering>>,
}

impl<D: CameraDirectory> Connection<D> {
    async fn on_frame(&mut self, frame: Frame) -> Flow<D::Guard> {
        let now = Instant::now().into_std();
        match frame {
            Frame::Interleaved { channel, payload } => {
                self.core.handle_activity(now);
                let wants_keyframe = crate::media::rtp::parse_rtcp(&payload)
                    .flatten()
                    .any(|p| p.is_keyframe_request());
                if wants_keyframe
                    && let Some(leg) = self.sessions.values().flat_map(|s| &s.legs).find(|l| {
                        matches!(l.leg.transport, LegTransport::Interleaved { rtcp, .. } if rtcp == channel)
                    })
                {
                    leg.keyframe_requests.notify_one();
                }
                Flow::Continue
            }
            Frame::Request(req) => self.on_request(req, now).await,
        }
    }

    async fn on_request(&mut self, req: RawRequest, now: std::time::Instant) -> Flow<D::Guard> {
        let method = method_label(&req);
        let step = self.core.handle_request(&req, now);
        if let Some(refused) = self.core.take_refused_credentials() {
            metrics::counter!("passerelle_auth_failures_total", "source" => "rtsp").increment(1);
            self.shared
                .directory
                .credentials_refused(refused.user.as_deref(), refused.reason);
        }
        match step {
            Step::Reply(reply) => self.send(method, &reply).await,
            Step::Close(reply) => {
                self.send(method, &reply).await;
                Flow::Close
            }
            Step::Describe(job) => Flow::Job(self.describe(job)),
            Step::Setup(job) => {
                let reply = self.setup(&job, now);
                self.send(method, &reply).await
            }
            Step::Play(job) => Flow::Job(self.play(job)),
            Step::Pause { key, reply } => {
                self.stop_media(key).await;
                self.send(method, &reply).await
            }
            Step::Teardown { key, reply } => {
                self.end_session(key).await;
                self.send(method, &reply).await
            }
        }
    }

    async fn on_job_done(&mut self, done: JobDone<D::Guard>) -> Flow<D::Guard> {
        let now = Instant::now().into_std();
        match done {
            JobDone::Describe(job, Ok(infos)) => {
                let reply = self
                    .core
                    .finish_describe(&job, rand::random::<u32>().into(), &infos);
                self.send("DESCRIBE", &reply).await
            }
            JobDone::Describe(job, Err(status)) => {
                let reply = self.core.reply_error(&job.cseq, status);
                self.send("DESCRIBE", &reply).await
            }
            JobDone::Play(job, Err(refusal)) => {
                tracing::info!(peer = %self.peer, camera = %job.camera, user = %job.user.name, %refusal, "PLAY refused");
                let reply = self.core.reply_error(&job.cseq, refusal.status());
                self.send("PLAY", &reply).await
            }
            JobDone::Play(job, Ok(ready)) => self.start_play(job, ready, now).await,
        }
    }

    async fn send(&mut self, method: &'static str, reply: &Reply) -> Flow<D::Guard> {
        metrics::counter!(
            "passerelle_rtsp_requests_total",
            "method" => method,
            "status" => reply.status().to_string()
        )
        .increment(1);
        self.reply_buf.clear();
        reply.write_to(&mut self.reply_buf);
        match write_all_bounded(&self.writer, &self.reply_buf).await {
            Ok(()) => Flow::Continue,
            Err(error) => {
                tracing::debug!(peer = %self.peer, %error, "RTSP reply not delivered");
                Flow::Close
            }
        }
    }

    fn describe(&self, job: DescribeJob) -> JobFuture<D::Guard> {
        let directory = self.shared.directory.clone();
        let timeout = self.shared.settings.describe_timeout;
        Box::pin(async move {
            let result = match directory.mount(&job.camera) {
                Some(mount) if !mount.tracks.is_empty() => {
                    let infos = futures::future::join_all(
                        mount.tracks.iter().map(|track| track.wait_info(timeout)),
                    )
                    .await;
                    // A cold camera that did not come up in time: 503.
                    infos.into_iter().collect::<Option<Vec<_>>>().ok_or(503)
                }
                _ => Err(404),
            };
            JobDone::Describe(job, result)
        })
    }

    fn setup(&mut self, job: &SetupJob, now: std::time::Instant) -> Reply {
        let error = |status| Reply::new(status, Some(&job.cseq));
        let Some(mount) = self.shared.directory.mount(&job.camera) else {
            return error(404);
        };
        let track = match job.track {
            Some(n) if n < mount.tracks.len() => n,
            Some(_) => return error(404),
            None if mount.tracks.len() == 1 => 0,
            None => return error(459),
        };
        let channel = mount.tracks[track].clone();
        let permit = match job.session {
            Some(_) => None,
            None => match self.shared.sessions.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    tracing::warn!(peer = %self.peer, "RTSP session limit reached");
                    return error(503);
                }
            },
        };
        let udp = match job.transport {
            RequestedTransport::Udp { .. } => {
                let ip = match self.shared.settings.listen.ip() {
                    ip if ip.is_unspecified() => self.local.ip(),
                    ip => ip,
                };
                match PortPool::allocate(&self.shared.ports, ip) {
                    Some(lease) => Some(lease),
                    None => {
                        tracing::warn!(peer = %self.peer, "no free RTSP UDP port pair");
                        return error(503);
                    }
                }
            }
            RequestedTransport::Interleaved(_) => None,
        };
        let grant = SetupGrant {
            track,
            server_ports: udp.as_ref().map(|l| (l.port, l.port + 1)),
        };
        let (key, leg, reply) = match self.core.finish_setup(job, grant, now) {
            Ok(done) => done,
            Err(reply) => return reply,
        };
        let numbering = LegNumbering {
            ssrc: leg.ssrc,
            next_seq: leg.first_seq,
            payload_type: sdp::payload_type(track),
            clock_rate: channel.info().map_or(90_000, |i| i.clock_rate),
            packets: 0,
            octets: 0,
            last_timestamp: None,
        };
        let leg_io = LegIo {
            leg,
            channel,
            numbering,
            udp,
            keyframe_requests: Arc::new(Notify::new()),
            task: None,
        };
        match (self.sessions.get_mut(&key), permit) {
            (Some(io), _) => io.legs.push(leg_io),
            (None, Some(permit)) => {
                self.sessions.insert(
                    key,
                    SessionIo {
                        camera: job.camera.clone(),
                        kind: job.user.kind,
                        legs: vec![leg_io],
                        playing: None,
                        _permit: permit,
                    },
                );
            }
            // The core found the session but this side has no record of it: cannot
            // happen, as both are created together; refuse rather than guess.
            (None, None) => return error(500),
        }
        reply
    }

    fn play(&self, job: PlayJob) -> JobFuture<D::Guard> {
        let directory = self.shared.directory.clone();
        let viewer = Viewer {
            name: job.user.name.clone(),
            kind: job.user.kind,
            peer: self.peer,
        };
        let channels: Vec<Option<Channel>> = job
            .legs
            .iter()
            .map(|leg| self.leg_io(job.key, leg.track).map(|l| l.channel.clone()))
            .collect();
        Box::pin(async move {
            let guard = match directory.open_view(&viewer, &job.camera).await {
                Ok(guard) => guard,
                Err(refusal) => return JobDone::Play(job, Err(refusal)),
            };
            let mut legs = Vec::with_capacity(channels.len());
            for channel in channels {
                let Some(channel) = channel else {
                    return JobDone::Play(job, Err(ViewRefusal::Unavailable));
                };
                let mut subscription = channel.subscribe(SinkLabel::local());
                let mut pending = Vec::new();
                let mut first_timestamp = None;
                let _ = tokio::time::timeout(FIRST_PACKET_WAIT, async {
                    while let Some(event) = subscription.recv().await {
                        let first = match &event {
                            SinkEvent::Packet(p) => Some(p.timestamp),
                            _ => None,
                        };
                        pending.push(event);
                        if first.is_some() {
                            first_timestamp = first;
                            break;
                        }
                    }
                })
                .await;
                legs.push(ReadyLeg {
                    subscription,
                    pending,
                    first_timestamp,
                });
            }
            JobDone::Play(job, Ok(PlayReady { guard, legs }))
        })
    }

    async fn start_play(
        &mut self,
        job: PlayJob,
        ready: PlayReady<D::Guard>,
        now: std::time::Instant,
    ) -> Flow<D::Guard> {
        let starts: Vec<PlayStart> = job
            .legs
            .iter()
            .zip(&ready.legs)
            .map(|(leg, r)| PlayStart {
                seq: self
                    .leg_io(job.key, leg.track)
                    .map_or(leg.first_seq, |l| l.numbering.next_seq),
                rtptime: r.first_timestamp,
            })
            .collect();
        let reply = self.core.finish_play(&job, &starts, now);
        if reply.status() != 200 || !self.sessions.contains_key(&job.key) {
            // The session timed out while the hook ran: the guard drops here.
            return self.send("PLAY", &reply).await;
        }
        // The reply goes out before the first interleaved frame.
        if let Flow::Close = self.send("PLAY", &reply).await {
            return Flow::Close;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let writer = self.writer.clone();
        let notices = self.notices.clone();
        let Some(io) = self.sessions.get_mut(&job.key) else {
            return Flow::Continue;
        };
        for (leg, r) in job.legs.iter().zip(ready.legs) {
            let Some(leg_io) = io.legs.iter_mut().find(|l| l.leg.track == leg.track) else {
                continue;
            };
            let output = match (leg_io.leg.transport, &leg_io.udp) {
                (LegTransport::Interleaved { rtp, rtcp }, _) => LegOutput::Interleaved {
                    writer: writer.clone(),
                    rtp,
                    rtcp,
                },
                (
                    LegTransport::Udp {
                        client_rtp,
                        client_rtcp,
                        ..
                    },
                    Some(lease),
                ) => LegOutput::Udp {
                    rtp_socket: lease.rtp.clone(),
                    rtcp_socket: lease.rtcp.clone(),
                    client_rtp,
                    client_rtcp,
                },
                (LegTransport::Udp { .. }, None) => continue,
            };
            let sender = LegSender {
                key: job.key,
                subscription: r.subscription,
                pending: r.pending,
                numbering: leg_io.numbering,
                output,
                keyframe_requests: leg_io.keyframe_requests.clone(),
            };
            leg_io.task = Some(tokio::spawn(sender.run(stop_rx.clone(), notices.clone())));
        }
        tracing::info!(peer = %self.peer, camera = %io.camera, user = %job.user.name, "RTSP viewing started");
        io.playing = Some(Playing {
            stop: stop_tx,
            _guard: ready.guard,
            _viewer: GaugeGuard::new(metrics::gauge!(
                "passerelle_viewers",
                "camera" => io.camera.to_string(),
                "kind" => io.kind.as_str()
            )),
        });
        Flow::Continue
    }

    fn leg_io(&self, key: SessionKey, track: usize) -> Option<&LegIo> {
        self.sessions
            .get(&key)?
            .legs
            .iter()
            .find(|l| l.leg.track == track)
    }

    /// Stops the session's senders, keeping their numbering, and ends the viewing session.
    async fn stop_media(&mut self, key: SessionKey) {
        let Some(io) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(playing) = io.playing.take() else {
            return;
        };
        let _ = playing.stop.send(true);
        for leg in &mut io.legs {
            if let Some(task) = leg.task.take() {
                // A sender stops between writes; a write is bounded by the stall timeout.
                let bound = WRITE_STALL_TIMEOUT + Duration::from_secs(1);
                if let Ok(Ok(numbering)) = tokio::time::timeout(bound, task).await {
                    leg.numbering = numbering;
                }
            }
        }
        tracing::info!(peer = %self.peer, camera = %io.camera, "RTSP viewing stopped");
        drop(playing);
    }

    /// Stops and forgets a session: guard, ports and session slot are released.
    async fn end_session(&mut self, key: SessionKey) {
        self.stop_media(key).await;
        self.sessions.remove(&key);
    }

    /// On disconnect: everything goes at once (a frame cut in half no longer matters).
    fn close_all(&mut self) {
        for io in self.sessions.values_mut() {
            for leg in &mut io.legs {
                if let Some(task) = leg.task.take() {
                    task.abort();
                }
            }
            if io.playing.is_some() {
                tracing::info!(peer = %self.peer, camera = %io.camera, "RTSP viewing ended by disconnect");
            }
        }
        self.sessions.clear();
    }

    /// The next instant something must happen without input: a session timeout, or the
    /// idle timeout of a connection without sessions. `None` when only sessions that
    /// cannot time out remain (playing over interleaved TCP).
    fn next_deadline(&self, last_input: Instant) -> Option<Instant> {
        match self.core.next_timeout() {
            Some(t) => Some(Instant::from_std(t)),
            None if self.sessions.is_empty() => {
                Some(last_input + self.shared.settings.idle_timeout)
            }
            None => None,
        }
    }
}

/// A bounded label for the requests metric.
fn method_label(req: &RawRequest) -> &'static str {
    use rtsp_types::Method;
    match req.method() {
        Method::Options => "OPTIONS",
        Method::Describe => "DESCRIBE",
        Method::Setup => "SETUP",
        Method::Play => "PLAY",
        Method::Pause => "PAUSE",
        Method::Teardown => "TEARDOWN",
        Method::GetParameter => "GET_PARAMETER",
        Method::SetParameter => "SET_PARAMETER",
        Method::Announce => "ANNOUNCE",
        Method::Record => "RECORD",
        Method::Redirect => "REDIRECT",
        Method::PlayNotify => "PLAY_NOTIFY",
        Method::Extension(_) => "other",
    }
}

/// Server UDP ports, handed out in even/odd pairs (RTP even, RTCP odd: RFC 3550 §11).
struct PortPool {
    range: RangeInclusive<u16>,
    /// The TOS / traffic-class byte every media socket is marked with.
    tos: u8,
    state: std::sync::Mutex<PoolState>,
}

struct PoolState {
    used: BTreeSet<u16>,
    /// Where the next search starts: pairs are handed out round-robin so a port just
    /// released (to which a client may still send RTCP) is not reused at once.
    next: u16,
}

/// A bound pair of server ports; dropping it frees them.
struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
}

fn first_even(range: &RangeInclusive<u16>) -> Option<u16> {
    let start = range.start().checked_add(range.start() % 2)?;
    (start.checked_add(1)? <= *range.end()).then_some(start)
}

impl PortPool {
    fn new(range: RangeInclusive<u16>, tos: u8) -> Self {
        let next = first_even(&range).unwrap_or(*range.start());
        PortPool {
            range,
            tos,
            state: std::sync::Mutex::new(PoolState {
                used: BTreeSet::new(),
                next,
            }),
        }
    }

    /// Binds the next free pair on `ip`; `None` if every pair is taken or unbindable.
    fn allocate(pool: &Arc<PortPool>, ip: IpAddr) -> Option<PortLease> {
        let first = first_even(&pool.range)?;
        let last = *pool.range.end() - 1;
        let pairs = usize::from((last - first) / 2 + 1);
        let mut state = pool.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut port = state.next.clamp(first, last) & !1;
        for _ in 0..pairs {
            let candidate = port;
            port = if candidate + 2 > last {
                first
            } else {
                candidate + 2
            };
            if state.used.contains(&candidate) {
                continue;
            }
            let Some((rtp, rtcp)) = bind_pair(ip, candidate, pool.tos) else {
                continue;
            };
            state.used.insert(candidate);
            state.next = port;
            return Some(PortLease {
                pool: pool.clone(),
                port: candidate,
                rtp: Arc::new(rtp),
                rtcp: Arc::new(rtcp),
            });
        }
        None
    }
}

/// Binds RTP on `port` and RTCP on `port + 1`, both marked with `tos`.
fn bind_pair(ip: IpAddr, port: u16, tos: u8) -> Option<(UdpSocket, UdpSocket)> {
    let bind = |p: u16| {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, p)).ok()?;
        socket.set_nonblocking(true).ok()?;
        if let Err(error) = mark(&socket, ip, tos) {
            tracing::warn!(%error, tos, "cannot mark an RTSP media socket with the DSCP");
        }
        UdpSocket::from_std(socket).ok()
    };
    Some((bind(port)?, bind(port + 1)?))
}

/// Sets the socket's TOS (IPv4) or traffic class (IPv6) byte; plain `sendto` keeps it.
fn mark(socket: &std::net::UdpSocket, ip: IpAddr, tos: u8) -> std::io::Result<()> {
    if tos == 0 {
        return Ok(());
    }
    let socket = socket2::SockRef::from(socket);
    match ip {
        IpAddr::V4(_) => socket.set_tos_v4(u32::from(tos)),
        IpAddr::V6(_) => {
            // An IPv4-mapped client of a dual-stack listener is sent to through the
            // IPv4 stack, which reads IP_TOS.
            let _ = socket.set_tos_v4(u32::from(tos));
            socket.set_tclass_v6(u32::from(tos))
        }
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        state.used.remove(&self.port);
    }
}

#[cfg(test)]
mod tests;
