//! Media on a link: the sender task that drains the provided cameras' subscriptions
//! into RoQ datagrams (or streams), and the receiving side that turns RoQ packets back
//! into channel packets.
//!
//! # Sending
//!
//! One task per connection (`run_sender`) owns every outgoing flow as a future in a
//! `FuturesUnordered`: the flows are polled by one task (no contention between tasks
//! for the connection), and only the flows whose subscription has news are woken. Each
//! flow future (`OutFlow::run`) waits for a batch from its subscription, writes each
//! packet's RTP header with the flow's own SSRC and sequence into a reused scratch
//! buffer, frames it with the flow id and hands it to QUIC. A flow yields after each
//! full batch so a busy camera cannot starve the others.
//!
//! Why packets fit: QUIC's smallest path (1200-byte UDP payload, RFC 9000 §14) leaves
//! 1200 − 1 (short header) − 20 (longest connection id) − 4 (packet number) − 16 (AEAD
//! tag) − 9 (DATAGRAM frame bound) = 1150 bytes of datagram; minus a 2-byte flow id and
//! the 12-byte RTP header, 1136 bytes of payload, above the channel's default
//! `max_payload` of 1100. A test checks it on a real connection.
//!
//! # Receiving
//!
//! `InFlow::handle_packet` takes one RoQ packet (RTP or RTCP, told apart by
//! [`roq::is_rtcp`]) of an imported camera and publishes it into the local channel, or
//! passes the sender report on. Malformed packets are refused with a [`MediaError`]
//! for the caller to count; nothing here panics on peer input.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use metrics::Counter;
use tokio::sync::{Notify, mpsc, oneshot};

use super::settings::MediaTransport;
use crate::channel::{Channel, SinkEvent, Subscription};
use crate::control::FlowId;
use crate::ids::CameraId;
use crate::media::rtp::{self, RtcpPacket, RtpHeader, RtpPacket, SenderReport};
use crate::media::{Codec, MediaPacket};
use crate::roq::{self, StreamEncoder};

/// The RTP payload type every leg of ours uses (dynamic range, RFC 3551 §6); the codec
/// travels in `SubscribeOk`.
pub const PAYLOAD_TYPE: u8 = 96;

/// Most events taken from a subscription at once: bounds one flow's turn.
const BATCH: usize = 64;

/// Scratch allocation size: one allocation serves about 50 MTU-sized packets, and is
/// reclaimed in place once QUIC has released them.
const SCRATCH: usize = 64 * 1024;

/// A flow the sender task should start.
pub(crate) struct OutFlowStart {
    pub flow_id: FlowId,
    pub camera: CameraId,
    pub subscription: Subscription,
    /// Dropping the sender stops the flow.
    pub stop: oneshot::Receiver<()>,
    /// Notified when the receiver asked for a keyframe.
    pub keyframe: Arc<Notify>,
}

/// Why an outgoing flow stopped on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutFlowEnd {
    /// Told to stop (unsubscribed, no view left, link closing).
    Stopped,
    /// The camera's channel closed.
    ChannelClosed,
    /// The connection is gone.
    ConnectionLost,
}

/// Runs every outgoing flow of one connection until `starts` closes. Each flow that
/// ends on its own is reported on `ended`.
pub(crate) async fn run_sender(
    connection: quinn::Connection,
    transport: MediaTransport,
    peer: Arc<str>,
    cname: Arc<str>,
    mut starts: mpsc::UnboundedReceiver<OutFlowStart>,
    ended: mpsc::UnboundedSender<(FlowId, OutFlowEnd)>,
) {
    let mut flows = FuturesUnordered::new();
    loop {
        tokio::select! {
            start = starts.recv() => {
                let Some(start) = start else { break };
                let flow = OutFlow::new(&connection, transport, &peer, Arc::clone(&cname), start);
                flows.push(flow.run());
            }
            Some((flow_id, end)) = flows.next(), if !flows.is_empty() => {
                if end != OutFlowEnd::Stopped {
                    // The partner task may be gone already: nothing left to tell.
                    let _ = ended.send((flow_id, end));
                }
            }
        }
    }
}

