//! RTP over QUIC framing (draft-ietf-avtcore-rtp-over-quic-14, "RoQ").
//!
//! Between gateways every media packet travels behind a *flow identifier*, a QUIC
//! variable-length integer (RFC 9000 §16):
//!
//! - **DATAGRAM** (RoQ § "QUIC DATAGRAMs"): `Flow Identifier (i)` then exactly one RTP or RTCP packet,
//!   no length field. [`encode_datagram_into`] / [`decode_datagram`].
//! - **Stream fallback** (RoQ § "QUIC Streams", unidirectional streams only): `Flow Identifier (i)`
//!   once, then repeated `{ Length (i), RTP Packet (..) }`. [`StreamEncoder`] /
//!   [`StreamDecoder`].
//!
//! # Flow ids and RTCP
//!
//! passerelle gives each stream (one camera over one link) a single flow id, and RTP and
//! RTCP share it (rtcp-mux, RFC 5761; RoQ § "Multiplexing" allows one or two flow ids). A
//! receiver tells them apart with [`is_rtcp`]: the second byte of an RTCP packet is its
//! packet type, 192..=223 (SR 200, RR 201, SDES 202, BYE 203, APP 204, RTPFB 205,
//! PSFB 206, XR 207), a range RTP payload types cannot reach because RFC 5761 §4 forbids
//! payload types 64..=95. RTP and RTCP of one flow use the same primitive (both
//! datagrams or both streams), as RoQ asks (mixing them reorders unpredictably).
//!
//! Everything here is pure: bytes in, bytes out, no sockets.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::media::rtp::RTP_HEADER_LEN;

/// Largest value a QUIC variable-length integer can carry: 2^62 - 1 (RFC 9000 §16).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Longest encoding of a QUIC varint, in bytes (RFC 9000 §16, 2-bit length prefix `11`).
pub const VARINT_MAX_LEN: usize = 8;

/// Default bound on one packet read from a RoQ stream. RTP packets from cameras are
/// MTU-sized; 64 KiB is the largest an RTP packet can be over UDP anyway.
pub const DEFAULT_MAX_STREAM_PACKET_LEN: usize = 65_535;

/// RoQ application error codes (draft-ietf-avtcore-rtp-over-quic-14, error code registry),
/// used in CONNECTION_CLOSE, RESET_STREAM and STOP_SENDING.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum RoqErrorCode {
    NoError = 0x00,
    GeneralError = 0x01,
    InternalError = 0x02,
    PacketError = 0x03,
    StreamCreationError = 0x04,
    FrameCancelled = 0x05,
    UnknownFlowId = 0x06,
    ExpectationUnmet = 0x07,
}

impl RoqErrorCode {
    /// The code as sent on the wire.
    pub fn value(self) -> u64 {
        self as u64
    }
}

/// What went wrong reading or writing RoQ framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoqError {
    #[error("varint value {value} exceeds 2^62-1 (RFC 9000 §16)")]
    VarintTooLarge { value: u64 },
    #[error("truncated varint: its prefix announces {needed} bytes, {available} available")]
    TruncatedVarint { needed: usize, available: usize },
    #[error("output buffer too small: {needed} bytes needed, {available} available")]
    BufferTooSmall { needed: usize, available: usize },
    #[error("datagram for flow {flow_id} carries no packet")]
    EmptyDatagram { flow_id: u64 },
    #[error("stream for flow {flow_id} announces a zero-length packet")]
    EmptyStreamPacket { flow_id: u64 },
    #[error("stream for flow {flow_id} announces a {length}-byte packet, limit {max}")]
    StreamPacketTooLong {
        flow_id: u64,
        length: u64,
        max: usize,
    },
    #[error("stream for flow {flow_id:?} ended inside a packet or header ({buffered} bytes left)")]
    TruncatedStream {
        flow_id: Option<u64>,
        buffered: usize,
    },
}

