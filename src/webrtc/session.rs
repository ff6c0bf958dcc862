//! One WHEP session: its peer connection, built per POST, and the task that feeds it
//! from the camera's channel.
//!
//! [`open_peer`] builds the connection (one UDP socket at the given address, host
//! candidates only, mDNS off, the one codec negotiation chose), applies the offer and
//! returns the answer once its candidates are gathered. [`run`] is the session's own
//! task: it waits for ICE and DTLS, subscribes to the channel, then relays until the
//! viewer leaves (DELETE), the connection fails, the camera's stream ends, the stream
//! turns out unplayable, or the gateway stops. One task per viewer, each writing to its
//! own connection: a viewer that stops reading loses its own packets (its subscription
//! queue drops them) and nobody else's.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc::interceptor::{
    Attribute, Interceptor, NackResponderBuilder, Packet as InterceptedPacket, Registry,
    SenderReportBuilder, Slot, StreamInfo as InterceptedStream, TaggedPacket,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_HEVC, MediaEngine,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use super::negotiate::Choice;
use super::relay::{Relay, Unplayable};
use super::{SessionEntry, SessionState, Shared};
use crate::channel::{Channel, SinkLabel};
use crate::media::{Codec, StreamInfo};
use crate::metrics::GaugeGuard;
use crate::viewing::CameraDirectory;

/// Packets kept for retransmission on NACK, per viewer: about 1.4 s of a 1.5 Mbit/s
/// camera (181 packets/s). The default, 1024, cost ~1.6 MB per viewer (spike pitfall 14)
/// for losses a live viewer would rather skip. A power of two, as the buffer requires.
const NACK_BUFFER_PACKETS: u16 = 256;

/// Where the keyframe-request interceptor sits: after every interceptor of the chain
/// (the highest named slot is 13 000), so they all see the inbound RTCP first.
const KEYFRAME_REQUEST_SLOT: usize = 14_000;

/// How long the answer waits for candidate gathering; host candidates take
/// milliseconds.
const GATHERING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a browser has to complete ICE and DTLS after the answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long ICE waits, once it has lost the browser (5 s without traffic), before it
/// declares the connection failed and the session ends. The default is 25 s.
const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on closing a peer connection (the library waits up to 1 s for its driver).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Channel events taken per wake-up: a bounded amount of work between checks of the
/// stop signals.
const BATCH: usize = 64;