/// One camera sent on one link: its own RTP session.
struct OutFlow {
    connection: quinn::Connection,
    flow_id: FlowId,
    camera: CameraId,
    transport: MediaTransport,
    subscription: Subscription,
    stop: oneshot::Receiver<()>,
    keyframe: Arc<Notify>,
    cname: Arc<str>,
    ssrc: u32,
    sequence: u16,
    /// RTP packets and payload octets sent, for sender reports (RFC 3550 §6.4.1).
    packet_count: u32,
    octet_count: u32,
    too_large: Counter,
    scratch: BytesMut,
    rtcp: BytesMut,
}

enum Sent {
    Ok,
    TooLarge,
    Lost,
}

impl OutFlow {
    fn new(
        connection: &quinn::Connection,
        transport: MediaTransport,
        peer: &str,
        cname: Arc<str>,
        start: OutFlowStart,
    ) -> Self {
        let too_large = metrics::counter!(
            "passerelle_dropped_packets_total",
            "camera" => start.camera.to_string(),
            "peer" => peer.to_owned(),
            "reason" => "too_large"
        );
        // A peer that disabled datagrams still gets the camera, on a stream.
        let transport = match (transport, connection.max_datagram_size()) {
            (MediaTransport::Datagram, None) => MediaTransport::Stream,
            (t, _) => t,
        };
        OutFlow {
            connection: connection.clone(),
            flow_id: start.flow_id,
            camera: start.camera,
            transport,
            subscription: start.subscription,
            stop: start.stop,
            keyframe: start.keyframe,
            cname,
            ssrc: rand::random(),
            sequence: rand::random(),
            packet_count: 0,
            octet_count: 0,
            too_large,
            scratch: BytesMut::with_capacity(SCRATCH),
            rtcp: BytesMut::with_capacity(128),
        }
    }

    async fn run(mut self) -> (FlowId, OutFlowEnd) {
        let flow_id = self.flow_id;
        let mut stop = std::mem::replace(&mut self.stop, oneshot::channel().1);
        let end = tokio::select! {
            _ = &mut stop => OutFlowEnd::Stopped,
            end = self.forward() => end,
        };
        tracing::debug!(flow = %flow_id, camera = %self.camera, ?end, "outgoing flow ended");
        (flow_id, end)
    }

    async fn forward(&mut self) -> OutFlowEnd {
        let mut stream = match self.transport {
            MediaTransport::Datagram => None,
            MediaTransport::Stream => match self.open_stream().await {
                Some(s) => Some(s),
                None => return OutFlowEnd::ConnectionLost,
            },
        };
        let mut events = Vec::with_capacity(BATCH);
        let keyframe = Arc::clone(&self.keyframe);
        loop {
            tokio::select! {
                _ = keyframe.notified() => {
                    self.subscription.request_keyframe();
                    continue;
                }
                more = self.subscription.recv_batch(&mut events, BATCH) => {
                    if !more {
                        return OutFlowEnd::ChannelClosed;
                    }
                }
            }
            let full = events.len() == BATCH;
            let (mut packets, mut bytes) = (0u64, 0u64);
            for event in events.drain(..) {
                let sent = match event {
                    SinkEvent::Packet(packet) => {
                        let sent = self.send_packet(&packet, stream.as_mut());
                        if matches!(sent, Sent::Ok) {
                            packets += 1;
                            bytes += packet.payload.len() as u64;
                        }
                        sent
                    }
                    SinkEvent::SenderReport { ntp, rtp } => {
                        self.send_sender_report(ntp, rtp, stream.as_mut())
                    }
                    SinkEvent::Dropped(n) => {
                        // The receiver sees the loss as a gap (RFC 3550 §A.1); the
                        // sequence space is 16 bits, so only n mod 2^16 matters.
                        self.sequence = self.sequence.wrapping_add(n as u16);
                        Sent::Ok
                    }
                };
                if matches!(sent, Sent::Lost) {
                    return OutFlowEnd::ConnectionLost;
                }
            }
            if let Some((send, _)) = stream.as_mut()
                && !self.scratch.is_empty()
            {
                let chunk = self.scratch.split().freeze();
                if send.write_chunk(chunk).await.is_err() {
                    return OutFlowEnd::ConnectionLost;
                }
            }
            if packets > 0 {
                self.subscription.record_forwarded(packets, bytes);
            }
            if full {
                tokio::task::yield_now().await;
            }
        }
    }