impl RoqError {
    /// The RoQ error code to close the stream or connection with.
    pub fn code(&self) -> RoqErrorCode {
        match self {
            RoqError::VarintTooLarge { .. } | RoqError::BufferTooSmall { .. } => {
                RoqErrorCode::InternalError
            }
            _ => RoqErrorCode::PacketError,
        }
    }
}

/// Encoded length of `value` as a QUIC varint: 1, 2, 4 or 8 bytes (RFC 9000 §16, table 4).
pub fn varint_len(value: u64) -> Result<usize, RoqError> {
    match value {
        0..=0x3f => Ok(1),
        0x40..=0x3fff => Ok(2),
        0x4000..=0x3fff_ffff => Ok(4),
        0x4000_0000..=VARINT_MAX => Ok(8),
        _ => Err(RoqError::VarintTooLarge { value }),
    }
}

/// Appends `value` as a QUIC varint in its shortest form, returning the bytes written.
///
/// Works on any [`BufMut`]: a `BytesMut` grows, a `&mut [u8]` fails with
/// [`RoqError::BufferTooSmall`] rather than panicking.
pub fn encode_varint<B: BufMut>(value: u64, out: &mut B) -> Result<usize, RoqError> {
    let len = varint_len(value)?;
    if out.remaining_mut() < len {
        return Err(RoqError::BufferTooSmall {
            needed: len,
            available: out.remaining_mut(),
        });
    }
    // The two top bits carry log2 of the length (RFC 9000 §16); `value` fits below them.
    match len {
        1 => out.put_u8(value as u8),
        2 => out.put_u16(0x4000 | value as u16),
        4 => out.put_u32(0x8000_0000 | value as u32),
        _ => out.put_u64(0xc000_0000_0000_0000 | value),
    }
    Ok(len)
}

/// Reads a QUIC varint from the start of `buf`, returning the value and the bytes used.
///
/// Non-minimal encodings are accepted, as RFC 9000 §16 allows.
pub fn decode_varint(buf: &[u8]) -> Result<(u64, usize), RoqError> {
    let Some(&first) = buf.first() else {
        return Err(RoqError::TruncatedVarint {
            needed: 1,
            available: 0,
        });
    };
    let len = 1usize << (first >> 6);
    if buf.len() < len {
        return Err(RoqError::TruncatedVarint {
            needed: len,
            available: buf.len(),
        });
    }
    let mut value = u64::from(first & 0x3f);
    for &b in &buf[1..len] {
        value = (value << 8) | u64::from(b);
    }
    Ok((value, len))
}

/// Largest RTP payload that fits a QUIC DATAGRAM of `max_datagram_size` bytes on
/// `flow_id`, with the 12-byte RTP header every leg writes; 0 if nothing fits.
///
/// This is the `max_payload` handed to the re-splitter (`media::resplit`).
pub fn max_datagram_rtp_payload(max_datagram_size: usize, flow_id: u64) -> usize {
    let flow_len = varint_len(flow_id).unwrap_or(VARINT_MAX_LEN);
    max_datagram_size.saturating_sub(flow_len + RTP_HEADER_LEN)
}

/// Appends one RoQ DATAGRAM payload to `out`: the flow id, then `header` and `payload`
/// back to back as one RTP or RTCP packet. Returns the bytes written.
///
/// Header and payload come separately because each leg writes its own RTP header
/// around a payload shared by all legs. The caller freezes `out.split()` and hands it
/// to QUIC; the sum must fit the connection's current maximum datagram size.
pub fn encode_datagram_into(
    flow_id: u64,
    header: &[u8],
    payload: &[u8],
    out: &mut BytesMut,
) -> Result<usize, RoqError> {
    let flow_len = varint_len(flow_id)?;
    out.reserve(flow_len + header.len() + payload.len());
    encode_varint(flow_id, out)?;
    out.put_slice(header);
    out.put_slice(payload);
    Ok(flow_len + header.len() + payload.len())
}

/// Splits a received DATAGRAM payload into its flow id and its packet (a zero-copy slice).
pub fn decode_datagram(mut datagram: Bytes) -> Result<(u64, Bytes), RoqError> {
    let (flow_id, used) = decode_varint(&datagram)?;
    datagram.advance(used);
    if datagram.is_empty() {
        return Err(RoqError::EmptyDatagram { flow_id });
    }
    Ok((flow_id, datagram))
}

