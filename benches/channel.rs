//! Per-camera channel: fan-out throughput and the cost of a viewer joining.
//!
//! - `channel/fanout/sinks/N`: one camera publishes single-NAL H.264 packets
//!   (~1000-byte payloads carved from one `BytesMut`, a keyframe every 50 packets) in
//!   frame-sized bursts; after each burst every one of N sinks is drained with
//!   `recv_batch` inline, on a current-thread runtime. Throughput is packets published
//!   per second; each is delivered to N sinks.
//! - `channel/fanout_tasks/sinks/N`: the same, but each sink is its own task blocked in
//!   `recv_batch`, as the QUIC and RTSP legs are, so every burst also pays the wake-up
//!   and the scheduling of N tasks.
//! - `channel/subscribe/cache_packets/K`: a viewer joins a channel whose keyframe cache
//!   holds K packets (the replay is queued for it at once), then leaves.
//!
//! The Prometheus recorder is installed as in the gateway, so metric handles cost what
//! they cost in production. Every timed sample checks afterwards that each sink got
//! every packet: a drop would make the numbers meaningless.
//!
//! Run: `cargo bench --bench channel -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::FutureExt as _;
use passerelle::channel::{Channel, ChannelSettings, SinkEvent, SinkLabel, Subscription};
use passerelle::ids::CameraId;
use passerelle::media::{Codec, MediaPacket, StreamInfo};

/// Packets per video frame: the burst a camera delivers at once.
const FRAME_PACKETS: usize = 10;
/// A keyframe (IDR) starts every this many packets.
const GOP_PACKETS: usize = 50;
/// RTP payload bytes per packet: below the channel's 1100-byte `max_payload`, so
/// nothing is re-split here (`framing` measures re-splitting).
const PAYLOAD_LEN: usize = 1000;
/// 90 kHz ticks per frame at 25 frames/s.
const FRAME_TICKS: u32 = 3600;
/// The bound the QUIC and RTSP legs pass to `recv_batch`.
const RECV_BATCH: usize = 64;
const SINK_COUNTS: [usize; 3] = [1, 4, 16];

fn install_recorder() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Only this bench installs a recorder in this process.
        passerelle::metrics::install().expect("no other metrics recorder installed");
    });
}

fn camera() -> CameraId {
    "metz/gare/parvis".parse().expect("valid camera id")
}

fn h264_info() -> StreamInfo {
    StreamInfo {
        codec: Codec::H264,
        clock_rate: 90_000,
        parameter_sets: vec![
            Bytes::from_static(&[0x67, 0x4d, 0x00, 0x1e, 0x95, 0xa8, 0x28, 0x0f, 0x64]),
            Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80]),
        ],
    }
}

fn new_channel() -> Channel {
    let channel = Channel::new(camera(), ChannelSettings::default());
    channel.set_info(h264_info());
    channel
}

/// A camera's packets: payloads received into one buffer and split off it as ingest
/// does (one IDR slice, then non-IDR slices reused round-robin), replayed with
/// advancing timestamps and a keyframe every `gop` packets.
struct Source {
    idr: Bytes,
    slices: Vec<Bytes>,
    gop: usize,
    next: usize,
    timestamp: u32,
}

impl Source {
    fn new(gop: usize) -> Self {
        let mut buf = BytesMut::with_capacity(GOP_PACKETS * PAYLOAD_LEN);
        let mut noise: u32 = 0x9e37_79b9;
        for i in 0..GOP_PACKETS {
            // Single NAL unit packets (RFC 6184 §5.6): an IDR slice (nal_ref_idc 3,
            // type 5), then non-IDR slices (nal_ref_idc 2, type 1).
            buf.put_u8(if i == 0 { 0x65 } else { 0x41 });
            for _ in 1..PAYLOAD_LEN {
                noise ^= noise << 13;
                noise ^= noise >> 17;
                noise ^= noise << 5;
                buf.put_u8(noise as u8);
            }
        }
        let idr = buf.split_to(PAYLOAD_LEN).freeze();
        let slices = (1..GOP_PACKETS)
            .map(|_| buf.split_to(PAYLOAD_LEN).freeze())
            .collect();
        Source {
            idr,
            slices,
            gop,
            next: 0,
            timestamp: 0,
        }
    }

    fn packet(&mut self) -> MediaPacket {
        let i = self.next;
        self.next += 1;
        let keyframe = i.is_multiple_of(self.gop);
        let payload = if keyframe {
            self.idr.clone()
        } else {
            self.slices[i % self.slices.len()].clone()
        };
        let end_of_frame = self.next.is_multiple_of(FRAME_PACKETS);
        let packet = MediaPacket {
            payload,
            timestamp: self.timestamp,
            marker: end_of_frame,
            keyframe_start: keyframe,
            parameter_set: false,
        };
        if end_of_frame {
            self.timestamp = self.timestamp.wrapping_add(FRAME_TICKS);
        }
        packet
    }

    fn publish_frame(&mut self, channel: &Channel) {
        for _ in 0..FRAME_PACKETS {
            channel.publish(self.packet());
        }
    }
}

/// Moves one batch out of `sub` and drops it, as a leg does after sending; returns
/// the packets received and the other events (drops) seen.
async fn drain(sub: &mut Subscription, out: &mut Vec<SinkEvent>) -> (u64, u64) {
    out.clear();
    if !sub.recv_batch(out, RECV_BATCH).await {
        return (0, 0);
    }
    let packets = out
        .iter()
        .filter(|e| matches!(e, SinkEvent::Packet(_)))
        .count() as u64;
    (packets, out.len() as u64 - packets)
}

