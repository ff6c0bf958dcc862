//! H.264 (RFC 6184) and H.265 (RFC 7798) RTP payload inspection, SDP parameter sets
//! and the Annex B byte-stream splitter.
//!
//! passerelle never decodes video: it reads NAL unit headers to know where a viewer
//! may start (IDR/IRAP), which packets carry parameter sets, and how to cut packets
//! (`resplit`). Only the non-interleaved packetizations are carried: H.264
//! packetization-mode 0/1 (single NAL unit, STAP-A, FU-A) and H.265 without DONL
//! (single NAL unit, AP, FU).

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use bytes::Bytes;

use super::Codec;

/// H.264 NAL unit types (ITU-T H.264 table 7-1) and RTP packet types (RFC 6184 §5.2).
pub mod h264 {
    pub const IDR: u8 = 5;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    /// Single-time aggregation packet (RFC 6184 §5.7.1).
    pub const STAP_A: u8 = 24;
    /// Fragmentation unit without DON (RFC 6184 §5.8).
    pub const FU_A: u8 = 28;
}

/// H.265 NAL unit types (ITU-T H.265 table 7-1) and RTP packet types (RFC 7798 §4.4).
pub mod h265 {
    /// First intra random access point type (BLA_W_LP).
    pub const IRAP_FIRST: u8 = 16;
    /// Last IRAP type passerelle starts on (CRA_NUT); 22 and 23 are reserved IRAP types.
    pub const IRAP_LAST: u8 = 21;
    pub const VPS: u8 = 32;
    pub const SPS: u8 = 33;
    pub const PPS: u8 = 34;
    /// Aggregation packet (RFC 7798 §4.4.2).
    pub const AP: u8 = 48;
    /// Fragmentation unit (RFC 7798 §4.4.3).
    pub const FU: u8 = 49;
}

/// Why a video RTP payload could not be inspected. The caller adds SSRC/sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H26xError {
    #[error("empty {codec:?} RTP payload")]
    Empty { codec: Codec },
    #[error("{codec:?} payload of {len} bytes is shorter than its payload headers")]
    TruncatedHeader { codec: Codec, len: usize },
    #[error(
        "{codec:?} RTP packet type {packet_type} not supported (interleaved, PACI or reserved)"
    )]
    UnsupportedPacketType { codec: Codec, packet_type: u8 },
    #[error("{codec:?} aggregation packet: unit at offset {offset} overruns the payload")]
    TruncatedAggregation { codec: Codec, offset: usize },
    #[error("{codec:?} aggregation packet: unit at offset {offset} is shorter than a NAL header")]
    BadAggregationUnit { codec: Codec, offset: usize },
}

/// How a payload carries NAL units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// One whole NAL unit (RFC 6184 §5.6, RFC 7798 §4.4.1).
    Single { nal_type: u8 },
    /// STAP-A / AP holding `units` whole NAL units.
    Aggregation { units: usize },
    /// FU-A / FU carrying part of a NAL unit of `nal_type`.
    Fragment {
        nal_type: u8,
        start: bool,
        end: bool,
    },
}

/// What routing needs to know about one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadInfo {
    pub kind: PayloadKind,
    /// Starts a keyframe: an H.264 IDR or H.265 IRAP single NAL unit, an aggregation
    /// containing one, or the start fragment of one.
    pub keyframe_start: bool,
    /// Is or contains a parameter set (H.264 SPS/PPS, H.265 VPS/SPS/PPS); for fragments,
    /// every fragment of a parameter set.
    pub parameter_set: bool,
}

/// Bytes of NAL unit header: 1 for H.264 (`F|NRI|Type`), 2 for H.265
/// (`F|Type|LayerId|TID`).
pub fn nal_header_len(codec: Codec) -> usize {
    match codec {
        Codec::H264 => 1,
        Codec::H265 => 2,
    }
}

/// Bytes before the fragment data of an FU-A (indicator + header) or H.265 FU
/// (payload header + FU header).
pub fn fu_overhead(codec: Codec) -> usize {
    nal_header_len(codec) + 1
}

/// The NAL unit (or RTP packet) type from the first header byte(s), `None` if empty.
pub fn nal_type(codec: Codec, nal: &[u8]) -> Option<u8> {
    let first = *nal.first()?;
    Some(match codec {
        Codec::H264 => first & 0x1f,
        Codec::H265 => (first >> 1) & 0x3f,
    })
}

/// Whether a NAL unit type is a parameter set.
pub fn is_parameter_set(codec: Codec, nal_type: u8) -> bool {
    match codec {
        Codec::H264 => matches!(nal_type, h264::SPS | h264::PPS),
        Codec::H265 => matches!(nal_type, h265::VPS | h265::SPS | h265::PPS),
    }
}

