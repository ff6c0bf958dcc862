use super::*;

fn camera() -> CameraId {
    "metz/gare/parvis".parse().expect("valid camera id")
}

fn settings() -> ChannelSettings {
    ChannelSettings {
        sink_queue_packets: 8,
        ..ChannelSettings::default()
    }
}

fn h264_info() -> StreamInfo {
    StreamInfo {
        codec: Codec::H264,
        clock_rate: 90_000,
        parameter_sets: vec![
            Bytes::from_static(&[0x67, 0x4d, 0x00, 0x1e, 0xaa]),
            Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80]),
        ],
    }
}

/// A single-NAL H.264 packet: an IDR slice (type 5) or a non-IDR slice (type 1).
fn packet(timestamp: u32, keyframe: bool, len: usize) -> MediaPacket {
    let mut payload = vec![0u8; len.max(2)];
    payload[0] = if keyframe { 0x65 } else { 0x41 };
    payload[1] = timestamp as u8;
    MediaPacket {
        payload: Bytes::from(payload),
        timestamp,
        marker: true,
        keyframe_start: keyframe,
        parameter_set: false,
    }
}

fn drain(sub: &mut Subscription) -> Vec<SinkEvent> {
    let mut out = Vec::new();
    while let Some(event) = sub.sink.pop() {
        out.push(event);
    }
    out
}

fn timestamps(events: &[SinkEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            SinkEvent::Packet(p) if !p.parameter_set => Some(p.timestamp),
            _ => None,
        })
        .collect()
}

#[test]
fn every_sink_gets_every_packet_in_order_without_copies() {
    let channel = Channel::new(camera(), settings());
    channel.set_info(h264_info());
    let mut a = channel.subscribe(SinkLabel::local());
    let mut b = channel.subscribe(SinkLabel::local());
    let sent = [
        packet(0, true, 100),
        packet(3600, false, 50),
        packet(7200, false, 50),
    ];
    for p in &sent {
        channel.publish(p.clone());
    }
    let (ea, eb) = (drain(&mut a), drain(&mut b));
    assert_eq!(timestamps(&ea), vec![0, 3600, 7200]);
    assert_eq!(ea, eb);
    let SinkEvent::Packet(first) = &ea[0] else {
        panic!("expected a packet, got {:?}", ea[0]);
    };
    assert_eq!(
        first.payload.as_ptr(),
        sent[0].payload.as_ptr(),
        "fan-out must share the payload, not copy it"
    );
}

#[test]
fn a_new_sink_starts_with_parameter_sets_then_the_cache_from_the_last_keyframe() {
    let channel = Channel::new(camera(), settings());
    channel.set_info(h264_info());
    for (ts, key) in [(0, true), (3600, false), (7200, true), (10800, false)] {
        channel.publish(packet(ts, key, 100));
    }
    let mut late = channel.subscribe(SinkLabel::local());
    channel.publish(packet(14400, false, 100));
    let events = drain(&mut late);
    let SinkEvent::Packet(sps) = &events[0] else {
        panic!("expected the SPS first, got {events:?}");
    };
    assert!(sps.parameter_set);
    assert_eq!(sps.payload, h264_info().parameter_sets[0]);
    assert_eq!(
        sps.timestamp, 7200,
        "parameter sets carry the keyframe's timestamp"
    );
    assert_eq!(timestamps(&events), vec![7200, 10800, 14400]);
}

#[test]
fn past_the_byte_cap_a_new_sink_waits_for_the_next_keyframe() {
    let channel = Channel::new(
        camera(),
        ChannelSettings {
            keyframe_cache_max_bytes: 250,
            ..settings()
        },
    );
    channel.set_info(h264_info());
    channel.publish(packet(0, true, 100));
    channel.publish(packet(3600, false, 100));
    channel.publish(packet(7200, false, 100));
    let mut late = channel.subscribe(SinkLabel::local());
    assert!(
        drain(&mut late).is_empty(),
        "the cache overflowed, nothing to replay"
    );
    channel.publish(packet(10800, false, 100));
    channel.publish(packet(14400, true, 100));
    assert_eq!(timestamps(&drain(&mut late)), vec![14400]);
}

#[test]
fn past_the_time_cap_a_new_sink_waits_for_the_next_keyframe() {
    let channel = Channel::new(
        camera(),
        ChannelSettings {
            keyframe_cache_max_duration: Duration::from_secs(1),
            ..settings()
        },
    );
    channel.set_info(h264_info());
    channel.publish(packet(0, true, 10));
    channel.publish(packet(90_000 + 1, false, 10));
    let mut late = channel.subscribe(SinkLabel::local());
    assert!(drain(&mut late).is_empty());
}

#[test]
fn a_slow_sink_drops_until_the_next_keyframe_and_the_others_get_everything() {
    let channel = Channel::new(camera(), settings());
    channel.set_info(h264_info());
    let mut slow = channel.subscribe(SinkLabel::local());
    let mut fast = channel.subscribe(SinkLabel::local());
    let mut expected = Vec::new();
    let mut fast_seen = Vec::new();
    let mut slow_events = Vec::new();
    for i in 0..20u32 {
        let key = i == 0 || i == 15;
        channel.publish(packet(i * 3600, key, 10));
        expected.push(i * 3600);
        fast_seen.extend(timestamps(&drain(&mut fast)));
        if i == 12 {
            // The slow sink catches up once, while it is dropping.
            slow_events.extend(drain(&mut slow));
        }
    }
    slow_events.extend(drain(&mut slow));
    assert_eq!(fast_seen, expected);
    // 8 queued (0..8), 7 dropped (8..15), then the keyframe at 15 resumes.
    let events = slow_events;
    assert_eq!(
        timestamps(&events[..8]),
        (0..8).map(|i| i * 3600).collect::<Vec<_>>()
    );
    assert_eq!(events[8], SinkEvent::Dropped(7));
    assert_eq!(
        timestamps(&events[9..]),
        (15..20).map(|i| i * 3600).collect::<Vec<_>>()
    );
}

