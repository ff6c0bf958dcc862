//! RTP header view and writer (RFC 3550 §5.1), and just enough RTCP (RFC 3550 §6,
//! RFC 4585 §6.3.1, RFC 5104 §4.3.1) for sender reports and keyframe requests.
//!
//! Ingest parses each camera packet once with [`RtpPacket::parse`]: the payload stays a
//! slice of the received buffer. Each leg then writes its own 12-byte header
//! ([`RtpHeader`]) with its own SSRC and sequence numbers into a reused scratch buffer.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::h26x::{self, H26xError};
use super::{Codec, MediaPacket};

/// The only RTP/RTCP version in use (RFC 3550 §5.1, field V).
pub const RTP_VERSION: u8 = 2;

/// Length of the fixed RTP header, without CSRCs or extension (RFC 3550 §5.1).
pub const RTP_HEADER_LEN: usize = 12;

/// RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1).
pub const RTCP_SR: u8 = 200;
pub const RTCP_RR: u8 = 201;
pub const RTCP_SDES: u8 = 202;
pub const RTCP_BYE: u8 = 203;
/// Transport-layer feedback (RFC 4585 §6.1): generic NACK and friends.
pub const RTCP_RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585 §6.1): PLI, FIR.
pub const RTCP_PSFB: u8 = 206;

/// PSFB format of a Picture Loss Indication (RFC 4585 §6.3.1).
pub const PSFB_FMT_PLI: u8 = 1;
/// PSFB format of a Full Intra Request (RFC 5104 §4.3.1).
pub const PSFB_FMT_FIR: u8 = 4;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970) (RFC 868).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// Why an RTP packet was refused. Carries SSRC and sequence once they are readable, so
/// the packet can be found in a capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("RTP packet of {len} bytes is shorter than the 12-byte fixed header")]
    TooShort { len: usize },
    #[error("RTP version {version}, expected 2")]
    BadVersion { version: u8 },
    #[error("RTP ssrc={ssrc:08x} seq={sequence}: {csrc_count} CSRCs overrun a {len}-byte packet")]
    TruncatedCsrc {
        ssrc: u32,
        sequence: u16,
        csrc_count: u8,
        len: usize,
    },
    #[error("RTP ssrc={ssrc:08x} seq={sequence}: header extension overruns a {len}-byte packet")]
    TruncatedExtension {
        ssrc: u32,
        sequence: u16,
        len: usize,
    },
    #[error(
        "RTP ssrc={ssrc:08x} seq={sequence}: padding count {padding} invalid for {available} bytes after the header"
    )]
    BadPadding {
        ssrc: u32,
        sequence: u16,
        padding: u8,
        available: usize,
    },
}

/// A parsed RTP packet: header fields plus the payload as a zero-copy slice, padding,
/// CSRCs and header extension removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    csrc_count: u8,
    extension_profile: Option<u16>,
    header_len: usize,
    payload: Bytes,
}

