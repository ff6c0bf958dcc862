//! The per-camera channel: one source fans out to many sinks.
//!
//! A [`Channel`] is fed by exactly one source (a camera ingest or an upstream partner
//! link) through [`Channel::publish`], and read by any number of sinks (local RTSP
//! sessions, partner links, WebRTC viewers) through [`Subscription`]s.
//!
//! - Packets are [`MediaPacket`]s: `Bytes` plus the header fields routing needs. Fan-out
//!   is a reference-count increment per sink, never a copy.
//! - Packets larger than `max_payload` are re-split once here, so every sink (and every
//!   QUIC datagram) gets packets that fit.
//! - A keyframe cache keeps the packets since the last keyframe, capped in bytes and in
//!   media time. A new sink starts with the parameter sets, then the cached packets at
//!   once, so it decodes immediately and catches up with live. Past the cap the cache
//!   is dropped and new sinks wait for the next keyframe.
//! - Each sink has a bounded queue. A sink that falls behind drops packets until the
//!   next keyframe; the source and the other sinks never wait for it.
//! - Keyframe requests from sinks reach the source at most once per
//!   `keyframe_request_interval`.
//! - The number of subscribers is published on a watch channel, so an on-demand source
//!   connects on the first viewer and lingers after the last.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use metrics::Counter;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::ids::CameraId;
use crate::media::h26x;
use crate::media::resplit::Resplitter;
use crate::media::{Codec, MediaPacket, StreamInfo};

/// Tuning of one channel, from the `[channel]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSettings {
    /// Cap on the keyframe cache, in payload bytes.
    pub keyframe_cache_max_bytes: usize,
    /// Cap on the keyframe cache, in media time since the keyframe.
    pub keyframe_cache_max_duration: Duration,
    /// Live packets a sink may have queued before it starts dropping.
    pub sink_queue_packets: usize,
    /// Minimum time between two keyframe requests sent to the source.
    pub keyframe_request_interval: Duration,
    /// Largest RTP payload any sink accepts; bigger packets are re-split.
    pub max_payload: usize,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        ChannelSettings {
            keyframe_cache_max_bytes: 8 << 20,
            keyframe_cache_max_duration: Duration::from_secs(4),
            sink_queue_packets: 512,
            keyframe_request_interval: Duration::from_secs(1),
            // Fits a QUIC datagram in a 1200-byte IPv6 path: see `link` for the sum.
            max_payload: 1100,
        }
    }
}

/// Who reads a subscription, for metric labels. Both values must come from bounded
/// sets (a peer site id, or `local`): never a viewer's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkLabel {
    /// The partner site receiving the packets, or `local` for this site's viewers.
    pub peer: String,
}

impl SinkLabel {
    /// A sink on this site: RTSP session or WebRTC viewer.
    pub fn local() -> Self {
        SinkLabel {
            peer: "local".to_owned(),
        }
    }
}

/// What a sink reads from its subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkEvent {
    /// A video packet, in order. The first packets after subscribing are the
    /// parameter sets and the keyframe cache.
    Packet(MediaPacket),
    /// The source's latest NTP↔RTP mapping (from its RTCP sender reports): each leg
    /// sends its own sender reports from it.
    SenderReport { ntp: u64, rtp: u32 },
    /// This many packets were dropped because the sink fell behind; the next packet
    /// starts a keyframe. A leg advances its sequence numbers by this much so the
    /// receiver sees the loss.
    Dropped(u32),
}

/// One camera's fan-out point. Cheap to clone.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("camera", &self.inner.camera)
            .finish_non_exhaustive()
    }
}

struct Inner {
    camera: CameraId,
    settings: ChannelSettings,
    state: Mutex<State>,
    info: watch::Sender<Option<StreamInfo>>,
    subscribers: watch::Sender<usize>,
    keyframe_requests: watch::Sender<u64>,
    last_keyframe_request: Mutex<Option<Instant>>,
    ingest_packets: Counter,
    resplit_packets: Counter,
    /// Packets and payload bytes fanned out since the channel was made, for the journal:
    /// a viewing session's end records what its camera sent while it was open.
    sent_packets: std::sync::atomic::AtomicU64,
    sent_bytes: std::sync::atomic::AtomicU64,
    /// The bitrate measured over the last sampling interval ([`Channel::sample_bitrate`]).
    bitrate_kbps: std::sync::atomic::AtomicU64,
    last_sample: Mutex<Option<(Instant, u64)>>,
}