fn fanout_inline(c: &mut Criterion) {
    install_recorder();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("current-thread runtime");
    let mut group = c.benchmark_group("channel/fanout");
    group.throughput(Throughput::Elements(FRAME_PACKETS as u64));
    for sinks in SINK_COUNTS {
        let channel = new_channel();
        let mut subs: Vec<Subscription> = (0..sinks)
            .map(|_| channel.subscribe(SinkLabel::local()))
            .collect();
        let mut source = Source::new(GOP_PACKETS);
        let mut out = Vec::with_capacity(RECV_BATCH);
        group.bench_function(BenchmarkId::new("sinks", sinks), |b| {
            b.iter_custom(|iters| {
                let (elapsed, packets, others) = rt.block_on(async {
                    let (mut packets, mut others) = (0, 0);
                    let start = Instant::now();
                    for _ in 0..iters {
                        source.publish_frame(&channel);
                        for sub in &mut subs {
                            let (p, o) = drain(sub, &mut out).await;
                            packets += p;
                            others += o;
                        }
                    }
                    (start.elapsed(), packets, others)
                });
                assert_eq!(others, 0, "no drops or control events expected");
                assert_eq!(packets, iters * (FRAME_PACKETS * sinks) as u64);
                elapsed
            });
        });
    }
    group.finish();
}

/// Per-sink counters shared with its task.
#[derive(Default)]
struct SinkStats {
    packets: AtomicU64,
    others: AtomicU64,
}

fn fanout_tasks(c: &mut Criterion) {
    install_recorder();
    let mut group = c.benchmark_group("channel/fanout_tasks");
    group.throughput(Throughput::Elements(FRAME_PACKETS as u64));
    for sinks in SINK_COUNTS {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("current-thread runtime");
        let channel = new_channel();
        let stats: Vec<Arc<SinkStats>> = (0..sinks).map(|_| Arc::default()).collect();
        for stat in &stats {
            let mut sub = channel.subscribe(SinkLabel::local());
            let stat = Arc::clone(stat);
            rt.spawn(async move {
                let mut out = Vec::with_capacity(RECV_BATCH);
                loop {
                    let (p, o) = drain(&mut sub, &mut out).await;
                    if p + o == 0 {
                        return;
                    }
                    stat.packets.fetch_add(p, Ordering::Relaxed);
                    stat.others.fetch_add(o, Ordering::Relaxed);
                }
            });
        }
        let mut source = Source::new(GOP_PACKETS);
        let mut published: u64 = 0;
        group.bench_function(BenchmarkId::new("sinks", sinks), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        source.publish_frame(&channel);
                        // Lets the woken sink tasks run, as a source task awaiting
                        // its next read would.
                        tokio::task::yield_now().await;
                    }
                    published += iters * FRAME_PACKETS as u64;
                    while stats
                        .iter()
                        .any(|s| s.packets.load(Ordering::Relaxed) < published)
                    {
                        tokio::task::yield_now().await;
                    }
                    let elapsed = start.elapsed();
                    for s in &stats {
                        assert_eq!(s.others.load(Ordering::Relaxed), 0, "no drops expected");
                        assert_eq!(s.packets.load(Ordering::Relaxed), published);
                    }
                    elapsed
                })
            });
        });
        channel.close();
        rt.block_on(tokio::task::yield_now());
        drop(rt);
    }
    group.finish();
}

/// A channel whose keyframe cache holds `cached` packets: a keyframe, then the rest
/// of its GOP.
fn channel_with_cache(cached: usize) -> Channel {
    let channel = new_channel();
    // One long GOP: only the first packet starts a keyframe.
    let mut source = Source::new(usize::MAX);
    for _ in 0..cached {
        channel.publish(source.packet());
    }
    channel
}

fn subscribe(c: &mut Criterion) {
    install_recorder();
    let mut group = c.benchmark_group("channel/subscribe");
    // 0: no cache (waits for a keyframe); 50: this bench's GOP; 400: a 2 s GOP at
    // 200 packets/s; 800: the default 4 s cap at 200 packets/s.
    for cached in [0usize, 50, 400, 800] {
        let channel = channel_with_cache(cached);
        check_replay(&channel, cached);
        group.bench_function(BenchmarkId::new("cache_packets", cached), |b| {
            b.iter(|| {
                let sub = channel.subscribe(SinkLabel::local());
                // Leaving (the drop) unsubscribes: join and leave are measured together.
                black_box(sub)
            });
        });
    }
    group.finish();
}

/// A new sink must start with the parameter sets and the whole cache.
fn check_replay(channel: &Channel, cached: usize) {
    let mut sub = channel.subscribe(SinkLabel::local());
    if cached == 0 {
        return;
    }
    let mut out = Vec::new();
    // The replay is queued during `subscribe`: the first poll must find it.
    let ready = sub.recv_batch(&mut out, usize::MAX).now_or_never();
    assert_eq!(ready, Some(true), "replay queued at once");
    let got = out.len();
    assert_eq!(got, cached + h264_info().parameter_sets.len());
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
    targets = fanout_inline, fanout_tasks, subscribe
}
criterion_main!(benches);