impl RtpPacket {
    /// Parses `packet` (RFC 3550 §5.1, §5.3.1). The payload may be empty (a padding-only
    /// packet); payload-format checks belong to [`h26x`].
    pub fn parse(packet: &Bytes) -> Result<RtpPacket, RtpError> {
        let len = packet.len();
        let Some(fixed) = packet.get(..RTP_HEADER_LEN) else {
            return Err(RtpError::TooShort { len });
        };
        let version = fixed[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion { version });
        }
        let has_padding = fixed[0] & 0x20 != 0;
        let has_extension = fixed[0] & 0x10 != 0;
        let csrc_count = fixed[0] & 0x0f;
        let marker = fixed[1] & 0x80 != 0;
        let payload_type = fixed[1] & 0x7f;
        let sequence = u16::from_be_bytes([fixed[2], fixed[3]]);
        let timestamp = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let ssrc = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);

        let mut header_len = RTP_HEADER_LEN + 4 * usize::from(csrc_count);
        if header_len > len {
            return Err(RtpError::TruncatedCsrc {
                ssrc,
                sequence,
                csrc_count,
                len,
            });
        }
        let mut extension_profile = None;
        if has_extension {
            // RFC 3550 §5.3.1: 16-bit profile, 16-bit length in 32-bit words.
            let Some(ext) = packet.get(header_len..header_len + 4) else {
                return Err(RtpError::TruncatedExtension {
                    ssrc,
                    sequence,
                    len,
                });
            };
            extension_profile = Some(u16::from_be_bytes([ext[0], ext[1]]));
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            header_len += 4 + 4 * words;
            if header_len > len {
                return Err(RtpError::TruncatedExtension {
                    ssrc,
                    sequence,
                    len,
                });
            }
        }
        let mut end = len;
        if has_padding {
            // RFC 3550 §5.1: the last octet counts the padding, itself included.
            let available = len - header_len;
            let padding = packet[len - 1];
            if padding == 0 || usize::from(padding) > available {
                return Err(RtpError::BadPadding {
                    ssrc,
                    sequence,
                    padding,
                    available,
                });
            }
            end -= usize::from(padding);
        }
        Ok(RtpPacket {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            csrc_count,
            extension_profile,
            header_len,
            payload: packet.slice(header_len..end),
        })
    }

    /// Marker bit: for video, the last packet of an access unit (RFC 6184 §5.1).
    pub fn marker(&self) -> bool {
        self.marker
    }

    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    pub fn sequence(&self) -> u16 {
        self.sequence
    }

    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Number of contributing sources skipped (RFC 3550 §5.1, CC).
    pub fn csrc_count(&self) -> u8 {
        self.csrc_count
    }

    /// The profile-defined id of the header extension that was skipped, if any.
    pub fn extension_profile(&self) -> Option<u16> {
        self.extension_profile
    }

    /// Bytes before the payload: fixed header, CSRCs and extension.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The payload, padding removed.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// The fields a leg needs to re-emit this packet under its own numbering.
    pub fn header(&self) -> RtpHeader {
        RtpHeader {
            marker: self.marker,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        }
    }

    /// The channel's view of this video packet, payload classified for `codec`. The
    /// timestamp is the camera's; reconnect offsets are the channel's business.
    pub fn to_media_packet(&self, codec: Codec) -> Result<MediaPacket, H26xError> {
        let info = h26x::classify(codec, &self.payload)?;
        Ok(MediaPacket {
            payload: self.payload.clone(),
            timestamp: self.timestamp,
            marker: self.marker,
            keyframe_start: info.keyframe_start,
            parameter_set: info.parameter_set,
        })
    }
}