    async fn open_stream(&mut self) -> Option<(quinn::SendStream, StreamEncoder)> {
        let send = self.connection.open_uni().await.ok()?;
        // A flow id is at most 2^62 - 1 by construction, so the encoder accepts it.
        let encoder = StreamEncoder::new(self.flow_id.value()).ok()?;
        Some((send, encoder))
    }

    fn send_packet(
        &mut self,
        packet: &MediaPacket,
        stream: Option<&mut (quinn::SendStream, StreamEncoder)>,
    ) -> Sent {
        let header = RtpHeader {
            marker: packet.marker,
            payload_type: PAYLOAD_TYPE,
            sequence: self.sequence,
            timestamp: packet.timestamp,
            ssrc: self.ssrc,
        }
        .to_bytes();
        self.sequence = self.sequence.wrapping_add(1);
        let sent = self.send(&header, &packet.payload, stream);
        if matches!(sent, Sent::Ok) {
            self.packet_count = self.packet_count.wrapping_add(1);
            self.octet_count = self.octet_count.wrapping_add(packet.payload.len() as u32);
        }
        sent
    }

    fn send_sender_report(
        &mut self,
        ntp: u64,
        rtp: u32,
        stream: Option<&mut (quinn::SendStream, StreamEncoder)>,
    ) -> Sent {
        let mut rtcp = std::mem::take(&mut self.rtcp);
        rtcp.clear();
        SenderReport {
            ssrc: self.ssrc,
            ntp_timestamp: ntp,
            rtp_timestamp: rtp,
            packet_count: self.packet_count,
            octet_count: self.octet_count,
        }
        .write_into(&mut rtcp);
        // The CNAME is our site id, at most 253 bytes: within the 255-byte item limit.
        let _ = rtp::write_sdes_cname(self.ssrc, &self.cname, &mut rtcp);
        let sent = self.send(&rtcp, &[], stream);
        self.rtcp = rtcp;
        sent
    }

    /// Frames one packet for the flow's transport. Datagrams go out at once; stream
    /// packets accumulate in the scratch buffer, written once per batch.
    fn send(
        &mut self,
        header: &[u8],
        payload: &[u8],
        stream: Option<&mut (quinn::SendStream, StreamEncoder)>,
    ) -> Sent {
        let needed = roq::VARINT_MAX_LEN * 2 + header.len() + payload.len();
        if self.scratch.capacity() - self.scratch.len() < needed {
            self.scratch.reserve(SCRATCH.max(needed));
        }
        match stream {
            Some((_, encoder)) => {
                // Cannot fail: the packet is not empty (a header is always there) and
                // the flow id was checked when the encoder was made.
                let _ = encoder.encode_packet_into(header, payload, &mut self.scratch);
                Sent::Ok
            }
            None => {
                if roq::encode_datagram_into(
                    self.flow_id.value(),
                    header,
                    payload,
                    &mut self.scratch,
                )
                .is_err()
                {
                    return Sent::TooLarge;
                }
                let datagram = self.scratch.split().freeze();
                match self.connection.send_datagram(datagram) {
                    Ok(()) => Sent::Ok,
                    Err(quinn::SendDatagramError::TooLarge) => {
                        // Re-splitting happened once in the channel, for the path MTU we
                        // expected; a smaller path shows here.
                        self.too_large.increment(1);
                        Sent::TooLarge
                    }
                    Err(quinn::SendDatagramError::ConnectionLost(_)) => Sent::Lost,
                    Err(
                        quinn::SendDatagramError::UnsupportedByPeer
                        | quinn::SendDatagramError::Disabled,
                    ) => {
                        self.too_large.increment(1);
                        Sent::TooLarge
                    }
                }
            }
        }
    }
}

