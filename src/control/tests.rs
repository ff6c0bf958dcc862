use bytes::{Bytes, BytesMut};
use jiff::Timestamp;
use prost::Message as _;

use super::*;
use crate::ids::{CameraId, SiteId};
use crate::media::{Codec, StreamInfo};
use crate::policy::{AgentKind, ViewingSession};

fn camera(s: &str) -> CameraId {
    s.parse().unwrap()
}

fn site(s: &str) -> SiteId {
    s.parse().unwrap()
}

fn sps() -> Bytes {
    Bytes::from_static(&[0x67, 0x42, 0x00, 0x1f])
}

fn pps() -> Bytes {
    Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80])
}

fn catalog_camera(id: &str) -> CatalogCamera {
    CatalogCamera {
        id: camera(id),
        codec: Some(Codec::H264),
        parameter_sets: vec![sps(), pps()],
        restrictions: Restrictions {
            on_request: true,
            onward: vec![site("ccor.metz.example")],
            grant_end: Some(Timestamp::from_second(1_801_000_000).unwrap()),
        },
        up: true,
    }
}

/// One of every message, with every optional part set in some and unset in others.
fn every_message() -> Vec<Message> {
    let flow = FlowId::new(7).unwrap();
    vec![
        Message::Hello(Hello {
            proto_version: PROTO_VERSION,
            site: site("sncf.metz.example"),
            features: Feature::ALL.to_vec(),
            policy_serial: Some(7),
        }),
        Message::Hello(Hello {
            proto_version: 1,
            site: site("csu.metz.example"),
            features: vec![],
            policy_serial: None,
        }),
        Message::Catalog(vec![
            catalog_camera("metz-ville/quai-1"),
            CatalogCamera {
                id: camera("peltre/parvis"),
                codec: None,
                parameter_sets: vec![],
                restrictions: Restrictions::default(),
                up: false,
            },
        ]),
        Message::Catalog(vec![]),
        Message::CatalogUpdate(vec![catalog_camera("metz-nord/hall")]),
        Message::Subscribe(Subscribe {
            request_id: RequestId(3),
            camera: camera("metz-ville/quai-1"),
        }),
        Message::SubscribeOk(SubscribeOk {
            request_id: RequestId(3),
            flow_id: flow,
            info: StreamInfo {
                codec: Codec::H265,
                clock_rate: VIDEO_CLOCK_RATE,
                parameter_sets: vec![sps(), pps()],
            },
        }),
        Message::SubscribeError(SubscribeError {
            request_id: RequestId(4),
            code: ErrorCode::NotGranted,
        }),
        Message::Unsubscribe { flow_id: flow },
        Message::ViewOpen(ViewOpen {
            view_id: ViewId(9),
            camera: camera("metz-ville/quai-1"),
            session: ViewingSession {
                agent: "agent.dupont".to_owned(),
                kind: AgentKind::Agent,
                reason: Some("rixe quai 1".to_owned()),
                intervention: Some("int-42".to_owned()),
                origin: site("ccor.metz.example"),
            },
        }),
        Message::ViewOpen(ViewOpen {
            view_id: ViewId(10),
            camera: camera("metz/place"),
            session: ViewingSession {
                agent: "vms".to_owned(),
                kind: AgentKind::Service,
                reason: None,
                intervention: None,
                origin: site("csu.metz.example"),
            },
        }),
        Message::ViewAnswer(ViewAnswer {
            view_id: ViewId(9),
            refusal: None,
        }),
        Message::ViewAnswer(ViewAnswer {
            view_id: ViewId(10),
            refusal: Some(ErrorCode::ServiceAccount),
        }),
        Message::ViewClose { view_id: ViewId(9) },
        Message::KeyframeRequest { flow_id: flow },
        Message::StreamEnded(StreamEnded {
            flow_id: flow,
            code: ErrorCode::Withdrawn,
        }),
        Message::Checkpoint(Checkpoint {
            journal_id: "j-1".to_owned(),
            sequence: 1234,
            head_hash: [0xab; 32],
            time: Timestamp::from_second(1_770_000_000).unwrap(),
            signature: [0xcd; 64],
        }),
    ]
}