#[derive(Default)]
struct State {
    sinks: Vec<Arc<SinkQueue>>,
    cache: KeyframeCache,
    resplitter: Resplitter,
    /// Output of the re-splitter for the packet being published, reused.
    pieces: Vec<MediaPacket>,
    last_sender_report: Option<(u64, u32)>,
    closed: bool,
}

impl Channel {
    /// A channel for `camera`, with no source attached yet.
    pub fn new(camera: CameraId, settings: ChannelSettings) -> Self {
        let label = camera.to_string();
        let inner = Inner {
            ingest_packets: metrics::counter!("passerelle_ingest_packets_total", "camera" => label.clone()),
            resplit_packets: metrics::counter!("passerelle_resplit_packets_total", "camera" => label),
            sent_packets: std::sync::atomic::AtomicU64::new(0),
            sent_bytes: std::sync::atomic::AtomicU64::new(0),
            bitrate_kbps: std::sync::atomic::AtomicU64::new(0),
            last_sample: Mutex::new(None),
            camera,
            settings,
            state: Mutex::new(State::default()),
            info: watch::Sender::new(None),
            subscribers: watch::Sender::new(0),
            keyframe_requests: watch::Sender::new(0),
            last_keyframe_request: Mutex::new(None),
        };
        Channel {
            inner: Arc::new(inner),
        }
    }

    /// The camera this channel carries.
    pub fn camera(&self) -> &CameraId {
        &self.inner.camera
    }

    /// The settings this channel was built with.
    pub fn settings(&self) -> &ChannelSettings {
        &self.inner.settings
    }

    /// Codec and parameter sets, once the source has described the stream.
    pub fn info(&self) -> Option<StreamInfo> {
        self.inner.info.borrow().clone()
    }

    /// Waits up to `timeout` for the stream description: a cold on-demand camera
    /// connects when the first viewer subscribes.
    pub async fn wait_info(&self, timeout: Duration) -> Option<StreamInfo> {
        let mut rx = self.inner.info.subscribe();
        let described = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        match described {
            Ok(Ok(info)) => info.clone(),
            _ => None,
        }
    }

    /// Watches the stream description (sinks that re-announce parameter sets, the
    /// catalog).
    pub fn watch_info(&self) -> watch::Receiver<Option<StreamInfo>> {
        self.inner.info.subscribe()
    }

    /// Sets the stream description (source side). Packets keep flowing; a change of
    /// parameter sets is seen by new sinks and by `watch_info`.
    pub fn set_info(&self, info: StreamInfo) {
        self.inner.info.send_if_modified(|current| {
            if current.as_ref() == Some(&info) {
                return false;
            }
            *current = Some(info);
            true
        });
    }

    /// The number of current subscriptions: an on-demand source connects while it is
    /// above zero.
    pub fn watch_subscribers(&self) -> watch::Receiver<usize> {
        self.inner.subscribers.subscribe()
    }

    /// Keyframe requests for the source, already rate-limited: the value increments
    /// once per request to forward.
    pub fn watch_keyframe_requests(&self) -> watch::Receiver<u64> {
        self.inner.keyframe_requests.subscribe()
    }

    /// Publishes one packet from the source: re-split if needed, cached, fanned out.
    pub fn publish(&self, packet: MediaPacket) {
        self.inner.ingest_packets.increment(1);
        let codec = self.inner.info.borrow().as_ref().map(|info| info.codec);
        let mut state = self.inner.lock_state();
        let state = &mut *state;
        if state.closed {
            return;
        }
        if packet.parameter_set
            && let Some(codec) = codec
        {
            self.refresh_parameter_sets(codec, &packet.payload);
        }
        state.pieces.clear();
        let max_payload = self.inner.settings.max_payload;
        match codec {
            Some(codec) if packet.payload.len() > max_payload => {
                let pieces = &mut state.pieces;
                match state
                    .resplitter
                    .resplit(codec, &packet, max_payload, &mut |p| pieces.push(p))
                {
                    Ok(extra) => self.inner.resplit_packets.increment(extra as u64),
                    Err(error) => {
                        tracing::debug!(camera = %self.inner.camera, %error, "packet not re-split, dropped");
                        metrics::counter!("passerelle_malformed_packets_total", "camera" => self.inner.camera.to_string())
                            .increment(1);
                        return;
                    }
                }
            }
            _ => state.pieces.push(packet),
        }
        for piece in state.pieces.drain(..) {
            self.inner.sent_packets.fetch_add(1, Ordering::Relaxed);
            self.inner
                .sent_bytes
                .fetch_add(piece.payload.len() as u64, Ordering::Relaxed);
            state.cache.push(&piece, &self.inner.settings);
            for sink in &state.sinks {
                sink.push_packet(&piece);
            }
        }
    }