/// Whether a NAL unit type lets a decoder start: H.264 IDR, H.265 IRAP (BLA, IDR, CRA).
pub fn is_keyframe(codec: Codec, nal_type: u8) -> bool {
    match codec {
        Codec::H264 => nal_type == h264::IDR,
        Codec::H265 => (h265::IRAP_FIRST..=h265::IRAP_LAST).contains(&nal_type),
    }
}

/// Inspects one RTP payload of `codec`.
pub fn classify(codec: Codec, payload: &[u8]) -> Result<PayloadInfo, H26xError> {
    let Some(packet_type) = nal_type(codec, payload) else {
        return Err(H26xError::Empty { codec });
    };
    let header_len = nal_header_len(codec);
    if payload.len() < header_len {
        return Err(H26xError::TruncatedHeader {
            codec,
            len: payload.len(),
        });
    }
    match (codec, packet_type) {
        (Codec::H264, 1..=23) | (Codec::H265, 0..=47) => Ok(PayloadInfo {
            kind: PayloadKind::Single {
                nal_type: packet_type,
            },
            keyframe_start: is_keyframe(codec, packet_type),
            parameter_set: is_parameter_set(codec, packet_type),
        }),
        (Codec::H264, h264::STAP_A) | (Codec::H265, h265::AP) => {
            let mut info = PayloadInfo {
                kind: PayloadKind::Aggregation { units: 0 },
                keyframe_start: false,
                parameter_set: false,
            };
            let mut units = 0;
            for unit in aggregation_units(codec, payload) {
                let unit = unit?;
                let offset = unit.start;
                let t = nal_type(codec, &payload[unit]).unwrap_or_default();
                // Only whole NAL units may be aggregated (RFC 6184 §5.7: types 1-23;
                // RFC 7798 §4.4.2: 0-47), never an aggregate or fragment inside one:
                // re-split alone it would pass for something else (an FU-A start).
                let whole_unit = match codec {
                    Codec::H264 => (1..=23).contains(&t),
                    Codec::H265 => t <= 47,
                };
                if !whole_unit {
                    return Err(H26xError::BadAggregationUnit { codec, offset });
                }
                units += 1;
                info.keyframe_start |= is_keyframe(codec, t);
                info.parameter_set |= is_parameter_set(codec, t);
            }
            info.kind = PayloadKind::Aggregation { units };
            Ok(info)
        }
        (Codec::H264, h264::FU_A) | (Codec::H265, h265::FU) => {
            let Some(&fu_header) = payload.get(header_len) else {
                return Err(H26xError::TruncatedHeader {
                    codec,
                    len: payload.len(),
                });
            };
            let start = fu_header & 0x80 != 0;
            let end = fu_header & 0x40 != 0;
            let nal_type = match codec {
                Codec::H264 => fu_header & 0x1f,
                Codec::H265 => fu_header & 0x3f,
            };
            Ok(PayloadInfo {
                kind: PayloadKind::Fragment {
                    nal_type,
                    start,
                    end,
                },
                keyframe_start: start && is_keyframe(codec, nal_type),
                parameter_set: is_parameter_set(codec, nal_type),
            })
        }
        _ => Err(H26xError::UnsupportedPacketType { codec, packet_type }),
    }
}

/// The whole NAL units a payload carries, as zero-copy slices: the payload itself for a
/// single NAL unit packet, each unit of an aggregation, nothing for a fragment. A
/// malformed payload yields the units before the fault; use [`classify`] to reject it.
pub fn nal_units(codec: Codec, payload: &Bytes) -> NalUnits {
    let state = match classify(codec, payload).map(|info| info.kind) {
        Ok(PayloadKind::Single { .. }) => NalUnitsState::Single,
        Ok(PayloadKind::Aggregation { .. }) => NalUnitsState::Aggregation {
            pos: nal_header_len(codec),
        },
        Ok(PayloadKind::Fragment { .. }) | Err(_) => NalUnitsState::Done,
    };
    NalUnits {
        codec,
        payload: payload.clone(),
        state,
    }
}

/// The parameter-set NAL units inside a payload (single or aggregated), to keep the
/// channel's in-band parameter-set cache fresh. A parameter set split into fragments
/// is not reassembled: cameras send them whole, they are tiny.
pub fn parameter_sets(codec: Codec, payload: &Bytes) -> impl Iterator<Item = Bytes> {
    nal_units(codec, payload)
        .filter(move |nal| nal_type(codec, nal).is_some_and(|t| is_parameter_set(codec, t)))
}

/// Iterator returned by [`nal_units`].
#[derive(Debug, Clone)]
pub struct NalUnits {
    codec: Codec,
    payload: Bytes,
    state: NalUnitsState,
}

#[derive(Debug, Clone)]
enum NalUnitsState {
    Single,
    Aggregation { pos: usize },
    Done,
}

