//! The server on 127.0.0.1:0 against a test directory: a hand-written client for status
//! codes and wire details, the real ffprobe for interoperability.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::channel::ChannelSettings;
use crate::media::{Codec, MediaPacket, h26x};
use crate::rtsp::{Mount, Secret};

/// Every test gives up after this long.
const TEST_BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Fixtures: a directory of channels fed with a real H.264 stream.

#[derive(Default)]
struct TestDirectory {
    mounts: HashMap<CameraId, Mount>,
    /// Cameras whose viewing sessions the hook refuses.
    refusals: HashMap<CameraId, ViewRefusal>,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    viewers: StdMutex<Vec<(Viewer, CameraId)>>,
}

struct TestGuard(Arc<AtomicUsize>);

impl Drop for TestGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CameraDirectory for TestDirectory {
    type Guard = TestGuard;

    fn mount(&self, camera: &CameraId) -> Option<Mount> {
        self.mounts.get(camera).cloned()
    }

    async fn open_view(
        &self,
        viewer: &Viewer,
        camera: &CameraId,
    ) -> Result<TestGuard, ViewRefusal> {
        if let Some(refusal) = self.refusals.get(camera) {
            return Err(refusal.clone());
        }
        self.viewers
            .lock()
            .unwrap()
            .push((viewer.clone(), camera.clone()));
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(TestGuard(self.closed.clone()))
    }
}

fn cam(s: &str) -> CameraId {
    s.parse().unwrap()
}

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
            secret: Secret::Ha1(crate::rtsp::auth::digest_ha1("vms", "s3cret")),
            cameras: vec!["**".parse().unwrap()],
        },
    ]
}

/// Splits an Annex B stream into NAL units (without start codes).
fn split_annex_b(data: &[u8]) -> Vec<Bytes> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |&next| next - 3);
        let mut nal = &data[start..end];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() {
            nals.push(Bytes::copy_from_slice(nal));
        }
    }
    nals
}

/// Two seconds of 320x240 video at 25 fps, GOP 25, no B-frames, as access units of NAL
/// units; each access unit ends with its one slice (one slice per frame at this size).
/// Encoded once per test binary.
fn access_units(codec: Codec) -> Vec<Vec<Bytes>> {
    static H264: std::sync::OnceLock<Vec<Vec<Bytes>>> = std::sync::OnceLock::new();
    static H265: std::sync::OnceLock<Vec<Vec<Bytes>>> = std::sync::OnceLock::new();
    let cell = match codec {
        Codec::H264 => &H264,
        Codec::H265 => &H265,
    };
    cell.get_or_init(|| encode(codec)).clone()
}

fn encode(codec: Codec) -> Vec<Vec<Bytes>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.es");
    let encoder: &[&str] = match codec {
        Codec::H264 => &[
            "-c:v",
            "libx264",
            "-profile:v",
            "main",
            "-g",
            "25",
            "-bf",
            "0",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "h264",
        ],
        Codec::H265 => &[
            "-c:v",
            "libx265",
            "-x265-params",
            "keyint=25:bframes=0:log-level=error",
            "-bsf:v",
            "hevc_mp4toannexb",
            "-f",
            "hevc",
        ],
    };
    let status = Command::new("timeout")
        .args(["30", "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=size=320x240:rate=25")
        .args(["-t", "2", "-pix_fmt", "yuv420p"])
        .args(encoder)
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg failed: {status}");
    let nals = split_annex_b(&std::fs::read(&path).unwrap());
    let mut units = Vec::new();
    let mut current = Vec::new();
    for nal in nals {
        let kind = h26x::nal_type(codec, &nal).unwrap();
        let is_slice = match codec {
            Codec::H264 => kind == h26x::h264::IDR || kind == 1,
            // VCL NAL unit types are 0..=31 (H.265 Table 7-1).
            Codec::H265 => kind < 32,
        };
        current.push(nal);
        if is_slice {
            units.push(std::mem::take(&mut current));
        }
    }
    assert_eq!(units.len(), 50, "expected 50 frames of {codec:?}");
    units
}

fn info_of(codec: Codec, units: &[Vec<Bytes>]) -> StreamInfo {
    let sets: Vec<Bytes> = units[0]
        .iter()
        .filter(|n| h26x::nal_type(codec, n).is_some_and(|t| h26x::is_parameter_set(codec, t)))
        .cloned()
        .collect();
    let expected = match codec {
        Codec::H264 => 2,
        Codec::H265 => 3,
    };
    assert_eq!(sets.len(), expected);
    StreamInfo {
        codec,
        clock_rate: 90_000,
        parameter_sets: sets,
    }
}