    /// Records the source's NTP↔RTP mapping and passes it to every sink.
    pub fn sender_report(&self, ntp: u64, rtp: u32) {
        let mut state = self.inner.lock_state();
        state.last_sender_report = Some((ntp, rtp));
        for sink in &state.sinks {
            sink.push_control(SinkEvent::SenderReport { ntp, rtp });
        }
    }

    /// Subscribes a sink. It first receives the last sender report, the parameter
    /// sets and the keyframe cache; with no usable cache it waits for the next
    /// keyframe, and a keyframe request goes to the source.
    pub fn subscribe(&self, label: SinkLabel) -> Subscription {
        let camera = self.inner.camera.to_string();
        let counters = SinkCounters {
            forwarded_packets: metrics::counter!("passerelle_forwarded_packets_total", "camera" => camera.clone(), "peer" => label.peer.clone()),
            forwarded_bytes: metrics::counter!("passerelle_forwarded_bytes_total", "camera" => camera.clone(), "peer" => label.peer.clone()),
            dropped_queue_full: metrics::counter!("passerelle_dropped_packets_total", "camera" => camera, "peer" => label.peer, "reason" => "queue_full"),
        };
        let info = self.info();
        let mut state = self.inner.lock_state();
        let mut queue = SinkQueueState {
            events: VecDeque::with_capacity(self.inner.settings.sink_queue_packets),
            limit: self.inner.settings.sink_queue_packets,
            live_limit: self.inner.settings.sink_queue_packets,
            waiting_for_keyframe: true,
            dropped: 0,
        };
        if let Some((ntp, rtp)) = state.last_sender_report {
            queue.events.push_back(SinkEvent::SenderReport { ntp, rtp });
        }
        let replayed = state.cache.replay(info.as_ref(), &mut queue.events);
        if replayed > 0 {
            queue.waiting_for_keyframe = false;
            // The replay comes on top of the live allowance.
            queue.limit += replayed;
        }
        let needs_keyframe = queue.waiting_for_keyframe;
        let sink = Arc::new(SinkQueue {
            queue: Mutex::new(queue),
            ready: Notify::new(),
            closed: AtomicBool::new(state.closed),
            counters,
        });
        state.sinks.push(Arc::clone(&sink));
        let count = state.sinks.len();
        drop(state);
        self.inner.subscribers.send_replace(count);
        if needs_keyframe {
            self.inner.request_keyframe();
        }
        Subscription {
            channel: Arc::downgrade(&self.inner),
            sink,
        }
    }

    /// Packets and payload bytes fanned out so far (after re-splitting).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.inner.sent_packets.load(Ordering::Relaxed),
            self.inner.sent_bytes.load(Ordering::Relaxed),
        )
    }

    /// Measures the payload bitrate since the previous call: call it at a steady
    /// interval (the gateway does, every second). The first call only starts measuring.
    pub fn sample_bitrate(&self, now: Instant) {
        let (_, bytes) = self.totals();
        let mut last = self
            .inner
            .last_sample
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, before)) = *last {
            let seconds = now.duration_since(at).as_secs_f64();
            if seconds > 0.0 {
                let kbps = (bytes.saturating_sub(before) as f64 * 8.0 / 1000.0 / seconds) as u64;
                self.inner.bitrate_kbps.store(kbps, Ordering::Relaxed);
            }
        }
        *last = Some((now, bytes));
    }

    /// The bitrate measured by the last [`Channel::sample_bitrate`], in kbit/s (0 for a
    /// camera that sent nothing then: a cold on-demand camera).
    pub fn bitrate_kbps(&self) -> u64 {
        self.inner.bitrate_kbps.load(Ordering::Relaxed)
    }

    /// The number of current subscriptions.
    pub fn subscriber_count(&self) -> usize {
        *self.inner.subscribers.borrow()
    }

    /// Marks a discontinuity in the source (camera reconnect): the cache is dropped, and
    /// every sink, new or current, waits for the next keyframe rather than decode
    /// pictures whose references it never got.
    pub fn reset_cache(&self) {
        let mut state = self.inner.lock_state();
        state.cache.clear();
        for sink in &state.sinks {
            sink.lock().waiting_for_keyframe = true;
        }
        drop(state);
        self.inner.request_keyframe();
    }

    /// Ends the channel: every sink's `recv` returns `None` once drained.
    pub fn close(&self) {
        let mut state = self.inner.lock_state();
        state.closed = true;
        state.cache.clear();
        for sink in state.sinks.drain(..) {
            sink.close();
        }
        drop(state);
        self.inner.subscribers.send_replace(0);
    }

    fn refresh_parameter_sets(&self, codec: Codec, payload: &Bytes) {
        self.inner.info.send_if_modified(|current| {
            let Some(info) = current.as_mut() else {
                return false;
            };
            let mut changed = false;
            for nal in h26x::parameter_sets(codec, payload) {
                changed |= replace_parameter_set(codec, &mut info.parameter_sets, nal);
            }
            changed
        });
    }
}

