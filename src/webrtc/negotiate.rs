//! The pure part of a WHEP exchange: what the browser's offer can receive, which of it
//! suits the camera, and the answer's candidate addresses.
//!
//! A camera's video passes through untouched, so the answer must name a format the
//! camera's own stream already is: the H.264 profile of its SPS (a browser decodes a
//! profile only if it offered it, or one above it), or H.265 when the browser offers it.
//! The chosen offered format is answered with the browser's own `a=fmtp` line, which the
//! WebRTC stack then matches exactly (it compares profile bytes strictly).

use std::fmt;
use std::net::IpAddr;

use crate::media::{Codec, StreamInfo, h26x};

/// One video format of the offer's first video section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedCodec {
    /// The payload type the browser gave it.
    pub payload_type: u8,
    /// H.264 or H.265 (other formats are left out).
    pub codec: Codec,
    /// The `a=fmtp` parameters, without the payload type (empty when absent).
    pub fmtp: String,
}

/// Why an offer cannot be answered at all (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The body does not start like an SDP session description.
    #[error("the body is not an SDP offer (it must start with \"v=0\")")]
    NotSdp,
    /// No `m=video` section.
    #[error("the offer has no video section")]
    NoVideo,
    /// The video section does not receive (`sendonly` or `inactive`).
    #[error(
        "the offer's video section does not receive (it is {direction}); WHEP offers are recvonly"
    )]
    NotReceiving {
        /// The offered direction.
        direction: String,
    },
}

/// Reads the H.264 and H.265 formats of the offer's first video section, in the
/// browser's order of preference.
pub fn offered_video(sdp: &str) -> Result<Vec<OfferedCodec>, OfferError> {
    let mut lines = sdp.lines().map(|line| line.trim_end_matches('\r'));
    if lines.next().map(str::trim) != Some("v=0") {
        return Err(OfferError::NotSdp);
    }
    let mut in_video = false;
    let mut found_video = false;
    let mut order: Vec<u8> = Vec::new();
    let mut codecs: Vec<OfferedCodec> = Vec::new();
    let mut fmtps: Vec<(u8, String)> = Vec::new();
    for line in lines {
        if let Some(media) = line.strip_prefix("m=") {
            if found_video {
                break;
            }
            in_video = media.starts_with("video ");
            if in_video {
                found_video = true;
                // m=video <port> <proto> <fmt>...
                order = media
                    .split_ascii_whitespace()
                    .skip(3)
                    .filter_map(|pt| pt.parse().ok())
                    .collect();
            }
            continue;
        }
        if !in_video {
            continue;
        }
        if let Some(direction @ ("sendonly" | "inactive")) = line.strip_prefix("a=") {
            return Err(OfferError::NotReceiving {
                direction: direction.to_owned(),
            });
        }
        if let Some(rtpmap) = line.strip_prefix("a=rtpmap:") {
            let Some((pt, format)) = rtpmap.split_once(' ') else {
                continue;
            };
            let (Ok(payload_type), Some((name, clock))) =
                (pt.parse::<u8>(), format.trim().split_once('/'))
            else {
                continue;
            };
            let codec = if name.eq_ignore_ascii_case("H264") {
                Codec::H264
            } else if name.eq_ignore_ascii_case("H265") {
                Codec::H265
            } else {
                continue;
            };
            if clock.split('/').next() != Some("90000") {
                continue;
            }
            codecs.push(OfferedCodec {
                payload_type,
                codec,
                fmtp: String::new(),
            });
        } else if let Some(fmtp) = line.strip_prefix("a=fmtp:")
            && let Some((pt, params)) = fmtp.split_once(' ')
            && let Ok(pt) = pt.parse::<u8>()
        {
            fmtps.push((pt, params.trim().to_owned()));
        }
    }
    if !found_video {
        return Err(OfferError::NoVideo);
    }
    // Tables by payload type, so a hostile offer of thousands of lines costs linear time:
    // the first fmtp line of each type, and each type's first place on the m-line.
    let mut fmtp_of: [Option<usize>; 256] = [None; 256];
    for (index, (pt, _)) in fmtps.iter().enumerate() {
        fmtp_of[usize::from(*pt)].get_or_insert(index);
    }
    let mut rank: [Option<usize>; 256] = [None; 256];
    for (place, pt) in order.iter().enumerate() {
        rank[usize::from(*pt)].get_or_insert(place);
    }
    let mut seen = [false; 256];
    codecs.retain(|c| {
        let pt = usize::from(c.payload_type);
        rank[pt].is_some() && !std::mem::replace(&mut seen[pt], true)
    });
    for codec in &mut codecs {
        if let Some(index) = fmtp_of[usize::from(codec.payload_type)] {
            codec.fmtp.clone_from(&fmtps[index].1);
        }
    }
    codecs.sort_by_key(|c| rank[usize::from(c.payload_type)]);
    Ok(codecs)
}