impl Iterator for NalUnits {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        match self.state {
            NalUnitsState::Done => None,
            NalUnitsState::Single => {
                self.state = NalUnitsState::Done;
                Some(self.payload.clone())
            }
            NalUnitsState::Aggregation { pos } => {
                let mut units = AggregationUnits {
                    codec: self.codec,
                    payload: &self.payload,
                    pos,
                };
                match units.next() {
                    Some(Ok(range)) => {
                        self.state = NalUnitsState::Aggregation { pos: units.pos };
                        Some(self.payload.slice(range))
                    }
                    _ => {
                        self.state = NalUnitsState::Done;
                        None
                    }
                }
            }
        }
    }
}

/// Byte ranges of the NAL units of a STAP-A / AP payload (RFC 6184 §5.7.1, RFC 7798
/// §4.4.2): after the payload header, repeated `{16-bit size, NAL unit}`. No DONL: H.265
/// streams with `sprop-max-don-diff` > 0 are refused by [`parse_fmtp`].
pub(crate) fn aggregation_units(codec: Codec, payload: &[u8]) -> AggregationUnits<'_> {
    AggregationUnits {
        codec,
        payload,
        pos: nal_header_len(codec),
    }
}

pub(crate) struct AggregationUnits<'a> {
    codec: Codec,
    payload: &'a [u8],
    pos: usize,
}

impl Iterator for AggregationUnits<'_> {
    type Item = Result<std::ops::Range<usize>, H26xError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.pos;
        if offset >= self.payload.len() {
            return None;
        }
        let codec = self.codec;
        // On error, jump to the end so iteration stops.
        self.pos = self.payload.len();
        let Some(&[s0, s1]) = self.payload.get(offset..offset + 2) else {
            return Some(Err(H26xError::TruncatedAggregation { codec, offset }));
        };
        let size = usize::from(u16::from_be_bytes([s0, s1]));
        let start = offset + 2;
        if size < nal_header_len(codec) {
            return Some(Err(H26xError::BadAggregationUnit { codec, offset }));
        }
        if start + size > self.payload.len() {
            return Some(Err(H26xError::TruncatedAggregation { codec, offset }));
        }
        self.pos = start + size;
        Some(Ok(start..start + size))
    }
}

/// Why an SDP `a=fmtp` line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FmtpError {
    #[error("{codec:?} fmtp {param}: invalid base64 {value:?}")]
    BadBase64 {
        codec: Codec,
        param: &'static str,
        value: String,
    },
    #[error("{codec:?} fmtp {param}: invalid value {value:?}")]
    BadValue {
        codec: Codec,
        param: &'static str,
        value: String,
    },
    #[error("H.264 packetization-mode={mode} (interleaved) is not supported; use mode 0 or 1")]
    InterleavedH264 { mode: u32 },
    #[error(
        "H.265 sprop-max-don-diff={value}: DONL (interleaved decoding order) is not supported (RFC 7798 §7.1)"
    )]
    DonlNotSupported { value: u32 },
}

/// What passerelle keeps from a video `a=fmtp` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FmtpInfo {
    /// Parameter-set NAL units in decoding order, as in `StreamInfo::parameter_sets`:
    /// SPS then PPS (H.264, in the order given); VPS, SPS, PPS (H.265). Empty if the
    /// camera only sends them in band.
    pub parameter_sets: Vec<Bytes>,
    /// H.264 only: computed from the first SPS, else the line's own `profile-level-id`.
    pub profile_level_id: Option<String>,
}