/// A fixed 12-byte RTP header as a leg writes it: no padding, extension or CSRCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    /// 7 bits; higher bits are dropped when written. Payload types come from SDP,
    /// validated where it is parsed.
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl RtpHeader {
    /// The header's wire bytes (RFC 3550 §5.1).
    pub fn to_bytes(&self) -> [u8; RTP_HEADER_LEN] {
        let mut b = [0u8; RTP_HEADER_LEN];
        b[0] = RTP_VERSION << 6;
        b[1] = (u8::from(self.marker) << 7) | (self.payload_type & 0x7f);
        b[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        b[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        b[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        b
    }

    /// Writes the header into a fixed slot, e.g. the front of a reused scratch buffer.
    pub fn write_to(&self, out: &mut [u8; RTP_HEADER_LEN]) {
        *out = self.to_bytes();
    }

    /// Appends the header to `out`.
    pub fn write_into(&self, out: &mut BytesMut) {
        out.put_slice(&self.to_bytes());
    }
}

/// Why an RTCP compound packet could not be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    #[error("RTCP packet of {len} bytes is shorter than the 4-byte common header")]
    TooShort { len: usize },
    #[error("RTCP version {version}, expected 2")]
    BadVersion { version: u8 },
    #[error("RTCP packet type {packet_type} declares {declared} bytes, only {available} remain")]
    LengthOverrun {
        packet_type: u8,
        declared: usize,
        available: usize,
    },
    #[error("RTCP packet type {packet_type}: padding count {padding} invalid for its {len} bytes")]
    BadPadding {
        packet_type: u8,
        padding: u8,
        len: usize,
    },
    #[error("RTCP packet type {packet_type} (count/FMT {count}) of {len} bytes is too short")]
    Truncated {
        packet_type: u8,
        count: u8,
        len: usize,
    },
    #[error("RTCP CNAME of {len} bytes exceeds the 255-byte SDES item limit")]
    CnameTooLong { len: usize },
}

/// The parts of a sender report (RFC 3550 §6.4.1) that map RTP time to wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: u32,
    /// 64-bit NTP timestamp: seconds since 1900 in the high 32 bits, fraction below.
    pub ntp_timestamp: u64,
    /// The RTP timestamp matching `ntp_timestamp`.
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

impl SenderReport {
    /// On-wire length of a sender report without report blocks.
    pub const LEN: usize = 28;

    /// Appends this report as an SR with no report blocks (RFC 3550 §6.4.1). A compound
    /// packet should follow it with an SDES CNAME ([`write_sdes_cname`], §6.1).
    pub fn write_into(&self, out: &mut BytesMut) {
        write_rtcp_header(out, 0, RTCP_SR, Self::LEN);
        out.put_u32(self.ssrc);
        out.put_u64(self.ntp_timestamp);
        out.put_u32(self.rtp_timestamp);
        out.put_u32(self.packet_count);
        out.put_u32(self.octet_count);
    }
}

/// One RTCP packet of a compound packet, reduced to what passerelle acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    SenderReport(SenderReport),
    /// Picture Loss Indication (RFC 4585 §6.3.1): `media_ssrc` wants a keyframe.
    Pli {
        sender_ssrc: u32,
        media_ssrc: u32,
    },
    /// Full Intra Request (RFC 5104 §4.3.1), one entry per requested source.
    Fir(Fir<'a>),
    /// Anything else (RR, SDES, BYE, APP, NACK, XR...): counted, not interpreted.
    Other {
        packet_type: u8,
        count: u8,
    },
}

impl RtcpPacket<'_> {
    /// Whether this packet asks for a keyframe (PLI or FIR).
    pub fn is_keyframe_request(&self) -> bool {
        matches!(self, RtcpPacket::Pli { .. } | RtcpPacket::Fir(_))
    }
}

/// A FIR's feedback control information: 8-byte entries of SSRC and command sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fir<'a> {
    pub sender_ssrc: u32,
    fci: &'a [u8],
}

/// One FIR request (RFC 5104 §4.3.1.1). A repeated `seq_nr` is a retransmission of the
/// same request, not a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirEntry {
    pub ssrc: u32,
    pub seq_nr: u8,
}

impl<'a> Fir<'a> {
    /// The requests carried, in order; a trailing partial entry is ignored.
    pub fn entries(&self) -> impl Iterator<Item = FirEntry> + 'a {
        self.fci.chunks_exact(8).map(|e| FirEntry {
            ssrc: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
            seq_nr: e[4],
        })
    }
}

/// Iterates over the packets of an RTCP compound packet (RFC 3550 §6.1). Stops after
/// the first error: the length fields that follow cannot be trusted.
pub fn parse_rtcp(compound: &[u8]) -> RtcpPackets<'_> {
    RtcpPackets {
        rest: compound,
        failed: false,
    }
}

/// Iterator returned by [`parse_rtcp`].
#[derive(Debug, Clone)]
pub struct RtcpPackets<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for RtcpPackets<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = self.next_packet();
        self.failed = result.is_err();
        Some(result)
    }
}