/// Whether `packet` (RTP or RTCP sharing one flow id) is RTCP: version 2 and a second
/// byte in 192..=223 (RFC 5761 §4).
pub fn is_rtcp(packet: &[u8]) -> bool {
    matches!(packet, [first, second, ..] if first >> 6 == 2 && (192..=223).contains(second))
}

/// Writes one RoQ unidirectional stream: the flow id before the first packet, then
/// each packet behind its length.
///
/// Drive it by calling [`StreamEncoder::encode_packet_into`] once per packet, in order,
/// on the bytes written to one QUIC stream; open a new encoder for a new stream.
#[derive(Debug, Clone)]
pub struct StreamEncoder {
    flow_id: u64,
    started: bool,
}

impl StreamEncoder {
    /// An encoder for a new stream on `flow_id`.
    pub fn new(flow_id: u64) -> Result<Self, RoqError> {
        varint_len(flow_id)?;
        Ok(StreamEncoder {
            flow_id,
            started: false,
        })
    }

    /// The flow this stream carries.
    pub fn flow_id(&self) -> u64 {
        self.flow_id
    }

    /// Appends one packet (`header` then `payload`) to `out`, preceded by the flow id
    /// if this is the stream's first packet. Returns the bytes written.
    pub fn encode_packet_into(
        &mut self,
        header: &[u8],
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<usize, RoqError> {
        let packet_len = header.len() + payload.len();
        if packet_len == 0 {
            return Err(RoqError::EmptyStreamPacket {
                flow_id: self.flow_id,
            });
        }
        let length_len = varint_len(packet_len as u64)?;
        let flow_len = if self.started {
            0
        } else {
            varint_len(self.flow_id)?
        };
        out.reserve(flow_len + length_len + packet_len);
        if !self.started {
            encode_varint(self.flow_id, out)?;
            self.started = true;
        }
        encode_varint(packet_len as u64, out)?;
        out.put_slice(header);
        out.put_slice(payload);
        Ok(flow_len + length_len + packet_len)
    }
}

/// Reads one RoQ unidirectional stream back into packets.
///
/// Drive it like this:
/// 1. feed each chunk read from the QUIC stream, in order, with
///    [`StreamDecoder::handle_data`];
/// 2. after each chunk, drain with [`StreamDecoder::poll_packet`] until it returns
///    `Ok(None)` (it needs more bytes);
/// 3. when the stream finishes, call [`StreamDecoder::finish`]: it fails if the stream
///    ended inside a varint or a packet.
///
/// [`StreamDecoder::flow_id`] is known once the first varint has arrived. An error is
/// final: every later `poll_packet` returns it again, and the caller should send
/// STOP_SENDING with [`RoqError::code`]. A packet lying wholly inside one chunk is a
/// zero-copy slice of it; only packets spanning chunks are copied, into a buffer never
/// larger than the packet-length bound.
#[derive(Debug)]
pub struct StreamDecoder {
    max_packet_len: usize,
    state: DecodeState,
    flow_id: Option<u64>,
    /// Unconsumed part of the latest chunk.
    pending: Bytes,
    /// Bytes of a varint or packet that spans chunks, gathered until complete.
    partial: BytesMut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DecodeState {
    FlowId,
    Length,
    Packet { len: usize },
    Failed(RoqError),
}

impl StreamDecoder {
    /// A decoder refusing packets longer than `max_packet_len` bytes.
    pub fn new(max_packet_len: usize) -> Self {
        StreamDecoder {
            max_packet_len,
            state: DecodeState::FlowId,
            flow_id: None,
            pending: Bytes::new(),
            partial: BytesMut::new(),
        }
    }

    /// The stream's flow id, once read.
    pub fn flow_id(&self) -> Option<u64> {
        self.flow_id
    }