/// Why a received media packet was dropped.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("flow {flow_id}: RoQ framing: {source}")]
    Roq { flow_id: u64, source: roq::RoqError },
    #[error("unknown flow {flow_id}")]
    UnknownFlow { flow_id: u64 },
    #[error("flow {flow_id}: {source}")]
    Rtp { flow_id: u64, source: rtp::RtpError },
    #[error("flow {flow_id}: RTCP: {source}")]
    Rtcp {
        flow_id: u64,
        source: rtp::RtcpError,
    },
    #[error("flow {flow_id} ssrc={ssrc:08x} seq={sequence}: {source}")]
    Payload {
        flow_id: u64,
        ssrc: u32,
        sequence: u16,
        source: crate::media::h26x::H26xError,
    },
}

impl MediaError {
    /// The `reason` label for the drop counter.
    pub fn reason(&self) -> &'static str {
        match self {
            MediaError::UnknownFlow { .. } => "unknown_flow",
            _ => "malformed",
        }
    }
}

/// An imported camera's receiving end on one link.
pub(crate) struct InFlow {
    pub flow_id: FlowId,
    pub channel: Channel,
    pub codec: Codec,
}

impl InFlow {
    /// Publishes one RoQ packet (the flow id already removed) into the local channel.
    pub fn handle_packet(&self, packet: Bytes) -> Result<(), MediaError> {
        let flow_id = self.flow_id.value();
        if roq::is_rtcp(&packet) {
            for rtcp in rtp::parse_rtcp(&packet) {
                match rtcp {
                    Ok(RtcpPacket::SenderReport(sr)) => {
                        self.channel
                            .sender_report(sr.ntp_timestamp, sr.rtp_timestamp);
                    }
                    Ok(_) => {}
                    Err(source) => return Err(MediaError::Rtcp { flow_id, source }),
                }
            }
            return Ok(());
        }
        let rtp =
            RtpPacket::parse(&packet).map_err(|source| MediaError::Rtp { flow_id, source })?;
        let media = rtp
            .to_media_packet(self.codec)
            .map_err(|source| MediaError::Payload {
                flow_id,
                ssrc: rtp.ssrc(),
                sequence: rtp.sequence(),
                source,
            })?;
        self.channel.publish(media);
        Ok(())
    }
}

/// Reads one RoQ unidirectional stream (the stream fallback) and hands its packets,
/// tagged with the flow id, to `out`. Ends at the end of the stream or on a framing
/// error (the stream is stopped with the RoQ error code); a full `out` drops packets,
/// counted by the caller's `dropped`.
pub(crate) async fn read_media_stream(
    mut recv: quinn::RecvStream,
    max_packet_len: usize,
    out: mpsc::Sender<(u64, Bytes)>,
    dropped: Counter,
) {
    let mut decoder = roq::StreamDecoder::new(max_packet_len);
    loop {
        let chunk = match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => {
                if let Err(error) = decoder.finish() {
                    tracing::debug!(%error, "media stream ended mid-packet");
                }
                return;
            }
            Err(_) => return,
        };
        decoder.handle_data(chunk);
        loop {
            match decoder.poll_packet() {
                Ok(Some(packet)) => {
                    let flow_id = decoder.flow_id().unwrap_or_default();
                    if out.try_send((flow_id, packet)).is_err() {
                        dropped.increment(1);
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%error, "bad media stream, stopped");
                    let _ = recv
                        .stop(quinn::VarInt::from_u64(error.code().value()).unwrap_or_default());
                    dropped.increment(1);
                    return;
                }
            }
        }
    }
}
