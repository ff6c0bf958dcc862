//! The SDP of a DESCRIBE answer (RFC 4566 as profiled by RFC 2326 Appendix C).
//!
//! One `m=` section per track, payload type `96 + N` for track N, `a=control:track=N`
//! relative to the `Content-Base` the server sends (`rtsp://HOST/<camera-id>/`), so
//! track URLs end in `/track=N`; `a=control:*` at session level is the aggregate URL.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::media::h26x::format_fmtp;
use crate::media::{Codec, StreamInfo};

/// The dynamic RTP payload type of track `index` (RFC 3551 §6: 96-127 are dynamic).
/// The gateway publishes video only, as track 0, so its payload type is always 96.
pub fn payload_type(index: usize) -> u8 {
    // At most 32 tracks fit the dynamic range; the server never mounts more than a few.
    96 + (index.min(31) as u8)
}

/// The SDP describing `tracks` of `camera`, offered from `origin` (the server's address
/// on this connection). `session_id` goes in the `o=` line.
pub fn describe(camera: &str, origin: IpAddr, session_id: u64, tracks: &[StreamInfo]) -> String {
    let (net, addr, any) = match origin {
        IpAddr::V4(a) => ("IP4", a.to_string(), "0.0.0.0"),
        IpAddr::V6(a) => ("IP6", a.to_string(), "::"),
    };
    let mut s = String::with_capacity(512);
    // Writing to a String cannot fail: the results below are ignored for that reason.
    let _ = write!(
        s,
        "v=0\r\n\
         o=- {session_id} 1 IN {net} {addr}\r\n\
         s={camera}\r\n\
         c=IN {net} {any}\r\n\
         t=0 0\r\n\
         a=tool:passerelle\r\n\
         a=range:npt=now-\r\n\
         a=control:*\r\n"
    );
    for (index, info) in tracks.iter().enumerate() {
        let pt = payload_type(index);
        let media = match info.codec {
            Codec::H264 | Codec::H265 => "video",
        };
        let _ = write!(
            s,
            "m={media} 0 RTP/AVP {pt}\r\n\
             a=rtpmap:{pt} {}/{}\r\n",
            info.codec.encoding_name(),
            info.clock_rate
        );
        let fmtp = format_fmtp(info.codec, &info.parameter_sets);
        if !fmtp.is_empty() {
            let _ = write!(s, "a=fmtp:{pt} {fmtp}\r\n");
        }
        let _ = write!(s, "a=control:track={index}\r\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn h264_sdp_carries_parameter_sets_and_track_control() {
        // Foscam's SPS/PPS (retina fixture foscam_describe.txt).
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let sps = Bytes::from(b64.decode("Z00AH5WoFAFuQA==").unwrap());
        let pps = Bytes::from(b64.decode("aO48gA==").unwrap());
        let info = StreamInfo {
            codec: Codec::H264,
            clock_rate: 90_000,
            parameter_sets: vec![sps, pps],
        };
        let sdp = describe("metz/cam-1", "192.0.2.1".parse().unwrap(), 42, &[info]);
        let lines: Vec<&str> = sdp.split("\r\n").collect();
        assert_eq!(lines[0], "v=0");
        assert!(lines.contains(&"o=- 42 1 IN IP4 192.0.2.1"));
        assert!(lines.contains(&"s=metz/cam-1"));
        assert!(lines.contains(&"a=control:*"));
        assert!(lines.contains(&"m=video 0 RTP/AVP 96"));
        assert!(lines.contains(&"a=rtpmap:96 H264/90000"));
        assert!(lines.contains(
            &"a=fmtp:96 packetization-mode=1;profile-level-id=4d001f;sprop-parameter-sets=Z00AH5WoFAFuQA==,aO48gA=="
        ));
        assert!(lines.contains(&"a=control:track=0"));
        assert!(sdp.ends_with("\r\n"));
    }

    #[test]
    fn h265_sdp_carries_vps_sps_pps() {
        let vps = Bytes::from_static(&[0x40, 0x01, 0x0c]);
        let sps = Bytes::from_static(&[0x42, 0x01, 0x01]);
        let pps = Bytes::from_static(&[0x44, 0x01, 0xc1]);
        let info = StreamInfo {
            codec: Codec::H265,
            clock_rate: 90_000,
            parameter_sets: vec![vps, sps, pps],
        };
        let two = [info.clone(), info];
        let sdp = describe("sncf/woippy/quai", "2001:db8::1".parse().unwrap(), 1, &two);
        assert!(sdp.contains("o=- 1 1 IN IP6 2001:db8::1\r\n"));
        assert!(sdp.contains("c=IN IP6 ::\r\n"));
        assert!(sdp.contains("a=rtpmap:96 H265/90000\r\n"));
        assert!(sdp.contains("a=fmtp:96 sprop-vps=QAEM;sprop-sps=QgEB;sprop-pps=RAHB\r\n"));
        // A second track gets its own payload type and control URL.
        assert!(sdp.contains("m=video 0 RTP/AVP 97\r\na=rtpmap:97 H265/90000\r\n"));
        assert!(sdp.contains("a=control:track=1\r\n"));
    }

    #[test]
    fn h264_without_parameter_sets_still_says_mode_1() {
        let info = StreamInfo {
            codec: Codec::H264,
            clock_rate: 90_000,
            parameter_sets: vec![],
        };
        let sdp = describe("c", "127.0.0.1".parse().unwrap(), 1, &[info]);
        assert!(sdp.contains("a=fmtp:96 packetization-mode=1\r\n"), "{sdp}");
    }
}
