//! Per-packet cost of the partner link's framing, without sockets, and of re-splitting.
//!
//! - `framing/send/encode_datagram_into`: what an outgoing flow does per packet
//!   (`link::flow`): build the 12-byte RTP header, reserve in the reused scratch
//!   buffer, write flow-id varint + header + 1100-byte payload with
//!   `roq::encode_datagram_into`, split the datagram off as `Bytes` and drop it (quinn
//!   copies it into its own packet).
//! - `framing/send/copy_only`: the same buffer handling with only the payload copy, the
//!   floor the framing is compared to.
//! - `framing/receive/decode_parse_classify`: what an incoming flow does per datagram:
//!   `roq::decode_datagram`, `RtpPacket::parse`, `h26x::classify`. Datagrams were
//!   received into one buffer and split off it; each iteration takes one (a `Bytes`
//!   clone, standing in for quinn handing it over).
//! - `framing/resplit/*`: `Resplitter::resplit` of 1400-byte camera packets down to
//!   the channel's 1100-byte `max_payload` (two fragments each), per input packet;
//!   the outputs go into a reused `Vec` and are dropped, as the channel does once the
//!   sinks hold their clones. `passthrough` is a 1000-byte packet that fits.
//!
//! Run: `cargo bench --bench framing -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use passerelle::media::h26x;
use passerelle::media::resplit::{ARENA_CHUNK, Resplitter};
use passerelle::media::rtp::{RTP_HEADER_LEN, RtpHeader, RtpPacket};
use passerelle::media::{Codec, MediaPacket};
use passerelle::roq;

/// A flow id below 64: one varint byte (RFC 9000 §16), as the first flows of a link.
const FLOW_ID: u64 = 42;
/// Dynamic payload type the link writes (`link::flow::PAYLOAD_TYPE`).
const PAYLOAD_TYPE: u8 = 96;
/// The channel's default `max_payload`: what every sink's payloads fit in.
const MAX_PAYLOAD: usize = 1100;
/// A camera's RTP payload sized for a 1500-byte Ethernet MTU.
const CAMERA_PAYLOAD: usize = 1400;
/// The outgoing flow's scratch buffer (`link::flow`'s `SCRATCH`).
const SCRATCH: usize = 64 * 1024;
/// Packets in one receive batch.
const BATCH: usize = 64;

/// `len` bytes of stand-in slice data behind `header`, no zero bytes.
fn put_payload(buf: &mut BytesMut, header: &[u8], len: usize, seed: u32) {
    buf.put_slice(header);
    let mut noise = seed | 1;
    for _ in header.len()..len {
        noise ^= noise << 13;
        noise ^= noise >> 17;
        noise ^= noise << 5;
        buf.put_u8((noise as u8).max(1));
    }
}

/// H.264 payload headers a camera stream carries after re-splitting: FU-A start,
/// middle and end fragments of a slice (RFC 6184 §5.8), and a single NAL unit slice.
const H264_HEADERS: [&[u8]; 4] = [&[0x7c, 0x85], &[0x7c, 0x05], &[0x7c, 0x45], &[0x41]];

/// One batch of sink payloads (≤ `MAX_PAYLOAD`) split off one buffer.
fn sink_payloads() -> Vec<Bytes> {
    let mut buf = BytesMut::with_capacity(BATCH * MAX_PAYLOAD);
    for i in 0..BATCH {
        put_payload(&mut buf, H264_HEADERS[i % 4], MAX_PAYLOAD, i as u32);
    }
    (0..BATCH)
        .map(|_| buf.split_to(MAX_PAYLOAD).freeze())
        .collect()
}

