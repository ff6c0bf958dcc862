//! The fan-out allocates nothing per packet once warm: 10k packets through a channel
//! to four sinks, counted by a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use passerelle::channel::{Channel, ChannelSettings, SinkEvent, SinkLabel, Subscription};
use passerelle::media::{Codec, MediaPacket, StreamInfo};

struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition
// is a relaxed counter increment, which cannot affect the allocation's validity.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const GOP: usize = 50;
const SINKS: usize = 4;

/// A GOP of single-NAL H.264 packets carved out of one buffer, as ingest does.
fn gop() -> Vec<Bytes> {
    let mut buffer = BytesMut::with_capacity(GOP * 1000);
    (0..GOP)
        .map(|i| {
            buffer.extend_from_slice(&[if i == 0 { 0x65 } else { 0x41 }]);
            buffer.extend_from_slice(&[0xab; 999]);
            buffer.split_to(1000).freeze()
        })
        .collect()
}

struct Pump<'a> {
    runtime: &'a tokio::runtime::Runtime,
    channel: &'a Channel,
    payloads: &'a [Bytes],
    sinks: &'a mut [Subscription],
    scratch: &'a mut Vec<SinkEvent>,
}

/// Publishes packets `from..from + count` and drains every sink after each one;
/// returns the number of events received.
fn pump(p: &mut Pump<'_>, from: usize, count: usize) -> usize {
    let Pump {
        runtime,
        channel,
        payloads,
        sinks,
        scratch,
    } = p;
    let mut received = 0;
    for n in from..from + count {
        let index = n % GOP;
        channel.publish(MediaPacket {
            payload: payloads[index].clone(),
            timestamp: (n as u32) * 3600,
            marker: true,
            keyframe_start: index == 0,
            parameter_set: false,
        });
        for sink in sinks.iter_mut() {
            runtime.block_on(sink.recv_batch(scratch, 64));
            received += scratch.len();
            scratch.clear();
        }
    }
    received
}

#[test]
fn fan_out_allocates_nothing_per_packet_after_warm_up() {
    let channel = Channel::new(
        "metz/gare/parvis".parse().expect("camera id"),
        ChannelSettings::default(),
    );
    channel.set_info(StreamInfo {
        codec: Codec::H264,
        clock_rate: 90_000,
        parameter_sets: vec![
            Bytes::from_static(&[0x67, 0x4d]),
            Bytes::from_static(&[0x68, 0xee]),
        ],
    });
    let payloads = gop();
    let mut sinks: Vec<_> = (0..SINKS)
        .map(|_| channel.subscribe(SinkLabel::local()))
        .collect();
    let mut scratch = Vec::with_capacity(64);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut pumping = Pump {
        runtime: &runtime,
        channel: &channel,
        payloads: &payloads,
        sinks: &mut sinks,
        scratch: &mut scratch,
    };

    // Warm-up: two GOPs fill the keyframe cache and size every queue.
    pump(&mut pumping, 0, 2 * GOP);

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let received = pump(&mut pumping, 2 * GOP, 10_000);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;

    assert_eq!(received, 10_000 * SINKS, "every sink got every packet");
    assert_eq!(
        allocations, 0,
        "allocations during 10k packets fanned out to {SINKS} sinks"
    );
}