    /// Feeds the next chunk of the stream.
    pub fn handle_data(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if !self.pending.is_empty() {
            // The caller did not drain; keep order by moving the leftover aside.
            // Memory stays bounded only if the caller polls after each chunk.
            self.partial.extend_from_slice(&self.pending);
        }
        self.pending = chunk;
    }

    /// The next complete packet, `Ok(None)` when more bytes are needed.
    pub fn poll_packet(&mut self) -> Result<Option<Bytes>, RoqError> {
        loop {
            match self.state.clone() {
                DecodeState::Failed(e) => return Err(e),
                DecodeState::FlowId => match self.take_varint() {
                    Err(e) => return Err(self.fail(e)),
                    Ok(None) => return Ok(None),
                    Ok(Some(flow_id)) => {
                        self.flow_id = Some(flow_id);
                        self.state = DecodeState::Length;
                    }
                },
                DecodeState::Length => {
                    let flow_id = self.flow_id.unwrap_or_default();
                    match self.take_varint() {
                        Err(e) => return Err(self.fail(e)),
                        Ok(None) => return Ok(None),
                        Ok(Some(0)) => {
                            return Err(self.fail(RoqError::EmptyStreamPacket { flow_id }));
                        }
                        Ok(Some(length)) if length > self.max_packet_len as u64 => {
                            return Err(self.fail(RoqError::StreamPacketTooLong {
                                flow_id,
                                length,
                                max: self.max_packet_len,
                            }));
                        }
                        // Fits usize: bounded by `max_packet_len` just above.
                        Ok(Some(length)) => {
                            self.state = DecodeState::Packet {
                                len: length as usize,
                            };
                        }
                    }
                }
                DecodeState::Packet { len } => match self.take(len) {
                    None => return Ok(None),
                    Some(packet) => {
                        self.state = DecodeState::Length;
                        return Ok(Some(packet));
                    }
                },
            }
        }
    }

    /// Call when the stream has finished, after draining: fails if it ended mid-packet.
    pub fn finish(&self) -> Result<(), RoqError> {
        if let DecodeState::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let buffered = self.partial.len() + self.pending.len();
        let mid_packet = matches!(self.state, DecodeState::Packet { .. });
        if buffered > 0 || mid_packet {
            return Err(RoqError::TruncatedStream {
                flow_id: self.flow_id,
                buffered,
            });
        }
        Ok(())
    }

    fn fail(&mut self, e: RoqError) -> RoqError {
        self.state = DecodeState::Failed(e.clone());
        self.pending = Bytes::new();
        self.partial = BytesMut::new();
        e
    }

    fn available(&self) -> usize {
        self.partial.len() + self.pending.len()
    }

    fn first_byte(&self) -> Option<u8> {
        self.partial
            .first()
            .or_else(|| self.pending.first())
            .copied()
    }

    /// A whole varint, or `None` if its bytes have not all arrived.
    fn take_varint(&mut self) -> Result<Option<u64>, RoqError> {
        let Some(first) = self.first_byte() else {
            return Ok(None);
        };
        let len = 1usize << (first >> 6);
        match self.take(len) {
            None => Ok(None),
            Some(bytes) => decode_varint(&bytes).map(|(v, _)| Some(v)),
        }
    }