/// An H.264 profile: `profile_idc` and the constraint flags (RFC 6184 §8.1's
/// `profile-level-id` without the level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Profile {
    /// `profile_idc` (66 Baseline, 77 Main, 100 High…).
    pub profile_idc: u8,
    /// `constraint_set0_flag` to `constraint_set5_flag` and the reserved bits.
    pub constraints: u8,
    /// `level_idc`.
    pub level_idc: u8,
}

/// `constraint_set1_flag`: with profile 66, the stream is Constrained Baseline.
const CONSTRAINT_SET1: u8 = 0x40;

impl H264Profile {
    /// From an SPS NAL unit (header included).
    pub fn from_sps(sps: &[u8]) -> Option<H264Profile> {
        match sps {
            [header, profile_idc, constraints, level_idc, ..]
                if header & 0x1f == h26x::h264::SPS =>
            {
                Some(H264Profile {
                    profile_idc: *profile_idc,
                    constraints: *constraints,
                    level_idc: *level_idc,
                })
            }
            _ => None,
        }
    }

    /// From an SDP `profile-level-id` (6 hex digits).
    pub fn from_profile_level_id(text: &str) -> Option<H264Profile> {
        if text.len() != 6 || !text.is_ascii() {
            return None;
        }
        let byte = |i: usize| u8::from_str_radix(&text[i..i + 2], 16).ok();
        Some(H264Profile {
            profile_idc: byte(0)?,
            constraints: byte(2)?,
            level_idc: byte(4)?,
        })
    }

    /// The profile's name.
    pub fn name(self) -> &'static str {
        match self.profile_idc {
            66 if self.constraints & CONSTRAINT_SET1 != 0 => "Constrained Baseline",
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 => "High 10",
            122 => "High 4:2:2",
            244 => "High 4:4:4 Predictive",
            _ => "unknown",
        }
    }

    /// Where the profile stands among those a decoder of a higher one also decodes
    /// (ITU-T H.264 A.2): Constrained Baseline, Baseline, Main, High, High 10, High 4:2:2,
    /// High 4:4:4. `None` for profiles outside that line (Extended, others), which only
    /// match themselves.
    fn rank(self) -> Option<u8> {
        match self.profile_idc {
            66 if self.constraints & CONSTRAINT_SET1 != 0 => Some(0),
            66 => Some(1),
            77 => Some(2),
            100 => Some(3),
            110 => Some(4),
            122 => Some(5),
            244 => Some(6),
            _ => None,
        }
    }

    /// Whether a decoder of `self` decodes a stream of `camera`: the same profile or one
    /// above it, never one below.
    fn decodes(self, camera: H264Profile) -> bool {
        match (self.rank(), camera.rank()) {
            (Some(decoder), Some(stream)) => decoder >= stream,
            _ => self.profile_idc == camera.profile_idc,
        }
    }
}

impl fmt::Display for H264Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:02x}{:02x}{:02x})",
            self.name(),
            self.profile_idc,
            self.constraints,
            self.level_idc
        )
    }
}

/// What negotiation needs to know about a camera's video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraVideo {
    /// The codec.
    pub codec: Codec,
    /// H.264: the profile of its SPS, when the camera has described one.
    pub h264: Option<H264Profile>,
    /// H.265: `general_profile_idc` of its SPS, when known.
    pub h265_profile: Option<u8>,
}

