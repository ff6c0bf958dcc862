//! Network details on the wire, IPv4 and IPv6 alike: the DSCP of `[quic] dscp` (AF41 by
//! default) on every link datagram in both directions and on the RTSP server's RTP and
//! RTCP over UDP, and the whole chain (camera, link, RTSP, management and HTTP
//! listeners) on `::1`.
//!
//! The marks are read where they arrive, by a small Python program (`TOS_PROBE`) whose
//! sockets ask the kernel for each datagram's TOS / traffic class (`IP_RECVTOS`,
//! `IPV6_RECVTCLASS`): as a relay between the CSU and the SNCF (the CSU dials the relay,
//! which forwards to the SNCF and back), and as the UDP ports of an RTSP client.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use passerelle::demo::{CSU_OPERATOR, CSU_OPERATOR_TOKEN, MetzKit};
use serde_json::Value;
use support::metz::{metric, metrics, start_site, wait_for_log_line};
use support::{Gateway, Transport, ffprobe_count_frames, http_request};

/// AF41 (RFC 2597): the default `[quic] dscp`, also on RTSP media.
const AF41: u64 = 34;

const CAMERA: &str = "metz-ville/quai-1";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Receives UDP datagrams and counts them by TOS / traffic-class byte, as the kernel
/// reports it in each datagram's control message. `relay FAMILY HOST STATS UP_HOST
/// UP_PORT`: forwards what arrives on its front socket to UP and the answers back;
/// `sink FAMILY HOST STATS`: two sockets on consecutive ports (RTP, RTCP). It writes
/// its ports to `STATS.ready`, then its counts to STATS every 100 ms.
const TOS_PROBE: &str = r#"
import json, os, select, socket, sys, time

mode, family, host, stats_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
af = socket.AF_INET if family == 4 else socket.AF_INET6

def make(port=0):
    s = socket.socket(af, socket.SOCK_DGRAM)
    if family == 4:
        s.setsockopt(socket.IPPROTO_IP, 13, 1)     # IP_RECVTOS
    else:
        s.setsockopt(socket.IPPROTO_IPV6, 66, 1)   # IPV6_RECVTCLASS
    s.bind((host, port))
    return s

def tos_of(ancdata):
    for level, kind, data in ancdata:
        if (level, kind) == (socket.IPPROTO_IP, 1):       # IP_TOS: one byte
            return data[0]
        if (level, kind) == (socket.IPPROTO_IPV6, 67):    # IPV6_TCLASS: an int
            return int.from_bytes(data[:4], sys.byteorder)
    return -1

def write(path, value):
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)

if mode == "relay":
    upstream = (sys.argv[5], int(sys.argv[6]))
    front, back = make(), make()
    sockets = {front: "inbound", back: "outbound"}
    ports = [front.getsockname()[1]]
else:
    while True:
        first = make()
        try:
            second = make(first.getsockname()[1] + 1)
            break
        except OSError:
            first.close()
    sockets = {first: "rtp", second: "rtcp"}
    ports = [first.getsockname()[1], second.getsockname()[1]]

stats = {name: {} for name in sockets.values()}
write(stats_path + ".ready", {"ports": ports})
client = None
last_write = 0.0
while True:
    readable, _, _ = select.select(list(sockets), [], [], 0.1)
    for s in readable:
        data, ancdata, _, source = s.recvmsg(65535, 256)
        counts = stats[sockets[s]]
        key = str(tos_of(ancdata))
        counts[key] = counts.get(key, 0) + 1
        if mode == "relay":
            if s is front:
                client = source
                back.sendto(data, upstream)
            elif client is not None:
                front.sendto(data, client)
    if time.time() - last_write >= 0.1:
        write(stats_path, stats)
        last_write = time.time()
"#;

/// A running `TOS_PROBE`; killed on drop.
struct TosProbe {
    child: Child,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
}