    /// Exactly `n` contiguous bytes, zero-copy when they lie within the current chunk.
    fn take(&mut self, n: usize) -> Option<Bytes> {
        if self.partial.is_empty() {
            if self.pending.len() >= n {
                return Some(self.pending.split_to(n));
            }
        } else if self.partial.len() >= n {
            // Only after undrained chunks were moved aside by `handle_data`.
            return Some(self.partial.split_to(n).freeze());
        }
        if self.available() < n {
            // Gather now so the next chunk can replace `pending`; `partial` stays
            // below `n`, which the length check bounds.
            let pending = std::mem::take(&mut self.pending);
            self.partial.extend_from_slice(&pending);
            return None;
        }
        let missing = n - self.partial.len();
        self.partial.extend_from_slice(&self.pending[..missing]);
        self.pending.advance(missing);
        Some(self.partial.split().freeze())
    }
}

impl Default for StreamDecoder {
    fn default() -> Self {
        StreamDecoder::new(DEFAULT_MAX_STREAM_PACKET_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift64*, enough to drive robustness loops reproducibly.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    fn varint_bytes(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_varint(v, &mut out).unwrap();
        out
    }

    #[test]
    fn varint_matches_rfc9000_appendix_a_examples() {
        // RFC 9000 §A.1 sample encodings.
        assert_eq!(
            decode_varint(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]).unwrap(),
            (151_288_809_941_952_652, 8)
        );
        assert_eq!(
            decode_varint(&[0x9d, 0x7f, 0x3e, 0x7d]).unwrap(),
            (494_878_333, 4)
        );
        assert_eq!(decode_varint(&[0x7b, 0xbd]).unwrap(), (15_293, 2));
        assert_eq!(decode_varint(&[0x25]).unwrap(), (37, 1));
        // Non-minimal two-byte encoding of 37 is legal.
        assert_eq!(decode_varint(&[0x40, 0x25]).unwrap(), (37, 2));
        assert_eq!(
            varint_bytes(151_288_809_941_952_652),
            [0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]
        );
        assert_eq!(varint_bytes(494_878_333), [0x9d, 0x7f, 0x3e, 0x7d]);
        assert_eq!(varint_bytes(15_293), [0x7b, 0xbd]);
        assert_eq!(varint_bytes(37), [0x25]);
    }

    #[test]
    fn varint_length_boundaries_round_trip() {
        let cases = [
            (0, 1),
            (63, 1),
            (64, 2),
            (16_383, 2),
            (16_384, 4),
            ((1 << 30) - 1, 4),
            (1 << 30, 8),
            (VARINT_MAX, 8),
        ];
        for (value, len) in cases {
            assert_eq!(varint_len(value).unwrap(), len, "{value}");
            let bytes = varint_bytes(value);
            assert_eq!(bytes.len(), len, "{value}");
            assert_eq!(decode_varint(&bytes).unwrap(), (value, len), "{value}");
        }
    }

    #[test]
    fn varint_refuses_values_above_2_pow_62() {
        let too_big = VARINT_MAX + 1;
        assert_eq!(
            varint_len(too_big),
            Err(RoqError::VarintTooLarge { value: too_big })
        );
        let mut out = BytesMut::new();
        assert!(encode_varint(u64::MAX, &mut out).is_err());
        assert!(out.is_empty(), "nothing written on error");
    }

    #[test]
    fn varint_into_short_slice_fails_without_panic() {
        let mut buf = [0u8; 3];
        let mut slice = &mut buf[..];
        assert_eq!(
            encode_varint(16_384, &mut slice),
            Err(RoqError::BufferTooSmall {
                needed: 4,
                available: 3
            })
        );
        let mut slice = &mut buf[..];
        assert_eq!(encode_varint(16_383, &mut slice), Ok(2));
        assert_eq!(&buf[..2], &[0x7f, 0xff]);
    }

    #[test]
    fn varint_truncated_input_is_an_error() {
        assert_eq!(
            decode_varint(&[]),
            Err(RoqError::TruncatedVarint {
                needed: 1,
                available: 0
            })
        );
        assert_eq!(
            decode_varint(&[0x9d, 0x7f, 0x3e]),
            Err(RoqError::TruncatedVarint {
                needed: 4,
                available: 3
            })
        );
    }

    #[test]
    fn datagram_has_exact_bytes_and_round_trips() {
        let header = [0x80, 0x60, 0x00, 0x01, 0, 0, 0, 2, 0, 0, 0, 3];
        let payload = [0x65, 0xaa, 0xbb];
        let mut out = BytesMut::new();
        let n = encode_datagram_into(300, &header, &payload, &mut out).unwrap();
        assert_eq!(n, 2 + 12 + 3);
        let mut expected = vec![0x41, 0x2c]; // 300 as a 2-byte varint
        expected.extend_from_slice(&header);
        expected.extend_from_slice(&payload);
        assert_eq!(&out[..], &expected[..]);

        let (flow, packet) = decode_datagram(out.freeze()).unwrap();
        assert_eq!(flow, 300);
        assert_eq!(&packet[..12], &header);
        assert_eq!(&packet[12..], &payload);
    }

    #[test]
    fn datagram_without_packet_or_flow_is_refused() {
        assert_eq!(
            decode_datagram(Bytes::from_static(&[0x05])),
            Err(RoqError::EmptyDatagram { flow_id: 5 })
        );
        assert!(matches!(
            decode_datagram(Bytes::new()),
            Err(RoqError::TruncatedVarint { .. })
        ));
        assert!(matches!(
            decode_datagram(Bytes::from_static(&[0x41])),
            Err(RoqError::TruncatedVarint { .. })
        ));
    }

    #[test]
    fn datagram_payload_budget_subtracts_flow_id_and_rtp_header() {
        assert_eq!(max_datagram_rtp_payload(1200, 0), 1200 - 1 - 12);
        assert_eq!(max_datagram_rtp_payload(1200, 64), 1200 - 2 - 12);
        assert_eq!(max_datagram_rtp_payload(10, 64), 0);
    }

    #[test]
    fn rtcp_is_told_from_rtp_by_second_byte() {
        // SR, RR, PSFB, XR.
        for pt in [200u8, 201, 206, 207] {
            assert!(is_rtcp(&[0x80, pt, 0, 6]), "{pt}");
        }
        // Dynamic RTP payload type 96 with and without marker.
        assert!(!is_rtcp(&[0x80, 96, 0, 1]));
        assert!(!is_rtcp(&[0x80, 96 | 0x80, 0, 1]));
        // Version 1 is neither.
        assert!(!is_rtcp(&[0x40, 200, 0, 6]));
        assert!(!is_rtcp(&[0x80]));
        assert!(!is_rtcp(&[]));
    }

    fn encode_stream(flow_id: u64, packets: &[Vec<u8>]) -> BytesMut {
        let mut enc = StreamEncoder::new(flow_id).unwrap();
        let mut out = BytesMut::new();
        for p in packets {
            let (h, rest) = p.split_at(p.len().min(12));
            enc.encode_packet_into(h, rest, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn stream_encoder_writes_flow_id_once() {
        let out = encode_stream(7, &[vec![1, 2, 3], vec![4; 70]]);
        let mut expected = vec![0x07, 0x03, 1, 2, 3, 0x40, 70];
        expected.extend_from_slice(&[4; 70]);
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn stream_decoder_round_trips_any_chunking() {
        let mut rng = Rng(0x5eed);
        let packets: Vec<Vec<u8>> = (0..40).map(|i| rng.bytes(1 + (i * 97) % 3000)).collect();
        let wire = encode_stream(1_000_000, &packets).freeze();
        for round in 0..50 {
            let mut dec = StreamDecoder::new(4096);
            let mut got = Vec::new();
            let mut rest = wire.clone();
            while !rest.is_empty() {
                // Round 0 feeds byte by byte; later rounds random chunk sizes.
                let n = if round == 0 {
                    1
                } else {
                    1 + rng.below(rest.len().min(5000))
                };
                dec.handle_data(rest.split_to(n));
                while let Some(p) = dec.poll_packet().unwrap() {
                    got.push(p.to_vec());
                }
            }
            dec.finish().unwrap();
            assert_eq!(dec.flow_id(), Some(1_000_000));
            assert_eq!(got, packets, "round {round}");
        }
    }

    #[test]
    fn stream_decoder_tolerates_undrained_chunks() {
        let packets = vec![vec![9u8; 5], vec![8u8; 300]];
        let wire = encode_stream(2, &packets).freeze();
        let mut dec = StreamDecoder::default();
        // Feed everything in three chunks without polling in between.
        dec.handle_data(wire.slice(..3));
        dec.handle_data(wire.slice(3..10));
        dec.handle_data(wire.slice(10..));
        let mut got = Vec::new();
        while let Some(p) = dec.poll_packet().unwrap() {
            got.push(p.to_vec());
        }
        assert_eq!(got, packets);
        dec.finish().unwrap();
    }

    #[test]
    fn stream_packet_within_one_chunk_is_not_copied() {
        let wire = encode_stream(2, &[vec![7u8; 100]]).freeze();
        let mut dec = StreamDecoder::default();
        dec.handle_data(wire.clone());
        let p = dec.poll_packet().unwrap().unwrap();
        // Same memory as the chunk: flow id (1) + length (2) bytes in.
        assert_eq!(p.as_ptr(), wire[3..].as_ptr());
    }

    #[test]
    fn stream_decoder_refuses_oversized_packet_and_stays_failed() {
        let wire = encode_stream(3, &[vec![0u8; 101]]).freeze();
        let mut dec = StreamDecoder::new(100);
        dec.handle_data(wire);
        let expected = RoqError::StreamPacketTooLong {
            flow_id: 3,
            length: 101,
            max: 100,
        };
        assert_eq!(dec.poll_packet(), Err(expected.clone()));
        assert_eq!(dec.poll_packet(), Err(expected.clone()));
        assert_eq!(expected.code(), RoqErrorCode::PacketError);
        assert_eq!(expected.code().value(), 0x03);
        // A length above 2^62 cannot be announced, but a huge one must not allocate.
        let mut dec = StreamDecoder::new(100);
        dec.handle_data(Bytes::from_static(&[
            0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]));
        assert!(matches!(
            dec.poll_packet(),
            Err(RoqError::StreamPacketTooLong { .. })
        ));
    }

    #[test]
    fn stream_decoder_refuses_zero_length_packet() {
        let mut dec = StreamDecoder::default();
        dec.handle_data(Bytes::from_static(&[0x01, 0x00]));
        assert_eq!(
            dec.poll_packet(),
            Err(RoqError::EmptyStreamPacket { flow_id: 1 })
        );
    }

    #[test]
    fn stream_ending_mid_packet_is_reported() {
        let wire = encode_stream(4, &[vec![1u8; 50]]).freeze();
        let mut dec = StreamDecoder::default();
        dec.handle_data(wire.slice(..30));
        assert_eq!(dec.poll_packet(), Ok(None));
        assert_eq!(
            dec.finish(),
            Err(RoqError::TruncatedStream {
                flow_id: Some(4),
                buffered: 28
            })
        );
        // An empty stream and a stream ending on a packet boundary are fine.
        assert_eq!(StreamDecoder::default().finish(), Ok(()));
        let mut dec = StreamDecoder::default();
        dec.handle_data(wire);
        assert!(dec.poll_packet().unwrap().is_some());
        assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn encoders_refuse_unrepresentable_flow_ids_and_empty_packets() {
        assert!(StreamEncoder::new(VARINT_MAX + 1).is_err());
        let mut out = BytesMut::new();
        assert!(encode_datagram_into(u64::MAX, b"h", b"p", &mut out).is_err());
        assert!(out.is_empty());
        let mut enc = StreamEncoder::new(1).unwrap();
        assert_eq!(
            enc.encode_packet_into(&[], &[], &mut out),
            Err(RoqError::EmptyStreamPacket { flow_id: 1 })
        );
    }

    #[test]
    fn parsers_survive_random_and_truncated_input() {
        let mut rng = Rng(0xdead_beef);
        let valid = encode_stream(77, &[vec![1u8; 40], vec![2u8; 700]]).freeze();
        for i in 0..5000 {
            let input: Bytes = if i % 2 == 0 {
                let len = rng.below(64);
                Bytes::from(rng.bytes(len))
            } else {
                valid.slice(..rng.below(valid.len() + 1))
            };
            let _ = decode_varint(&input);
            let _ = decode_datagram(input.clone());
            let _ = is_rtcp(&input);
            let mut dec = StreamDecoder::new(1 + rng.below(1000));
            let mut rest = input;
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len());
                dec.handle_data(rest.split_to(n));
                while let Ok(Some(p)) = dec.poll_packet() {
                    assert!(!p.is_empty());
                }
            }
            let _ = dec.finish();
        }
    }
}