impl CameraVideo {
    /// From the channel's stream description.
    pub fn of(info: &StreamInfo) -> CameraVideo {
        let sps = |wanted: u8| {
            info.parameter_sets
                .iter()
                .find(|nal| h26x::nal_type(info.codec, nal) == Some(wanted))
        };
        match info.codec {
            Codec::H264 => CameraVideo {
                codec: Codec::H264,
                h264: sps(h26x::h264::SPS).and_then(|nal| H264Profile::from_sps(nal)),
                h265_profile: None,
            },
            Codec::H265 => CameraVideo {
                codec: Codec::H265,
                h264: None,
                h265_profile: sps(h26x::h265::SPS).and_then(|nal| h26x::h265_profile_idc(nal)),
            },
        }
    }
}

/// Why no offered format suits the camera (406): the message names what the camera
/// sends and what the browser offered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// No offered H.264 format decodes the camera's profile in packetization mode 1.
    #[error(
        "this camera sends H.264 {camera}; the browser offers no H.264 profile able to decode it (offered: {offered})"
    )]
    H264Profile {
        /// The camera's profile, named.
        camera: String,
        /// The suitable-mode profiles offered, named, or `none`.
        offered: String,
    },
    /// The camera sends H.265 and the browser offers none, or none of its profile.
    #[error(
        "this camera sends H.265 (HEVC{camera}); the browser does not offer to receive it (offered: {offered})"
    )]
    H265 {
        /// `, profile N` when known.
        camera: String,
        /// The H.265 profiles offered, or `no H.265`.
        offered: String,
    },
}

/// The offered format the answer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The browser's payload type for it.
    pub payload_type: u8,
    /// The codec.
    pub codec: Codec,
    /// The browser's `a=fmtp` parameters, answered as they are.
    pub fmtp: String,
}

/// Picks the offered format that carries the camera's stream as it is.
///
/// H.264: packetization mode 1 only (the channel re-splits into FU-A); the offered
/// profile equal to the camera's, else the lowest one above it; never one below (the
/// browser would fail to decode). A camera whose SPS is not known yet gets the highest
/// profile offered. H.265: the offered `profile-id` equal to the camera's, or Main 10 for
/// a Main camera.
pub fn choose(camera: &CameraVideo, offered: &[OfferedCodec]) -> Result<Choice, NegotiationError> {
    match camera.codec {
        Codec::H264 => choose_h264(camera.h264, offered),
        Codec::H265 => choose_h265(camera.h265_profile, offered),
    }
}

fn choose_h264(
    camera: Option<H264Profile>,
    offered: &[OfferedCodec],
) -> Result<Choice, NegotiationError> {
    let candidates: Vec<(&OfferedCodec, H264Profile)> = offered
        .iter()
        .filter(|c| c.codec == Codec::H264)
        .filter(|c| fmtp_param(&c.fmtp, "packetization-mode") == Some("1"))
        .filter_map(|c| {
            // RFC 6184 §8.1: without profile-level-id, 42000a (Baseline, level 1).
            let id = fmtp_param(&c.fmtp, "profile-level-id").unwrap_or("42000a");
            Some((c, H264Profile::from_profile_level_id(id)?))
        })
        .collect();
    let best = match camera {
        Some(camera) => candidates
            .iter()
            .filter(|(_, profile)| profile.decodes(camera))
            // The same profile first, then the closest above; the browser's order breaks ties.
            .min_by_key(|(_, profile)| (profile.profile_idc != camera.profile_idc, profile.rank())),
        None => candidates.iter().max_by_key(|(_, profile)| profile.rank()),
    };
    match best {
        Some((codec, _)) => Ok(Choice {
            payload_type: codec.payload_type,
            codec: Codec::H264,
            fmtp: codec.fmtp.clone(),
        }),
        None => {
            let mut names: Vec<String> = Vec::new();
            for (_, profile) in &candidates {
                let name = profile.to_string();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            Err(NegotiationError::H264Profile {
                camera: camera
                    .map_or_else(|| "of an unknown profile".to_owned(), |p| p.to_string()),
                offered: if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                },
            })
        }
    }
}