/// Puts `nal` in place of the stored parameter set of the same type, keeping decoding
/// order; returns whether anything changed.
fn replace_parameter_set(codec: Codec, sets: &mut Vec<Bytes>, nal: Bytes) -> bool {
    let Some(kind) = h26x::nal_type(codec, &nal) else {
        return false;
    };
    match sets
        .iter_mut()
        .find(|set| h26x::nal_type(codec, set) == Some(kind))
    {
        Some(existing) if *existing == nal => false,
        Some(existing) => {
            *existing = nal;
            true
        }
        None => {
            sets.push(nal);
            sets.sort_by_key(|set| h26x::nal_type(codec, set));
            true
        }
    }
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only counters and queues behind, which
        // stay consistent: keep serving rather than poisoning every viewer.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn request_keyframe(&self) {
        let now = Instant::now();
        let mut last = self
            .last_keyframe_request
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < self.settings.keyframe_request_interval) {
            return;
        }
        *last = Some(now);
        self.keyframe_requests.send_modify(|n| *n += 1);
    }

    fn unsubscribe(&self, sink: &Arc<SinkQueue>) {
        let mut state = self.lock_state();
        state.sinks.retain(|s| !Arc::ptr_eq(s, sink));
        let count = state.sinks.len();
        drop(state);
        self.subscribers.send_replace(count);
    }
}

/// A sink's end of a channel. Dropping it unsubscribes.
///
/// Drive it by awaiting [`Subscription::recv`] (one event) or
/// [`Subscription::recv_batch`] (all queued events up to a bound, for senders that
/// write in batches), until it returns `None`: the channel has closed.
pub struct Subscription {
    channel: Weak<Inner>,
    sink: Arc<SinkQueue>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next event, waiting for one; `None` once the channel has closed and the
    /// queue is drained.
    pub async fn recv(&mut self) -> Option<SinkEvent> {
        loop {
            if let Some(event) = self.sink.pop() {
                return Some(event);
            }
            if self.sink.closed.load(Ordering::Acquire) {
                return self.sink.pop();
            }
            self.sink.ready.notified().await;
        }
    }

    /// Waits for at least one event, then moves up to `max` queued events into `out`.
    /// Returns `false` once the channel has closed and the queue is drained.
    pub async fn recv_batch(&mut self, out: &mut Vec<SinkEvent>, max: usize) -> bool {
        loop {
            if self.sink.pop_batch(out, max) > 0 {
                return true;
            }
            if self.sink.closed.load(Ordering::Acquire) {
                return self.sink.pop_batch(out, max) > 0;
            }
            self.sink.ready.notified().await;
        }
    }

    /// Asks the source for a keyframe (a viewer lost packets, or a browser sent a
    /// PLI). Rate-limited per channel; most RTSP cameras ignore it, so the cache is
    /// what new viewers start from.
    pub fn request_keyframe(&self) {
        if let Some(channel) = self.channel.upgrade() {
            channel.request_keyframe();
        }
    }

    /// Counts packets a sink actually sent, for the forwarded metrics.
    pub fn record_forwarded(&self, packets: u64, bytes: u64) {
        self.sink.counters.forwarded_packets.increment(packets);
        self.sink.counters.forwarded_bytes.increment(bytes);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.upgrade() {
            channel.unsubscribe(&self.sink);
        }
    }
}

struct SinkCounters {
    forwarded_packets: Counter,
    forwarded_bytes: Counter,
    dropped_queue_full: Counter,
}