impl TosProbe {
    fn start(args: &[String]) -> TosProbe {
        let dir = tempfile::Builder::new()
            .prefix("passerelle-tos-probe-")
            .tempdir()
            .expect("temp dir");
        let script = dir.path().join("tos_probe.py");
        std::fs::write(&script, TOS_PROBE).expect("script");
        let stats = dir.path().join("stats.json");
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "/usr/bin/python3"])
            .arg(&script)
            .arg(&args[0])
            .arg(&args[1])
            .arg(&args[2])
            .arg(&stats)
            .args(&args[3..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("log"))
            .spawn()
            .expect("python3");
        let mut probe = TosProbe {
            child,
            dir,
            ports: Vec::new(),
        };
        let ready = probe.dir.path().join("stats.json.ready");
        let deadline = Instant::now() + Duration::from_secs(10);
        probe.ports = loop {
            if let Some(ports) = std::fs::read_to_string(&ready)
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .and_then(|value| {
                    value["ports"]
                        .as_array()?
                        .iter()
                        .map(|p| p.as_u64().and_then(|p| u16::try_from(p).ok()))
                        .collect::<Option<Vec<u16>>>()
                })
            {
                break ports;
            }
            assert!(
                Instant::now() < deadline && probe.child.try_wait().ok().flatten().is_none(),
                "the TOS probe did not start: {}",
                probe.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        probe
    }

    /// A relay on `host` forwarding to `upstream`; returns it and its front address.
    fn relay(host: IpAddr, upstream: SocketAddr) -> (TosProbe, SocketAddr) {
        let probe = TosProbe::start(&[
            "relay".into(),
            family(host).into(),
            host.to_string(),
            upstream.ip().to_string(),
            upstream.port().to_string(),
        ]);
        let front = SocketAddr::new(host, probe.ports[0]);
        (probe, front)
    }

    /// Two receiving sockets on `host`, RTP then RTCP.
    fn sink(host: IpAddr) -> TosProbe {
        TosProbe::start(&["sink".into(), family(host).into(), host.to_string()])
    }

    /// Datagrams received so far on `socket`, by TOS byte.
    fn counts(&self, socket: &str) -> Vec<(i64, u64)> {
        let text = std::fs::read_to_string(self.dir.path().join("stats.json")).unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let mut counts: Vec<(i64, u64)> = value[socket]
            .as_object()
            .map(|map| {
                map.iter()
                    .filter_map(|(tos, n)| Some((tos.parse().ok()?, n.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        counts.sort_unstable();
        counts
    }

    fn total(&self, socket: &str) -> u64 {
        self.counts(socket).iter().map(|(_, n)| n).sum()
    }

    /// Waits (bounded) until `socket` received at least `n` datagrams.
    fn wait_for(&self, socket: &str, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.total(socket) < n {
            assert!(
                Instant::now() < deadline,
                "{socket}: only {:?} within {within:?}; probe: {}",
                self.counts(socket),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for TosProbe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn family(host: IpAddr) -> &'static str {
    if host.is_ipv4() { "4" } else { "6" }
}

/// Every datagram counted carries DSCP AF41 (whatever its ECN bits); returns the ECN
/// bits seen, for the report.
fn assert_all_af41(what: &str, counts: &[(i64, u64)]) -> Vec<(i64, u64)> {
    assert!(!counts.is_empty(), "{what}: nothing received");
    for (tos, n) in counts {
        assert!(
            *tos >= 0 && (*tos as u64) >> 2 == AF41,
            "{what}: {n} datagrams with TOS {tos:#04x} (DSCP {}), expected AF41: {counts:?}",
            tos >> 2
        );
    }
    counts.iter().map(|(tos, n)| (tos & 0b11, *n)).collect()
}

/// The camera simulator on `host`.
fn camsim_on(host: IpAddr) -> Gateway {
    let listen = SocketAddr::new(host, 0).to_string();
    Gateway::builder("", &[])
        .subcommand(&["camsim", "--listen", &listen])
        .start()
}

/// The camsim → SNCF → relay → CSU chain with every socket on `host`.
struct Chain {
    _camsim: Gateway,
    sncf: Gateway,
    csu: Gateway,
    relay: TosProbe,
}

fn chain_on(host: IpAddr) -> Chain {
    let kit = MetzKit::new().expect("kit");
    let camsim = camsim_on(host);
    let sncf_files = kit
        .sncf(support::metz::listeners_on(host), camsim.addr("rtsp"))
        .expect("sncf");
    let sncf = start_site(&sncf_files, &[]);
    let (relay, front) = TosProbe::relay(host, sncf.addr("quic"));
    let csu_files = kit
        .csu(support::metz::listeners_on(host), front)
        .expect("csu");
    let csu = start_site(&csu_files, &[]);
    wait_for_log_line(&csu, "CSU", |l| {
        l.contains("partner catalog received") && !l.contains("cameras=0")
    });
    Chain {
        _camsim: camsim,
        sncf,
        csu,
        relay,
    }
}

/// One RTSP exchange with Basic credentials: sends `method url` with `headers`, returns
/// the status, headers and body.
fn rtsp(
    stream: &mut TcpStream,
    cseq: u32,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let (user, password) = CSU_OPERATOR;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut request =
        format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\nAuthorization: Basic {basic}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("RTSP request");
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("RTSP response");
        assert!(n == 1, "the server closed the connection: {raw:?}");
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("Content-Length"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("RTSP body");
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// DESCRIBE, SETUP over UDP to `client_ports`, PLAY; returns the connection, which
/// keeps the session alive while it is open.
fn play_over_udp(server: SocketAddr, camera: &str, client_ports: (u16, u16)) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("RTSP");
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("timeout");
    let base = format!("rtsp://{server}/{camera}");
    let (status, _, sdp) = rtsp(
        &mut stream,
        1,
        "DESCRIBE",
        &base,
        &[("Accept", "application/sdp")],
    );
    assert_eq!(status, 200, "DESCRIBE: {sdp}");
    let control = sdp
        .lines()
        .skip_while(|line| !line.starts_with("m=video"))
        .find_map(|line| line.strip_prefix("a=control:"))
        .unwrap_or_else(|| panic!("no video control URL: {sdp}"))
        .trim()
        .to_owned();
    let track = if control.starts_with("rtsp://") {
        control
    } else {
        format!("{base}/{control}")
    };
    let transport = format!(
        "RTP/AVP;unicast;client_port={}-{}",
        client_ports.0, client_ports.1
    );
    let (status, headers, body) = rtsp(
        &mut stream,
        2,
        "SETUP",
        &track,
        &[("Transport", &transport)],
    );
    assert_eq!(status, 200, "SETUP: {headers:?} {body}");
    let session = headers
        .iter()
        .find(|(n, _)| n == "session")
        .map(|(_, v)| v.split(';').next().unwrap_or_default().to_owned())
        .expect("a session");
    let (status, headers, _) = rtsp(&mut stream, 3, "PLAY", &base, &[("Session", &session)]);
    assert_eq!(status, 200, "PLAY: {headers:?}");
    stream
}

/// The checks of both address families, on a chain whose every socket is on `host`.
fn dscp_and_playback_on(host: IpAddr) {
    let chain = chain_on(host);
    let csu_rtsp = chain.csu.addr("rtsp");
    assert_eq!(csu_rtsp.ip(), host);

    // A camera plays through the CSU (with ffprobe, the URL naming the address), over
    // TCP and then UDP: media cross the relay.
    let (user, password) = CSU_OPERATOR;
    let url = format!("rtsp://{user}:{password}@{csu_rtsp}/sncf/{CAMERA}");
    for transport in [Transport::Tcp, Transport::Udp] {
        let report = ffprobe_count_frames(&url, transport, CLIENT_TIMEOUT).unwrap_or_else(|e| {
            panic!("{transport:?} {url}: {e}\nCSU:\n{}", chain.csu.stderr_log())
        });
        assert!(report.frames >= 50, "{transport:?}: {report:?}");
    }

    // Every link datagram, both ways, carries AF41.
    let relay = &chain.relay;
    relay.wait_for("outbound", 200, Duration::from_secs(5));
    let to_sncf = assert_all_af41("CSU -> SNCF", &relay.counts("inbound"));
    let to_csu = assert_all_af41("SNCF -> CSU", &relay.counts("outbound"));
    println!(
        "{host}: link datagrams, all AF41; ECN bits (value, datagrams): CSU -> SNCF {to_sncf:?}, SNCF -> CSU {to_csu:?}"
    );

    // RTP and RTCP over UDP from the CSU's RTSP server carry AF41 too.
    let sink = TosProbe::sink(host);
    let _session = play_over_udp(
        csu_rtsp,
        &format!("sncf/{CAMERA}"),
        (sink.ports[0], sink.ports[1]),
    );
    sink.wait_for("rtp", 100, Duration::from_secs(10));
    // Sender reports go every 5 s.
    sink.wait_for("rtcp", 1, Duration::from_secs(8));
    let rtp = assert_all_af41("RTP", &sink.counts("rtp"));
    let rtcp = assert_all_af41("RTCP", &sink.counts("rtcp"));
    println!("{host}: RTSP media over UDP, all AF41: RTP {rtp:?}, RTCP {rtcp:?}");

    // The management and HTTP listeners answer on the same address.
    let management = chain.csu.addr("management");
    assert_eq!(management.ip(), host);
    let text = metrics(&chain.csu);
    assert!(
        metric(
            &text,
            "passerelle_peer_connected",
            &["peer=\"sncf.metz.example\""]
        ) == Some(1.0),
        "{text}"
    );
    let http = chain.csu.addr("http");
    assert_eq!(http.ip(), host);
    let bearer = format!("Bearer {CSU_OPERATOR_TOKEN}");
    let cameras = http_request(
        http,
        "GET",
        "/api/v1/cameras",
        &[("Authorization", &bearer)],
        None,
        Duration::from_secs(5),
    )
    .expect("GET /api/v1/cameras");
    assert_eq!(cameras.status, 200, "{}", cameras.body);
    assert!(
        cameras.body.contains(&format!("sncf/{CAMERA}")),
        "{}",
        cameras.body
    );
    // The SNCF saw the CSU at the relay's address: the link really went through it.
    let sncf_links = http_request(
        chain.sncf.addr("management"),
        "GET",
        "/api/v1/links",
        &[],
        None,
        Duration::from_secs(5),
    )
    .expect("links");
    let links: Value = serde_json::from_str(&sncf_links.body).expect("JSON");
    let remote: SocketAddr = links["links"][0]["remote"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{links}"));
    assert_eq!(remote.ip(), host, "{links}");
}

#[test]
fn on_ipv4_link_datagrams_and_rtsp_media_carry_af41() {
    dscp_and_playback_on(IpAddr::from([127, 0, 0, 1]));
}

#[test]
fn on_ipv6_the_chain_plays_and_link_datagrams_and_rtsp_media_carry_af41() {
    if !Path::new("/proc/net/if_inet6").exists() {
        panic!("IPv6 is disabled on this host: the IPv6 test cannot run");
    }
    dscp_and_playback_on(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
}
