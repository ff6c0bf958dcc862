//! Picks the video stream to pull from a camera's DESCRIBE answer.
//!
//! The RTSP client lists the streams it could parse; the raw SDP gives each one's
//! `a=fmtp` line, where the parameter sets are. Only the first H.264 or H.265 video
//! stream passerelle can carry is set up: audio and metadata never are (recording sound
//! is outside video-protection authorisations).

use bytes::Bytes;

use crate::media::Codec;
use crate::media::h26x::{self, FmtpError};

/// One stream as the RTSP client parsed it, in SDP order (unparseable `m=` sections
/// left out).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offered<'a> {
    /// `video`, `audio`, `application`...
    pub(crate) media: &'a str,
    /// The encoding name, any case (`H264`, `h265`, `PCMA`).
    pub(crate) encoding: &'a str,
    pub(crate) payload_type: u8,
    /// Its control URL, as the client resolved it.
    pub(crate) control: Option<&'a str>,
}

/// The stream to set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VideoChoice {
    /// Its index among the offered streams.
    pub(crate) index: usize,
    pub(crate) codec: Codec,
    /// From the `a=fmtp` line; empty when the camera sends them in band only.
    pub(crate) parameter_sets: Vec<Bytes>,
    /// An `a=fmtp` line that could not be read; the stream is still usable, its
    /// parameter sets will come in band.
    pub(crate) fmtp_problem: Option<FmtpError>,
}

/// Chooses the first carriable video stream of `offered`, described by `sdp`. On
/// failure, says what was offered and why each video stream was refused, for the log.
pub(crate) fn choose_video(offered: &[Offered<'_>], sdp: &[u8]) -> Result<VideoChoice, String> {
    let sdp = String::from_utf8_lossy(sdp);
    let sections = media_sections(&sdp);
    let mut cursor = 0;
    let mut refused = Vec::new();
    for (index, stream) in offered.iter().enumerate() {
        // The client keeps SDP order and only drops sections: match greedily.
        let fmtp = match sections[cursor..].iter().position(|s| s.describes(stream)) {
            Some(found) => {
                let section = &sections[cursor + found];
                cursor += found + 1;
                section.fmtp(stream.payload_type)
            }
            None => None,
        };
        let what = format!("{}/{}", stream.media, stream.encoding.to_ascii_lowercase());
        let codec = match (stream.media, stream.encoding.to_ascii_lowercase().as_str()) {
            ("video", "h264") => Codec::H264,
            ("video", "h265") => Codec::H265,
            _ => {
                refused.push(what);
                continue;
            }
        };
        let parsed = fmtp.map(|line| h26x::parse_fmtp(codec, line));
        match parsed {
            None => {
                return Ok(VideoChoice {
                    index,
                    codec,
                    parameter_sets: Vec::new(),
                    fmtp_problem: None,
                });
            }
            Some(Ok(info)) => {
                return Ok(VideoChoice {
                    index,
                    codec,
                    parameter_sets: info.parameter_sets,
                    fmtp_problem: None,
                });
            }
            Some(Err(
                error @ (FmtpError::InterleavedH264 { .. } | FmtpError::DonlNotSupported { .. }),
            )) => refused.push(format!("{what} ({error})")),
            Some(Err(error)) => {
                return Ok(VideoChoice {
                    index,
                    codec,
                    parameter_sets: Vec::new(),
                    fmtp_problem: Some(error),
                });
            }
        }
    }
    if refused.is_empty() {
        Err("no stream".to_owned())
    } else {
        Err(refused.join(", "))
    }
}

/// One `m=` section of an SDP (RFC 8866 §5.14).
#[derive(Debug)]
struct MediaSection<'a> {
    media: &'a str,
    /// The first format of the `m=` line: the payload type used by default.
    payload_type: Option<u8>,
    /// Whether the transport is RTP: the client drops other sections.
    rtp: bool,
    /// The `a=control:` value, relative or absolute.
    control: Option<&'a str>,
    /// `a=fmtp:` values (payload type, then parameters), as written.
    fmtps: Vec<&'a str>,
}

impl<'a> MediaSection<'a> {
    /// Whether this section is the one the client parsed into `stream`.
    fn describes(&self, stream: &Offered<'_>) -> bool {
        let same_control = match (self.control, stream.control) {
            (Some(ours), Some(resolved)) => resolved.ends_with(ours),
            _ => true,
        };
        self.rtp
            && self.media.eq_ignore_ascii_case(stream.media)
            && self.payload_type == Some(stream.payload_type)
            && same_control
    }

    /// The `a=fmtp` value for `payload_type`, payload type included.
    fn fmtp(&self, payload_type: u8) -> Option<&'a str> {
        self.fmtps.iter().copied().find(|value| {
            value
                .split_whitespace()
                .next()
                .and_then(|pt| pt.parse::<u8>().ok())
                == Some(payload_type)
        })
    }
}