impl<'a> RtcpPackets<'a> {
    fn next_packet(&mut self) -> Result<RtcpPacket<'a>, RtcpError> {
        let rest = self.rest;
        let [b0, packet_type, l0, l1, ..] = *rest else {
            return Err(RtcpError::TooShort { len: rest.len() });
        };
        let version = b0 >> 6;
        if version != RTP_VERSION {
            return Err(RtcpError::BadVersion { version });
        }
        let has_padding = b0 & 0x20 != 0;
        let count = b0 & 0x1f;
        // RFC 3550 §6.4.1: length in 32-bit words minus one, header included.
        let declared = 4 * (usize::from(u16::from_be_bytes([l0, l1])) + 1);
        if declared > rest.len() {
            return Err(RtcpError::LengthOverrun {
                packet_type,
                declared,
                available: rest.len(),
            });
        }
        let (packet, tail) = rest.split_at(declared);
        self.rest = tail;
        let mut body = &packet[4..];
        if has_padding {
            let padding = packet[declared - 1];
            if padding == 0 || usize::from(padding) > body.len() {
                return Err(RtcpError::BadPadding {
                    packet_type,
                    padding,
                    len: declared,
                });
            }
            body = &body[..body.len() - usize::from(padding)];
        }
        let truncated = RtcpError::Truncated {
            packet_type,
            count,
            len: declared,
        };
        match (packet_type, count) {
            (RTCP_SR, _) => {
                let [
                    s0,
                    s1,
                    s2,
                    s3,
                    n0,
                    n1,
                    n2,
                    n3,
                    n4,
                    n5,
                    n6,
                    n7,
                    r0,
                    r1,
                    r2,
                    r3,
                    p0,
                    p1,
                    p2,
                    p3,
                    o0,
                    o1,
                    o2,
                    o3,
                    ..,
                ] = *body
                else {
                    return Err(truncated);
                };
                Ok(RtcpPacket::SenderReport(SenderReport {
                    ssrc: u32::from_be_bytes([s0, s1, s2, s3]),
                    ntp_timestamp: u64::from_be_bytes([n0, n1, n2, n3, n4, n5, n6, n7]),
                    rtp_timestamp: u32::from_be_bytes([r0, r1, r2, r3]),
                    packet_count: u32::from_be_bytes([p0, p1, p2, p3]),
                    octet_count: u32::from_be_bytes([o0, o1, o2, o3]),
                }))
            }
            (RTCP_PSFB, PSFB_FMT_PLI | PSFB_FMT_FIR) => {
                let [s0, s1, s2, s3, m0, m1, m2, m3, ..] = *body else {
                    return Err(truncated);
                };
                let sender_ssrc = u32::from_be_bytes([s0, s1, s2, s3]);
                if count == PSFB_FMT_PLI {
                    Ok(RtcpPacket::Pli {
                        sender_ssrc,
                        media_ssrc: u32::from_be_bytes([m0, m1, m2, m3]),
                    })
                } else {
                    Ok(RtcpPacket::Fir(Fir {
                        sender_ssrc,
                        fci: &body[8..],
                    }))
                }
            }
            _ => Ok(RtcpPacket::Other { packet_type, count }),
        }
    }
}

/// Appends a PLI (RFC 4585 §6.3.1) asking `media_ssrc` for a keyframe.
pub fn write_pli(sender_ssrc: u32, media_ssrc: u32, out: &mut BytesMut) {
    write_rtcp_header(out, PSFB_FMT_PLI, RTCP_PSFB, 12);
    out.put_u32(sender_ssrc);
    out.put_u32(media_ssrc);
}

/// Appends a FIR (RFC 5104 §4.3.1) for `media_ssrc`. Increment `seq_nr` for each new
/// request; resend the same value to repeat one.
pub fn write_fir(sender_ssrc: u32, media_ssrc: u32, seq_nr: u8, out: &mut BytesMut) {
    write_rtcp_header(out, PSFB_FMT_FIR, RTCP_PSFB, 20);
    out.put_u32(sender_ssrc);
    // RFC 5104 §4.3.1.2: the common header's media source SSRC is unused and zero.
    out.put_u32(0);
    out.put_u32(media_ssrc);
    out.put_u32(u32::from(seq_nr) << 24);
}