fn decode_wire(control: wire::Control) -> Result<Message, ControlDecodeError> {
    Message::try_from(control)
}

fn wire_of(message: wire::control::Message) -> wire::Control {
    wire::Control {
        message: Some(message),
    }
}

#[test]
fn every_message_round_trips_through_the_wire_types() {
    for message in every_message() {
        let control = wire::Control::from(message.clone());
        assert_eq!(decode_wire(control).unwrap(), message);
    }
}

#[test]
fn every_message_round_trips_through_framing_in_one_buffer() {
    let messages = every_message();
    let mut buf = BytesMut::new();
    for message in &messages {
        encode_message(message.clone(), DEFAULT_MAX_MESSAGE_LEN, &mut buf).unwrap();
    }
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_MESSAGE_LEN);
    decoder.handle_data(&buf);
    let mut out = Vec::new();
    while let Some(message) = decoder.poll_message().unwrap() {
        out.push(message);
    }
    decoder.finish().unwrap();
    assert_eq!(out, messages);
}

#[test]
fn framing_survives_byte_by_byte_delivery() {
    let messages = every_message();
    let mut buf = BytesMut::new();
    for message in &messages {
        encode_message(message.clone(), DEFAULT_MAX_MESSAGE_LEN, &mut buf).unwrap();
    }
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_MESSAGE_LEN);
    let mut out = Vec::new();
    for byte in buf.iter() {
        decoder.handle_data(std::slice::from_ref(byte));
        while let Some(message) = decoder.poll_message().unwrap() {
            out.push(message);
        }
    }
    decoder.finish().unwrap();
    assert_eq!(out, messages);
}

#[test]
fn wire_encoding_is_plain_delimited_protobuf() {
    // Another implementation must be able to read the stream with
    // `Control::decode_length_delimited`.
    let message = every_message().remove(0);
    let mut buf = BytesMut::new();
    encode_message(message.clone(), DEFAULT_MAX_MESSAGE_LEN, &mut buf).unwrap();
    let control = wire::Control::decode_length_delimited(buf.freeze()).unwrap();
    assert_eq!(decode_wire(control).unwrap(), message);
}

#[test]
fn oversize_message_is_refused_on_its_length_prefix() {
    let mut decoder = FrameDecoder::new(100);
    // Length 101, and no body yet: refused without waiting for the body.
    decoder.handle_data(&[101]);
    assert_eq!(
        decoder.poll_message(),
        Err(FrameError::Oversize { len: 101, max: 100 })
    );
    // A huge announced length.
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_MESSAGE_LEN);
    let mut prefix = Vec::new();
    prost::encoding::encode_varint(u64::MAX, &mut prefix);
    decoder.handle_data(&prefix);
    assert!(matches!(
        decoder.poll_message(),
        Err(FrameError::Oversize { len: u64::MAX, .. })
    ));
}

#[test]
fn oversize_message_is_not_sent() {
    let message = Message::Catalog(
        (0..100)
            .map(|i| catalog_camera(&format!("c/{i}")))
            .collect(),
    );
    let mut buf = BytesMut::new();
    let err = encode_message(message, 512, &mut buf).unwrap_err();
    assert!(
        matches!(err, FrameError::Oversize { max: 512, .. }),
        "{err}"
    );
    assert!(buf.is_empty());
}

#[test]
fn overlong_length_varint_is_refused() {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_MESSAGE_LEN);
    decoder.handle_data(&[0xff; 11]);
    assert_eq!(decoder.poll_message(), Err(FrameError::BadLength));
}

#[test]
fn truncated_stream_is_reported_at_finish() {
    let mut buf = BytesMut::new();
    encode_message(every_message().remove(0), DEFAULT_MAX_MESSAGE_LEN, &mut buf).unwrap();
    for cut in 1..buf.len() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_MESSAGE_LEN);
        decoder.handle_data(&buf[..cut]);
        assert_eq!(decoder.poll_message(), Ok(None), "cut at {cut}");
        assert!(
            matches!(decoder.finish(), Err(FrameError::Truncated { .. })),
            "cut at {cut}"
        );
    }
    // A cut inside the length prefix of a long message.
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_MESSAGE_LEN);
    decoder.handle_data(&[0x80]);
    assert_eq!(decoder.poll_message(), Ok(None));
    assert_eq!(decoder.finish(), Err(FrameError::Truncated { buffered: 1 }));
}