/// Publishes the clip in a loop at 25 fps, as an ingest would.
fn feed(channel: Channel, codec: Codec, units: Vec<Vec<Bytes>>) -> JoinHandle<()> {
    channel.set_info(info_of(codec, &units));
    tokio::spawn(async move {
        let mut timestamp: u32 = 1_000_000;
        // 2026-01-01T00:00:00Z as NTP, mapped to the first timestamp.
        channel.sender_report(
            crate::media::rtp::ntp_from_unix(Duration::from_secs(1_767_225_600)),
            timestamp,
        );
        let mut tick = tokio::time::interval(Duration::from_millis(40));
        loop {
            for unit in &units {
                tick.tick().await;
                let last = unit.len() - 1;
                for (i, nal) in unit.iter().enumerate() {
                    let info = h26x::classify(codec, nal).unwrap();
                    channel.publish(MediaPacket {
                        payload: nal.clone(),
                        timestamp,
                        marker: i == last,
                        keyframe_start: info.keyframe_start,
                        parameter_set: info.parameter_set,
                    });
                }
                timestamp = timestamp.wrapping_add(3600);
            }
        }
    })
}

struct Running {
    addr: SocketAddr,
    directory: Arc<TestDirectory>,
    feeders: Vec<JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl Running {
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .expect("server stops within its grace")
            .unwrap();
        for f in &self.feeders {
            f.abort();
        }
    }
}

/// `metz/cam-1`: live H.264; `metz/cold`: a channel that never gets parameters;
/// `metz/refused`: live but the hook says 403; `metz/two`: two tracks; `metz/hevc`: live
/// H.265.
async fn start(settings: RtspSettings) -> Running {
    let units = access_units(Codec::H264);
    let hevc = Channel::new(cam("metz/hevc"), ChannelSettings::default());
    let live = Channel::new(cam("metz/cam-1"), ChannelSettings::default());
    let refused = Channel::new(cam("metz/refused"), ChannelSettings::default());
    let second = Channel::new(cam("metz/two"), ChannelSettings::default());
    let cold = Channel::new(cam("metz/cold"), ChannelSettings::default());
    let feeders = vec![
        feed(live.clone(), Codec::H264, units.clone()),
        feed(refused.clone(), Codec::H264, units.clone()),
        feed(second.clone(), Codec::H264, units),
        feed(hevc.clone(), Codec::H265, access_units(Codec::H265)),
    ];
    let mut directory = TestDirectory::default();
    directory.mounts.insert(
        cam("metz/cam-1"),
        Mount {
            tracks: vec![live.clone()],
        },
    );
    directory
        .mounts
        .insert(cam("metz/cold"), Mount { tracks: vec![cold] });
    directory.mounts.insert(
        cam("metz/refused"),
        Mount {
            tracks: vec![refused],
        },
    );
    directory.mounts.insert(
        cam("metz/two"),
        Mount {
            tracks: vec![live, second],
        },
    );
    directory.refusals.insert(
        cam("metz/refused"),
        ViewRefusal::Forbidden {
            reason: "outside hours".into(),
        },
    );
    let directory = Arc::new(directory);
    let server = RtspServer::bind(settings, users(), directory.clone())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    Running {
        addr,
        directory,
        feeders,
        stop: Some(stop_tx),
        server,
    }
}

fn test_settings() -> RtspSettings {
    RtspSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        udp_ports: 41000..=41099,
        describe_timeout: Duration::from_millis(300),
        ..RtspSettings::default()
    }
}