/// Why a peer connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The connection (its UDP socket at `addr`) could not be made.
    #[error("WebRTC connection on {addr}: {source}")]
    Build {
        /// The socket address.
        addr: SocketAddr,
        /// The library's error.
        source: webrtc::error::Error,
    },
    /// The WebRTC stack refused the offer.
    #[error("the offer was refused by the WebRTC stack: {0}")]
    Offer(#[source] webrtc::error::Error),
    /// The answer could not be made.
    #[error("the answer could not be made: {0}")]
    Answer(#[source] webrtc::error::Error),
    /// No local description after gathering.
    #[error("the answer has no local description")]
    NoAnswer,
}

/// A peer connection with its answer, ready for [`run`].
pub struct Peer {
    pub(super) connection: Arc<dyn PeerConnection>,
    pub(super) track: Arc<TrackLocalStaticRTP>,
    /// The answer SDP, as the library wrote it.
    pub(super) answer: String,
    pub(super) payload_type: u8,
    pub(super) ssrc: u32,
    pub(super) states: watch::Receiver<RTCPeerConnectionState>,
}

impl Peer {
    /// Closes the connection (its socket and driver), bounded.
    pub(super) async fn close(&self) {
        if tokio::time::timeout(CLOSE_TIMEOUT, self.connection.close())
            .await
            .is_err()
        {
            tracing::warn!("WebRTC connection did not close in time");
        }
    }
}

/// Builds a peer connection bound on `bind` for `choice`, applies `offer` and answers.
pub async fn open_peer(
    choice: &Choice,
    offer: String,
    bind: SocketAddr,
) -> Result<Peer, SetupError> {
    let codec = RTCRtpCodec {
        mime_type: match choice.codec {
            Codec::H264 => MIME_TYPE_H264,
            Codec::H265 => MIME_TYPE_HEVC,
        }
        .to_owned(),
        clock_rate: 90_000,
        channels: 0,
        // The browser's own line: the library matches H.264 profiles byte for byte.
        sdp_fmtp_line: choice.fmtp.clone(),
        rtcp_feedback: [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
            .into_iter()
            .map(|(typ, parameter)| RTCPFeedback {
                typ: typ.to_owned(),
                parameter: parameter.to_owned(),
            })
            .collect(),
    };
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec.clone(),
                payload_type: choice.payload_type,
            },
            RtpCodecKind::Video,
        )
        .map_err(SetupError::Answer)?;
    // A sender only: retransmissions, sender reports and keyframe requests; nothing that
    // measures media received.
    let interceptors = Registry::new()
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new()
                .with_size(NACK_BUFFER_PACKETS)
                .build(),
        )
        .with(Slot::SenderReport, SenderReportBuilder::new().build())
        .with(
            Slot::from(KEYFRAME_REQUEST_SLOT),
            KeyframeRequests::default(),
        );
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(bind.ip().is_loopback())
        .with_ice_timeouts(None, Some(ICE_FAILED_TIMEOUT), None)
        .build();
    let (gathered_tx, mut gathered) = watch::channel(false);
    let (state_tx, states) = watch::channel(RTCPeerConnectionState::New);
    let events = Arc::new(Events {
        gathered: gathered_tx,
        state: state_tx,
    });
    let connection = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(interceptors)
        .with_handler(events)
        .with_udp_addrs(vec![bind])
        .build()
        .await
        .map_err(|source| SetupError::Build { addr: bind, source })?;
    let connection: Arc<dyn PeerConnection> = Arc::new(connection);
    let ssrc = rand::random::<u32>();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "passerelle".to_owned(),
        "video".to_owned(),
        "video".to_owned(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )));
    let negotiated = async {
        let sender = connection
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .map_err(SetupError::Answer)?;
        let offer = RTCSessionDescription::offer(offer).map_err(SetupError::Offer)?;
        connection
            .set_remote_description(offer)
            .await
            .map_err(SetupError::Offer)?;
        let answer = connection
            .create_answer(None)
            .await
            .map_err(SetupError::Answer)?;
        connection
            .set_local_description(answer)
            .await
            .map_err(SetupError::Answer)?;
        // Not trickle ICE: the answer carries every candidate. Past the bound it carries
        // those gathered so far.
        let _ = tokio::time::timeout(GATHERING_TIMEOUT, gathered.wait_for(|done| *done)).await;
        let answer = connection
            .local_description()
            .await
            .ok_or(SetupError::NoAnswer)?
            .sdp;
        let payload_type = sender
            .get_parameters()
            .await
            .ok()
            .and_then(|p| p.rtp_parameters.codecs.first().map(|c| c.payload_type))
            .unwrap_or(choice.payload_type);
        Ok::<_, SetupError>((answer, payload_type))
    }
    .await;
    let peer = |(answer, payload_type)| Peer {
        connection: Arc::clone(&connection),
        track: Arc::clone(&track),
        answer,
        payload_type,
        ssrc,
        states,
    };
    match negotiated {
        Ok(parts) => Ok(peer(parts)),
        Err(error) => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close()).await;
            Err(error)
        }
    }
}

/// Why a session ended: a bounded set, for the metrics' `reason` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EndReason {
    /// DELETE by the viewer.
    Deleted,
    /// No ICE and DTLS within [`CONNECT_TIMEOUT`].
    ConnectTimeout,
    /// ICE or DTLS failed, or the browser went away.
    ConnectionFailed,
    /// The connection closed, or writing to it failed.
    ConnectionClosed,
    /// The camera's channel closed.
    CameraEnded,
    /// The stream cannot play in a browser.
    Unplayable(Unplayable),
    /// The gateway is stopping.
    Shutdown,
}