#[test]
fn garbage_body_is_a_protobuf_error() {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_MESSAGE_LEN);
    // Length 3, then field 1 with wire type 7 (invalid).
    decoder.handle_data(&[3, 0x0f, 0xff, 0xff]);
    assert!(matches!(
        decoder.poll_message(),
        Err(FrameError::Decode(ControlDecodeError::Protobuf(_)))
    ));
}

#[test]
fn empty_or_unknown_message_type_is_refused() {
    assert_eq!(
        decode_wire(wire::Control { message: None }),
        Err(ControlDecodeError::MissingMessage)
    );
    // A newer peer's message type: field 99, varint 1. prost skips the unknown field.
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_MESSAGE_LEN);
    decoder.handle_data(&[3, 0x98, 0x06, 0x01]);
    assert_eq!(
        decoder.poll_message(),
        Err(FrameError::Decode(ControlDecodeError::MissingMessage))
    );
}

#[test]
fn bad_camera_ids_are_refused() {
    for bad in [
        "",
        "../etc",
        "Metz/quai",
        "a//b",
        "%2e%2e/x",
        "a/b/c/d/e/f/g/h/i",
    ] {
        let err = decode_wire(wire_of(wire::control::Message::Subscribe(
            wire::Subscribe {
                request_id: 1,
                camera: bad.to_owned(),
            },
        )))
        .unwrap_err();
        assert!(
            matches!(
                err,
                ControlDecodeError::BadCameraId {
                    field: "subscribe.camera",
                    ..
                }
            ),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn bad_camera_id_error_is_truncated() {
    let long = "a".repeat(10_000);
    let err = decode_wire(wire_of(wire::control::Message::Subscribe(
        wire::Subscribe {
            request_id: 1,
            camera: long,
        },
    )))
    .unwrap_err();
    assert!(err.to_string().len() < 300, "{err}");
}

#[test]
fn bad_site_ids_are_refused() {
    let err = decode_wire(wire_of(wire::control::Message::Hello(wire::Hello {
        proto_version: 1,
        site_id: "*.metz.example".to_owned(),
        features: vec![],
        policy_serial: 0,
    })))
    .unwrap_err();
    assert!(matches!(
        err,
        ControlDecodeError::BadSiteId {
            field: "hello.site_id",
            ..
        }
    ));
    let mut camera = wire_camera("a/b");
    camera.restrictions.as_mut().unwrap().onward = vec!["UPPER.example".to_owned()];
    let err = decode_wire(wire_of(wire::control::Message::Catalog(wire::Catalog {
        cameras: vec![camera],
    })))
    .unwrap_err();
    assert!(matches!(
        err,
        ControlDecodeError::BadSiteId {
            field: "restrictions.onward",
            ..
        }
    ));
}

/// The wire form of `catalog_camera(id)`, to break.
fn wire_camera(id: &str) -> wire::CatalogCamera {
    match wire::Control::from(Message::Catalog(vec![catalog_camera(id)])).message {
        Some(wire::control::Message::Catalog(mut catalog)) => catalog.cameras.remove(0),
        other => panic!("not a catalog: {other:?}"),
    }
}

#[test]
fn unknown_and_missing_codecs_are_refused_where_required() {
    let mut camera = wire_camera("a/b");
    camera.codec = 9;
    let err = decode_wire(wire_of(wire::control::Message::Catalog(wire::Catalog {
        cameras: vec![camera],
    })))
    .unwrap_err();
    assert_eq!(
        err,
        ControlDecodeError::UnknownCodec {
            field: "catalog_camera.codec",
            value: 9
        }
    );
    let ok = |codec| {
        wire_of(wire::control::Message::SubscribeOk(wire::SubscribeOk {
            request_id: 1,
            flow_id: 1,
            codec,
            parameter_sets: vec![],
        }))
    };
    assert_eq!(
        decode_wire(ok(0)),
        Err(ControlDecodeError::MissingCodec {
            field: "subscribe_ok.codec"
        })
    );
    assert_eq!(
        decode_wire(ok(3)),
        Err(ControlDecodeError::UnknownCodec {
            field: "subscribe_ok.codec",
            value: 3
        })
    );
}

#[test]
fn catalog_camera_without_restrictions_is_refused() {
    let mut camera = wire_camera("a/b");
    camera.restrictions = None;
    assert_eq!(
        decode_wire(wire_of(wire::control::Message::Catalog(wire::Catalog {
            cameras: vec![camera],
        }))),
        Err(ControlDecodeError::MissingField {
            field: "catalog_camera.restrictions"
        })
    );
}

#[test]
fn default_restrictions_still_travel() {
    // All-default restrictions must be encoded (as an empty sub-message), or the
    // receiver would refuse the camera.
    let message = Message::Catalog(vec![CatalogCamera {
        restrictions: Restrictions::default(),
        ..catalog_camera("a/b")
    }]);
    let mut buf = BytesMut::new();
    encode_message(message.clone(), DEFAULT_MAX_MESSAGE_LEN, &mut buf).unwrap();
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_MESSAGE_LEN);
    decoder.handle_data(&buf);
    assert_eq!(decoder.poll_message().unwrap(), Some(message));
}

#[test]
fn empty_parameter_set_is_refused() {
    let err = decode_wire(wire_of(wire::control::Message::SubscribeOk(
        wire::SubscribeOk {
            request_id: 1,
            flow_id: 1,
            codec: 1,
            parameter_sets: vec![sps(), Bytes::new()],
        },
    )))
    .unwrap_err();
    assert_eq!(
        err,
        ControlDecodeError::EmptyParameterSet {
            field: "subscribe_ok.parameter_sets"
        }
    );
}

fn view_open(kind: i32, agent: &str, origin: &str) -> wire::Control {
    wire_of(wire::control::Message::ViewOpen(wire::ViewOpen {
        view_id: 1,
        camera: "a/b".to_owned(),
        agent: agent.to_owned(),
        kind,
        reason: String::new(),
        intervention: String::new(),
        origin: origin.to_owned(),
    }))
}

#[test]
fn view_open_needs_kind_agent_and_origin() {
    assert_eq!(
        decode_wire(view_open(0, "x", "ccor.metz.example")),
        Err(ControlDecodeError::MissingAgentKind {
            field: "view_open.kind"
        })
    );
    assert_eq!(
        decode_wire(view_open(5, "x", "ccor.metz.example")),
        Err(ControlDecodeError::UnknownAgentKind {
            field: "view_open.kind",
            value: 5
        })
    );
    assert_eq!(
        decode_wire(view_open(1, "", "ccor.metz.example")),
        Err(ControlDecodeError::EmptyAgent {
            field: "view_open.agent"
        })
    );
    assert!(matches!(
        decode_wire(view_open(1, "x", "")),
        Err(ControlDecodeError::BadSiteId {
            field: "view_open.origin",
            ..
        })
    ));
    let Ok(Message::ViewOpen(open)) = decode_wire(view_open(2, "vms", "ccor.metz.example")) else {
        panic!("valid view open refused");
    };
    assert_eq!(open.session.kind, AgentKind::Service);
    assert_eq!(open.session.reason, None);
}

#[test]
fn error_codes_are_required_where_they_mean_a_refusal() {
    assert_eq!(
        decode_wire(wire_of(wire::control::Message::SubscribeError(
            wire::SubscribeError {
                request_id: 1,
                code: 0,
            }
        ))),
        Err(ControlDecodeError::MissingErrorCode {
            field: "subscribe_error.code"
        })
    );
    assert_eq!(
        decode_wire(wire_of(wire::control::Message::StreamEnded(
            wire::StreamEnded {
                flow_id: 1,
                code: 0,
            }
        ))),
        Err(ControlDecodeError::MissingErrorCode {
            field: "stream_ended.code"
        })
    );
}

#[test]
fn unknown_error_code_from_a_newer_peer_is_still_a_refusal() {
    let decoded = decode_wire(wire_of(wire::control::Message::ViewAnswer(
        wire::ViewAnswer {
            view_id: 1,
            refusal: 99,
        },
    )))
    .unwrap();
    assert_eq!(
        decoded,
        Message::ViewAnswer(ViewAnswer {
            view_id: ViewId(1),
            refusal: Some(ErrorCode::Unrecognised(99)),
        })
    );
    // And it travels on unchanged.
    let control = wire::Control::from(decoded);
    assert!(matches!(
        control.message,
        Some(wire::control::Message::ViewAnswer(wire::ViewAnswer {
            refusal: 99,
            ..
        }))
    ));
}

#[test]
fn every_error_code_has_a_distinct_name_and_round_trips() {
    let mut names = std::collections::HashSet::new();
    for value in 1..=12 {
        let code = ErrorCode::from_wire_for_test(value);
        assert!(!matches!(code, ErrorCode::Unrecognised(_)), "{value}");
        assert!(names.insert(code.as_str()), "{}", code.as_str());
        let back = decode_wire(wire_of(wire::control::Message::SubscribeError(
            wire::SubscribeError {
                request_id: 1,
                code: value,
            },
        )))
        .unwrap();
        assert_eq!(
            back,
            Message::SubscribeError(SubscribeError {
                request_id: RequestId(1),
                code
            })
        );
        assert_eq!(
            wire::Control::from(back),
            wire_of(wire::control::Message::SubscribeError(
                wire::SubscribeError {
                    request_id: 1,
                    code: value,
                }
            ))
        );
    }
}

impl ErrorCode {
    fn from_wire_for_test(value: i32) -> ErrorCode {
        match decode_wire(wire_of(wire::control::Message::StreamEnded(
            wire::StreamEnded {
                flow_id: 0,
                code: value,
            },
        ))) {
            Ok(Message::StreamEnded(StreamEnded { code, .. })) => code,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn flow_ids_above_the_varint_range_are_refused() {
    assert_eq!(
        decode_wire(wire_of(wire::control::Message::KeyframeRequest(
            wire::KeyframeRequest { flow_id: 1 << 62 }
        ))),
        Err(ControlDecodeError::FlowIdTooLarge {
            field: "keyframe_request.flow_id",
            value: 1 << 62
        })
    );
    assert!(FlowId::new((1 << 62) - 1).is_some());
}

#[test]
fn unknown_features_are_ignored_and_known_ones_deduplicated() {
    let decoded = decode_wire(wire_of(wire::control::Message::Hello(wire::Hello {
        proto_version: 2,
        site_id: "csu.metz.example".to_owned(),
        features: vec![
            "teleport".to_owned(),
            "onward".to_owned(),
            "onward".to_owned(),
            "grant_end".to_owned(),
        ],
        policy_serial: 3,
    })))
    .unwrap();
    let Message::Hello(hello) = decoded else {
        panic!("not a hello");
    };
    assert_eq!(hello.features, vec![Feature::Onward, Feature::GrantEnd]);
    assert_eq!(hello.proto_version, 2);
    assert_eq!(hello.policy_serial, Some(3));
}

#[test]
fn checkpoint_lengths_and_time_are_checked() {
    let good = wire::Checkpoint {
        journal_id: "j".to_owned(),
        sequence: 1,
        head_hash: Bytes::from(vec![0; 32]),
        time_unix: 1_770_000_000,
        signature: Bytes::from(vec![0; 64]),
    };
    let check = |c: wire::Checkpoint| decode_wire(wire_of(wire::control::Message::Checkpoint(c)));
    assert!(check(good.clone()).is_ok());
    assert_eq!(
        check(wire::Checkpoint {
            head_hash: Bytes::from(vec![0; 31]),
            ..good.clone()
        }),
        Err(ControlDecodeError::BadLength {
            field: "checkpoint.head_hash",
            len: 31,
            expected: 32
        })
    );
    assert_eq!(
        check(wire::Checkpoint {
            signature: Bytes::new(),
            ..good.clone()
        }),
        Err(ControlDecodeError::BadLength {
            field: "checkpoint.signature",
            len: 0,
            expected: 64
        })
    );
    assert_eq!(
        check(wire::Checkpoint {
            time_unix: i64::MAX,
            ..good.clone()
        }),
        Err(ControlDecodeError::BadTimestamp {
            field: "checkpoint.time_unix",
            value: i64::MAX
        })
    );
    assert_eq!(
        check(wire::Checkpoint {
            journal_id: String::new(),
            ..good
        }),
        Err(ControlDecodeError::MissingField {
            field: "checkpoint.journal_id"
        })
    );
}

#[tokio::test]
async fn reader_and_writer_carry_messages_over_a_byte_stream() {
    let (a, b) = tokio::io::duplex(64);
    let messages = every_message();
    let sent = messages.clone();
    let writer = tokio::spawn(async move {
        let mut writer = ControlWriter::new(a, DEFAULT_MAX_MESSAGE_LEN);
        for message in sent {
            writer.write(message).await.unwrap();
        }
        // Dropping the writer ends the stream.
    });
    let mut reader = ControlReader::new(b, DEFAULT_MAX_MESSAGE_LEN);
    let mut received = Vec::new();
    let read = async {
        while let Some(message) = reader.read().await.unwrap() {
            received.push(message);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .expect("reader timed out");
    writer.await.unwrap();
    assert_eq!(received, messages);
}

#[tokio::test]
async fn reader_reports_a_stream_cut_inside_a_message() {
    use tokio::io::AsyncWriteExt;
    let (mut a, b) = tokio::io::duplex(64);
    let mut buf = BytesMut::new();
    encode_message(every_message().remove(0), DEFAULT_MAX_MESSAGE_LEN, &mut buf).unwrap();
    a.write_all(&buf[..buf.len() - 1]).await.unwrap();
    drop(a);
    let mut reader = ControlReader::new(b, DEFAULT_MAX_MESSAGE_LEN);
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), reader.read())
        .await
        .expect("reader timed out");
    assert!(
        matches!(
            result,
            Err(ControlStreamError::Frame(FrameError::Truncated { .. }))
        ),
        "{result:?}"
    );
}

#[test]
fn each_restriction_needs_the_feature_that_enforces_it() {
    let none = Restrictions::default();
    assert_eq!(none.required_features().count(), 0);
    assert!(none.enforced_by(&[]));

    let all = catalog_camera("metz-ville/quai-1").restrictions;
    assert_eq!(
        all.required_features().collect::<Vec<_>>(),
        vec![Feature::Onward, Feature::OnRequest, Feature::GrantEnd]
    );
    assert!(all.enforced_by(&Feature::ALL));
    for missing in Feature::ALL {
        let declared: Vec<Feature> = Feature::ALL.into_iter().filter(|f| *f != missing).collect();
        assert!(!all.enforced_by(&declared), "{missing:?} not declared");
    }

    // Each restriction alone needs exactly its own feature.
    let onward = Restrictions {
        onward: vec![site("ccor.metz.example")],
        ..Restrictions::default()
    };
    assert!(onward.enforced_by(&[Feature::Onward]));
    assert!(!onward.enforced_by(&[Feature::OnRequest, Feature::GrantEnd]));
    let on_request = Restrictions {
        on_request: true,
        ..Restrictions::default()
    };
    assert!(on_request.enforced_by(&[Feature::OnRequest]));
    assert!(!on_request.enforced_by(&[Feature::Onward]));
    let grant_end = Restrictions {
        grant_end: Some(Timestamp::from_second(1_801_000_000).unwrap()),
        ..Restrictions::default()
    };
    assert!(grant_end.enforced_by(&[Feature::GrantEnd]));
    assert!(!grant_end.enforced_by(&[Feature::Onward, Feature::OnRequest]));
}