fn send(c: &mut Criterion) {
    let payloads = sink_payloads();
    let mut group = c.benchmark_group("framing/send");
    group.throughput(Throughput::Elements(1));

    let mut scratch = BytesMut::with_capacity(SCRATCH);
    let mut sequence: u16 = 0;
    let mut i = 0;
    group.bench_function("encode_datagram_into", |b| {
        b.iter(|| {
            let payload = &payloads[i % BATCH];
            i += 1;
            let header = RtpHeader {
                marker: i.is_multiple_of(10),
                payload_type: PAYLOAD_TYPE,
                sequence,
                timestamp: (i / 10) as u32 * 3600,
                ssrc: 0x1234_5678,
            }
            .to_bytes();
            sequence = sequence.wrapping_add(1);
            let needed = roq::VARINT_MAX_LEN * 2 + header.len() + payload.len();
            if scratch.capacity() - scratch.len() < needed {
                scratch.reserve(SCRATCH.max(needed));
            }
            roq::encode_datagram_into(FLOW_ID, &header, payload, &mut scratch)
                .expect("flow id is a valid varint");
            scratch.split().freeze()
        });
    });
    check_datagram(&mut scratch, &payloads[0]);

    let mut scratch = BytesMut::with_capacity(SCRATCH);
    let mut i = 0;
    group.bench_function("copy_only", |b| {
        b.iter(|| {
            let payload = &payloads[i % BATCH];
            i += 1;
            if scratch.capacity() - scratch.len() < payload.len() {
                scratch.reserve(SCRATCH.max(payload.len()));
            }
            scratch.put_slice(payload);
            scratch.split().freeze()
        });
    });
    group.finish();
}

/// The send path's output must be what the receive path reads.
fn check_datagram(scratch: &mut BytesMut, payload: &Bytes) {
    let header = RtpHeader {
        marker: true,
        payload_type: PAYLOAD_TYPE,
        sequence: 7,
        timestamp: 3600,
        ssrc: 1,
    };
    let len = roq::encode_datagram_into(FLOW_ID, &header.to_bytes(), payload, scratch)
        .expect("flow id is a valid varint");
    assert_eq!(len, 1 + RTP_HEADER_LEN + MAX_PAYLOAD);
    let (flow_id, packet) = roq::decode_datagram(scratch.split().freeze()).expect("decodes");
    let rtp = RtpPacket::parse(&packet).expect("parses");
    assert_eq!(
        (flow_id, rtp.header(), rtp.payload()),
        (FLOW_ID, header, payload)
    );
}

fn receive(c: &mut Criterion) {
    let mut buf = BytesMut::with_capacity(BATCH * 1200);
    let mut lens = Vec::with_capacity(BATCH);
    for i in 0..BATCH {
        let start = buf.len();
        roq::encode_varint(FLOW_ID, &mut buf).expect("valid varint");
        RtpHeader {
            marker: i % 10 == 9,
            payload_type: PAYLOAD_TYPE,
            sequence: i as u16,
            timestamp: (i / 10) as u32 * 3600,
            ssrc: 0x1234_5678,
        }
        .write_into(&mut buf);
        put_payload(&mut buf, H264_HEADERS[i % 4], MAX_PAYLOAD, i as u32);
        lens.push(buf.len() - start);
    }
    let datagrams: Vec<Bytes> = lens.iter().map(|&n| buf.split_to(n).freeze()).collect();

    let mut group = c.benchmark_group("framing/receive");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("decode_parse_classify", |b| {
        b.iter(|| {
            let datagram = datagrams[i % BATCH].clone();
            i += 1;
            let (flow_id, packet) = roq::decode_datagram(datagram).expect("valid datagram");
            let rtp = RtpPacket::parse(&packet).expect("valid RTP");
            let info = h26x::classify(Codec::H264, rtp.payload()).expect("valid H.264");
            black_box((flow_id, rtp.sequence(), rtp.marker(), info))
        });
    });
    group.finish();
}