impl EndReason {
    /// The metrics label.
    pub(super) fn label(&self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::ConnectTimeout => "connect_timeout",
            EndReason::ConnectionFailed => "connection_failed",
            EndReason::ConnectionClosed => "connection_closed",
            EndReason::CameraEnded => "camera_ended",
            EndReason::Unplayable(_) => "unplayable",
            EndReason::Shutdown => "shutdown",
        }
    }

    /// What the viewer page shows.
    pub(super) fn message(&self) -> String {
        match self {
            EndReason::Deleted => "ended by the viewer".to_owned(),
            EndReason::ConnectTimeout => format!(
                "the browser did not connect within {} s (ICE and DTLS); is UDP to the gateway's WebRTC ports allowed?",
                CONNECT_TIMEOUT.as_secs()
            ),
            EndReason::ConnectionFailed => {
                "the WebRTC connection was lost (no traffic from the browser)".to_owned()
            }
            EndReason::ConnectionClosed => "the WebRTC connection closed".to_owned(),
            EndReason::CameraEnded => "the camera's stream ended".to_owned(),
            EndReason::Unplayable(why) => why.to_string(),
            EndReason::Shutdown => "the gateway is stopping".to_owned(),
        }
    }
}

/// Everything one session's task owns; dropping it releases the viewing session, the
/// port and the session slot.
pub(super) struct Session<D: CameraDirectory> {
    pub(super) shared: Arc<Shared<D>>,
    pub(super) entry: Arc<SessionEntry>,
    pub(super) peer: Peer,
    pub(super) channel: Channel,
    pub(super) info: StreamInfo,
    pub(super) guard: D::Guard,
    pub(super) kind_label: &'static str,
    pub(super) posted: Instant,
    pub(super) port: super::PortLease,
    pub(super) permit: OwnedSemaphorePermit,
}

/// The session's task: drives it to its end, then releases everything in order (the
/// connection, the viewing session, which journals its end, then the slot) and
/// publishes the end for `GET /whep/session/<id>`.
pub(super) async fn run<D: CameraDirectory>(session: Session<D>) {
    let Session {
        shared,
        entry,
        mut peer,
        channel,
        info,
        guard,
        kind_label,
        posted,
        port,
        permit,
    } = session;
    let mut stop = entry.stop.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let camera = channel.camera().to_string();
    let reason = tokio::select! {
        biased;
        _ = stop.wait_for(|stop| *stop) => EndReason::Deleted,
        _ = shutdown.wait_for(|stop| *stop) => EndReason::Shutdown,
        reason = play(&mut peer, &channel, &info, &entry, posted, kind_label) => reason,
    };
    peer.close().await;
    drop(guard);
    drop(port);
    if let EndReason::Unplayable(why) = &reason {
        shared.mark_unplayable(channel.camera(), &info, why);
    }
    tracing::info!(camera, session = %entry.id, reason = reason.label(), "WebRTC session ended");
    metrics::counter!("passerelle_webrtc_sessions_ended_total", "reason" => reason.label())
        .increment(1);
    entry.status.send_modify(|status| {
        status.state = SessionState::Ended;
        status.reason = Some(reason.message());
        status.ended_at = Some(Instant::now());
    });
    shared.session_closed();
    drop(permit);
}

