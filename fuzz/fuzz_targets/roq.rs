//! RTP over QUIC from partner gateways: `decode_datagram` and `StreamDecoder`.
//!
//! Input: `[control, bytes...]` (see `passerelle_fuzz::Control`). `bytes` is decoded as
//! one DATAGRAM, and as a unidirectional stream fed in the chunks the control byte picks.
//! The flag bit sets a 32-byte packet limit instead of the default 65 535.
//!
//! Checked beyond "no panic": a datagram's flow id is a valid varint and re-encodes to a
//! datagram that decodes the same; the stream decoder gives the same packets, flow id and
//! final error whether chunks are drained one by one, fed all before draining, or the
//! stream comes whole; the packets re-encoded by `StreamEncoder` decode back the same.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use passerelle::roq::{
    self, DEFAULT_MAX_STREAM_PACKET_LEN, RoqError, StreamDecoder, StreamEncoder, VARINT_MAX,
};
use passerelle_fuzz::Control;

fuzz_target!(|data: &[u8]| {
    let Some((control, bytes)) = Control::split(data) else {
        return;
    };
    datagram(bytes);

    let max = if control.flag() {
        32
    } else {
        DEFAULT_MAX_STREAM_PACKET_LEN
    };
    let chunks = control.chunks(bytes);
    let drained = decode(&chunks, max, true);
    let undrained = decode(&chunks, max, false);
    let whole = decode(&[bytes], max, true);
    assert_eq!(drained, whole, "chunking changed the outcome");
    assert_eq!(
        undrained, whole,
        "feeding before draining changed the outcome"
    );

    // What was read re-encodes to a stream that reads back the same.
    if let Some(flow_id) = whole.flow_id {
        let mut encoder = StreamEncoder::new(flow_id).expect("a decoded flow id is valid");
        let mut out = BytesMut::new();
        for packet in &whole.packets {
            encoder
                .encode_packet_into(packet, &[], &mut out)
                .expect("a decoded packet encodes");
        }
        let out = out.freeze();
        let again = decode(&[&out[..]], max, true);
        if whole.packets.is_empty() {
            // Nothing written: not even the flow id.
            assert!(out.is_empty());
        } else {
            assert_eq!(again.flow_id, Some(flow_id));
            assert_eq!(again.packets, whole.packets);
            assert_eq!(again.end, Ok(()));
        }
    }
});

fn datagram(bytes: &[u8]) {
    let Ok((flow_id, packet)) = roq::decode_datagram(Bytes::copy_from_slice(bytes)) else {
        return;
    };
    assert!(flow_id <= VARINT_MAX);
    assert!(!packet.is_empty());
    assert!(bytes.ends_with(&packet));
    let mut out = BytesMut::new();
    let written = roq::encode_datagram_into(flow_id, &[], &packet, &mut out)
        .expect("a decoded flow id encodes");
    assert_eq!(written, out.len());
    assert!(
        out.len() <= bytes.len(),
        "the shortest varint is never longer"
    );
    let (again_id, again) = roq::decode_datagram(out.freeze()).expect("re-encoded decodes");
    assert_eq!((again_id, again), (flow_id, packet));
}

#[derive(Debug, PartialEq)]
struct Outcome {
    flow_id: Option<u64>,
    packets: Vec<Bytes>,
    /// The error that ended the stream, or what `finish` said at its end.
    end: Result<(), RoqError>,
}

/// Drives the decoder as its doc says (`drain`: poll after each chunk), or feeds every
/// chunk before polling at all, which the doc allows at the cost of buffering.
fn decode(chunks: &[&[u8]], max: usize, drain: bool) -> Outcome {
    let mut decoder = StreamDecoder::new(max);
    let mut packets = Vec::new();
    let mut poll = |decoder: &mut StreamDecoder| -> Result<(), RoqError> {
        while let Some(packet) = decoder.poll_packet()? {
            assert!(!packet.is_empty() && packet.len() <= max);
            packets.push(packet);
        }
        Ok(())
    };
    let mut end = Ok(());
    for chunk in chunks {
        decoder.handle_data(Bytes::copy_from_slice(chunk));
        if drain && let Err(e) = poll(&mut decoder) {
            end = Err(e);
            break;
        }
    }
    if end.is_ok() && !drain {
        end = poll(&mut decoder);
    }
    if let Err(e) = &end {
        // An error is final.
        assert_eq!(decoder.poll_packet().as_ref(), Err(e));
        assert_eq!(decoder.finish().as_ref(), Err(e));
    } else {
        end = decoder.finish();
    }
    Outcome {
        flow_id: decoder.flow_id(),
        packets,
        end,
    }
}