struct SinkQueue {
    queue: Mutex<SinkQueueState>,
    ready: Notify,
    closed: AtomicBool,
    counters: SinkCounters,
}

struct SinkQueueState {
    events: VecDeque<SinkEvent>,
    /// Queue length at which the sink starts dropping: `live_limit`, plus the replay
    /// until the sink has drained it.
    limit: usize,
    live_limit: usize,
    /// Set when the sink starts without a cache or after it overflowed: packets are
    /// dropped until the next keyframe start.
    waiting_for_keyframe: bool,
    /// Packets dropped since the sink last received one.
    dropped: u32,
}

impl SinkQueue {
    fn lock(&self) -> MutexGuard<'_, SinkQueueState> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push_packet(&self, packet: &MediaPacket) {
        let mut queue = self.lock();
        if queue.waiting_for_keyframe {
            if !packet.keyframe_start || queue.events.len() >= queue.limit {
                if queue.dropped > 0 {
                    queue.dropped += 1;
                    self.counters.dropped_queue_full.increment(1);
                }
                return;
            }
            queue.waiting_for_keyframe = false;
            if queue.dropped > 0 {
                let dropped = std::mem::take(&mut queue.dropped);
                queue.events.push_back(SinkEvent::Dropped(dropped));
            }
        } else if queue.events.len() >= queue.limit {
            queue.waiting_for_keyframe = true;
            queue.dropped += 1;
            self.counters.dropped_queue_full.increment(1);
            return;
        }
        queue.events.push_back(SinkEvent::Packet(packet.clone()));
        drop(queue);
        self.ready.notify_one();
    }

    fn push_control(&self, event: SinkEvent) {
        let mut queue = self.lock();
        // Control events are rare and small: a full queue still takes them.
        queue.events.push_back(event);
        drop(queue);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<SinkEvent> {
        let mut queue = self.lock();
        let event = queue.events.pop_front();
        if queue.events.is_empty() {
            // The replay allowance is spent once the sink has caught up.
            queue.limit = queue.live_limit;
        }
        event
    }

    fn pop_batch(&self, out: &mut Vec<SinkEvent>, max: usize) -> usize {
        let mut queue = self.lock();
        let n = queue.events.len().min(max);
        out.extend(queue.events.drain(..n));
        if queue.events.is_empty() {
            queue.limit = queue.live_limit;
        }
        n
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }
}

/// The packets since the last keyframe start, within the caps.
#[derive(Default)]
struct KeyframeCache {
    packets: Vec<MediaPacket>,
    bytes: usize,
    /// True while `packets` starts at a keyframe and is within the caps.
    valid: bool,
}

impl KeyframeCache {
    fn push(&mut self, packet: &MediaPacket, settings: &ChannelSettings) {
        if packet.keyframe_start {
            self.clear();
            self.valid = true;
        }
        if !self.valid {
            return;
        }
        let first_timestamp = self
            .packets
            .first()
            .map_or(packet.timestamp, |p| p.timestamp);
        let age_ticks = packet.timestamp.wrapping_sub(first_timestamp);
        let max_ticks = settings
            .keyframe_cache_max_duration
            .as_millis()
            .saturating_mul(90)
            .min(u128::from(u32::MAX / 2)) as u32;
        if self.bytes + packet.payload.len() > settings.keyframe_cache_max_bytes
            || age_ticks > max_ticks
        {
            self.clear();
            return;
        }
        self.bytes += packet.payload.len();
        self.packets.push(packet.clone());
    }

    /// Appends the parameter sets and the cached packets to a new sink's queue;
    /// returns how many events were added (0 without a usable cache).
    fn replay(&self, info: Option<&StreamInfo>, out: &mut VecDeque<SinkEvent>) -> usize {
        let Some(first) = self.packets.first().filter(|_| self.valid) else {
            return 0;
        };
        let before = out.len();
        if let Some(info) = info {
            for set in &info.parameter_sets {
                out.push_back(SinkEvent::Packet(MediaPacket {
                    payload: set.clone(),
                    timestamp: first.timestamp,
                    marker: false,
                    keyframe_start: false,
                    parameter_set: true,
                }));
            }
        }
        out.extend(self.packets.iter().cloned().map(SinkEvent::Packet));
        out.len() - before
    }

    fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.valid = false;
    }
}

#[cfg(test)]
mod tests;