/// 1400-byte camera packets of each kind the re-splitter cuts into fragments.
fn camera_packets() -> Vec<(&'static str, Codec, MediaPacket)> {
    let kinds: [(&str, Codec, &[u8], usize); 5] = [
        // Non-IDR slice as a single NAL unit (RFC 6184 §5.6).
        ("h264_single_nal", Codec::H264, &[0x41], CAMERA_PAYLOAD),
        // Middle FU-A fragment of a slice (RFC 6184 §5.8).
        ("h264_fu_a", Codec::H264, &[0x7c, 0x01], CAMERA_PAYLOAD),
        // TRAIL_R slice as a single NAL unit (RFC 7798 §4.4.1): type 1, TID 1.
        (
            "h265_single_nal",
            Codec::H265,
            &[0x02, 0x01],
            CAMERA_PAYLOAD,
        ),
        // Middle FU fragment of a TRAIL_R slice (RFC 7798 §4.4.3): type 49.
        ("h265_fu", Codec::H265, &[0x62, 0x01, 0x01], CAMERA_PAYLOAD),
        // Fits already: passed through as a clone.
        ("passthrough_1000", Codec::H264, &[0x41], 1000),
    ];
    let mut buf = BytesMut::with_capacity(kinds.len() * CAMERA_PAYLOAD);
    for (i, (_, _, header, len)) in kinds.iter().enumerate() {
        put_payload(&mut buf, header, *len, i as u32);
    }
    kinds
        .iter()
        .map(|&(name, codec, _, len)| {
            let packet = MediaPacket {
                payload: buf.split_to(len).freeze(),
                timestamp: 3600,
                marker: false,
                keyframe_start: false,
                parameter_set: false,
            };
            (name, codec, packet)
        })
        .collect()
}

fn resplit(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing/resplit");
    group.throughput(Throughput::Elements(1));
    for (name, codec, packet) in camera_packets() {
        let mut resplitter = Resplitter::new();
        let mut pieces: Vec<MediaPacket> = Vec::with_capacity(4);
        // What the numbers mean: two outputs per 1400-byte packet, each fitting.
        resplitter
            .resplit(codec, &packet, MAX_PAYLOAD, &mut |p| pieces.push(p))
            .expect("valid packet");
        let expected = packet.payload.len().div_ceil(MAX_PAYLOAD);
        assert_eq!(pieces.len(), expected, "{name}");
        assert!(pieces.iter().all(|p| p.payload.len() <= MAX_PAYLOAD));
        let out_bytes: usize = pieces.iter().map(|p| p.payload.len()).sum();
        pieces.clear();
        let mut inputs: u64 = 1;
        group.bench_function(name, |b| {
            b.iter(|| {
                resplitter
                    .resplit(codec, &packet, MAX_PAYLOAD, &mut |p| pieces.push(p))
                    .expect("valid packet");
                black_box(&pieces);
                pieces.clear();
                inputs += 1;
            });
        });
        report_arena(name, &resplitter, inputs, out_bytes);
    }

    // The same H.264 packet with each output dropped inside the callback, so no
    // output of the packet being cut is alive when the arena runs out.
    let (_, codec, packet) = camera_packets().swap_remove(0);
    let mut resplitter = Resplitter::new();
    let mut inputs: u64 = 0;
    group.bench_function("h264_single_nal_dropped_at_once", |b| {
        b.iter(|| {
            resplitter
                .resplit(codec, &packet, MAX_PAYLOAD, &mut |p| {
                    black_box(p);
                })
                .expect("valid packet");
            inputs += 1;
        });
    });
    assert_eq!(
        resplitter.chunks_allocated(),
        1,
        "arena reclaimed every time"
    );
    group.finish();
}

/// Prints how often the re-splitter allocated a new arena chunk, and checks it is
/// bounded by one chunk per chunk's worth of output (never per packet).
fn report_arena(name: &str, resplitter: &Resplitter, inputs: u64, out_bytes: usize) {
    if out_bytes <= MAX_PAYLOAD || inputs <= 1 {
        return; // Passed through (no arena), or filtered out on the command line.
    }
    let chunks = resplitter.chunks_allocated();
    let per_chunk = ((ARENA_CHUNK - MAX_PAYLOAD) / out_bytes) as u64;
    eprintln!(
        "{name}: {chunks} arena chunks of {ARENA_CHUNK} bytes for {inputs} input packets \
         (one per {:.0} packets; a chunk holds about {per_chunk})",
        inputs as f64 / chunks as f64
    );
    assert!(
        chunks <= inputs / per_chunk + 2,
        "{name}: arena allocated per packet"
    );
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = send, receive, resplit
}
criterion_main!(benches);