fn choose_h265(camera: Option<u8>, offered: &[OfferedCodec]) -> Result<Choice, NegotiationError> {
    // RFC 7798 §7.1: without profile-id, Main (1).
    let profile = |c: &OfferedCodec| {
        fmtp_param(&c.fmtp, "profile-id")
            .and_then(|p| p.parse::<u8>().ok())
            .unwrap_or(1)
    };
    let h265: Vec<&OfferedCodec> = offered.iter().filter(|c| c.codec == Codec::H265).collect();
    let best = match camera {
        Some(camera) => h265
            .iter()
            .find(|c| profile(c) == camera)
            // A Main 10 decoder decodes Main (ITU-T H.265 A.3.3).
            .or_else(|| h265.iter().find(|c| camera == 1 && profile(c) == 2)),
        None => h265.first(),
    };
    match best {
        Some(codec) => Ok(Choice {
            payload_type: codec.payload_type,
            codec: Codec::H265,
            fmtp: codec.fmtp.clone(),
        }),
        None => Err(NegotiationError::H265 {
            camera: camera.map_or_else(String::new, |p| format!(", profile {p}")),
            offered: if h265.is_empty() {
                "no H.265".to_owned()
            } else {
                h265.iter()
                    .map(|c| format!("H.265 profile {}", profile(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

/// The value of `name` in `a=fmtp` parameters (`k=v;k=v`), names case-insensitive.
fn fmtp_param<'a>(fmtp: &'a str, name: &str) -> Option<&'a str> {
    fmtp.split(';')
        .filter_map(|param| param.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim())
}

/// Writes `public` as the address of every `a=candidate` line of `sdp` (RFC 8839 §5.1:
/// the fifth field), for a gateway behind 1:1 NAT: its sockets are bound on a local
/// address the browser cannot reach. Other lines and line endings are kept.
pub fn rewrite_candidates(sdp: &str, public: IpAddr) -> String {
    let public = public.to_string();
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.split_inclusive('\n') {
        let (content, ending) = match line.strip_suffix("\r\n") {
            Some(content) => (content, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(content) => (content, "\n"),
                None => (line, ""),
            },
        };
        if content.starts_with("a=candidate:") {
            let mut fields: Vec<&str> = content.split(' ').collect();
            if let Some(address) = fields.get_mut(4) {
                *address = &public;
            }
            out.push_str(&fields.join(" "));
        } else {
            out.push_str(content);
        }
        out.push_str(ending);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The video section of a Chromium offer (headless Chromium 156: no High profile, no
    /// H.265), abridged to the H.264 formats and one VP8.
    const CHROMIUM_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 103 104 107 108 109 114 115 116 117 118\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=recvonly\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:103 H264/90000\r\n\
a=fmtp:103 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:104 rtx/90000\r\n\
a=fmtp:104 apt=103\r\n\
a=rtpmap:107 H264/90000\r\n\
a=fmtp:107 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
a=rtpmap:108 H264/90000\r\n\
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:109 H264/90000\r\n\
a=fmtp:109 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
a=rtpmap:114 H264/90000\r\n\
a=fmtp:114 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r\n\
a=rtpmap:115 H264/90000\r\n\
a=fmtp:115 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f\r\n\
a=rtpmap:116 H264/90000\r\n\
a=fmtp:116 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=f4001f\r\n\
a=rtpmap:117 H264/90000\r\n\
a=fmtp:117 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=f4001f\r\n\
a=rtpmap:118 red/90000\r\n";

    fn h264_camera(sps_head: [u8; 4]) -> CameraVideo {
        CameraVideo::of(&StreamInfo {
            codec: Codec::H264,
            clock_rate: 90_000,
            parameter_sets: vec![
                Bytes::copy_from_slice(&[&sps_head[..], &[0xd9, 0x00]].concat()),
                Bytes::from_static(&[0x68, 0xeb]),
            ],
        })
    }

    fn offer(formats: &[(u8, &str, &str)]) -> String {
        let pts: Vec<String> = formats.iter().map(|(pt, _, _)| pt.to_string()).collect();
        let mut sdp = format!(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF {}\r\na=recvonly\r\n",
            pts.join(" ")
        );
        for (pt, name, fmtp) in formats {
            sdp.push_str(&format!("a=rtpmap:{pt} {name}/90000\r\n"));
            if !fmtp.is_empty() {
                sdp.push_str(&format!("a=fmtp:{pt} {fmtp}\r\n"));
            }
        }
        sdp
    }

    #[test]
    fn the_offer_lists_h264_and_h265_in_the_browsers_order() {
        let offered = offered_video(CHROMIUM_OFFER).unwrap();
        let pts: Vec<u8> = offered.iter().map(|c| c.payload_type).collect();
        assert_eq!(pts, vec![103, 107, 108, 109, 114, 115, 116, 117]);
        assert!(offered.iter().all(|c| c.codec == Codec::H264));
        assert_eq!(
            offered[4].fmtp,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f"
        );
        let h265 = offered_video(&offer(&[(98, "H265", "profile-id=1"), (96, "VP8", "")])).unwrap();
        assert_eq!(
            h265,
            vec![OfferedCodec {
                payload_type: 98,
                codec: Codec::H265,
                fmtp: "profile-id=1".into()
            }]
        );
    }

    #[test]
    fn a_hostile_offer_keeps_each_payload_type_once_with_its_first_fmtp() {
        let mut sdp = String::from("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF");
        for i in 0..10_000 {
            sdp.push_str(&format!(" {}", 96 + i % 8));
        }
        sdp.push_str("\r\n");
        for i in 0..1_400 {
            let pt = 96 + i % 8;
            sdp.push_str(&format!(
                "a=rtpmap:{pt} H264/90000\r\na=fmtp:{pt} packetization-mode=1;n={i}\r\n"
            ));
        }
        let offered = offered_video(&sdp).unwrap();
        let pts: Vec<u8> = offered.iter().map(|c| c.payload_type).collect();
        assert_eq!(pts, (96..104).collect::<Vec<u8>>());
        assert_eq!(offered[0].fmtp, "packetization-mode=1;n=0");
    }

    #[test]
    fn offers_that_cannot_be_answered_are_named() {
        assert_eq!(offered_video("hello"), Err(OfferError::NotSdp));
        assert_eq!(
            offered_video("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"),
            Err(OfferError::NoVideo)
        );
        let sending = CHROMIUM_OFFER.replace("a=recvonly", "a=sendonly");
        assert_eq!(
            offered_video(&sending),
            Err(OfferError::NotReceiving {
                direction: "sendonly".into()
            })
        );
        // Only the first video section counts; an audio section before it is skipped.
        let two = "v=0\nm=audio 9 X 111\na=rtpmap:111 H264/90000\nm=video 9 X 100\na=rtpmap:100 H264/90000\nm=video 9 X 101\na=rtpmap:101 H265/90000\n";
        let offered = offered_video(two).unwrap();
        assert_eq!(offered.len(), 1);
        assert_eq!(offered[0].payload_type, 100);
    }

    #[test]
    fn the_answer_keeps_the_cameras_h264_profile() {
        let offered = offered_video(CHROMIUM_OFFER).unwrap();
        // The Main fixture's SPS (4d401e): Chromium's Main, mode 1.
        let main = choose(&h264_camera([0x67, 0x4d, 0x40, 0x1e]), &offered).unwrap();
        assert_eq!(main.payload_type, 114);
        assert!(
            main.fmtp.contains("profile-level-id=4d001f"),
            "{}",
            main.fmtp
        );
        // The Baseline fixture's SPS (42c01e) is Constrained Baseline: 42e01f, not 42001f.
        let cb = choose(&h264_camera([0x67, 0x42, 0xc0, 0x1e]), &offered).unwrap();
        assert_eq!(cb.payload_type, 108);
        // Plain Baseline: its own profile.
        let baseline = choose(&h264_camera([0x67, 0x42, 0x00, 0x1e]), &offered).unwrap();
        assert_eq!(baseline.payload_type, 103);
        // High, not offered: the nearest profile above it (High 4:4:4 Predictive).
        let high = choose(&h264_camera([0x67, 0x64, 0x00, 0x28]), &offered).unwrap();
        assert_eq!(high.payload_type, 116);
        // With High offered, High.
        let with_high = offered_video(&offer(&[
            (100, "H264", "packetization-mode=1;profile-level-id=f4001f"),
            (102, "H264", "packetization-mode=1;profile-level-id=64001f"),
        ]))
        .unwrap();
        let high = choose(&h264_camera([0x67, 0x64, 0x00, 0x28]), &with_high).unwrap();
        assert_eq!(high.payload_type, 102);
        // A Constrained Baseline camera and only Main offered: Main decodes it.
        let main_only = offered_video(&offer(&[(
            100,
            "H264",
            "packetization-mode=1;profile-level-id=4d001f",
        )]))
        .unwrap();
        let cb = choose(&h264_camera([0x67, 0x42, 0xe0, 0x1f]), &main_only).unwrap();
        assert_eq!(cb.payload_type, 100);
    }

    #[test]
    fn a_lower_profile_or_mode_0_only_is_refused_naming_the_cameras_profile() {
        let cb_only = offered_video(&offer(&[
            (100, "H264", "packetization-mode=1;profile-level-id=42e01f"),
            (101, "H264", "packetization-mode=0;profile-level-id=4d001f"),
        ]))
        .unwrap();
        let error = choose(&h264_camera([0x67, 0x4d, 0x40, 0x1e]), &cb_only).unwrap_err();
        assert_eq!(
            error.to_string(),
            "this camera sends H.264 Main (4d401e); the browser offers no H.264 profile able to decode it (offered: Constrained Baseline (42e01f))"
        );
        let vp8 = offered_video(&offer(&[(96, "VP8", "")])).unwrap();
        let error = choose(&h264_camera([0x67, 0x42, 0xc0, 0x1e]), &vp8).unwrap_err();
        assert!(error.to_string().ends_with("(offered: none)"), "{error}");
        // Extended matches only itself.
        let error = choose(
            &h264_camera([0x67, 0x58, 0x00, 0x1e]),
            &offered_video(CHROMIUM_OFFER).unwrap(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("Extended (58001e)"), "{error}");
    }

    #[test]
    fn a_camera_without_a_known_sps_gets_the_highest_profile_offered() {
        let unknown = CameraVideo {
            codec: Codec::H264,
            h264: None,
            h265_profile: None,
        };
        let choice = choose(&unknown, &offered_video(CHROMIUM_OFFER).unwrap()).unwrap();
        assert_eq!(choice.payload_type, 116);
    }

    #[test]
    fn h265_is_answered_only_when_offered() {
        let camera = CameraVideo::of(&StreamInfo {
            codec: Codec::H265,
            clock_rate: 90_000,
            parameter_sets: vec![Bytes::from_static(&[0x42, 0x01, 0x01, 0x01, 0x60])],
        });
        assert_eq!(camera.h265_profile, Some(1));
        let offered = offered_video(&offer(&[
            (96, "VP8", ""),
            (
                98,
                "H265",
                "level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST",
            ),
        ]))
        .unwrap();
        let choice = choose(&camera, &offered).unwrap();
        assert_eq!((choice.payload_type, choice.codec), (98, Codec::H265));
        let main10 = offered_video(&offer(&[(99, "H265", "profile-id=2")])).unwrap();
        assert_eq!(choose(&camera, &main10).unwrap().payload_type, 99);
        let error = choose(&camera, &offered_video(CHROMIUM_OFFER).unwrap()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "this camera sends H.265 (HEVC, profile 1); the browser does not offer to receive it (offered: no H.265)"
        );
    }

    #[test]
    fn candidates_get_the_public_address_and_nothing_else_changes() {
        let answer = "v=0\r\nc=IN IP4 0.0.0.0\r\na=candidate:1 1 udp 2130706431 192.168.1.20 31004 typ host\r\na=candidate:1 2 udp 2130706431 192.168.1.20 31004 typ host\r\na=end-of-candidates\r\n";
        let public: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            rewrite_candidates(answer, public),
            "v=0\r\nc=IN IP4 0.0.0.0\r\na=candidate:1 1 udp 2130706431 203.0.113.9 31004 typ host\r\na=candidate:1 2 udp 2130706431 203.0.113.9 31004 typ host\r\na=end-of-candidates\r\n"
        );
        let v6: IpAddr = "2001:db8::9".parse().unwrap();
        assert_eq!(
            rewrite_candidates("a=candidate:7 1 udp 1 ::1 5 typ host\n", v6),
            "a=candidate:7 1 udp 1 2001:db8::9 5 typ host\n"
        );
    }
}