/// Parses the parameters of an H.264 (RFC 6184 §8.1) or H.265 (RFC 7798 §7.1) `a=fmtp`
/// line: the text after `a=fmtp:`, with or without the leading payload type.
///
/// Refuses what passerelle cannot carry: H.264 packetization-mode 2 and H.265
/// `sprop-max-don-diff` > 0. Base64 padding is optional (some cameras omit it); NAL
/// units in `sprop-*` that are not parameter sets are ignored.
pub fn parse_fmtp(codec: Codec, fmtp: &str) -> Result<FmtpInfo, FmtpError> {
    let fmtp = fmtp.trim();
    let params = match fmtp.split_once(char::is_whitespace) {
        Some((pt, rest)) if pt.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => fmtp,
    };
    let mut vps = Vec::new();
    let mut sps = Vec::new();
    let mut pps = Vec::new();
    let mut h264_sets = Vec::new();
    let mut declared_profile = None;
    for param in params.split(';') {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let is = |name: &str| key.eq_ignore_ascii_case(name);
        match codec {
            Codec::H264 if is("sprop-parameter-sets") => {
                decode_sprop(codec, "sprop-parameter-sets", value, &mut h264_sets)?;
            }
            Codec::H264 if is("profile-level-id") => {
                if value.len() != 6 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad_value(codec, "profile-level-id", value));
                }
                declared_profile = Some(value.to_ascii_lowercase());
            }
            Codec::H264 if is("packetization-mode") => {
                let mode = parse_u32(codec, "packetization-mode", value)?;
                if mode > 1 {
                    return Err(FmtpError::InterleavedH264 { mode });
                }
            }
            Codec::H265 if is("sprop-vps") => decode_sprop(codec, "sprop-vps", value, &mut vps)?,
            Codec::H265 if is("sprop-sps") => decode_sprop(codec, "sprop-sps", value, &mut sps)?,
            Codec::H265 if is("sprop-pps") => decode_sprop(codec, "sprop-pps", value, &mut pps)?,
            Codec::H265 if is("sprop-max-don-diff") => {
                let value = parse_u32(codec, "sprop-max-don-diff", value)?;
                if value > 0 {
                    return Err(FmtpError::DonlNotSupported { value });
                }
            }
            _ => {}
        }
    }
    let parameter_sets: Vec<Bytes> = match codec {
        Codec::H264 => h264_sets,
        Codec::H265 => vps.into_iter().chain(sps).chain(pps).collect(),
    };
    let mut parameter_sets: Vec<Bytes> = parameter_sets
        .into_iter()
        .filter(|nal| nal_type(codec, nal).is_some_and(|t| is_parameter_set(codec, t)))
        .collect();
    // Decoding order by actual type (VPS, SPS, PPS; SPS, PPS), whatever key or order a
    // camera listed them under. The sort is stable: sets of one type keep their order.
    parameter_sets.sort_by_key(|nal| nal_type(codec, nal));
    let profile_level_id = match codec {
        Codec::H264 => parameter_sets
            .iter()
            .find(|nal| nal_type(codec, nal) == Some(h264::SPS))
            .and_then(|sps| profile_level_id(sps))
            .or(declared_profile),
        Codec::H265 => None,
    };
    Ok(FmtpInfo {
        parameter_sets,
        profile_level_id,
    })
}

/// The H.264 `profile-level-id` (RFC 6184 §8.1): profile_idc, constraint flags and
/// level_idc, SPS bytes 1..4, as 6 lowercase hex digits. `None` if `sps` is not an SPS.
pub fn profile_level_id(sps: &[u8]) -> Option<String> {
    match sps {
        [header, profile, constraints, level, ..] if header & 0x1f == h264::SPS => {
            Some(format!("{profile:02x}{constraints:02x}{level:02x}"))
        }
        _ => None,
    }
}

/// The `a=fmtp` parameters (without payload type) describing `parameter_sets` for a
/// sink's SDP: H.264 packetization-mode 1 with profile-level-id and
/// sprop-parameter-sets; H.265 sprop-vps/sps/pps.
pub fn format_fmtp(codec: Codec, parameter_sets: &[Bytes]) -> String {
    let joined = |wanted: u8| {
        parameter_sets
            .iter()
            .filter(|nal| nal_type(codec, nal) == Some(wanted))
            .map(|nal| STANDARD.encode(nal))
            .collect::<Vec<_>>()
            .join(",")
    };
    match codec {
        Codec::H264 => {
            let mut out = String::from("packetization-mode=1");
            if let Some(id) = parameter_sets.iter().find_map(|nal| profile_level_id(nal)) {
                out.push_str(";profile-level-id=");
                out.push_str(&id);
            }
            let sets: Vec<String> = parameter_sets
                .iter()
                .filter(|nal| nal_type(codec, nal).is_some_and(|t| is_parameter_set(codec, t)))
                .map(|nal| STANDARD.encode(nal))
                .collect();
            if !sets.is_empty() {
                out.push_str(";sprop-parameter-sets=");
                out.push_str(&sets.join(","));
            }
            out
        }
        Codec::H265 => {
            let mut parts = Vec::new();
            for (name, wanted) in [
                ("sprop-vps", h265::VPS),
                ("sprop-sps", h265::SPS),
                ("sprop-pps", h265::PPS),
            ] {
                let value = joined(wanted);
                if !value.is_empty() {
                    parts.push(format!("{name}={value}"));
                }
            }
            parts.join(";")
        }
    }
}

/// Base64 as cameras write it: standard alphabet, padding present or not.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn decode_sprop(
    codec: Codec,
    param: &'static str,
    value: &str,
    out: &mut Vec<Bytes>,
) -> Result<(), FmtpError> {
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let nal = LENIENT_BASE64
            .decode(item)
            .map_err(|_| FmtpError::BadBase64 {
                codec,
                param,
                value: item.to_owned(),
            })?;
        if !nal.is_empty() {
            out.push(Bytes::from(nal));
        }
    }
    Ok(())
}

fn parse_u32(codec: Codec, param: &'static str, value: &str) -> Result<u32, FmtpError> {
    value.parse().map_err(|_| bad_value(codec, param, value))
}

fn bad_value(codec: Codec, param: &'static str, value: &str) -> FmtpError {
    FmtpError::BadValue {
        codec,
        param,
        value: value.to_owned(),
    }
}

