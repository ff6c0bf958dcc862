use std::time::{Duration, Instant};

use base64::Engine as _;

use super::*;
use crate::media::Codec;
use crate::policy::AgentKind;
use crate::rtsp::Secret;
use crate::rtsp::auth::{challenge_nonce, digest_header};
use crate::rtsp::demux::{DEFAULT_MAX_MESSAGE, Demuxer, Frame};

const BASE: &str = "rtsp://gw.example:8554";

fn users() -> Vec<RtspUser> {
    vec![
        RtspUser {
            name: "alice".into(),
            kind: AgentKind::Agent,
            secret: Secret::Password("wonderland".into()),
            cameras: vec!["metz/**".parse().unwrap()],
        },
        RtspUser {
            name: "vms".into(),
            kind: AgentKind::Service,
            secret: Secret::Password("s3cret".into()),
            cameras: vec!["metz/**".parse().unwrap(), "sncf/**".parse().unwrap()],
        },
    ]
}

struct Fixture {
    core: ConnectionCore,
    auth: Arc<Authenticator>,
    t0: Instant,
}

fn fixture() -> Fixture {
    let t0 = Instant::now();
    let auth = Arc::new(Authenticator::new(users(), true, t0));
    let core = ConnectionCore::new(
        auth.clone(),
        "192.0.2.50:40000".parse().unwrap(),
        "192.0.2.1:8554".parse().unwrap(),
        Duration::from_secs(60),
    );
    Fixture { core, auth, t0 }
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn alice() -> String {
    basic("alice", "wonderland")
}

/// Parses one request text (headers without the final blank line).
fn req(text: &str) -> RawRequest {
    let mut d = Demuxer::new(DEFAULT_MAX_MESSAGE);
    d.push(text.as_bytes());
    d.push(b"\r\n");
    match d.poll_frame() {
        Ok(Some(Frame::Request(r))) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn reply(step: Step) -> Reply {
    match step {
        Step::Reply(r) => r,
        other => panic!("expected a plain reply, got {other:?}"),
    }
}

fn text(r: &Reply) -> String {
    let mut out = BytesMut::new();
    r.write_to(&mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

impl Fixture {
    fn handle(&mut self, text: &str) -> Step {
        self.core.handle_request(&req(text), self.t0)
    }

    fn status(&mut self, text: &str) -> u16 {
        match self.handle(text) {
            Step::Reply(r) | Step::Close(r) => r.status(),
            Step::Describe(_) => 1001,
            Step::Setup(_) => 1002,
            Step::Play(_) => 1003,
            Step::Pause { .. } => 1004,
            Step::Teardown { .. } => 1005,
        }
    }

    /// SETUP over TCP on track 0 of `camera` as alice; returns the session id.
    fn setup_tcp(&mut self, camera: &str) -> (SessionKey, String) {
        let step = self.handle(&format!(
            "SETUP {BASE}/{camera}/track=0 RTSP/1.0\r\nCSeq: 3\r\n{}Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
            alice()
        ));
        let Step::Setup(job) = step else {
            panic!("{step:?}")
        };
        let (key, _, r) = self
            .core
            .finish_setup(
                &job,
                SetupGrant {
                    track: 0,
                    server_ports: None,
                },
                self.t0,
            )
            .unwrap();
        let id = r
            .get("Session")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        (key, id)
    }
}

#[test]
fn options_needs_no_credentials_and_echoes_cseq() {
    let mut f = fixture();
    let r = reply(f.handle("OPTIONS rtsp://gw.example:8554/metz/cam-1 RTSP/1.0\r\nCSeq: 17\r\n"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.get("CSeq"), Some("17"));
    assert_eq!(r.get("Public"), Some(PUBLIC));
    let t = text(&r);
    assert!(t.starts_with("RTSP/1.0 200 OK\r\nCSeq: 17\r\n"), "{t}");
    assert!(t.ends_with("\r\n\r\n"));
    let r = reply(f.handle("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n"));
    assert_eq!(r.status(), 200);
}

#[test]
fn protocol_errors() {
    let mut f = fixture();
    // No CSeq: 400, nothing to echo.
    let r = reply(f.handle("OPTIONS * RTSP/1.0\r\n"));
    assert_eq!(r.status(), 400);
    assert_eq!(r.get("CSeq"), None);
    assert_eq!(f.status("OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n"), 505);
    let r = reply(f.handle("OPTIONS * RTSP/1.0\r\nCSeq: 2\r\nRequire: play.scale\r\n"));
    assert_eq!(r.status(), 551);
    assert_eq!(r.get("Unsupported"), Some("play.scale"));
    for m in [
        "ANNOUNCE",
        "RECORD",
        "SET_PARAMETER",
        "REDIRECT",
        "FROBNICATE",
    ] {
        assert_eq!(
            f.status(&format!("{m} {BASE}/metz/cam-1 RTSP/1.0\r\nCSeq: 4\r\n")),
            501,
            "{m}"
        );
    }
}

#[test]
fn describe_challenges_then_accepts_digest() {
    let mut f = fixture();
    let uri = format!("{BASE}/metz/cam-1");
    let r = reply(f.handle(&format!("DESCRIBE {uri} RTSP/1.0\r\nCSeq: 2\r\n")));
    assert_eq!(r.status(), 401);
    let challenges: Vec<&str> = r.get_all("WWW-Authenticate").collect();
    assert_eq!(challenges.len(), 2);
    assert!(challenges[0].starts_with("Digest realm=\"passerelle\""));
    assert!(challenges[1].starts_with("Basic"));
    let nonce = challenge_nonce(challenges[0]);
    for qop in [false, true] {
        let h = digest_header("alice", "wonderland", "DESCRIBE", &uri, &nonce, qop);
        let step = f.handle(&format!(
            "DESCRIBE {uri} RTSP/1.0\r\nCSeq: 3\r\nAuthorization: {h}\r\n"
        ));
        let Step::Describe(job) = step else {
            panic!("{step:?}")
        };
        assert_eq!(job.camera.as_str(), "metz/cam-1");
        assert_eq!(job.user.name, "alice");
        assert_eq!(job.content_base, format!("{uri}/"));
    }
    // Wrong password.
    let h = digest_header("alice", "guess", "DESCRIBE", &uri, &nonce, false);
    assert_eq!(
        f.status(&format!(
            "DESCRIBE {uri} RTSP/1.0\r\nCSeq: 4\r\nAuthorization: {h}\r\n"
        )),
        401
    );
}

#[test]
fn describe_answer_is_sdp_with_content_base() {
    let mut f = fixture();
    let step = f.handle(&format!(
        "DESCRIBE {BASE}/metz/cam-1 RTSP/1.0\r\nCSeq: 5\r\n{}",
        alice()
    ));
    let Step::Describe(job) = step else {
        panic!("{step:?}")
    };
    let info = StreamInfo {
        codec: Codec::H264,
        clock_rate: 90_000,
        parameter_sets: vec![],
    };
    let r = f.core.finish_describe(&job, 7, &[info]);
    assert_eq!(r.status(), 200);
    assert_eq!(r.get("CSeq"), Some("5"));
    assert_eq!(
        r.get("Content-Base"),
        Some("rtsp://gw.example:8554/metz/cam-1/")
    );
    assert_eq!(r.get("Content-Type"), Some("application/sdp"));
    let body = std::str::from_utf8(r.body_bytes()).unwrap();
    assert!(body.contains("a=control:track=0\r\n"));
    assert!(body.contains("o=- 7 1 IN IP4 192.0.2.1\r\n"));
    assert!(text(&r).contains(&format!("Content-Length: {}\r\n", body.len())));
}

#[test]
fn unknown_camera_ids_answer_404_400_414() {
    let mut f = fixture();
    let d = |f: &mut Fixture, path: &str| {
        f.status(&format!(
            "DESCRIBE {BASE}/{path} RTSP/1.0\r\nCSeq: 2\r\n{}",
            alice()
        ))
    };
    // Not among alice's patterns: 404 whether it exists or not.
    assert_eq!(d(&mut f, "sncf/woippy/quai-1"), 404);
    assert_eq!(d(&mut f, "metz"), 404);
    // Malformed: 400.
    assert_eq!(d(&mut f, "metz/../sncf/woippy"), 400);
    assert_eq!(d(&mut f, "metz/%2e%2e/x"), 400);
    assert_eq!(d(&mut f, "Metz/Cam"), 400);
    assert_eq!(d(&mut f, "metz//cam"), 400);
    assert_eq!(d(&mut f, ""), 400);
    assert_eq!(d(&mut f, "metz/track=x"), 400);
    // Overlong: 414.
    let long = format!("metz/{}", "a".repeat(300));
    assert_eq!(d(&mut f, &long), 414);
    // A track URL describes nothing.
    assert_eq!(d(&mut f, "metz/cam-1/track=0"), 404);
    // Credentials come first: no hint about ids to anyone without them.
    assert_eq!(
        f.status(&format!(
            "DESCRIBE {BASE}/metz/../x RTSP/1.0\r\nCSeq: 2\r\n"
        )),
        401
    );
}

#[test]
fn target_parsing() {
    let t = Target::parse(Some("rtsp://h:554/metz/cam-1/track=2")).unwrap();
    assert_eq!(
        (t.origin.as_str(), t.camera.as_str(), t.track),
        ("rtsp://h:554", "metz/cam-1", Some(2))
    );
    let t = Target::parse(Some("rtsp://h/metz/cam-1/")).unwrap();
    assert_eq!((t.camera.as_str(), t.track), ("metz/cam-1", None));
    let t = Target::parse(Some("rtsp://[2001:db8::1]:8554/cam?x=1")).unwrap();
    assert_eq!(
        (t.origin.as_str(), t.camera.as_str()),
        ("rtsp://[2001:db8::1]:8554", "cam")
    );
    assert_eq!(
        Target::parse(Some("http://h/cam")),
        Err(TargetError::Malformed)
    );
    assert_eq!(Target::parse(Some("rtsp://h")), Err(TargetError::Malformed));
    assert_eq!(Target::parse(None), Err(TargetError::Malformed));
    assert_eq!(
        Target::parse(Some(&format!("rtsp://h/{}", "a/".repeat(600)))),
        Err(TargetError::TooLong)
    );
}

#[test]
fn setup_tcp_then_play_then_teardown() {
    let mut f = fixture();
    let step = f.handle(&format!(
        "SETUP {BASE}/metz/cam-1/track=0 RTSP/1.0\r\nCSeq: 3\r\n{}Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
        alice()
    ));
    let Step::Setup(job) = step else {
        panic!("{step:?}")
    };
    assert_eq!(job.track, Some(0));
    assert_eq!(job.transport, RequestedTransport::Interleaved(Some((0, 1))));
    let (key, leg, r) = f
        .core
        .finish_setup(
            &job,
            SetupGrant {
                track: 0,
                server_ports: None,
            },
            f.t0,
        )
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(leg.transport, LegTransport::Interleaved { rtp: 0, rtcp: 1 });
    let transport = r.get("Transport").unwrap();
    assert!(
        transport.starts_with("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc="),
        "{transport}"
    );
    assert!(transport.contains(&format!("{:08X}", leg.ssrc)));
    let session = r.get("Session").unwrap();
    let (id, timeout) = session.split_once(';').unwrap();
    assert_eq!(timeout, "timeout=60");
    assert_eq!(id.len(), 16);

    // PLAY on another id: 454; without one: 454.
    assert_eq!(
        f.status(&format!(
            "PLAY {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 4\r\nSession: 0123\r\n"
        )),
        454
    );
    assert_eq!(
        f.status(&format!("PLAY {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 4\r\n")),
        454
    );

    let step = f.handle(&format!(
        "PLAY {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 5\r\nSession: {id}\r\nRange: npt=0.000-\r\n"
    ));
    let Step::Play(job) = step else {
        panic!("{step:?}")
    };
    assert_eq!(job.key, key);
    assert_eq!(job.user.name, "alice");
    assert_eq!(job.legs, vec![leg.clone()]);
    let r = f.core.finish_play(
        &job,
        &[PlayStart {
            seq: leg.first_seq,
            rtptime: Some(123_456),
        }],
        f.t0,
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.get("CSeq"), Some("5"));
    assert_eq!(
        r.get("RTP-Info").unwrap(),
        format!(
            "url={BASE}/metz/cam-1/track=0;seq={};rtptime=123456",
            leg.first_seq
        )
    );
    assert_eq!(r.get("Session"), Some(id));

    // PLAY again: plain 200. SETUP while playing: 455.
    assert_eq!(
        f.status(&format!(
            "PLAY {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 6\r\nSession: {id}\r\n"
        )),
        200
    );
    assert_eq!(
        f.status(&format!(
            "SETUP {BASE}/metz/cam-1/track=1 RTSP/1.0\r\nCSeq: 7\r\nSession: {id}\r\nTransport: RTP/AVP/TCP;unicast\r\n"
        )),
        455
    );

    // PAUSE stops media; a second PAUSE is a no-op.
    match f.handle(&format!(
        "PAUSE {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 8\r\nSession: {id}\r\n"
    )) {
        Step::Pause { key: k, reply } => {
            assert_eq!(k, key);
            assert_eq!(reply.status(), 200);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        f.status(&format!(
            "PAUSE {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 9\r\nSession: {id}\r\n"
        )),
        200
    );
    // PLAY after PAUSE needs the hook again.
    assert_eq!(
        f.status(&format!(
            "PLAY {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 10\r\nSession: {id}\r\n"
        )),
        1003
    );

    match f.handle(&format!(
        "TEARDOWN {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 11\r\nSession: {id}\r\n"
    )) {
        Step::Teardown { key: k, reply } => {
            assert_eq!(k, key);
            assert_eq!(reply.status(), 200);
        }
        other => panic!("{other:?}"),
    }
    assert!(f.core.sessions().is_empty());
    assert_eq!(
        f.status(&format!(
            "TEARDOWN {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 12\r\nSession: {id}\r\n"
        )),
        454
    );
    assert_eq!(
        f.status(&format!(
            "GET_PARAMETER {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 13\r\nSession: {id}\r\n"
        )),
        454
    );
}

#[test]
fn setup_udp_sends_to_the_peer_never_to_destination() {
    let mut f = fixture();
    // destination= names a third party: ignored, the leg targets the RTSP peer.
    let step = f.handle(&format!(
        "SETUP {BASE}/metz/cam-1/track=0 RTSP/1.0\r\nCSeq: 3\r\n{}\
         Transport: RTP/AVP;unicast;destination=203.0.113.9;client_port=5000-5001\r\n",
        alice()
    ));
    let Step::Setup(job) = step else {
        panic!("{step:?}")
    };
    assert_eq!(
        job.transport,
        RequestedTransport::Udp {
            rtp: 5000,
            rtcp: 5001
        }
    );
    let (_, leg, r) = f
        .core
        .finish_setup(
            &job,
            SetupGrant {
                track: 0,
                server_ports: Some((30000, 30001)),
            },
            f.t0,
        )
        .unwrap();
    assert_eq!(
        leg.transport,
        LegTransport::Udp {
            client_rtp: "192.0.2.50:5000".parse().unwrap(),
            client_rtcp: "192.0.2.50:5001".parse().unwrap(),
            server_rtp: 30000,
            server_rtcp: 30001,
        }
    );
    let transport = r.get("Transport").unwrap();
    assert!(
        transport.contains("client_port=5000-5001;server_port=30000-30001"),
        "{transport}"
    );
    assert!(!transport.contains("destination"), "{transport}");
    assert!(!text(&r).contains("203.0.113.9"));
}

#[test]
fn setup_refusals() {
    let mut f = fixture();
    let setup = |f: &mut Fixture, extra: &str, path: &str| {
        f.status(&format!(
            "SETUP {BASE}/{path} RTSP/1.0\r\nCSeq: 3\r\n{extra}"
        ))
    };
    let tcp = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n";
    assert_eq!(setup(&mut f, tcp, "metz/cam-1/track=0"), 401);
    let a = alice();
    assert_eq!(
        setup(&mut f, &format!("{a}{tcp}"), "sncf/woippy/q/track=0"),
        404
    );
    assert_eq!(setup(&mut f, &format!("{a}{tcp}"), "metz/CAM/track=0"), 400);
    assert_eq!(setup(&mut f, &a, "metz/cam-1/track=0"), 400);
    assert_eq!(
        setup(
            &mut f,
            &format!("{a}Transport: RTP/AVP;multicast\r\n"),
            "metz/cam-1/track=0"
        ),
        461
    );
    assert_eq!(
        setup(
            &mut f,
            &format!("{a}Transport: RAW/RAW/UDP;unicast\r\n"),
            "metz/cam-1/track=0"
        ),
        461
    );
    // A session's camera is fixed; each track once.
    let (_, id) = f.setup_tcp("metz/cam-1");
    let s = format!("Session: {id}\r\n{tcp}");
    assert_eq!(setup(&mut f, &s, "metz/cam-2/track=1"), 455);
    assert_eq!(setup(&mut f, &s, "metz/cam-1/track=0"), 455);
    assert_eq!(
        setup(&mut f, "Session: nope\r\n", "metz/cam-1/track=1"),
        454
    );
    // A second track joins the session, credentials not needed again.
    let step = f.handle(&format!(
        "SETUP {BASE}/metz/cam-1/track=1 RTSP/1.0\r\nCSeq: 9\r\n{s}"
    ));
    let Step::Setup(job) = step else {
        panic!("{step:?}")
    };
    let (_, leg, r) = f
        .core
        .finish_setup(
            &job,
            SetupGrant {
                track: 1,
                server_ports: None,
            },
            f.t0,
        )
        .unwrap();
    // Channels 0-1 are taken by track 0: the server picks the next pair.
    assert_eq!(leg.transport, LegTransport::Interleaved { rtp: 2, rtcp: 3 });
    assert!(r.get("Transport").unwrap().contains("interleaved=2-3"));
    assert_eq!(f.core.sessions().len(), 1);
    assert_eq!(f.core.sessions()[0].legs.len(), 2);
}

#[test]
fn sessions_time_out_unless_kept_alive() {
    let mut f = fixture();
    let (key, id) = f.setup_tcp("metz/cam-1");
    assert_eq!(f.core.next_timeout(), Some(f.t0 + Duration::from_secs(60)));
    assert_eq!(f.core.poll_timeout(f.t0 + Duration::from_secs(59)), None);
    // GET_PARAMETER and OPTIONS with the session are keep-alives.
    let r = reply(f.core.handle_request(
        &req(&format!(
            "GET_PARAMETER {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 5\r\nSession: {id}\r\n"
        )),
        f.t0 + Duration::from_secs(50),
    ));
    assert_eq!(r.status(), 200);
    assert_eq!(f.core.poll_timeout(f.t0 + Duration::from_secs(61)), None);
    let r = reply(f.core.handle_request(
        &req(&format!(
            "OPTIONS * RTSP/1.0\r\nCSeq: 6\r\nSession: {id};timeout=60\r\n"
        )),
        f.t0 + Duration::from_secs(100),
    ));
    assert_eq!(r.status(), 200);
    // Interleaved RTCP from the client counts too.
    f.core.handle_activity(f.t0 + Duration::from_secs(150));
    assert_eq!(f.core.poll_timeout(f.t0 + Duration::from_secs(209)), None);
    assert_eq!(
        f.core.poll_timeout(f.t0 + Duration::from_secs(210)),
        Some(key)
    );
    assert!(f.core.sessions().is_empty());
    assert_eq!(f.core.next_timeout(), None);
    // A playing interleaved session lives as long as its connection.
    let (key, id) = f.setup_tcp("metz/cam-1");
    let step = f.handle(&format!(
        "PLAY {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 6\r\nSession: {id}\r\n"
    ));
    let Step::Play(job) = step else {
        panic!("{step:?}")
    };
    f.core.finish_play(
        &job,
        &[PlayStart {
            seq: 1,
            rtptime: None,
        }],
        f.t0,
    );
    assert_eq!(f.core.next_timeout(), None);
    assert_eq!(f.core.poll_timeout(f.t0 + Duration::from_secs(3600)), None);
    // Paused, it times out again.
    assert!(matches!(
        f.handle(&format!(
            "PAUSE {BASE}/metz/cam-1/ RTSP/1.0\r\nCSeq: 7\r\nSession: {id}\r\n"
        )),
        Step::Pause { .. }
    ));
    assert_eq!(
        f.core.poll_timeout(f.t0 + Duration::from_secs(60)),
        Some(key)
    );
    // GET_PARAMETER with a body asks for parameters the server does not have.
    let r =
        reply(f.handle("GET_PARAMETER * RTSP/1.0\r\nCSeq: 7\r\nContent-Length: 8\r\n\r\nposition"));
    assert_eq!(r.status(), 451);
}

#[test]
fn repeated_bad_credentials_close_the_connection() {
    let mut f = fixture();
    let bad = basic("alice", "guess");
    for i in 1..MAX_AUTH_FAILURES {
        assert!(
            matches!(
                f.handle(&format!(
                    "DESCRIBE {BASE}/metz/c RTSP/1.0\r\nCSeq: {i}\r\n{bad}"
                )),
                Step::Reply(_)
            ),
            "attempt {i}"
        );
    }
    match f.handle(&format!(
        "DESCRIBE {BASE}/metz/c RTSP/1.0\r\nCSeq: 99\r\n{bad}"
    )) {
        Step::Close(r) => assert_eq!(r.status(), 401),
        other => panic!("{other:?}"),
    }
    // Requests without credentials (the normal first step) do not count.
    let mut f = fixture();
    for i in 0..2 * MAX_AUTH_FAILURES {
        assert!(matches!(
            f.handle(&format!("DESCRIBE {BASE}/metz/c RTSP/1.0\r\nCSeq: {i}\r\n")),
            Step::Reply(_)
        ));
    }
}

#[test]
fn stale_nonce_gets_a_fresh_challenge() {
    let mut f = fixture();
    let uri = format!("{BASE}/metz/cam-1");
    let nonce = challenge_nonce(&f.auth.challenges(f.t0, false)[0]);
    let h = digest_header("vms", "s3cret", "DESCRIBE", &uri, &nonce, true);
    let late = f.t0 + crate::rtsp::auth::NONCE_LIFETIME + Duration::from_secs(5);
    let r = match f.core.handle_request(
        &req(&format!(
            "DESCRIBE {uri} RTSP/1.0\r\nCSeq: 2\r\nAuthorization: {h}\r\n"
        )),
        late,
    ) {
        Step::Reply(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.status(), 401);
    assert!(r.get("WWW-Authenticate").unwrap().contains("stale=true"));
}

#[test]
fn sessions_per_connection_are_bounded() {
    let mut f = fixture();
    for _ in 0..MAX_SESSIONS_PER_CONNECTION {
        f.setup_tcp("metz/cam-1");
    }
    assert_eq!(
        f.status(&format!(
            "SETUP {BASE}/metz/cam-1/track=0 RTSP/1.0\r\nCSeq: 3\r\n{}Transport: RTP/AVP/TCP;unicast\r\n",
            alice()
        )),
        453
    );
}
