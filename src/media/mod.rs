//! Pure media core: RTP header views, H.264/H.265 payload inspection and re-splitting.
//!
//! Everything here is bytes in, bytes or decisions out: no sockets, no clock.
//! The channel carries [`MediaPacket`]s; each leg (RTSP session, QUIC flow,
//! WebRTC viewer) writes its own RTP header around the payload.

pub mod h26x;
pub mod resplit;
pub mod rtp;

use bytes::Bytes;

/// The video codecs passerelle carries. Anything else is refused at ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    /// The RTP encoding name used in SDP `a=rtpmap` (RFC 6184, RFC 7798).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::H265 => "H265",
        }
    }
}

/// What a sink needs to describe a camera's video: codec and parameter sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub codec: Codec,
    /// RTP clock rate; 90 kHz for every video payload passerelle carries.
    pub clock_rate: u32,
    /// Parameter-set NAL units without start codes, in decoding order:
    /// SPS then PPS for H.264; VPS, SPS then PPS for H.265.
    pub parameter_sets: Vec<Bytes>,
}

/// One video RTP packet as the channel carries it: the payload and the header fields
/// that routing needs. Cloning is a reference-count increment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket {
    /// The RTP payload (single NAL unit, STAP-A/AP, FU-A/FU), without the RTP header.
    pub payload: Bytes,
    /// RTP timestamp in the camera's 90 kHz clock, offset so it never jumps backwards
    /// across camera reconnects.
    pub timestamp: u32,
    /// RTP marker bit: last packet of an access unit.
    pub marker: bool,
    /// First packet of a keyframe (H.264 IDR, H.265 IRAP): a new viewer may start here.
    pub keyframe_start: bool,
    /// The payload is or contains a parameter set (SPS/PPS/VPS).
    pub parameter_set: bool,
}