/// Appends an SDES packet with one CNAME item for `ssrc` (RFC 3550 §6.5.1), which
/// every compound RTCP packet must carry (§6.1).
pub fn write_sdes_cname(ssrc: u32, cname: &str, out: &mut BytesMut) -> Result<(), RtcpError> {
    let item_len =
        u8::try_from(cname.len()).map_err(|_| RtcpError::CnameTooLong { len: cname.len() })?;
    // SSRC, type, length, text, then 1..=4 null octets ending the chunk on a 32-bit
    // boundary (§6.5).
    let unpadded = 4 + 2 + cname.len();
    let chunk_len = (unpadded / 4 + 1) * 4;
    write_rtcp_header(out, 1, RTCP_SDES, 4 + chunk_len);
    out.put_u32(ssrc);
    out.put_u8(1); // CNAME
    out.put_u8(item_len);
    out.put_slice(cname.as_bytes());
    out.put_bytes(0, chunk_len - unpadded);
    Ok(())
}

/// NTP timestamp (RFC 3550 §4) for a wall-clock time given as time since the Unix
/// epoch. The caller reads the clock; this stays pure.
pub fn ntp_from_unix(since_unix_epoch: Duration) -> u64 {
    let secs = since_unix_epoch
        .as_secs()
        .wrapping_add(NTP_UNIX_OFFSET_SECS);
    // Fraction of a second in units of 2^-32 s; nanos < 1e9 so the result < 2^32.
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Time since the Unix epoch for an NTP timestamp, `None` before 1970.
pub fn unix_from_ntp(ntp: u64) -> Option<Duration> {
    let secs = (ntp >> 32).checked_sub(NTP_UNIX_OFFSET_SECS)?;
    let nanos = ((ntp & 0xffff_ffff) * 1_000_000_000) >> 32;
    // nanos < 1e9: the fraction is below 2^32.
    Some(Duration::new(secs, nanos as u32))
}

fn write_rtcp_header(out: &mut BytesMut, count: u8, packet_type: u8, total_len: usize) {
    out.put_u8((RTP_VERSION << 6) | (count & 0x1f));
    out.put_u8(packet_type);
    // Every caller passes a small multiple of 4; the length is in words minus one.
    out.put_u16((total_len / 4 - 1) as u16);
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn header_writes_exact_bytes() {
        let h = RtpHeader {
            marker: true,
            payload_type: 96,
            sequence: 0x1234,
            timestamp: 0xdead_beef,
            ssrc: 0x0102_0304,
        };
        let expected = [
            0x80, 0xe0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04,
        ];
        assert_eq!(h.to_bytes(), expected);
        let mut out = BytesMut::new();
        h.write_into(&mut out);
        assert_eq!(&out[..], &expected);
        let mut slot = [0u8; RTP_HEADER_LEN];
        RtpHeader {
            marker: false,
            payload_type: 0xff,
            ..h
        }
        .write_to(&mut slot);
        assert_eq!(slot[1], 0x7f, "marker clear, PT masked to 7 bits");
    }

    #[test]
    fn parse_round_trips_written_header() {
        let h = RtpHeader {
            marker: false,
            payload_type: 97,
            sequence: 65535,
            timestamp: 90_000,
            ssrc: 42,
        };
        let mut buf = BytesMut::new();
        h.write_into(&mut buf);
        buf.put_slice(&[0x65, 1, 2, 3]);
        let p = RtpPacket::parse(&buf.freeze()).unwrap();
        assert_eq!(p.header(), h);
        assert_eq!(&p.payload()[..], &[0x65, 1, 2, 3]);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.csrc_count(), 0);
        assert_eq!(p.extension_profile(), None);
    }

    #[test]
    fn parse_skips_csrcs_extension_and_padding() {
        let mut b = vec![
            0x80 | 0x20 | 0x10 | 2, // V=2, P, X, CC=2
            0x80 | 96,
            0x00,
            0x07,
            0,
            0,
            0,
            9,
            0xaa,
            0xbb,
            0xcc,
            0xdd,
        ];
        b.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]); // CSRCs
        b.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 9, 9, 9, 9]); // one-word extension
        b.extend_from_slice(&[0x41, 0x9a, 0x77]); // payload
        b.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let bytes = Bytes::from(b);
        let p = RtpPacket::parse(&bytes).unwrap();
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.sequence(), 7);
        assert_eq!(p.timestamp(), 9);
        assert_eq!(p.ssrc(), 0xaabb_ccdd);
        assert_eq!(p.csrc_count(), 2);
        assert_eq!(p.extension_profile(), Some(0xbede));
        assert_eq!(p.header_len(), 12 + 8 + 8);
        assert_eq!(&p.payload()[..], &[0x41, 0x9a, 0x77]);
        // Zero-copy: the payload points into the received buffer.
        assert_eq!(p.payload().as_ptr(), bytes[28..].as_ptr());
    }

    #[test]
    fn parse_refuses_malformed_headers() {
        let base = [0x80u8, 96, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            RtpPacket::parse(&Bytes::copy_from_slice(&base[..11])),
            Err(RtpError::TooShort { len: 11 })
        );
        let mut v1 = base;
        v1[0] = 0x40;
        assert_eq!(
            RtpPacket::parse(&Bytes::copy_from_slice(&v1)),
            Err(RtpError::BadVersion { version: 1 })
        );
        let mut cc = base;
        cc[0] = 0x81;
        assert_eq!(
            RtpPacket::parse(&Bytes::copy_from_slice(&cc)),
            Err(RtpError::TruncatedCsrc {
                ssrc: 1,
                sequence: 5,
                csrc_count: 1,
                len: 12
            })
        );
        let mut ext = base.to_vec();
        ext[0] = 0x90;
        ext.extend_from_slice(&[0xbe, 0xde, 0, 2, 0, 0, 0, 0]); // claims 2 words, has 1
        assert!(matches!(
            RtpPacket::parse(&Bytes::from(ext)),
            Err(RtpError::TruncatedExtension { ssrc: 1, .. })
        ));
        let mut pad = base.to_vec();
        pad[0] = 0xa0;
        pad.extend_from_slice(&[0x65, 3]); // padding 3 > 2 bytes available
        assert_eq!(
            RtpPacket::parse(&Bytes::from(pad.clone())),
            Err(RtpError::BadPadding {
                ssrc: 1,
                sequence: 5,
                padding: 3,
                available: 2
            })
        );
        *pad.last_mut().unwrap() = 0; // padding count 0 is invalid too
        assert!(matches!(
            RtpPacket::parse(&Bytes::from(pad)),
            Err(RtpError::BadPadding { padding: 0, .. })
        ));
    }

    #[test]
    fn media_packet_carries_classification() {
        let mut buf = BytesMut::new();
        RtpHeader {
            marker: true,
            payload_type: 96,
            sequence: 1,
            timestamp: 3000,
            ssrc: 5,
        }
        .write_into(&mut buf);
        buf.put_slice(&[0x65, 0x88, 0x80]); // H.264 IDR slice
        let m = RtpPacket::parse(&buf.freeze())
            .unwrap()
            .to_media_packet(Codec::H264)
            .unwrap();
        assert!(m.marker && m.keyframe_start && !m.parameter_set);
        assert_eq!(m.timestamp, 3000);
        assert_eq!(&m.payload[..], &[0x65, 0x88, 0x80]);
    }

    #[test]
    fn sender_report_round_trips_with_exact_bytes() {
        let sr = SenderReport {
            ssrc: 0x1122_3344,
            ntp_timestamp: 0xe000_0000_8000_0000,
            rtp_timestamp: 0x0001_5f90,
            packet_count: 10,
            octet_count: 12_000,
        };
        let mut out = BytesMut::new();
        sr.write_into(&mut out);
        assert_eq!(out.len(), SenderReport::LEN);
        assert_eq!(&out[..8], &[0x80, 200, 0, 6, 0x11, 0x22, 0x33, 0x44]);
        assert_eq!(&out[8..16], &[0xe0, 0, 0, 0, 0x80, 0, 0, 0]);
        let parsed: Vec<_> = parse_rtcp(&out).collect();
        assert_eq!(parsed, vec![Ok(RtcpPacket::SenderReport(sr))]);
    }

    #[test]
    fn compound_with_sr_report_block_sdes_pli_and_fir() {
        let sr = SenderReport {
            ssrc: 1,
            ntp_timestamp: 2,
            rtp_timestamp: 3,
            packet_count: 4,
            octet_count: 5,
        };
        let mut out = BytesMut::new();
        // An SR with one report block (RC=1, 24 more bytes), as a camera sends it.
        let mut with_block = BytesMut::new();
        sr.write_into(&mut with_block);
        with_block[0] |= 1;
        with_block[3] = 12;
        with_block.put_bytes(0xee, 24);
        out.put_slice(&with_block);
        write_sdes_cname(1, "cam@site", &mut out).unwrap();
        write_pli(7, 1, &mut out);
        write_fir(7, 1, 9, &mut out);
        let parsed: Vec<_> = parse_rtcp(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0], RtcpPacket::SenderReport(sr));
        assert_eq!(
            parsed[1],
            RtcpPacket::Other {
                packet_type: RTCP_SDES,
                count: 1
            }
        );
        assert_eq!(
            parsed[2],
            RtcpPacket::Pli {
                sender_ssrc: 7,
                media_ssrc: 1
            }
        );
        let RtcpPacket::Fir(fir) = parsed[3] else {
            panic!("expected FIR, got {:?}", parsed[3]);
        };
        assert_eq!(fir.sender_ssrc, 7);
        assert_eq!(
            fir.entries().collect::<Vec<_>>(),
            vec![FirEntry { ssrc: 1, seq_nr: 9 }]
        );
        assert!(parsed[2].is_keyframe_request() && parsed[3].is_keyframe_request());
        assert!(!parsed[0].is_keyframe_request());
    }

    #[test]
    fn pli_fir_and_sdes_have_exact_bytes() {
        let mut out = BytesMut::new();
        write_pli(0x0a0b_0c0d, 0x0102_0304, &mut out);
        assert_eq!(
            &out[..],
            &[0x81, 206, 0, 2, 0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 3, 4]
        );
        out.clear();
        write_fir(5, 6, 0xab, &mut out);
        assert_eq!(
            &out[..],
            &[
                0x84, 206, 0, 4, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6, 0xab, 0, 0, 0
            ]
        );
        out.clear();
        // "ab": 4 + 2 + 2 = 8 bytes, so a full word of nulls terminates the chunk.
        write_sdes_cname(9, "ab", &mut out).unwrap();
        assert_eq!(
            &out[..],
            &[0x81, 202, 0, 3, 0, 0, 0, 9, 1, 2, b'a', b'b', 0, 0, 0, 0]
        );
        out.clear();
        write_sdes_cname(9, "abc", &mut out).unwrap();
        assert_eq!(out.len(), 12 + 4);
        assert_eq!(out[out.len() - 1], 0);
        assert_eq!(
            write_sdes_cname(9, &"x".repeat(256), &mut out),
            Err(RtcpError::CnameTooLong { len: 256 })
        );
    }

    #[test]
    fn rtcp_errors_stop_iteration() {
        // Declares 8 words but only 4 bytes present.
        let bad = [0x80, 200, 0, 7];
        let all: Vec<_> = parse_rtcp(&bad).collect();
        assert_eq!(
            all,
            vec![Err(RtcpError::LengthOverrun {
                packet_type: 200,
                declared: 32,
                available: 4
            })]
        );
        let short_sr = [0x80, 200, 0, 1, 0, 0, 0, 1];
        assert!(matches!(
            parse_rtcp(&short_sr).next(),
            Some(Err(RtcpError::Truncated {
                packet_type: 200,
                ..
            }))
        ));
        let mut two = BytesMut::new();
        write_pli(1, 2, &mut two);
        two.put_slice(&[0x40, 200, 0, 0]); // version 1 after a good PLI
        two.put_slice(&[0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]); // never reached
        let all: Vec<_> = parse_rtcp(&two).collect();
        assert_eq!(all.len(), 2);
        assert!(all[0].is_ok());
        assert_eq!(all[1], Err(RtcpError::BadVersion { version: 1 }));
        assert!(matches!(
            parse_rtcp(&[0x80, 200]).next(),
            Some(Err(RtcpError::TooShort { len: 2 }))
        ));
    }

    #[test]
    fn rtcp_padding_is_removed_and_checked() {
        // A PLI with a padding word: length 3 words + header.
        let padded = [0xa1, 206, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 4];
        assert_eq!(
            parse_rtcp(&padded).next(),
            Some(Ok(RtcpPacket::Pli {
                sender_ssrc: 1,
                media_ssrc: 2
            }))
        );
        // Padding eating into the FCI leaves a truncated PLI.
        let too_much = [0xa1, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 8];
        assert!(matches!(
            parse_rtcp(&too_much).next(),
            Some(Err(RtcpError::Truncated { .. }))
        ));
        let beyond = [0xa1, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 9];
        assert!(matches!(
            parse_rtcp(&beyond).next(),
            Some(Err(RtcpError::BadPadding { padding: 9, .. }))
        ));
    }

    #[test]
    fn ntp_conversions() {
        // 1970-01-01T00:00:00.5 is NTP second 2_208_988_800, fraction 2^31.
        let ntp = ntp_from_unix(Duration::from_millis(500));
        assert_eq!(ntp, (2_208_988_800u64 << 32) | 0x8000_0000);
        assert_eq!(unix_from_ntp(ntp), Some(Duration::from_millis(500)));
        let t = Duration::new(1_700_000_000, 123_456_789);
        let back = unix_from_ntp(ntp_from_unix(t)).unwrap();
        assert!(
            t.abs_diff(back) < Duration::from_nanos(2),
            "{t:?} vs {back:?}"
        );
        assert_eq!(unix_from_ntp(1 << 32), None);
    }

    #[test]
    fn parsers_survive_random_and_truncated_input() {
        let mut rng = Rng(0x1234_5678);
        let mut valid = BytesMut::new();
        SenderReport {
            ssrc: 1,
            ntp_timestamp: 2,
            rtp_timestamp: 3,
            packet_count: 4,
            octet_count: 5,
        }
        .write_into(&mut valid);
        write_sdes_cname(1, "x", &mut valid).unwrap();
        write_fir(1, 2, 3, &mut valid);
        let mut rtp = 0;
        for i in 0..10_000 {
            let input: Vec<u8> = if i % 3 == 0 {
                valid[..rng.below(valid.len() + 1)].to_vec()
            } else {
                let len = rng.below(80);
                let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                // Bias towards version 2 so deeper paths are reached.
                if let Some(b) = v.first_mut() {
                    *b = (*b & 0x3f) | 0x80;
                }
                v
            };
            let bytes = Bytes::from(input);
            if let Ok(p) = RtpPacket::parse(&bytes) {
                rtp += 1;
                assert!(p.header_len() + p.payload().len() <= bytes.len());
                let _ = p.to_media_packet(Codec::H265);
            }
            for packet in parse_rtcp(&bytes) {
                if let Ok(RtcpPacket::Fir(fir)) = packet {
                    let _ = fir.entries().count();
                }
            }
        }
        assert!(
            rtp > 100,
            "the loop must reach successful parses, got {rtp}"
        );
    }
}