/// `general_profile_idc` of an H.265 SPS NAL unit (1 Main, 2 Main 10, 3 Main Still
/// Picture, 4 range extensions); `None` if `sps` is not an SPS.
pub fn h265_profile_idc(sps: &[u8]) -> Option<u8> {
    if nal_type(Codec::H265, sps)? != h265::SPS {
        return None;
    }
    // After the NAL header: sps_video_parameter_set_id(4) sps_max_sub_layers_minus1(3)
    // sps_temporal_id_nesting_flag(1), then general_profile_space(2) general_tier_flag(1)
    // general_profile_idc(5) (ITU-T H.265 7.3.2.2, 7.3.3). No emulation prevention can
    // fall in these bytes: the header's first byte is not zero.
    Some(sps.get(3)? & 0x1f)
}

/// Splits an Annex B byte stream (ITU-T H.264/H.265 Annex B) into NAL units without
/// start codes, as zero-copy slices. Finds 3- and 4-byte start codes; bytes before the
/// first start code and trailing zero bytes are dropped, empty units skipped.
pub fn split_annex_b(data: &Bytes) -> AnnexB {
    let pos = find_start_code(data, 0).map_or(data.len(), |sc| sc + 3);
    AnnexB {
        data: data.clone(),
        pos,
    }
}

/// Iterator returned by [`split_annex_b`].
#[derive(Debug, Clone)]
pub struct AnnexB {
    data: Bytes,
    /// Start of the next NAL unit (just after a start code).
    pos: usize,
}

impl Iterator for AnnexB {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        while self.pos < self.data.len() {
            let start = self.pos;
            let (mut end, next) = match find_start_code(&self.data, start) {
                Some(sc) => (sc, sc + 3),
                None => (self.data.len(), self.data.len()),
            };
            self.pos = next;
            // A 4-byte start code's leading zero, and trailing_zero_8bits, belong to no unit.
            while end > start && self.data[end - 1] == 0 {
                end -= 1;
            }
            if end > start {
                return Some(self.data.slice(start..end));
            }
        }
        None
    }
}

fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|i| from + i)
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

    /// The Foscam camera's SDP (retina fixture `foscam_describe.txt`).
    const FOSCAM_FMTP: &str = "96 packetization-mode=1;profile-level-id=4D001F;sprop-parameter-sets=Z00AH5WoFAFuQA==,aO48gA==";

    fn stap(codec: Codec, units: &[&[u8]]) -> Bytes {
        let mut v = match codec {
            Codec::H264 => vec![0x18],          // F=0 NRI=0 type 24
            Codec::H265 => vec![48 << 1, 0x01], // type 48, TID 1
        };
        for u in units {
            v.extend_from_slice(&(u.len() as u16).to_be_bytes());
            v.extend_from_slice(u);
        }
        Bytes::from(v)
    }

    fn h265_nal(t: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![t << 1, 0x01];
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn h264_single_nal_units() {
        let idr = classify(Codec::H264, &[0x65, 0x88]).unwrap();
        assert_eq!(idr.kind, PayloadKind::Single { nal_type: 5 });
        assert!(idr.keyframe_start && !idr.parameter_set);
        let sps = classify(Codec::H264, &[0x67, 0x4d]).unwrap();
        assert!(sps.parameter_set && !sps.keyframe_start);
        let pps = classify(Codec::H264, &[0x68]).unwrap();
        assert!(pps.parameter_set);
        let p = classify(Codec::H264, &[0x41, 0x9a]).unwrap();
        assert!(!p.keyframe_start && !p.parameter_set);
    }

    #[test]
    fn h264_stap_a_contents_are_seen() {
        let s = stap(Codec::H264, &[&[0x67, 1, 2], &[0x68, 3], &[0x65, 4, 5, 6]]);
        let info = classify(Codec::H264, &s).unwrap();
        assert_eq!(info.kind, PayloadKind::Aggregation { units: 3 });
        assert!(info.keyframe_start && info.parameter_set);
        let sets: Vec<Bytes> = parameter_sets(Codec::H264, &s).collect();
        assert_eq!(sets, vec![&[0x67, 1, 2][..], &[0x68, 3][..]]);
        // Zero-copy: the slices point into the payload.
        assert_eq!(sets[0].as_ptr(), s[3..].as_ptr());
        let all: Vec<Bytes> = nal_units(Codec::H264, &s).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(&all[2][..], &[0x65, 4, 5, 6]);

        let only_p = stap(Codec::H264, &[&[0x41, 1], &[0x01, 2]]);
        let info = classify(Codec::H264, &only_p).unwrap();
        assert!(!info.keyframe_start && !info.parameter_set);
    }

    #[test]
    fn h264_fu_a_start_bit_decides_keyframe_start() {
        // FU indicator NRI=3 type 28; FU header S, type 5.
        let start = classify(Codec::H264, &[0x7c, 0x85, 0xaa]).unwrap();
        assert_eq!(
            start.kind,
            PayloadKind::Fragment {
                nal_type: 5,
                start: true,
                end: false
            }
        );
        assert!(start.keyframe_start);
        let middle = classify(Codec::H264, &[0x7c, 0x05, 0xaa]).unwrap();
        assert!(!middle.keyframe_start);
        let end = classify(Codec::H264, &[0x7c, 0x45, 0xaa]).unwrap();
        assert_eq!(
            end.kind,
            PayloadKind::Fragment {
                nal_type: 5,
                start: false,
                end: true
            }
        );
        assert!(!end.keyframe_start);
        let p_start = classify(Codec::H264, &[0x7c, 0x81, 0xaa]).unwrap();
        assert!(!p_start.keyframe_start);
        // No nested NAL units to extract from a fragment.
        assert_eq!(
            nal_units(Codec::H264, &Bytes::from_static(&[0x7c, 0x87, 1])).count(),
            0
        );
    }

    #[test]
    fn h265_types_aggregation_and_fragments() {
        for t in 16..=21 {
            let info = classify(Codec::H265, &h265_nal(t, &[0xaf])).unwrap();
            assert!(info.keyframe_start, "IRAP type {t}");
        }
        for t in [0, 1, 9, 15, 22, 35, 39] {
            let info = classify(Codec::H265, &h265_nal(t, &[0xaf])).unwrap();
            assert!(!info.keyframe_start, "type {t}");
        }
        for t in [32, 33, 34] {
            assert!(
                classify(Codec::H265, &h265_nal(t, &[1]))
                    .unwrap()
                    .parameter_set
            );
        }
        let vps = h265_nal(32, &[1, 2]);
        let idr = h265_nal(19, &[3, 4, 5]);
        let ap = stap(Codec::H265, &[&vps, &idr]);
        let info = classify(Codec::H265, &ap).unwrap();
        assert_eq!(info.kind, PayloadKind::Aggregation { units: 2 });
        assert!(info.keyframe_start && info.parameter_set);
        assert_eq!(
            parameter_sets(Codec::H265, &ap).collect::<Vec<_>>(),
            vec![Bytes::from(vps)]
        );
        // FU: payload header type 49, FU header S|E|type.
        let fu_start = [49 << 1, 1, 0x80 | 19, 0xee];
        let info = classify(Codec::H265, &fu_start).unwrap();
        assert_eq!(
            info.kind,
            PayloadKind::Fragment {
                nal_type: 19,
                start: true,
                end: false
            }
        );
        assert!(info.keyframe_start);
        let fu_end = [49 << 1, 1, 0x40 | 19, 0xee];
        assert!(!classify(Codec::H265, &fu_end).unwrap().keyframe_start);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        use H26xError::*;
        let c = Codec::H264;
        assert_eq!(classify(c, &[]), Err(Empty { codec: c }));
        assert_eq!(
            classify(c, &[0x7c]),
            Err(TruncatedHeader { codec: c, len: 1 })
        );
        for t in [0u8, 25, 26, 27, 29, 30, 31] {
            assert_eq!(
                classify(c, &[t, 0, 0]),
                Err(UnsupportedPacketType {
                    codec: c,
                    packet_type: t
                })
            );
        }
        assert_eq!(
            classify(c, &[0x18, 0x00, 0x05, 0x65]),
            Err(TruncatedAggregation {
                codec: c,
                offset: 1
            })
        );
        assert_eq!(
            classify(c, &[0x18, 0x00, 0x01, 0x65, 0x00]),
            Err(TruncatedAggregation {
                codec: c,
                offset: 4
            })
        );
        assert_eq!(
            classify(c, &[0x18, 0x00, 0x00]),
            Err(BadAggregationUnit {
                codec: c,
                offset: 1
            })
        );
        let h = Codec::H265;
        assert_eq!(
            classify(h, &[0x40]),
            Err(TruncatedHeader { codec: h, len: 1 })
        );
        assert_eq!(
            classify(h, &[50 << 1, 1, 0]),
            Err(UnsupportedPacketType {
                codec: h,
                packet_type: 50
            })
        );
        // An AP unit of one byte cannot hold an H.265 NAL header.
        assert_eq!(
            classify(h, &[48 << 1, 1, 0, 1, 0x26]),
            Err(BadAggregationUnit {
                codec: h,
                offset: 2
            })
        );
        assert_eq!(
            classify(h, &[49 << 1, 1]),
            Err(TruncatedHeader { codec: h, len: 2 })
        );
    }

    #[test]
    fn foscam_fmtp_gives_parameter_sets_and_profile() {
        let info = parse_fmtp(Codec::H264, FOSCAM_FMTP).unwrap();
        assert_eq!(info.parameter_sets.len(), 2);
        assert_eq!(
            &info.parameter_sets[0][..],
            &[0x67, 0x4d, 0x00, 0x1f, 0x95, 0xa8, 0x14, 0x01, 0x6e, 0x40]
        );
        assert_eq!(&info.parameter_sets[1][..], &[0x68, 0xee, 0x3c, 0x80]);
        assert_eq!(info.profile_level_id.as_deref(), Some("4d001f"));
        // Without the payload-type prefix, without padding, odd spacing.
        let info2 = parse_fmtp(
            Codec::H264,
            "packetization-mode=1; sprop-parameter-sets=Z00AH5WoFAFuQA,aO48gA",
        )
        .unwrap();
        assert_eq!(info2.parameter_sets, info.parameter_sets);
    }

    #[test]
    fn fmtp_profile_falls_back_to_declared_value() {
        let info = parse_fmtp(Codec::H264, "profile-level-id=42E01F;packetization-mode=0").unwrap();
        assert!(info.parameter_sets.is_empty());
        assert_eq!(info.profile_level_id.as_deref(), Some("42e01f"));
        assert!(matches!(
            parse_fmtp(Codec::H264, "profile-level-id=42E0"),
            Err(FmtpError::BadValue { .. })
        ));
    }

    #[test]
    fn fmtp_refuses_what_cannot_be_carried() {
        assert_eq!(
            parse_fmtp(Codec::H264, "96 packetization-mode=2"),
            Err(FmtpError::InterleavedH264 { mode: 2 })
        );
        assert_eq!(
            parse_fmtp(Codec::H265, "sprop-max-don-diff=3;sprop-vps=QAE="),
            Err(FmtpError::DonlNotSupported { value: 3 })
        );
        assert!(parse_fmtp(Codec::H265, "sprop-max-don-diff=0").is_ok());
        assert!(matches!(
            parse_fmtp(Codec::H265, "sprop-max-don-diff=x"),
            Err(FmtpError::BadValue { .. })
        ));
        assert!(matches!(
            parse_fmtp(Codec::H264, "sprop-parameter-sets=Z00A*"),
            Err(FmtpError::BadBase64 { .. })
        ));
    }

    #[test]
    fn h265_fmtp_orders_vps_sps_pps() {
        let enc = |nal: &[u8]| STANDARD.encode(nal);
        let vps = h265_nal(32, &[1, 1]);
        let sps = h265_nal(33, &[2, 2]);
        let pps = h265_nal(34, &[3]);
        // Given out of order, with an SEI mixed in that must be ignored.
        let line = format!(
            "98 sprop-pps={};sprop-sps={};sprop-vps={},{}",
            enc(&pps),
            enc(&sps),
            enc(&vps),
            enc(&h265_nal(39, &[9]))
        );
        let info = parse_fmtp(Codec::H265, &line).unwrap();
        assert_eq!(
            info.parameter_sets,
            vec![Bytes::from(vps), Bytes::from(sps), Bytes::from(pps)]
        );
        assert_eq!(info.profile_level_id, None);
        let back = format_fmtp(Codec::H265, &info.parameter_sets);
        assert_eq!(parse_fmtp(Codec::H265, &back).unwrap(), info);
        assert!(back.starts_with("sprop-vps="), "{back}");
    }

    #[test]
    fn format_fmtp_round_trips_h264() {
        let info = parse_fmtp(Codec::H264, FOSCAM_FMTP).unwrap();
        let line = format_fmtp(Codec::H264, &info.parameter_sets);
        assert_eq!(
            line,
            "packetization-mode=1;profile-level-id=4d001f;sprop-parameter-sets=Z00AH5WoFAFuQA==,aO48gA=="
        );
        assert_eq!(format_fmtp(Codec::H264, &[]), "packetization-mode=1");
    }

    #[test]
    fn profile_level_id_needs_an_sps() {
        assert_eq!(
            profile_level_id(&[0x67, 0x42, 0xe0, 0x1f]).as_deref(),
            Some("42e01f")
        );
        assert_eq!(profile_level_id(&[0x67, 0x42, 0xe0]), None);
        assert_eq!(profile_level_id(&[0x68, 0x42, 0xe0, 0x1f]), None);
    }

    #[test]
    fn annex_b_splits_on_3_and_4_byte_start_codes() {
        let data = Bytes::from_static(&[
            0xff, // junk before the first start code
            0, 0, 0, 1, 0x67, 0x42, 0x00, // SPS ending in a zero (trailing_zero_8bits)
            0, 0, 1, 0x68, 0xce, // PPS, 3-byte start code
            0, 0, 0, 1, // empty unit
            0, 0, 0, 1, 0x65, 0x88, 0x00, 0x00, 0x03, 0x01, // IDR with emulation prevention
        ]);
        let units: Vec<Bytes> = split_annex_b(&data).collect();
        assert_eq!(
            units,
            vec![
                &[0x67, 0x42][..],
                &[0x68, 0xce][..],
                &[0x65, 0x88, 0x00, 0x00, 0x03, 0x01][..],
            ]
        );
        assert_eq!(units[1].as_ptr(), data[11..].as_ptr(), "zero-copy");
        assert_eq!(split_annex_b(&Bytes::from_static(&[1, 2, 3])).count(), 0);
        assert_eq!(split_annex_b(&Bytes::new()).count(), 0);
        assert_eq!(
            split_annex_b(&Bytes::from_static(&[0, 0, 1])).count(),
            0,
            "start code with nothing after"
        );
    }

    #[test]
    fn parsers_survive_random_and_truncated_input() {
        let mut rng = Rng(0xfeed_f00d);
        let valid = [
            stap(Codec::H264, &[&[0x67, 1, 2], &[0x68, 3], &[0x65, 4, 5, 6]]),
            stap(Codec::H265, &[&h265_nal(32, &[1]), &h265_nal(19, &[2, 3])]),
        ];
        let mut ok = 0;
        for i in 0..10_000 {
            let input: Bytes = if i % 4 == 0 {
                let v = &valid[rng.below(2)];
                v.slice(..rng.below(v.len() + 1))
            } else {
                let len = rng.below(40);
                let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                // Bias towards aggregation/fragment headers so deep paths run.
                if let Some(b) = v.first_mut() {
                    *b = [0x18, 0x7c, 48 << 1, 49 << 1, *b][rng.below(5)];
                }
                Bytes::from(v)
            };
            for codec in [Codec::H264, Codec::H265] {
                if let Ok(info) = classify(codec, &input) {
                    ok += 1;
                    for nal in nal_units(codec, &input) {
                        assert!(nal.len() >= nal_header_len(codec));
                    }
                    if let PayloadKind::Aggregation { units } = info.kind {
                        assert_eq!(nal_units(codec, &input).count(), units);
                    }
                }
                let _ = parameter_sets(codec, &input).count();
            }
            let _ = split_annex_b(&input).count();
            let text = String::from_utf8_lossy(&input);
            let _ = parse_fmtp(Codec::H264, &text);
            let _ = parse_fmtp(Codec::H265, &text);
        }
        assert!(
            ok > 1000,
            "too few inputs reached the parsers' success paths: {ok}"
        );
    }

    #[test]
    fn h265_profile_comes_from_the_sps() {
        let sps = [0x42, 0x01, 0x01, 0x01, 0x60, 0x00];
        assert_eq!(h265_profile_idc(&sps), Some(1));
        let main10 = [0x42, 0x01, 0x01, 0x02, 0x60];
        assert_eq!(h265_profile_idc(&main10), Some(2));
        assert_eq!(h265_profile_idc(&[0x40, 0x01, 0x0c, 0x01]), None);
    }
}

