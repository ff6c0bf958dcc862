//! RTP and RTCP from cameras and peers: `RtpPacket::parse`, `parse_rtcp`, H.264/H.265
//! payload classification and re-splitting, and the SDP `a=fmtp` parser.
//!
//! Input: `[control, max_hi, max_lo, bytes...]`. Control bit 0 picks the codec (0 H.264,
//! 1 H.265), bit 1 the input's marker bit. `bytes` is parsed as an RTP packet and as an
//! RTCP compound packet; the RTP payload (or `bytes` itself when it is not valid RTP) goes
//! through `classify` and `Resplitter::resplit` with a maximum payload of
//! `u16(max_hi, max_lo) % (len + 8)`, so most inputs are split and a few pass through.
//!
//! Checked beyond "no panic": an RTP header written back parses to the same fields; every
//! re-split output fits the maximum, classifies, carries the input's timestamp, marker
//! on the last output only and keyframe flag on the first only, and the outputs
//! depacketize to exactly the input's NAL units (or fragment data); an fmtp line's
//! parameter sets survive `format_fmtp` and a second parse.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use passerelle::media::h26x::{self, PayloadKind};
use passerelle::media::resplit::Resplitter;
use passerelle::media::rtp::{self, RtcpPacket, RtpPacket};
use passerelle::media::{Codec, MediaPacket};
use passerelle::roq;
use passerelle_fuzz::{Depacketizer, skipped};

fuzz_target!(|data: &[u8]| {
    let [control, max_hi, max_lo, bytes @ ..] = data else {
        return;
    };
    let codec = if control & 1 == 0 {
        Codec::H264
    } else {
        Codec::H265
    };
    let marker = control & 2 != 0;

    rtcp(bytes);
    let _ = roq::is_rtcp(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        fmtp(codec, text);
    }

    let packet = Bytes::copy_from_slice(bytes);
    let payload = match RtpPacket::parse(&packet) {
        Ok(p) => {
            check_rtp(&packet, &p);
            p.into_payload()
        }
        Err(_) => packet,
    };
    let max_payload = usize::from(u16::from_be_bytes([*max_hi, *max_lo])) % (payload.len() + 8);
    resplit(codec, payload, marker, max_payload);
});

fn rtcp(bytes: &[u8]) {
    let mut failed = false;
    for p in rtp::parse_rtcp(bytes) {
        assert!(!failed, "parse_rtcp went on after an error");
        match p {
            Ok(RtcpPacket::Fir(fir)) => {
                for entry in fir.entries() {
                    std::hint::black_box(entry);
                }
            }
            Ok(p) => {
                std::hint::black_box(p.is_keyframe_request());
            }
            Err(_) => failed = true,
        }
    }
}

fn check_rtp(packet: &Bytes, p: &RtpPacket) {
    let header_len = p.header_len();
    assert!(header_len >= rtp::RTP_HEADER_LEN);
    assert!(header_len + p.payload().len() <= packet.len());
    assert_eq!(
        &packet[header_len..header_len + p.payload().len()],
        &p.payload()[..]
    );
    let written = Bytes::copy_from_slice(&p.header().to_bytes());
    let again = RtpPacket::parse(&written).expect("a written header parses");
    assert_eq!(again.header(), p.header());
    assert!(again.payload().is_empty());
}

fn fmtp(codec: Codec, text: &str) {
    let Ok(info) = h26x::parse_fmtp(codec, text) else {
        return;
    };
    if skipped("fmtp-order") && !in_decoding_order(codec, &info.parameter_sets) {
        // fuzz/regressions/rtp/fmtp-h265-sps-as-vps: kept in the order of the keys.
        return;
    }
    let line = h26x::format_fmtp(codec, &info.parameter_sets);
    let again = h26x::parse_fmtp(codec, &line)
        .unwrap_or_else(|e| panic!("format_fmtp wrote {line:?}, which parses as {e}"));
    assert_eq!(again.parameter_sets, info.parameter_sets, "line {line:?}");
}

/// H.265 parameter sets as `StreamInfo` documents them: VPS, then SPS, then PPS.
fn in_decoding_order(codec: Codec, sets: &[Bytes]) -> bool {
    let types: Vec<u8> = sets
        .iter()
        .filter_map(|s| h26x::nal_type(codec, s))
        .collect();
    codec == Codec::H264 || types.is_sorted()
}

