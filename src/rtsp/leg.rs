//! One leg's sender: drains a channel subscription into RTP (and RTCP sender reports)
//! for one track of one RTSP session, interleaved on the RTSP connection or over UDP.
//!
//! Each leg is its own RTP session (DESIGN.md "Numbering and time"): random SSRC and
//! sequence numbering, RTP timestamps as the channel carries them (the camera's clock),
//! sender reports from the camera's latest NTP↔RTP mapping. Headers are written into a
//! reused buffer; in steady state a batch of packets costs no allocation and one write.
//!
//! The sender blocks only itself: the subscription queue is bounded by the channel, so a
//! slow client makes the channel drop for this sink, never slows the camera or others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, Notify, mpsc, watch};

use super::session::SessionKey;
use crate::channel::{SinkEvent, Subscription};
use crate::media::rtp::{RTP_HEADER_LEN, RtpHeader, SenderReport, parse_rtcp, write_sdes_cname};

/// Interval between sender reports (RFC 3550 §6.2: 5 s minimum is the usual choice).
pub const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// A client that does not read for this long while the server has data for it is gone
/// (or hostile): its connection is closed.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Most events taken from the subscription per write.
const BATCH: usize = 64;

/// The CNAME in the SDES of every compound RTCP packet (RFC 3550 §6.5.1).
const CNAME: &str = "passerelle";

/// The write half of an RTSP connection, shared by the request loop (replies) and the
/// interleaved legs (frames). Each writer takes it once per batch.
pub type SharedWriter = Arc<Mutex<OwnedWriteHalf>>;

/// Where a leg's packets go.
#[derive(Debug, Clone)]
pub enum LegOutput {
    /// `$` frames on the RTSP connection.
    Interleaved {
        /// The connection's write half.
        writer: SharedWriter,
        /// RTP channel.
        rtp: u8,
        /// RTCP channel.
        rtcp: u8,
    },
    /// UDP from the session's own server ports to the client's own address.
    Udp {
        /// Bound to the server RTP port.
        rtp_socket: Arc<UdpSocket>,
        /// Bound to the server RTCP port; also receives the client's RTCP.
        rtcp_socket: Arc<UdpSocket>,
        /// The client's RTP address.
        client_rtp: SocketAddr,
        /// The client's RTCP address.
        client_rtcp: SocketAddr,
    },
}

/// The numbering of a leg, kept across PAUSE/PLAY so the receiver sees one RTP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegNumbering {
    /// This leg's SSRC.
    pub ssrc: u32,
    /// Sequence number of the next packet.
    pub next_seq: u16,
    /// RTP payload type.
    pub payload_type: u8,
    /// RTP clock rate of the track.
    pub clock_rate: u32,
    /// Packets sent, for sender reports.
    pub packets: u32,
    /// Payload octets sent, for sender reports.
    pub octets: u32,
    /// Timestamp of the last packet sent.
    pub last_timestamp: Option<u32>,
}

/// Why a leg stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegError {
    /// The channel closed (camera removed or gateway stopping).
    #[error("channel closed")]
    ChannelClosed,
    /// The connection could not be written.
    #[error("write to the RTSP connection failed: {0}")]
    Write(String),
    /// The client did not read for [`WRITE_STALL_TIMEOUT`].
    #[error("client stopped reading for {0:?}")]
    Stalled(Duration),
}

/// What a leg tells its connection while running.
#[derive(Debug)]
pub enum LegNotice {
    /// RTCP from the client arrived on the session's UDP socket: the session is alive.
    Alive(SessionKey),
    /// The leg stopped on its own.
    Ended(SessionKey, LegError),
}

/// Everything a leg's sender task owns.
pub struct LegSender {
    /// The session this leg belongs to.
    pub key: SessionKey,
    /// The subscription to drain.
    pub subscription: Subscription,
    /// Events already taken from the subscription (while PLAY looked for the first
    /// packet), sent first.
    pub pending: Vec<SinkEvent>,
    /// Numbering.
    pub numbering: LegNumbering,
    /// Destination.
    pub output: LegOutput,
    /// Notified when the client asks for a keyframe over interleaved RTCP.
    pub keyframe_requests: Arc<Notify>,
}