/// Waits for the connection, then relays the camera until something ends the session.
async fn play(
    peer: &mut Peer,
    channel: &Channel,
    info: &StreamInfo,
    entry: &SessionEntry,
    posted: Instant,
    kind_label: &'static str,
) -> EndReason {
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        peer.states.wait_for(|state| {
            matches!(
                state,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        }),
    )
    .await;
    match connected.map(|state| state.map(|state| *state)) {
        Ok(Ok(RTCPeerConnectionState::Connected)) => {}
        Ok(Ok(RTCPeerConnectionState::Failed)) => return EndReason::ConnectionFailed,
        Ok(_) => return EndReason::ConnectionClosed,
        Err(_) => return EndReason::ConnectTimeout,
    }
    metrics::histogram!("passerelle_webrtc_connect_seconds").record(posted.elapsed().as_secs_f64());
    let camera = channel.camera().to_string();
    // Subscribed only now: the keyframe cache then starts the viewer on a recent
    // keyframe instead of a queue that filled during the handshake.
    let mut subscription = channel.subscribe(SinkLabel::local());
    entry
        .status
        .send_modify(|status| status.state = SessionState::Playing);
    let _viewer = GaugeGuard::new(metrics::gauge!(
        "passerelle_viewers",
        "camera" => camera.clone(),
        "kind" => kind_label
    ));
    let plis = metrics::counter!("passerelle_webrtc_pli_total", "camera" => camera);
    let mut relay = Relay::new(info, peer.payload_type, peer.ssrc, rand::random());
    let mut events = Vec::with_capacity(BATCH);
    let mut packets = Vec::with_capacity(BATCH * 2);
    let track = Arc::clone(&peer.track);
    let mut feedback = track.poll();
    loop {
        tokio::select! {
            biased;
            changed = peer.states.changed() => {
                if changed.is_err() {
                    return EndReason::ConnectionClosed;
                }
                match *peer.states.borrow_and_update() {
                    RTCPeerConnectionState::Failed => return EndReason::ConnectionFailed,
                    RTCPeerConnectionState::Closed => return EndReason::ConnectionClosed,
                    _ => {}
                }
            }
            event = &mut feedback => match event {
                Some(TrackLocalEvent::OnRtcpPacket(rtcp)) => {
                    let requests = rtcp.iter().filter(|p| is_keyframe_request(p.as_ref())).count();
                    if requests > 0 {
                        plis.increment(requests as u64);
                        // The channel rate-limits what reaches the camera.
                        subscription.request_keyframe();
                    }
                    feedback = track.poll();
                }
                Some(_) => feedback = track.poll(),
                None => return EndReason::ConnectionClosed,
            },
            more = subscription.recv_batch(&mut events, BATCH) => {
                if !more {
                    return EndReason::CameraEnded;
                }
                for event in events.drain(..) {
                    if let Err(why) = relay.handle(event, &mut packets) {
                        return EndReason::Unplayable(why);
                    }
                }
                let (mut sent, mut bytes) = (0u64, 0u64);
                for packet in packets.drain(..) {
                    let len = packet.payload.len() as u64;
                    if track.write_rtp(packet).await.is_err() {
                        return EndReason::ConnectionClosed;
                    }
                    sent += 1;
                    bytes += len;
                }
                subscription.record_forwarded(sent, bytes);
            }
        }
    }
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let packet = packet.as_any();
    packet.is::<PictureLossIndication>() || packet.is::<FullIntraRequest>()
}

/// The connection's events, as watch values the session reads.
struct Events {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }
}

/// Hands the browser's keyframe requests (PLI, FIR) to the application: inbound RTCP
/// otherwise stops at the end of the interceptor chain (spike pitfall 10). Everything
/// else inbound was for the interceptors before it and goes no further.
#[derive(Default)]
struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptedPacket::Rtcp(packets) = &mut msg.message.packet {
            packets.retain(|p| is_keyframe_request(p.as_ref()));
            if packets.is_empty() {
                return Ok(());
            }
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &InterceptedStream) {}
    fn unbind_local_stream(&mut self, _info: &InterceptedStream) {}
    fn bind_remote_stream(&mut self, _info: &InterceptedStream) {}
    fn unbind_remote_stream(&mut self, _info: &InterceptedStream) {}
}