#[test]
fn subscriber_count_follows_subscriptions() {
    let channel = Channel::new(camera(), settings());
    let demand = channel.watch_subscribers();
    let a = channel.subscribe(SinkLabel::local());
    let b = channel.subscribe(SinkLabel::local());
    assert_eq!(*demand.borrow(), 2);
    drop(a);
    assert_eq!(*demand.borrow(), 1);
    drop(b);
    assert_eq!(*demand.borrow(), 0);
}

#[tokio::test(start_paused = true)]
async fn keyframe_requests_are_rate_limited() {
    let channel = Channel::new(camera(), settings());
    let requests = channel.watch_keyframe_requests();
    // The first subscriber finds no cache: one request.
    let sub = channel.subscribe(SinkLabel::local());
    assert_eq!(*requests.borrow(), 1);
    for _ in 0..10 {
        sub.request_keyframe();
    }
    assert_eq!(
        *requests.borrow(),
        1,
        "within the interval, requests are merged"
    );
    tokio::time::advance(Duration::from_millis(1001)).await;
    sub.request_keyframe();
    sub.request_keyframe();
    assert_eq!(*requests.borrow(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cold_describe_waits_a_bounded_time() {
    let channel = Channel::new(camera(), settings());
    assert_eq!(channel.wait_info(Duration::from_secs(8)).await, None);
    let publisher = channel.clone();
    let waiter = tokio::spawn(async move { channel.wait_info(Duration::from_secs(8)).await });
    tokio::time::advance(Duration::from_secs(1)).await;
    publisher.set_info(h264_info());
    assert_eq!(waiter.await.expect("waiter ran"), Some(h264_info()));
}

#[tokio::test]
async fn closing_ends_every_subscription_after_its_queue() {
    let channel = Channel::new(camera(), settings());
    channel.set_info(h264_info());
    let mut sub = channel.subscribe(SinkLabel::local());
    channel.publish(packet(0, true, 10));
    channel.close();
    assert!(matches!(sub.recv().await, Some(SinkEvent::Packet(_))));
    assert_eq!(sub.recv().await, None);
}

#[test]
fn sender_reports_reach_live_and_new_sinks() {
    let channel = Channel::new(camera(), settings());
    let mut early = channel.subscribe(SinkLabel::local());
    channel.sender_report(0xdead_beef_0000_0001, 1234);
    assert_eq!(
        drain(&mut early),
        vec![SinkEvent::SenderReport {
            ntp: 0xdead_beef_0000_0001,
            rtp: 1234
        }]
    );
    let mut late = channel.subscribe(SinkLabel::local());
    assert_eq!(
        drain(&mut late),
        vec![SinkEvent::SenderReport {
            ntp: 0xdead_beef_0000_0001,
            rtp: 1234
        }]
    );
}

#[test]
fn oversized_packets_are_resplit_once_for_every_sink() {
    let channel = Channel::new(
        camera(),
        ChannelSettings {
            max_payload: 500,
            sink_queue_packets: 64,
            ..ChannelSettings::default()
        },
    );
    channel.set_info(h264_info());
    let mut a = channel.subscribe(SinkLabel::local());
    let mut b = channel.subscribe(SinkLabel::local());
    channel.publish(packet(0, true, 1400));
    let (ea, eb) = (drain(&mut a), drain(&mut b));
    assert!(
        ea.len() >= 3,
        "1400 bytes at 500 make at least 3 packets: {ea:?}"
    );
    assert_eq!(ea, eb);
    for event in &ea {
        let SinkEvent::Packet(p) = event else {
            panic!("{event:?}")
        };
        assert!(p.payload.len() <= 500);
    }
    let SinkEvent::Packet(last) = ea.last().expect("packets") else {
        unreachable!()
    };
    assert!(last.marker);
}

#[test]
fn in_band_parameter_sets_refresh_the_stream_info() {
    let channel = Channel::new(camera(), settings());
    channel.set_info(h264_info());
    let new_sps = Bytes::from_static(&[0x67, 0x64, 0x00, 0x28, 0xbb]);
    channel.publish(MediaPacket {
        payload: new_sps.clone(),
        timestamp: 0,
        marker: false,
        keyframe_start: false,
        parameter_set: true,
    });
    let info = channel.info().expect("described");
    assert_eq!(info.parameter_sets[0], new_sps);
    assert_eq!(info.parameter_sets[1], h264_info().parameter_sets[1]);
}

#[test]
fn after_a_source_discontinuity_current_sinks_wait_for_the_next_keyframe() {
    let channel = Channel::new(camera(), settings());
    channel.set_info(h264_info());
    let mut sub = channel.subscribe(SinkLabel::local());
    channel.publish(packet(0, true, 10));
    channel.publish(packet(3600, false, 10));
    assert_eq!(timestamps(&drain(&mut sub)), vec![0, 3600]);
    channel.reset_cache();
    // The camera came back mid-GOP: its first pictures reference what nobody has.
    channel.publish(packet(90_000, false, 10));
    channel.publish(packet(93_600, true, 10));
    channel.publish(packet(97_200, false, 10));
    let events = drain(&mut sub);
    assert_eq!(timestamps(&events), vec![93_600, 97_200]);
    assert!(
        !events.iter().any(|e| matches!(e, SinkEvent::Dropped(_))),
        "waiting for a keyframe after a discontinuity is not the sink's loss"
    );
}