fn resplit(codec: Codec, payload: Bytes, marker: bool, max_payload: usize) {
    let info = h26x::classify(codec, &payload).ok();
    if let Some(info) = info {
        // The NAL units a receiver extracts, for the aggregation check below.
        for nal in h26x::nal_units(codec, &payload) {
            assert!(!nal.is_empty());
        }
        for set in h26x::parameter_sets(codec, &payload) {
            assert!(h26x::nal_type(codec, &set).is_some_and(|t| h26x::is_parameter_set(codec, t)));
        }
        std::hint::black_box(info);
    }
    let input = MediaPacket {
        payload: payload.clone(),
        timestamp: 0x1234_5678,
        marker,
        keyframe_start: info.is_some_and(|i| i.keyframe_start),
        parameter_set: info.is_some_and(|i| i.parameter_set),
    };
    let mut outputs = Vec::new();
    let result = Resplitter::new().resplit(codec, &input, max_payload, &mut |p| outputs.push(p));
    let extra = match result {
        Ok(extra) => extra,
        Err(_) => {
            assert!(outputs.is_empty(), "outputs emitted before an error");
            assert!(payload.len() > max_payload, "error on a payload that fits");
            return;
        }
    };
    assert_eq!(outputs.len(), extra + 1);
    if payload.len() <= max_payload {
        assert_eq!(
            outputs,
            [input],
            "a payload that fits passes through unchanged"
        );
        return;
    }
    let info = info.expect("resplit accepted a payload classify refuses");
    if skipped("aggregation-unit-types") && has_aggregated_non_single_unit(codec, &payload) {
        // fuzz/regressions/rtp/stap-a-unit-*: such a unit goes out on its own as a
        // packet of another kind (or none).
        return;
    }
    let last = outputs.len() - 1;
    for (i, out) in outputs.iter().enumerate() {
        assert!(
            out.payload.len() <= max_payload,
            "output {i} has {} bytes, max {max_payload}",
            out.payload.len()
        );
        assert_eq!(out.timestamp, input.timestamp);
        assert_eq!(
            out.marker,
            i == last && input.marker,
            "marker on output {i}"
        );
        assert_eq!(
            out.keyframe_start,
            i == 0 && input.keyframe_start,
            "keyframe_start on output {i}"
        );
    }
    let hl = h26x::nal_header_len(codec);
    match info.kind {
        PayloadKind::Single { .. } => {
            let nals = depacketize(codec, &outputs);
            assert_eq!(nals, [payload.to_vec()]);
        }
        PayloadKind::Aggregation { .. } => {
            let nals = depacketize(codec, &outputs);
            let expected: Vec<Vec<u8>> = h26x::nal_units(codec, &payload)
                .map(|n| n.to_vec())
                .collect();
            assert_eq!(nals, expected);
        }
        PayloadKind::Fragment {
            nal_type,
            start,
            end,
        } => {
            let mut data = Vec::new();
            for (i, out) in outputs.iter().enumerate() {
                let p = &out.payload;
                assert_eq!(&p[..hl], &payload[..hl], "payload header of output {i}");
                let fu = p[hl];
                assert_eq!(fu & 0x3f, payload[hl] & 0x3f, "FU type of output {i}");
                assert_eq!(fu & 0x80 != 0, i == 0 && start, "S bit of output {i}");
                assert_eq!(fu & 0x40 != 0, i == last && end, "E bit of output {i}");
                match h26x::classify(codec, p).map(|i| i.kind) {
                    Ok(PayloadKind::Fragment { nal_type: t, .. }) => assert_eq!(t, nal_type),
                    other => panic!("output {i} is not a fragment: {other:?}"),
                }
                data.extend_from_slice(&p[hl + 1..]);
            }
            assert_eq!(data, payload[hl + 1..], "fragment data");
        }
    }
}

/// An aggregation unit whose NAL type is not one a single NAL unit packet may carry
/// (H.264 1-23, RFC 6184 §5.7; H.265 0-47, RFC 7798 §4.4.2).
fn has_aggregated_non_single_unit(codec: Codec, payload: &Bytes) -> bool {
    if !matches!(
        h26x::classify(codec, payload).map(|i| i.kind),
        Ok(PayloadKind::Aggregation { .. })
    ) {
        return false;
    }
    h26x::nal_units(codec, payload).any(|nal| {
        let t = h26x::nal_type(codec, &nal).unwrap_or_default();
        match codec {
            Codec::H264 => !(1..=23).contains(&t),
            Codec::H265 => t > 47,
        }
    })
}

fn depacketize(codec: Codec, outputs: &[MediaPacket]) -> Vec<Vec<u8>> {
    let mut d = Depacketizer::default();
    for out in outputs {
        d.push(codec, &out.payload);
    }
    assert!(d.open.is_none(), "a fragment run was left open");
    d.nals
}