// ---------------------------------------------------------------------------------------
// A minimal RTSP client.

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    base: String,
    cseq: u32,
    auth: Option<String>,
    /// Interleaved frames seen while waiting for replies: (channel, payload).
    frames: Vec<(u8, Vec<u8>)>,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            base: format!("rtsp://{addr}"),
            cseq: 0,
            auth: None,
            frames: Vec::new(),
        }
    }

    fn basic(mut self, user: &str, pass: &str) -> Client {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        self.auth = Some(format!("Basic {token}"));
        self
    }

    async fn request(&mut self, method: &str, path: &str, extra: &str) -> Answer {
        self.cseq += 1;
        let auth = self
            .auth
            .as_ref()
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "{method} {}/{path} RTSP/1.0\r\nCSeq: {}\r\n{auth}{extra}\r\n",
            self.base, self.cseq
        );
        self.stream.write_all(text.as_bytes()).await.unwrap();
        let answer = self.read_answer().await.expect("an answer");
        assert_eq!(
            answer.get("CSeq"),
            Some(self.cseq.to_string().as_str()),
            "{answer:?}"
        );
        answer
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next interleaved frame, skipping nothing else (there must be no reply in
    /// between).
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if !self.frames.is_empty() {
            return Some(self.frames.remove(0));
        }
        loop {
            if self.buf.len() >= 4 {
                assert_eq!(self.buf[0], b'$', "expected an interleaved frame");
                let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                if self.buf.len() >= 4 + len {
                    let frame = (self.buf[1], self.buf[4..4 + len].to_vec());
                    self.buf.drain(..4 + len);
                    return Some(frame);
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next reply, setting aside interleaved frames; `None` if the server closed.
    async fn read_answer(&mut self) -> Option<Answer> {
        loop {
            while self.buf.first() == Some(&b'$') && self.buf.len() >= 4 {
                let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                if self.buf.len() < 4 + len {
                    break;
                }
                self.frames
                    .push((self.buf[1], self.buf[4..4 + len].to_vec()));
                self.buf.drain(..4 + len);
            }
            if self.buf.first().is_some_and(|&b| b != b'$')
                && let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n")
            {
                let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap();
                assert!(status_line.starts_with("RTSP/1.0 "), "{status_line}");
                let status = status_line[9..12].parse().unwrap();
                let headers: Vec<(String, String)> = lines
                    .map(|l| {
                        let (n, v) = l.split_once(':').unwrap();
                        (n.trim().to_owned(), v.trim().to_owned())
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                while self.buf.len() < end + 4 + len {
                    if !self.fill().await {
                        return None;
                    }
                }
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return Some(Answer {
                    status,
                    headers,
                    body,
                });
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Whether the server closed the connection (reads EOF or reset).
    async fn closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

fn session_of(answer: &Answer) -> String {
    answer
        .get("Session")
        .expect("Session header")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_through_the_server() {
    tokio::time::timeout(TEST_BOUND, async {
        let running = start(test_settings()).await;
        let addr = running.addr;
        let mut anon = Client::connect(addr).await;
        let a = anon.request("OPTIONS", "metz/cam-1", "").await;
        assert_eq!(a.status, 200);
        assert!(a.get("Public").unwrap().contains("DESCRIBE"));
        let a = anon.request("DESCRIBE", "metz/cam-1", "").await;
        assert_eq!(a.status, 401);
        assert!(a.get("WWW-Authenticate").unwrap().starts_with("Digest "));

        let mut c = Client::connect(addr).await.basic("alice", "wonderland");
        let a = c
            .request("DESCRIBE", "metz/cam-1", "Accept: application/sdp\r\n")
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(
            a.get("Content-Base"),
            Some(format!("rtsp://{addr}/metz/cam-1/").as_str())
        );
        let sdp = String::from_utf8(a.body.clone()).unwrap();
        assert!(sdp.contains("a=rtpmap:96 H264/90000"), "{sdp}");
        assert!(sdp.contains("profile-level-id=4d"), "{sdp}");
        assert!(sdp.contains("sprop-parameter-sets="), "{sdp}");
        // Two tracks at one path.
        let a = c.request("DESCRIBE", "metz/two", "").await;
        let sdp = String::from_utf8(a.body.clone()).unwrap();
        assert!(
            sdp.contains("a=control:track=0") && sdp.contains("a=control:track=1"),
            "{sdp}"
        );
        // Allowed by alice's patterns but not in the directory: 404, like a camera she
        // may not see.
        assert_eq!(c.request("DESCRIBE", "metz/nowhere", "").await.status, 404);
        assert_eq!(
            c.request("DESCRIBE", "sncf/woippy/quai-1", "").await.status,
            404
        );
        assert_eq!(c.request("DESCRIBE", "metz/../sncf", "").await.status, 400);
        let long = format!("metz/{}", "x".repeat(300));
        assert_eq!(c.request("DESCRIBE", &long, "").await.status, 414);
        // A cold camera: 503 after describe_timeout.
        assert_eq!(c.request("DESCRIBE", "metz/cold", "").await.status, 503);
        // SETUP of a track the mount does not have: 404; aggregate SETUP of a two-track
        // mount: 459.
        let tcp = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n";
        assert_eq!(
            c.request("SETUP", "metz/cam-1/track=3", tcp).await.status,
            404
        );
        assert_eq!(c.request("SETUP", "metz/two", tcp).await.status, 459);
        // The hook refuses: 403, and no guard was handed out.
        let a = c.request("SETUP", "metz/refused/track=0", tcp).await;
        assert_eq!(a.status, 200);
        let s = session_of(&a);
        let a = c
            .request("PLAY", "metz/refused/", &format!("Session: {s}\r\n"))
            .await;
        assert_eq!(a.status, 403);
        assert_eq!(running.directory.opened.load(Ordering::SeqCst), 0);
        assert_eq!(
            c.request("TEARDOWN", "metz/refused/", &format!("Session: {s}\r\n"))
                .await
                .status,
            200
        );
        assert_eq!(
            c.request("PLAY", "metz/refused/", &format!("Session: {s}\r\n"))
                .await
                .status,
            454
        );
        running.shutdown().await;
    })
    .await
    .expect("test bounded");
}

/// Reads interleaved frames until `n` RTP packets on `channel`; checks the RTP header
/// and returns (sequence numbers, timestamps, RTCP frames seen).
async fn read_rtp(
    c: &mut Client,
    rtp_channel: u8,
    ssrc: u32,
    n: usize,
) -> (Vec<u16>, Vec<u32>, Vec<Vec<u8>>) {
    let mut seqs = Vec::new();
    let mut timestamps = Vec::new();
    let mut rtcp = Vec::new();
    while seqs.len() < n {
        let (channel, payload) = c.next_frame().await.expect("frames keep coming");
        if channel == rtp_channel {
            assert_eq!(payload[0] >> 6, 2, "RTP version");
            assert_eq!(payload[1] & 0x7f, 96, "payload type");
            assert_eq!(u32::from_be_bytes(payload[8..12].try_into().unwrap()), ssrc);
            seqs.push(u16::from_be_bytes([payload[2], payload[3]]));
            timestamps.push(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        } else {
            assert_eq!(channel, rtp_channel + 1);
            rtcp.push(payload);
        }
    }
    (seqs, timestamps, rtcp)
}

fn ssrc_of(transport: &str) -> u32 {
    let hex = transport
        .split(';')
        .find_map(|p| p.strip_prefix("ssrc="))
        .unwrap();
    u32::from_str_radix(hex, 16).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_play_sends_numbered_rtp_and_sender_reports_then_teardown_releases() {
    tokio::time::timeout(TEST_BOUND, async {
        let running = start(test_settings()).await;
        let mut c = Client::connect(running.addr).await.basic("vms", "s3cret");
        let a = c
            .request(
                "SETUP",
                "metz/cam-1/track=0",
                "Transport: RTP/AVP/TCP;unicast;interleaved=4-5\r\n",
            )
            .await;
        assert_eq!(a.status, 200);
        let transport = a.get("Transport").unwrap().to_owned();
        assert!(transport.contains("interleaved=4-5"), "{transport}");
        let ssrc = ssrc_of(&transport);
        let s = session_of(&a);
        assert_eq!(a.get("Session").unwrap(), format!("{s};timeout=60"));
        let a = c
            .request("PLAY", "metz/cam-1/", &format!("Session: {s}\r\n"))
            .await;
        assert_eq!(a.status, 200);
        let info = a.get("RTP-Info").unwrap().to_owned();
        let field = |name: &str| -> u32 {
            info.split(';')
                .find_map(|p| p.strip_prefix(name))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(
            info.starts_with(&format!("url=rtsp://{}/metz/cam-1/track=0;", running.addr)),
            "{info}"
        );
        let (seq0, rtptime) = (field("seq=") as u16, field("rtptime="));
        assert_eq!(running.directory.opened.load(Ordering::SeqCst), 1);
        {
            let viewers = running.directory.viewers.lock().unwrap();
            assert_eq!(viewers[0].0.name, "vms");
            assert_eq!(viewers[0].0.kind, AgentKind::Service);
            assert_eq!(viewers[0].1.as_str(), "metz/cam-1");
        }
        let (seqs, timestamps, rtcp) = read_rtp(&mut c, 4, ssrc, 60).await;
        // Numbering starts where RTP-Info says and has no gaps.
        assert_eq!(seqs[0], seq0);
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0].wrapping_add(1));
        }
        assert_eq!(timestamps[0], rtptime);
        // The camera's mapping produced a sender report from this leg's SSRC.
        let sr = rtcp
            .first()
            .expect("a sender report right after the first mapping");
        assert_eq!(sr[1], 200, "RTCP SR");
        assert_eq!(u32::from_be_bytes(sr[4..8].try_into().unwrap()), ssrc);
        // Keep-alive, then TEARDOWN: the guard drops before the reply.
        assert_eq!(
            c.request("GET_PARAMETER", "metz/cam-1/", &format!("Session: {s}\r\n"))
                .await
                .status,
            200
        );
        assert_eq!(
            c.request("TEARDOWN", "metz/cam-1/", &format!("Session: {s}\r\n"))
                .await
                .status,
            200
        );
        assert_eq!(running.directory.closed.load(Ordering::SeqCst), 1);
        running.shutdown().await;
    })
    .await
    .expect("test bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_goes_to_the_peer_from_the_configured_range() {
    tokio::time::timeout(TEST_BOUND, async {
        let running = start(test_settings()).await;
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rtp.local_addr().unwrap().port();
        let mut c = Client::connect(running.addr)
            .await
            .basic("alice", "wonderland");
        // destination= names someone else: ignored, media comes to us.
        let a = c
            .request(
                "SETUP",
                "metz/cam-1/track=0",
                &format!(
                    "Transport: RTP/AVP;unicast;destination=192.0.2.77;client_port={port}-{}\r\n",
                    port + 1
                ),
            )
            .await;
        assert_eq!(a.status, 200);
        let transport = a.get("Transport").unwrap().to_owned();
        assert!(!transport.contains("192.0.2.77"), "{transport}");
        let server_ports = transport
            .split(';')
            .find_map(|p| p.strip_prefix("server_port="))
            .unwrap();
        let (sp, sp1) = server_ports.split_once('-').unwrap();
        let (sp, sp1): (u16, u16) = (sp.parse().unwrap(), sp1.parse().unwrap());
        assert!(
            (41000..=41099).contains(&sp) && sp % 2 == 0 && sp1 == sp + 1,
            "{transport}"
        );
        let s = session_of(&a);
        assert_eq!(
            c.request("PLAY", "metz/cam-1/", &format!("Session: {s}\r\n"))
                .await
                .status,
            200
        );
        let mut buf = [0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), rtp.recv_from(&mut buf))
            .await
            .expect("RTP over UDP arrives")
            .unwrap();
        assert!(n > 12);
        assert_eq!(from, SocketAddr::from(([127, 0, 0, 1], sp)));
        assert_eq!(
            u32::from_be_bytes(buf[8..12].try_into().unwrap()),
            ssrc_of(&transport)
        );
        // Disconnecting ends the viewing session.
        drop(c);
        let closed = running.directory.closed.clone();
        wait_for("the guard to drop on disconnect", || {
            closed.load(Ordering::SeqCst) == 1
        })
        .await;
        running.shutdown().await;
    })
    .await
    .expect("test bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_its_own_connection() {
    tokio::time::timeout(TEST_BOUND, async {
        let running = start(test_settings()).await;
        let mut good = Client::connect(running.addr).await;
        assert_eq!(good.request("OPTIONS", "metz/cam-1", "").await.status, 200);
        for garbage in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            &[b'A'; 20_000][..],
        ] {
            let mut bad = Client::connect(running.addr).await;
            bad.stream.write_all(garbage).await.unwrap();
            assert!(bad.closed_by_server().await, "garbage {:?}", &garbage[..4]);
        }
        assert_eq!(good.request("OPTIONS", "metz/cam-1", "").await.status, 200);
        let mut fresh = Client::connect(running.addr).await;
        assert_eq!(fresh.request("OPTIONS", "metz/cam-1", "").await.status, 200);
        running.shutdown().await;
    })
    .await
    .expect("test bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_timeouts() {
    tokio::time::timeout(TEST_BOUND, async {
        let settings = RtspSettings {
            max_connections: 2,
            max_sessions: 1,
            session_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            ..test_settings()
        };
        let running = start(settings).await;
        let mut a = Client::connect(running.addr)
            .await
            .basic("alice", "wonderland");
        let mut b = Client::connect(running.addr)
            .await
            .basic("alice", "wonderland");
        assert_eq!(a.request("OPTIONS", "metz/cam-1", "").await.status, 200);
        assert_eq!(b.request("OPTIONS", "metz/cam-1", "").await.status, 200);
        // A third connection is closed at once.
        let mut c = Client::connect(running.addr).await;
        assert!(c.closed_by_server().await);
        // One session in the whole server.
        let tcp = "Transport: RTP/AVP/TCP;unicast\r\n";
        let first = a.request("SETUP", "metz/cam-1/track=0", tcp).await;
        assert_eq!(first.status, 200);
        assert_eq!(
            b.request("SETUP", "metz/cam-1/track=0", tcp).await.status,
            503
        );
        // Without keep-alive the session times out and frees its slot.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let s = session_of(&first);
        assert_eq!(
            a.request("PLAY", "metz/cam-1/", &format!("Session: {s}\r\n"))
                .await
                .status,
            454
        );
        assert_eq!(
            b.request("SETUP", "metz/cam-1/track=0", tcp).await.status,
            200
        );
        // A connection without session and silent for idle_timeout is closed.
        assert!(a.closed_by_server().await);
        running.shutdown().await;
    })
    .await
    .expect("test bounded");
}

/// Runs ffprobe against `url`, returning how many video frames it decoded.
fn ffprobe_frames(url: &str, transport: &str) -> (usize, String) {
    let output = Command::new("timeout")
        .args(["25", "ffprobe", "-v", "error", "-rtsp_transport", transport])
        .args(["-select_streams", "v:0", "-read_intervals", "%+#30"])
        .args([
            "-show_entries",
            "frame=width,height",
            "-show_entries",
            "stream=codec_name",
        ])
        .args(["-of", "csv=p=0"])
        .arg(url)
        .output()
        .expect("ffprobe runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "ffprobe {transport} failed: {stderr}\n{stdout}"
    );
    let frames = stdout.lines().filter(|l| *l == "320,240").count();
    (frames, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_reads_h264_over_tcp_and_udp_and_h265() {
    tokio::time::timeout(TEST_BOUND, async {
        let running = start(test_settings()).await;
        let url = format!("rtsp://alice:wonderland@{}/metz/cam-1", running.addr);
        for transport in ["tcp", "udp"] {
            let url = url.clone();
            let (frames, out) =
                tokio::task::spawn_blocking(move || ffprobe_frames(&url, transport))
                    .await
                    .unwrap();
            assert!(frames >= 25, "{transport}: {frames} frames\n{out}");
            assert!(out.contains("h264"), "{out}");
        }
        // ffprobe authenticated with Digest as alice, and each run's viewing session
        // ended when it left.
        assert_eq!(running.directory.opened.load(Ordering::SeqCst), 2);
        let closed = running.directory.closed.clone();
        wait_for("both viewing sessions to end", || {
            closed.load(Ordering::SeqCst) == 2
        })
        .await;
        assert!(
            running
                .directory
                .viewers
                .lock()
                .unwrap()
                .iter()
                .all(|(v, c)| v.name == "alice"
                    && v.kind == AgentKind::Agent
                    && c.as_str() == "metz/cam-1")
        );
        running.shutdown().await;
    })
    .await
    .expect("test bounded");
}

/// Runs GStreamer's rtspsrc until `buffers` decoded frames reached the sink.
fn gstreamer_decodes(addr: SocketAddr, protocol: &str, buffers: usize) -> std::process::Output {
    Command::new("timeout")
        .args(["25", "gst-launch-1.0", "-q", "rtspsrc"])
        .arg(format!("location=rtsp://{addr}/metz/cam-1"))
        .args(["user-id=vms", "user-pw=s3cret"])
        .arg(format!("protocols={protocol}"))
        .args([
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
            "fakesink",
        ])
        .arg(format!("num-buffers={buffers}"))
        .output()
        .expect("gst-launch-1.0 runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_rtspsrc_decodes_over_tcp_and_udp() {
    tokio::time::timeout(TEST_BOUND, async {
        let running = start(test_settings()).await;
        let addr = running.addr;
        for protocol in ["tcp", "udp"] {
            // fakesink ends the pipeline after 25 decoded frames: exit 0 means they came.
            let out = tokio::task::spawn_blocking(move || gstreamer_decodes(addr, protocol, 25))
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{protocol}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(running.directory.opened.load(Ordering::SeqCst), 2);
        let closed = running.directory.closed.clone();
        wait_for("both viewing sessions to end", || {
            closed.load(Ordering::SeqCst) == 2
        })
        .await;
        running.shutdown().await;
    })
    .await
    .expect("test bounded");
}