fn media_sections(sdp: &str) -> Vec<MediaSection<'_>> {
    let mut sections: Vec<MediaSection<'_>> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split_whitespace();
            // m=<media> <port> <proto> <fmt> ...
            let media = fields.next().unwrap_or_default();
            let proto = fields.nth(1).unwrap_or_default();
            let payload_type = fields.next().and_then(|pt| pt.parse().ok());
            sections.push(MediaSection {
                media,
                payload_type,
                // The client's own test (RFC 8866 §5.14 and its MP2T extension).
                rtp: proto.starts_with("RTP/")
                    || proto.contains("/RTP/")
                    || proto.contains("MP2T/"),
                control: None,
                fmtps: Vec::new(),
            });
        } else if let Some(section) = sections.last_mut() {
            if let Some(fmtp) = line.strip_prefix("a=fmtp:") {
                section.fmtps.push(fmtp);
            } else if let Some(control) = line.strip_prefix("a=control:") {
                section.control = Some(control.trim());
            }
        }
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Dahua camera with H.265 video and G.711 audio (retina fixture
    /// `dahua_describe_h265_pcma.txt`, abridged), with the audio moved first.
    const AUDIO_FIRST: &str = "v=0\r\n\
        o=- 2252310609 2252310609 IN IP4 0.0.0.0\r\n\
        s=Media Server\r\n\
        c=IN IP4 0.0.0.0\r\n\
        t=0 0\r\n\
        a=control:*\r\n\
        m=audio 0 RTP/AVP 8\r\n\
        a=control:trackID=1\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        m=video 0 RTP/AVP 98\r\n\
        a=control:trackID=0\r\n\
        a=rtpmap:98 H265/90000\r\n\
        a=fmtp:98 profile-id=1;sprop-sps=QgEBAWAAAAMAsAAAAwAAAwBaoAWCAJBY2uSTL5A=;sprop-pps=RAHA8vA8kAA=;sprop-vps=QAEMAf//AWAAAAMAsAAAAwAAAwBarAk=\r\n\
        m=application 0 RTP/AVP 107\r\n\
        a=control:trackID=4\r\n\
        a=rtpmap:107 vnd.onvif.metadata/90000\r\n";

    fn offered<'a>(list: &[(&'a str, &'a str, u8)]) -> Vec<Offered<'a>> {
        list.iter()
            .map(|&(media, encoding, payload_type)| Offered {
                media,
                encoding,
                payload_type,
                control: None,
            })
            .collect()
    }

    #[test]
    fn the_video_stream_is_chosen_past_audio_with_its_parameter_sets() {
        let streams = offered(&[
            ("audio", "pcma", 8),
            ("video", "h265", 98),
            ("application", "vnd.onvif.metadata", 107),
        ]);
        let choice = choose_video(&streams, AUDIO_FIRST.as_bytes()).unwrap();
        assert_eq!(choice.index, 1);
        assert_eq!(choice.codec, Codec::H265);
        let types: Vec<_> = choice
            .parameter_sets
            .iter()
            .map(|nal| h26x::nal_type(Codec::H265, nal).unwrap())
            .collect();
        assert_eq!(types, [32, 33, 34], "VPS, SPS, PPS in decoding order");
        assert_eq!(choice.fmtp_problem, None);
    }

    #[test]
    fn no_video_says_what_was_offered() {
        let sdp = "v=0\r\nm=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n\
                   m=video 0 RTP/AVP 26\r\n";
        let streams = offered(&[("audio", "PCMA", 8), ("video", "JPEG", 26)]);
        let refusal = choose_video(&streams, sdp.as_bytes()).unwrap_err();
        assert_eq!(refusal, "audio/pcma, video/jpeg");
    }

    #[test]
    fn interleaved_streams_are_skipped_for_a_later_usable_one() {
        let sdp = "v=0\r\n\
                   m=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\na=fmtp:96 sprop-max-don-diff=2\r\n\
                   m=video 0 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n\
                   a=fmtp:97 packetization-mode=1;sprop-parameter-sets=Z00AH5WoFAFuQA==,aO48gA==\r\n";
        let streams = offered(&[("video", "h265", 96), ("video", "h264", 97)]);
        let choice = choose_video(&streams, sdp.as_bytes()).unwrap();
        assert_eq!((choice.index, choice.codec), (1, Codec::H264));
        assert_eq!(choice.parameter_sets.len(), 2);
        let only_bad = &streams[..1];
        let refusal = choose_video(only_bad, sdp.as_bytes()).unwrap_err();
        assert!(
            refusal.starts_with("video/h265 (H.265 sprop-max-don-diff=2"),
            "{refusal}"
        );
    }

    #[test]
    fn a_stream_the_client_dropped_does_not_shift_the_fmtp_lines() {
        // The first section is not RTP, the second has no rtpmap for its dynamic payload
        // type: the client leaves both out of its list.
        let sdp = "v=0\r\n\
                   m=video 0 UDP/XYZ 96\r\na=control:track=0\r\na=fmtp:96 sprop-parameter-sets=AAAA\r\n\
                   m=video 0 RTP/AVP 96\r\na=control:track=1\r\na=fmtp:96 sprop-parameter-sets=%%\r\n\
                   m=video 0 RTP/AVP 96\r\na=control:track=2\r\na=rtpmap:96 H264/90000\r\n\
                   a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z00AH5WoFAFuQA==,aO48gA==\r\n";
        let mut streams = offered(&[("video", "h264", 96)]);
        streams[0].control = Some("rtsp://192.0.2.1/cam/track=2");
        let choice = choose_video(&streams, sdp.as_bytes()).unwrap();
        assert_eq!(choice.index, 0);
        assert_eq!(choice.parameter_sets.len(), 2, "{choice:?}");
        assert_eq!(choice.fmtp_problem, None);
    }

    #[test]
    fn bad_base64_keeps_the_stream_without_sdp_parameter_sets() {
        let sdp = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
                   a=fmtp:96 packetization-mode=1;sprop-parameter-sets=%%%%\r\n";
        let streams = offered(&[("video", "H264", 96)]);
        let choice = choose_video(&streams, sdp.as_bytes()).unwrap();
        assert!(choice.parameter_sets.is_empty());
        assert!(matches!(
            choice.fmtp_problem,
            Some(FmtpError::BadBase64 { .. })
        ));
        // No fmtp line at all: in-band parameter sets only, no problem to report.
        let bare = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        let choice = choose_video(&streams, bare.as_bytes()).unwrap();
        assert_eq!(choice.fmtp_problem, None);
    }
}