impl LegSender {
    /// Runs until `stop` changes (PAUSE, TEARDOWN, timeout) or the leg fails; returns
    /// the numbering to continue from. Stopping only happens between writes, so an
    /// interleaved frame is never cut in half.
    pub async fn run(
        self,
        mut stop: watch::Receiver<bool>,
        notices: mpsc::Sender<LegNotice>,
    ) -> LegNumbering {
        let LegSender {
            key,
            mut subscription,
            pending,
            mut numbering,
            output,
            keyframe_requests,
        } = self;
        let mut out = BytesMut::with_capacity(BATCH * 1500);
        let mut batch: Vec<SinkEvent> = Vec::with_capacity(BATCH);
        let mut mapping: Option<(u64, u32)> = None;
        // The first report goes out with the first mapping (below), then periodically.
        let mut sr_timer = tokio::time::interval_at(
            tokio::time::Instant::now() + SENDER_REPORT_INTERVAL,
            SENDER_REPORT_INTERVAL,
        );
        sr_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rtcp_in = vec![0u8; 1500];
        // Set after a receive error on the RTCP socket, so a persistent error cannot spin.
        let mut rtcp_failed = false;
        let client_ip = match &output {
            LegOutput::Udp { client_rtp, .. } => Some(client_rtp.ip()),
            LegOutput::Interleaved { .. } => None,
        };

        batch.extend(pending);
        let mut result = Ok(());
        loop {
            if !batch.is_empty() {
                let mut send_sr = false;
                for event in batch.drain(..) {
                    match event {
                        SinkEvent::Packet(p) => {
                            encode_packet(&mut out, &output, &mut numbering, &p)
                        }
                        SinkEvent::SenderReport { ntp, rtp } => {
                            // The first mapping goes out at once: the receiver can
                            // place frames in wall-clock time from the start.
                            send_sr |= mapping.is_none();
                            mapping = Some((ntp, rtp));
                        }
                        SinkEvent::Dropped(n) => {
                            // Skip the numbers so the receiver sees the loss
                            // (RFC 3550 §6.4.1 loss accounting).
                            numbering.next_seq = numbering.next_seq.wrapping_add(n as u16);
                        }
                    }
                    if let Err(e) = flush_udp(&mut out, &output) {
                        tracing::debug!(session = key, error = %e, "UDP send failed");
                    }
                }
                if send_sr && let Some(m) = mapping {
                    encode_sender_report(&mut out, &output, &numbering, m);
                }
                if let Err(e) = flush(&mut out, &output).await {
                    result = Err(e);
                    break;
                }
            }
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = keyframe_requests.notified() => subscription.request_keyframe(),
                received = recv_rtcp(&output, &mut rtcp_in), if !rtcp_failed => {
                    let Ok((len, from)) = received else {
                        rtcp_failed = true;
                        continue;
                    };
                    if Some(from.ip()) == client_ip {
                        let _ = notices.try_send(LegNotice::Alive(key));
                        if parse_rtcp(&rtcp_in[..len]).flatten().any(|p| p.is_keyframe_request()) {
                            subscription.request_keyframe();
                        }
                    }
                }
                _ = sr_timer.tick() => {
                    if let Some(m) = mapping {
                        encode_sender_report(&mut out, &output, &numbering, m);
                        if let Err(e) = flush(&mut out, &output).await {
                            result = Err(e);
                            break;
                        }
                    }
                }
                more = subscription.recv_batch(&mut batch, BATCH) => {
                    if !more {
                        result = Err(LegError::ChannelClosed);
                        break;
                    }
                    let (packets, bytes) = batch.iter().fold((0u64, 0u64), |(n, b), e| match e {
                        SinkEvent::Packet(p) => (n + 1, b + p.payload.len() as u64),
                        _ => (n, b),
                    });
                    subscription.record_forwarded(packets, bytes);
                }
            }
        }
        if let Err(e) = result {
            // Fails only if the connection is already gone.
            let _ = notices.send(LegNotice::Ended(key, e)).await;
        }
        numbering
    }
}

/// Waits for RTCP from the client on a UDP leg; never resolves for interleaved legs
/// (their RTCP arrives on the RTSP connection).
async fn recv_rtcp(output: &LegOutput, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match output {
        LegOutput::Udp { rtcp_socket, .. } => rtcp_socket.recv_from(buf).await,
        LegOutput::Interleaved { .. } => std::future::pending().await,
    }
}

/// Appends one RTP packet: for interleaved, `$`-framed in the batch buffer; for UDP,
/// alone in the buffer (sent by [`flush_udp`] right after).
fn encode_packet(
    out: &mut BytesMut,
    output: &LegOutput,
    n: &mut LegNumbering,
    p: &crate::media::MediaPacket,
) {
    let len = RTP_HEADER_LEN + p.payload.len();
    let header = RtpHeader {
        marker: p.marker,
        payload_type: n.payload_type,
        sequence: n.next_seq,
        timestamp: p.timestamp,
        ssrc: n.ssrc,
    };
    match output {
        LegOutput::Interleaved { rtp, .. } => {
            let Ok(frame_len) = u16::try_from(len) else {
                // The channel re-splits to ~1100 bytes; a 64 KiB payload cannot be framed.
                return;
            };
            out.put_u8(b'$');
            out.put_u8(*rtp);
            out.put_u16(frame_len);
        }
        LegOutput::Udp { .. } => {}
    }
    header.write_into(out);
    out.put_slice(&p.payload);
    n.next_seq = n.next_seq.wrapping_add(1);
    n.packets = n.packets.wrapping_add(1);
    n.octets = n.octets.wrapping_add(p.payload.len() as u32);
    n.last_timestamp = Some(p.timestamp);
}