/// Inputs the fuzzer (`fuzz/`) found, kept as plain tests.
#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    #[test]
    fn an_aggregation_may_only_hold_whole_nal_units() {
        // STAP-A holding an FU-A start of an IDR (`1c 85`): re-split alone it would
        // pass for a keyframe start.
        let fu_a_inside = [0x18, 0x00, 0x02, 0x1c, 0x85, 0x00, 0x02, 0x65, 0x88];
        assert!(matches!(
            classify(Codec::H264, &fu_a_inside),
            Err(H26xError::BadAggregationUnit { .. })
        ));
        // Type 0 is unspecified in H.264.
        let type_0_inside = [0x18, 0x00, 0x02, 0x00, 0x11];
        assert!(classify(Codec::H264, &type_0_inside).is_err());
        // Whole units pass.
        let sps_pps = [0x18, 0x00, 0x02, 0x67, 0x4d, 0x00, 0x02, 0x68, 0xee];
        assert!(classify(Codec::H264, &sps_pps).is_ok_and(|info| info.parameter_set));
    }

    #[test]
    fn h265_parameter_sets_come_out_in_decoding_order_whatever_key_lists_them() {
        let vps = [0x40u8, 0x01, 0x0c];
        let sps = [0x42u8, 0x01, 0x01];
        let pps = [0x44u8, 0x01, 0xc1];
        let b64 =
            |nal: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, nal);
        // The SPS listed under `sprop-vps`, the VPS under `sprop-sps`.
        let fmtp = format!(
            "sprop-vps={};sprop-sps={};sprop-pps={}",
            b64(&sps),
            b64(&vps),
            b64(&pps)
        );
        let parsed = parse_fmtp(Codec::H265, &fmtp).expect("parses");
        let types: Vec<_> = parsed
            .parameter_sets
            .iter()
            .map(|nal| nal_type(Codec::H265, nal))
            .collect();
        assert_eq!(types, vec![Some(32), Some(33), Some(34)]);
    }
}