/// Appends a compound RTCP packet (SR + SDES CNAME): framed on the RTCP channel for
/// interleaved; for UDP it is sent on its own socket at once.
fn encode_sender_report(
    out: &mut BytesMut,
    output: &LegOutput,
    n: &LegNumbering,
    mapping: (u64, u32),
) {
    let (ntp_timestamp, rtp_timestamp) = extrapolate(mapping, n.last_timestamp, n.clock_rate);
    let sr = SenderReport {
        ssrc: n.ssrc,
        ntp_timestamp,
        rtp_timestamp,
        packet_count: n.packets,
        octet_count: n.octets,
    };
    match output {
        LegOutput::Interleaved { rtcp, .. } => {
            let start = out.len();
            out.put_u8(b'$');
            out.put_u8(*rtcp);
            out.put_u16(0);
            sr.write_into(out);
            // CNAME is a short constant: cannot exceed the SDES item limit.
            let _ = write_sdes_cname(n.ssrc, CNAME, out);
            let len = (out.len() - start - 4) as u16;
            out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        }
        LegOutput::Udp {
            rtcp_socket,
            client_rtcp,
            ..
        } => {
            let mut buf = BytesMut::with_capacity(64);
            sr.write_into(&mut buf);
            let _ = write_sdes_cname(n.ssrc, CNAME, &mut buf);
            let _ = rtcp_socket.try_send_to(&buf, *client_rtcp);
        }
    }
}

/// The camera's NTP↔RTP mapping moved to the last timestamp sent, so each report pairs
/// a recent RTP time with its wall-clock time (RFC 3550 §6.4.1). Before any packet, the
/// mapping as received.
pub fn extrapolate(
    mapping: (u64, u32),
    last_timestamp: Option<u32>,
    clock_rate: u32,
) -> (u64, u32) {
    let (ntp, rtp) = mapping;
    let Some(ts) = last_timestamp.filter(|_| clock_rate > 0) else {
        return mapping;
    };
    // Signed: the last packet may predate the mapping (a replayed keyframe cache).
    let ticks = i64::from(ts.wrapping_sub(rtp) as i32);
    let delta = (i128::from(ticks) << 32) / i128::from(clock_rate);
    ((i128::from(ntp) + delta) as u64, ts)
}

/// For UDP, sends the packet in `out` and empties it; interleaved data stays for
/// [`flush`]. A full socket buffer drops the packet, as the network would.
fn flush_udp(out: &mut BytesMut, output: &LegOutput) -> std::io::Result<()> {
    let LegOutput::Udp {
        rtp_socket,
        client_rtp,
        ..
    } = output
    else {
        return Ok(());
    };
    if out.is_empty() {
        return Ok(());
    }
    let result = match rtp_socket.try_send_to(out, *client_rtp) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    };
    out.clear();
    result
}

/// Writes the interleaved batch in one call, bounded by [`WRITE_STALL_TIMEOUT`].
async fn flush(out: &mut BytesMut, output: &LegOutput) -> Result<(), LegError> {
    let LegOutput::Interleaved { writer, .. } = output else {
        out.clear();
        return Ok(());
    };
    if out.is_empty() {
        return Ok(());
    }
    let result = write_all_bounded(writer, out).await;
    out.clear();
    result
}

/// Writes `bytes` to the connection, failing if the client does not read them within
/// [`WRITE_STALL_TIMEOUT`].
pub async fn write_all_bounded(writer: &SharedWriter, bytes: &[u8]) -> Result<(), LegError> {
    let write = async {
        let mut w = writer.lock().await;
        w.write_all(bytes).await
    };
    match tokio::time::timeout(WRITE_STALL_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(LegError::Write(e.to_string())),
        Err(_) => Err(LegError::Stalled(WRITE_STALL_TIMEOUT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extrapolation_moves_the_mapping_forward_and_back() {
        let ntp = 0x1000_0000_0000_0000u64;
        // One second later at 90 kHz: +2^32 in NTP units.
        assert_eq!(
            extrapolate((ntp, 1000), Some(91_000), 90_000),
            (ntp + (1 << 32), 91_000)
        );
        // Half a second earlier.
        assert_eq!(
            extrapolate((ntp, 46_000), Some(1000), 90_000),
            (ntp - (1 << 31), 1000)
        );
        // Across the 32-bit wrap.
        assert_eq!(
            extrapolate((ntp, u32::MAX - 44_999), Some(45_000), 90_000),
            (ntp + (1 << 32), 45_000)
        );
        assert_eq!(extrapolate((ntp, 5), None, 90_000), (ntp, 5));
    }
}
