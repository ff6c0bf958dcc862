use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::{self, SECTIONS};
use super::*;

/// Where the test configurations pretend to live: relative paths resolve against it.
const CONFIG_PATH: &str = "/etc/passerelle/passerelle.toml";

/// The smallest valid configuration: the four sections with required keys.
const MINIMAL: &str = r#"
[site]
id = "csu.metz.example"
state_dir = "/var/lib/passerelle"

[tls]
cert = "tls/site.crt"
key = "tls/site.key"
ca = "tls/ca.crt"

[policy]
file = "policy/policy.toml"
trusted_keys = ["keys/eurometropole.pub"]

[audit]
dir = "/var/lib/passerelle/audit"
retention_days = 183
journal_key = "keys/journal.key"
"#;

const NO_ENV: [(&str, &str); 0] = [];

fn load_with(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new(CONFIG_PATH), env.iter().copied())
}

fn load(text: &str) -> Result<Config, ConfigError> {
    load_with(text, &NO_ENV)
}

fn problems_with(text: &str, env: &[(&str, &str)]) -> Vec<Problem> {
    match load_with(text, env) {
        Ok(_) => panic!("expected the configuration to be refused:\n{text}"),
        Err(err @ ConfigError::Invalid { .. }) => err.problems().to_vec(),
        Err(other) => panic!("expected ConfigError::Invalid, got {other}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    problems_with(text, &NO_ENV)
}

/// Asserts that loading `text` reports exactly one problem, under `key`, whose message
/// contains `fragment`.
#[track_caller]
fn assert_only_problem(text: &str, key: &str, fragment: &str) {
    let found = problems(text);
    let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one problem about {key}, got {shown:#?}"
    );
    assert_eq!(found[0].key, key, "{shown:#?}");
    assert!(
        found[0].message.contains(fragment),
        "message of {key} should contain {fragment:?}: {shown:#?}"
    );
}

fn with(extra: &str) -> String {
    format!("{MINIMAL}\n{extra}")
}

fn replace(from: &str, to: &str) -> String {
    assert!(MINIMAL.contains(from), "MINIMAL has no {from:?}");
    MINIMAL.replace(from, to)
}

fn etc(path: &str) -> PathBuf {
    Path::new("/etc/passerelle").join(path)
}

#[test]
fn minimal_config_gets_every_default() {
    let config = load(MINIMAL).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.site.id.as_str(), "csu.metz.example");
    assert_eq!(
        config.quic.listen,
        "0.0.0.0:4433".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.quic.keep_alive, Duration::from_secs(2));
    assert_eq!(config.quic.idle_timeout, Duration::from_secs(8));
    assert_eq!((config.quic.initial_mtu, config.quic.max_mtu), (1200, 1452));
    assert!(config.quic.mtu_discovery);
    assert_eq!(config.quic.dscp.codepoint(), 34);
    assert_eq!(config.quic.media_transport, MediaTransport::Datagram);
    assert!(config.cameras.is_empty() && config.partners.is_empty() && config.users.is_empty());
    assert_eq!(config.policy.signatures_required, 1);
    assert_eq!(
        config.rtsp.listen,
        "0.0.0.0:8554".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.rtsp.udp_ports, PortRange::new(30000, 30999).unwrap());
    assert_eq!(config.rtsp.session_timeout, Duration::from_secs(60));
    assert_eq!(config.rtsp.describe_timeout, Duration::from_secs(8));
    assert_eq!(
        config.http.listen,
        "0.0.0.0:8443".parse::<SocketAddr>().unwrap()
    );
    // Not loopback: HTTPS, with [tls]'s certificate.
    let http_tls = config.http.tls.as_ref().expect("https by default");
    assert_eq!(http_tls.cert, etc("tls/site.crt"));
    assert_eq!(http_tls.key, etc("tls/site.key"));
    assert_eq!(
        config.webrtc.udp_ports,
        PortRange::new(31000, 31999).unwrap()
    );
    assert_eq!(config.webrtc.public_address, None);
    assert_eq!(config.webrtc.max_sessions, 64);
    assert_eq!(
        config.management.listen,
        "127.0.0.1:9464".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.audit.retention_days, 183);
    assert_eq!(config.channel.keyframe_cache_max_bytes, 8 * 1024 * 1024);
    assert_eq!(
        config.channel.keyframe_cache_max_duration,
        Duration::from_secs(4)
    );
    assert_eq!(config.channel.sink_queue_packets, 512);
    assert_eq!(
        config.channel.keyframe_request_interval,
        Duration::from_secs(1)
    );
}

#[test]
fn array_entries_get_their_defaults() {
    let config = load(&with(
        r#"
[[camera]]
id = "metz/republique/ptz-1"
url = "rtsp://10.20.0.11/stream1"

[[partner]]
id = "ccor.metz.example"
ca = "partners/ccor-ca.crt"

[[user]]
name = "vms"
kind = "service"
password_file = "secrets/vms.password"
cameras = ["**"]
"#,
    ))
    .unwrap_or_else(|err| panic!("{err}"));
    let camera = &config.cameras[0];
    assert!(camera.on_demand);
    assert_eq!(camera.transport, CameraTransport::Tcp);
    assert_eq!(camera.linger, Duration::from_secs(30));
    assert_eq!(camera.probe_interval, Duration::from_secs(60));
    assert_eq!(camera.credentials_file, None);
    let partner = &config.partners[0];
    assert!(partner.addresses.is_empty() && partner.import.is_empty());
    assert!(!partner.allow_any_ca);
    assert_eq!(
        (partner.prefix.as_ref(), partner.max_bitrate_kbps),
        (None, None)
    );
    let user = &config.users[0];
    assert_eq!(user.kind, UserKind::Service);
    assert_eq!(
        user.rtsp_secret,
        Some(RtspSecret::PasswordFile(etc("secrets/vms.password")))
    );
}

#[test]
fn every_key_set_explicitly_is_read() {
    let config = load(
        r#"
[site]
id = "csu.metz.example"
state_dir = "state"

[tls]
cert = "tls/site.crt"
key = "/secure/site.key"
ca = "tls/ca.crt"
crl = "tls/crl.pem"

[quic]
listen = "[::]:5433"
keep_alive = "5s"
idle_timeout = "1m30s"
initial_mtu = 1280
max_mtu = 1400
mtu_discovery = false
dscp = "ef"
media_transport = "stream"

[[camera]]
id = "metz/gare/parvis"
url = "rtsp://cam-17.csu.lan:8554/h264?channel=1"
credentials_file = "secrets/cam-17"
on_demand = false
transport = "udp"
linger = "0s"
probe_interval = "5m"

[[partner]]
id = "sncf.metz.example"
addresses = ["passerelle.sncf.metz.example:4433", "192.0.2.7:4433", "[2001:db8::7]:4433"]
ca = "partners/sncf-ca.crt"
allow_any_ca = false
prefix = "sncf"
import = ["metz-ville/**", "metz-nord/*"]
max_bitrate_kbps = 200000

[policy]
file = "policy/policy.toml"
trusted_keys = ["keys/a.pub", "keys/b.pub"]
signatures_required = 2

[[user]]
name = "agent.dupont"
kind = "agent"
ha1_file = "secrets/dupont.ha1"
token_file = "secrets/dupont.token"
cameras = ["metz/**", "sncf/metz-ville/**"]

[rtsp]
listen = "127.0.0.1:9554"
udp_ports = "40000-40099"
session_timeout = "2m"
describe_timeout = "500ms"

[http]
listen = "127.0.0.1:8080"
tls = true
cert = "tls/web.crt"
key = "tls/web.key"
cors_origins = ["https://vms.csu.example", "http://localhost:3000"]

[webrtc]
udp_ports = "41000-41999"
public_address = "203.0.113.9"
max_sessions = 10

[management]
listen = "[::1]:9999"

[audit]
dir = "audit"
retention_days = 30
journal_key = "keys/journal.key"

[channel]
keyframe_cache_max_bytes = 1048576
keyframe_cache_max_duration = "2s"
sink_queue_packets = 128
keyframe_request_interval = "250ms"
"#,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.site.state_dir, etc("state"));
    assert_eq!(config.tls.key, PathBuf::from("/secure/site.key"));
    assert_eq!(config.tls.crl, Some(etc("tls/crl.pem")));
    assert_eq!(
        config.quic.listen,
        "[::]:5433".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.quic.idle_timeout, Duration::from_secs(90));
    assert_eq!(config.quic.dscp.codepoint(), 46);
    assert_eq!(config.quic.media_transport, MediaTransport::Stream);
    assert!(!config.quic.mtu_discovery);
    let camera = &config.cameras[0];
    assert_eq!(
        camera.url.as_str(),
        "rtsp://cam-17.csu.lan:8554/h264?channel=1"
    );
    assert_eq!(camera.transport, CameraTransport::Udp);
    assert_eq!(camera.linger, Duration::ZERO);
    assert_eq!(camera.probe_interval, Duration::from_secs(300));
    let partner = &config.partners[0];
    let addresses: Vec<String> = partner.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(
        addresses,
        [
            "passerelle.sncf.metz.example:4433",
            "192.0.2.7:4433",
            "[2001:db8::7]:4433"
        ]
    );
    assert_eq!(partner.prefix.as_ref().map(|p| p.as_str()), Some("sncf"));
    assert_eq!(partner.import.len(), 2);
    assert_eq!(partner.max_bitrate_kbps, Some(200_000));
    assert_eq!(config.policy.signatures_required, 2);
    assert_eq!(
        config.users[0].rtsp_secret,
        Some(RtspSecret::Ha1File(etc("secrets/dupont.ha1")))
    );
    assert_eq!(config.rtsp.describe_timeout, Duration::from_millis(500));
    let http_tls = config.http.tls.as_ref().expect("tls = true");
    assert_eq!(http_tls.cert, etc("tls/web.crt"));
    assert_eq!(config.http.cors_origins.len(), 2);
    assert_eq!(
        config.webrtc.public_address,
        Some("203.0.113.9".parse().unwrap())
    );
    assert_eq!(config.audit.dir, etc("audit"));
    assert_eq!(
        config.channel.keyframe_request_interval,
        Duration::from_millis(250)
    );
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let config = load(MINIMAL).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.path, PathBuf::from(CONFIG_PATH));
    assert_eq!(config.tls.cert, etc("tls/site.crt"));
    assert_eq!(config.policy.file, etc("policy/policy.toml"));
    assert_eq!(config.policy.trusted_keys, [etc("keys/eurometropole.pub")]);
    assert_eq!(config.audit.journal_key, etc("keys/journal.key"));
    // Absolute paths stay as written.
    assert_eq!(config.audit.dir, PathBuf::from("/var/lib/passerelle/audit"));
}

#[test]
fn relative_paths_resolve_against_a_real_file_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, MINIMAL).unwrap();
    let config = Config::load(&file, NO_ENV).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.tls.key, dir.path().join("tls/site.key"));
    assert_eq!(config.path, file);
}

#[test]
fn http_is_plain_by_default_on_loopback_only() {
    let loopback = load(&with("[http]\nlisten = \"127.0.0.1:8443\"\n")).unwrap();
    assert_eq!(loopback.http.tls, None);
    let v6_loopback = load(&with("[http]\nlisten = \"[::1]:8443\"\n")).unwrap();
    assert_eq!(v6_loopback.http.tls, None);
    let forced = load(&with("[http]\nlisten = \"127.0.0.1:8443\"\ntls = true\n")).unwrap();
    assert!(forced.http.tls.is_some());
    let off = load(&with("[http]\ntls = false\n")).unwrap();
    assert_eq!(off.http.tls, None);
}

#[test]
fn sha256_is_of_the_exact_file_bytes() {
    let config = load(MINIMAL).unwrap();
    let expected: [u8; 32] = Sha256::digest(MINIMAL.as_bytes()).into();
    assert_eq!(config.sha256, expected);
    let hex = config.sha256_hex();
    assert_eq!(hex.len(), 64);
    assert_eq!(&hex[..2], &format!("{:02x}", expected[0]));
    // A comment changes the file, so it changes the hash.
    let commented = load(&format!("# edited\n{MINIMAL}")).unwrap();
    assert_ne!(commented.sha256, config.sha256);
}

#[test]
fn sha256_hex_of_a_known_file() {
    // Computed outside Rust (Python's hashlib) over MINIMAL followed by "# v2"; update it
    // when MINIMAL changes.
    let text = format!("{MINIMAL}# v2");
    let config = load(&text).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        config.sha256_hex(),
        "d4e25c3b7a3c1531d6278869c03b87e93f9927ef7063417331407a837b05fa96"
    );
}

// --- Every kind of problem, each named by its key. ---

#[test]
fn unknown_section_is_named() {
    assert_only_problem(
        &with("[quick]\nlisten = \"0.0.0.0:1\"\n"),
        "quick",
        "unknown section",
    );
    assert_only_problem(&with("[quick]\n"), "quick", "did you mean [quic]?");
    assert_only_problem(
        &with("[[cameras]]\n"),
        "cameras",
        "did you mean [[camera]]?",
    );
    let policy = format!("serial = 7\n{MINIMAL}");
    assert_only_problem(&policy, "serial", "looks like a signed policy");
}

#[test]
fn unknown_key_is_named_with_a_suggestion() {
    assert_only_problem(
        &with("[quic]\nidle_tiemout = \"30s\"\n"),
        "quic.idle_tiemout",
        "unknown key; did you mean idle_timeout?",
    );
    assert_only_problem(
        &with("[[camera]]\nid = \"a\"\nurl = \"rtsp://h/\"\nbitrate = 5\n"),
        "camera[0].bitrate",
        "unknown key",
    );
}

#[test]
fn every_unknown_key_of_a_section_is_reported() {
    let found = problems(&with("[quic]\nfoo = 1\nbar = 2\nbaz = 3\n"));
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["quic.foo", "quic.bar", "quic.baz"]);
}

#[test]
fn wrong_toml_types_are_named() {
    assert_only_problem(
        &with("[quic]\nkeep_alive = 10\n"),
        "quic.keep_alive",
        "expected a duration string such as \"10s\"",
    );
    assert_only_problem(
        &with("[quic]\ninitial_mtu = \"1200\"\n"),
        "quic.initial_mtu",
        "expected an integer, found a string",
    );
    assert_only_problem(
        &with("[quic]\nmtu_discovery = \"yes\"\n"),
        "quic.mtu_discovery",
        "expected true or false",
    );
    assert_only_problem(
        &with("[http]\ncors_origins = \"https://a.example\"\n"),
        "http.cors_origins",
        "expected a list of strings",
    );
    assert_only_problem(
        &replace(
            r#"trusted_keys = ["keys/eurometropole.pub"]"#,
            r#"trusted_keys = ["keys/eurometropole.pub", 7]"#,
        ),
        "policy.trusted_keys[1]",
        "expected a string, found an integer",
    );
    assert_only_problem(&format!("quic = 5\n{MINIMAL}"), "quic", "expected a table");
    assert_only_problem(&with("[camera]\nid = \"a\"\n"), "camera", "[[camera]]");
}

#[test]
fn a_mistyped_required_key_is_not_also_reported_missing() {
    assert_only_problem(
        &replace(r#"id = "csu.metz.example""#, "id = 42"),
        "site.id",
        "expected a string, found an integer",
    );
}

#[test]
fn missing_required_keys_are_named() {
    assert_only_problem(
        &replace("retention_days = 183\n", ""),
        "audit.retention_days",
        "required key missing",
    );
    let found = problems(&replace(
        "[tls]\ncert = \"tls/site.crt\"\nkey = \"tls/site.key\"\nca = \"tls/ca.crt\"\n",
        "",
    ));
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["tls.cert", "tls.key", "tls.ca"]);
    assert_only_problem(
        &with("[[camera]]\nid = \"metz/a\"\n"),
        "camera[0].url",
        "required key missing",
    );
    assert_only_problem(
        &with("[[user]]\nname = \"vms\"\nkind = \"service\"\npassword_file = \"p\"\n"),
        "user[0].cameras",
        "required key missing",
    );
}

#[test]
fn bad_durations_are_named() {
    assert_only_problem(
        &with("[quic]\nkeep_alive = \"ten seconds\"\n"),
        "quic.keep_alive",
        "expected a duration",
    );
    assert_only_problem(
        &with("[rtsp]\nsession_timeout = \"-5s\"\n"),
        "rtsp.session_timeout",
        "must not be negative",
    );
    assert_only_problem(
        &with("[channel]\nkeyframe_request_interval = \"0s\"\n"),
        "channel.keyframe_request_interval",
        "longer than zero",
    );
    assert_only_problem(
        &with("[quic]\nkeep_alive = \"30s\"\nidle_timeout = \"30s\"\n"),
        "quic.keep_alive",
        "shorter than quic.idle_timeout",
    );
}

#[test]
fn bad_addresses_and_ports_are_named() {
    assert_only_problem(
        &with("[rtsp]\nlisten = \"localhost:8554\"\n"),
        "rtsp.listen",
        "expected IP:port",
    );
    assert_only_problem(
        &with("[rtsp]\nlisten = \"0.0.0.0:70000\"\n"),
        "rtsp.listen",
        "port 70000 is out of range",
    );
    assert_only_problem(
        &with("[rtsp]\nudp_ports = \"30000-70000\"\n"),
        "rtsp.udp_ports",
        "port 70000 is out of range",
    );
    assert_only_problem(
        &with("[webrtc]\nudp_ports = \"0-10\"\n"),
        "webrtc.udp_ports",
        "port 0 is out of range",
    );
    assert_only_problem(
        &with("[webrtc]\nudp_ports = \"32000-31000\"\n"),
        "webrtc.udp_ports",
        "above last port",
    );
    assert_only_problem(
        &with("[webrtc]\nudp_ports = \"32000\"\n"),
        "webrtc.udp_ports",
        "expected a port range",
    );
    assert_only_problem(
        &with(
            "[[partner]]\nid = \"sncf.metz.example\"\nca = \"c\"\naddresses = [\"gw.sncf.example:99999\"]\n",
        ),
        "partner[0].addresses[0]",
        "port 99999 is out of range",
    );
    assert_only_problem(
        &with(
            "[[partner]]\nid = \"sncf.metz.example\"\nca = \"c\"\naddresses = [\"2001:db8::1:4433\"]\n",
        ),
        "partner[0].addresses[0]",
        "in brackets",
    );
    assert_only_problem(
        &with("[webrtc]\npublic_address = \"0.0.0.0\"\n"),
        "webrtc.public_address",
        "cannot be reached",
    );
    assert_only_problem(
        &with("[webrtc]\npublic_address = \"203.0.113.9:443\"\n"),
        "webrtc.public_address",
        "expected an IP address",
    );
}

#[test]
fn colliding_listeners_and_ranges_are_named() {
    assert_only_problem(
        &with("[http]\nlisten = \"0.0.0.0:8554\"\n"),
        "http.listen",
        "same TCP port as rtsp.listen",
    );
    assert_only_problem(
        &with("[webrtc]\nudp_ports = \"30500-31500\"\n"),
        "webrtc.udp_ports",
        "overlaps rtsp.udp_ports",
    );
    assert_only_problem(
        &with("[quic]\nlisten = \"0.0.0.0:30010\"\n"),
        "quic.listen",
        "inside rtsp.udp_ports",
    );
    // Port 0 (any free port, as tests use) never collides.
    load(&with(
        "[rtsp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[management]\nlisten = \"127.0.0.1:0\"\n",
    ))
    .unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn bad_integers_are_named() {
    assert_only_problem(
        &with("[quic]\ninitial_mtu = 1000\n"),
        "quic.initial_mtu",
        "between 1200 and 65527",
    );
    assert_only_problem(
        &with("[quic]\ninitial_mtu = 1400\nmax_mtu = 1300\n"),
        "quic.max_mtu",
        "at least quic.initial_mtu",
    );
    assert_only_problem(
        &replace("retention_days = 183", "retention_days = 0"),
        "audit.retention_days",
        "between 1 and 36500",
    );
    assert_only_problem(
        &with("[channel]\nsink_queue_packets = 0\n"),
        "channel.sink_queue_packets",
        "between 1",
    );
}

#[test]
fn bad_enums_are_named() {
    assert_only_problem(
        &with("[quic]\ndscp = \"AF44\"\n"),
        "quic.dscp",
        "DSCP class name",
    );
    assert_only_problem(
        &with("[quic]\nmedia_transport = \"datagrams\"\n"),
        "quic.media_transport",
        "expected \"datagram\" or \"stream\"",
    );
    assert_only_problem(
        &with("[[camera]]\nid = \"a\"\nurl = \"rtsp://h/\"\ntransport = \"http\"\n"),
        "camera[0].transport",
        "expected \"tcp\" or \"udp\"",
    );
    assert_only_problem(
        &with("[[user]]\nname = \"x\"\nkind = \"admin\"\ntoken_file = \"t\"\ncameras = []\n"),
        "user[0].kind",
        "expected \"agent\" or \"service\"",
    );
}

#[test]
fn inline_camera_credentials_are_refused_and_never_echoed() {
    let text = with("[[camera]]\nid = \"metz/a\"\nurl = \"rtsp://admin:S3cret@10.0.0.1/live\"\n");
    assert_only_problem(
        &text,
        "camera[0].url",
        "credentials must not be inline; use credentials_file",
    );
    let shown = load(&text).unwrap_err().to_string();
    assert!(!shown.contains("S3cret"), "{shown}");
    assert_only_problem(
        &with("[[camera]]\nid = \"metz/a\"\nurl = \"rtsp://admin@10.0.0.1/live\"\n"),
        "camera[0].url",
        "credentials must not be inline",
    );
    let query = with(
        "[[camera]]\nid = \"metz/a\"\nurl = \"rtsp://10.0.0.1/live?user=admin&password=S3cret\"\n",
    );
    assert_only_problem(&query, "camera[0].url", "credentials must not be inline");
    assert!(!load(&query).unwrap_err().to_string().contains("S3cret"));
}

#[test]
fn camera_urls_must_be_rtsp_with_a_host() {
    assert_only_problem(
        &with("[[camera]]\nid = \"a\"\nurl = \"http://10.0.0.1/\"\n"),
        "camera[0].url",
        "expected an rtsp:// URL",
    );
    assert_only_problem(
        &with("[[camera]]\nid = \"a\"\nurl = \"10.0.0.1/live\"\n"),
        "camera[0].url",
        "not a valid URL",
    );
}

#[test]
fn bad_ids_and_patterns_are_named() {
    assert_only_problem(
        &replace(r#"id = "csu.metz.example""#, r#"id = "CSU""#),
        "site.id",
        "not a valid site id",
    );
    assert_only_problem(
        &with("[[camera]]\nid = \"metz/../etc\"\nurl = \"rtsp://h/\"\n"),
        "camera[0].id",
        "not a valid camera id",
    );
    assert_only_problem(
        &with(
            "[[partner]]\nid = \"sncf.metz.example\"\nca = \"c\"\nprefix = \"sncf\"\nimport = [\"metz-ville/***\"]\n",
        ),
        "partner[0].import[0]",
        "not a valid camera pattern",
    );
    assert_only_problem(
        &with(
            "[[user]]\nname = \"jean dupont\"\nkind = \"agent\"\ntoken_file = \"t\"\ncameras = []\n",
        ),
        "user[0].name",
        "characters of",
    );
}

#[test]
fn duplicates_are_named() {
    let camera = "[[camera]]\nid = \"metz/a\"\nurl = \"rtsp://h/\"\n";
    assert_only_problem(
        &with(&format!("{camera}{camera}")),
        "camera[1].id",
        "already used by camera[0]",
    );
    let partner = "[[partner]]\nid = \"ccor.metz.example\"\nca = \"c\"\nallow_any_ca = true\n";
    assert_only_problem(
        &with(&format!("{partner}{partner}")),
        "partner[1].id",
        "already used by partner[0]",
    );
    let user =
        "[[user]]\nname = \"vms\"\nkind = \"service\"\npassword_file = \"p\"\ncameras = []\n";
    assert_only_problem(
        &with(&format!("{user}{user}")),
        "user[1].name",
        "already used by user[0]",
    );
    assert_only_problem(
        &with("[[partner]]\nid = \"csu.metz.example\"\nca = \"c\"\n"),
        "partner[0].id",
        "this site's own id",
    );
}

#[test]
fn overlapping_prefixes_are_named() {
    let partners = r#"
[[partner]]
id = "sncf.metz.example"
ca = "sncf-ca.crt"
prefix = "sncf"
import = ["metz-ville/**"]

[[partner]]
id = "ter.metz.example"
ca = "ter-ca.crt"
prefix = "sncf/ter"
import = ["**"]
"#;
    assert_only_problem(
        &with(partners),
        "partner[1].prefix",
        "overlaps partner[0].prefix",
    );
    let equal = partners.replace("\"sncf/ter\"", "\"sncf\"");
    assert_only_problem(
        &with(&equal),
        "partner[1].prefix",
        "overlaps partner[0].prefix",
    );
    // Segment by segment: `sncf-2` is not inside `sncf`.
    load(&with(&partners.replace("\"sncf/ter\"", "\"sncf-2\""))).unwrap_or_else(|e| panic!("{e}"));

    let local = r#"
[[camera]]
id = "sncf/parvis"
url = "rtsp://10.0.0.1/"

[[camera]]
id = "sncf"
url = "rtsp://10.0.0.2/"

[[partner]]
id = "sncf.metz.example"
ca = "sncf-ca.crt"
prefix = "sncf"
import = ["metz-ville/**"]
"#;
    assert_only_problem(
        &with(local),
        "partner[0].prefix",
        "overlaps local camera[0].id \"sncf/parvis\" and 1 other local camera(s)",
    );
}

#[test]
fn importing_needs_a_prefix() {
    assert_only_problem(
        &with(
            "[[partner]]\nid = \"sncf.metz.example\"\nca = \"c\"\nimport = [\"metz-ville/**\"]\n",
        ),
        "partner[0].prefix",
        "required when import is set",
    );
    assert_only_problem(
        &with(
            "[[partner]]\nid = \"sncf.metz.example\"\nca = \"c\"\nprefix = \"a/b/c/d\"\nimport = [\"e/f/g/h/i\"]\n",
        ),
        "partner[0].import[0]",
        "too long under prefix",
    );
}

#[test]
fn a_shared_ca_needs_allow_any_ca_on_each_partner() {
    let partners = |first: bool, second: bool| {
        with(&format!(
            r#"
[[partner]]
id = "corg.gendarmerie.example"
ca = "partners/interieur-ca.crt"
allow_any_ca = {first}

[[partner]]
id = "police.interieur.example"
ca = "/etc/passerelle/partners/interieur-ca.crt"
allow_any_ca = {second}
"#
        ))
    };
    assert_only_problem(
        &partners(true, false),
        "partner[1].allow_any_ca",
        "also the CA of partner[0]",
    );
    let found = problems(&partners(false, false));
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["partner[0].allow_any_ca", "partner[1].allow_any_ca"]);
    load(&partners(true, true)).unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn signatures_required_is_k_of_n() {
    assert_only_problem(
        &with("").replace("[policy]\n", "[policy]\nsignatures_required = 2\n"),
        "policy.signatures_required",
        "cannot be met by 1 trusted key",
    );
    assert_only_problem(
        &with("").replace("[policy]\n", "[policy]\nsignatures_required = 0\n"),
        "policy.signatures_required",
        "at least 1",
    );
    assert_only_problem(
        &replace(
            r#"trusted_keys = ["keys/eurometropole.pub"]"#,
            "trusted_keys = []",
        ),
        "policy.trusted_keys",
        "at least one",
    );
    assert_only_problem(
        &replace(
            r#"trusted_keys = ["keys/eurometropole.pub"]"#,
            r#"trusted_keys = ["keys/a.pub", "keys/../keys/a.pub", "keys/a.pub"]"#,
        ),
        "policy.trusted_keys[2]",
        "same file as policy.trusted_keys[0]",
    );
}

#[test]
fn user_secrets_are_exactly_one_for_rtsp() {
    assert_only_problem(
        &with(
            "[[user]]\nname = \"a\"\nkind = \"agent\"\npassword_file = \"p\"\nha1_file = \"h\"\ncameras = []\n",
        ),
        "user[0].ha1_file",
        "exactly one",
    );
    assert_only_problem(
        &with("[[user]]\nname = \"a\"\nkind = \"agent\"\ncameras = []\n"),
        "user[0]",
        "has no secret",
    );
    // Token only: an HTTP user.
    let config = load(&with(
        "[[user]]\nname = \"a\"\nkind = \"agent\"\ntoken_file = \"t\"\ncameras = [\"metz/**\"]\n",
    ))
    .unwrap();
    assert_eq!(config.users[0].rtsp_secret, None);
    assert_eq!(config.users[0].token_file, Some(etc("t")));
}

#[test]
fn http_certificate_rules_are_named() {
    assert_only_problem(
        &with("[http]\ncert = \"web.crt\"\n"),
        "http.key",
        "required when http.cert is set",
    );
    let found = problems(&with(
        "[http]\nlisten = \"127.0.0.1:8443\"\ncert = \"web.crt\"\nkey = \"web.key\"\n",
    ));
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["http.cert", "http.key"]);
    assert!(
        found[0].message.contains("http.listen is loopback"),
        "{found:?}"
    );
    assert_only_problem(
        &with("[http]\ncors_origins = [\"https://vms.example/app\"]\n"),
        "http.cors_origins[0]",
        "expected an origin",
    );
    assert_only_problem(
        &with("[http]\ncors_origins = [\"*\"]\n"),
        "http.cors_origins[0]",
        "expected an origin",
    );
}

#[test]
fn empty_paths_are_named() {
    assert_only_problem(
        &replace(r#"cert = "tls/site.crt""#, r#"cert = """#),
        "tls.cert",
        "must not be empty",
    );
}

// --- Reporting. ---

#[test]
fn every_problem_is_reported_in_one_run_in_file_order() {
    let text = r#"
[site]
id = "csu.metz.example"

[tls]
cert = "tls/site.crt"
key = "tls/site.key"
ca = "tls/ca.crt"

[quic]
idle_tiemout = "30s"
initial_mtu = 900

[[camera]]
id = "metz/a"
url = "rtsp://admin:pw@10.0.0.1/"

[[camera]]
id = "metz/a"
url = "rtsp://10.0.0.2/"
linger = "soon"

[policy]
file = "policy.toml"
trusted_keys = ["a.pub"]
signatures_required = 3

[audit]
dir = "audit"
journal_key = "journal.key"
"#;
    let err = load(text).unwrap_err();
    let found = err.problems();
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            // Missing: points at its section.
            "site.state_dir",
            "quic.idle_tiemout",
            "quic.initial_mtu",
            "camera[0].url",
            "camera[1].id",
            "camera[1].linger",
            "policy.signatures_required",
            "audit.retention_days",
        ]
    );
    let lines: Vec<Option<usize>> = found.iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 11, 12, 16, 19, 21, 26, 28].map(Some), "{err}");
    // One line of Display per problem, after a header naming the file.
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 1 + keys.len(), "{shown}");
    assert!(lines[0].starts_with("/etc/passerelle/passerelle.toml: 8 configuration problems"));
    assert_eq!(
        lines[2],
        "  quic.idle_tiemout: unknown key; did you mean idle_timeout? (line 11)"
    );
    assert_eq!(
        lines[4],
        "  camera[0].url: credentials must not be inline; use credentials_file (line 16)"
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let err = load("[site]\nid = \"csu.metz.example\nstate_dir = 3\n").unwrap_err();
    let ConfigError::Syntax { errors, .. } = &err else {
        panic!("expected a syntax error, got {err}");
    };
    assert_eq!(errors[0].line, 2, "{err}");
    assert!(err.to_string().contains("line 2, column"), "{err}");
}

#[test]
fn unreadable_and_non_utf8_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml");
    assert!(matches!(
        Config::load(&missing, NO_ENV),
        Err(ConfigError::Read { .. })
    ));
    let latin1 = dir.path().join("latin1.toml");
    std::fs::write(&latin1, b"[site]\nid = \"caf\xe9\"\n").unwrap();
    match Config::load(&latin1, NO_ENV) {
        Err(ConfigError::Syntax { errors, .. }) => {
            assert_eq!((errors[0].line, errors[0].column), (2, 10));
            assert!(errors[0].message.contains("UTF-8"));
        }
        other => panic!("expected a UTF-8 error, got {other:?}"),
    }
}

// --- Environment. ---

#[test]
fn env_overrides_apply_over_file_and_defaults() {
    let text = with("[rtsp]\nlisten = \"0.0.0.0:8554\"\n").replace("retention_days = 183\n", "");
    let config = load_with(
        &text,
        &[
            ("PASSERELLE__RTSP__LISTEN", "127.0.0.1:9554"),
            ("PASSERELLE__QUIC__MTU_DISCOVERY", "false"),
            ("PASSERELLE__QUIC__KEEP_ALIVE", "5s"),
            // A required key may come from the environment.
            ("PASSERELLE__AUDIT__RETENTION_DAYS", "30"),
            ("PASSERELLE__HTTP__TLS", "false"),
            ("PASSERELLE__TLS__CRL", "tls/crl.pem"),
            // Not ours: ignored.
            ("PASSERELLE_LOG_FORMAT", "json"),
            ("HOME", "/root"),
        ],
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        config.rtsp.listen,
        "127.0.0.1:9554".parse::<SocketAddr>().unwrap()
    );
    assert!(!config.quic.mtu_discovery);
    assert_eq!(config.quic.keep_alive, Duration::from_secs(5));
    assert_eq!(config.audit.retention_days, 30);
    assert_eq!(config.http.tls, None);
    // Relative paths from the environment resolve like the file's.
    assert_eq!(config.tls.crl, Some(etc("tls/crl.pem")));
}

#[test]
fn unknown_env_variables_are_refused_by_name() {
    let found = problems_with(
        MINIMAL,
        &[
            ("PASSERELLE__QUIC__IDLE_TIEMOUT", "30s"),
            ("PASSERELLE__QUICK__LISTEN", "0.0.0.0:1"),
            ("PASSERELLE__CAMERA__URL", "rtsp://h/"),
            ("PASSERELLE__POLICY__TRUSTED_KEYS", "a.pub"),
            ("PASSERELLE__RTSP", "x"),
            ("PASSERELLE__rtsp__listen", "127.0.0.1:1"),
            ("PASSERELLE__QUIC__INITIAL_MTU", "big"),
        ],
    );
    let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
    let expect = [
        (
            "PASSERELLE__CAMERA__URL",
            "[[camera]] entries cannot be set from the environment",
        ),
        ("PASSERELLE__POLICY__TRUSTED_KEYS", "is a list"),
        (
            "PASSERELLE__QUICK__LISTEN",
            "did you mean PASSERELLE__QUIC__LISTEN?",
        ),
        (
            "PASSERELLE__QUIC__IDLE_TIEMOUT",
            "did you mean PASSERELLE__QUIC__IDLE_TIMEOUT?",
        ),
        ("PASSERELLE__QUIC__INITIAL_MTU", "expected an integer"),
        ("PASSERELLE__RTSP", "expected PASSERELLE__SECTION__KEY"),
        ("PASSERELLE__rtsp__listen", "unknown section"),
    ];
    assert_eq!(found.len(), expect.len(), "{shown:#?}");
    for (var, fragment) in expect {
        assert!(
            found
                .iter()
                .any(|p| p.key == var && p.message.contains(fragment)),
            "no problem {var}: …{fragment}… in {shown:#?}"
        );
    }
}

#[test]
fn a_bad_value_from_the_environment_names_its_variable() {
    let found = problems_with(MINIMAL, &[("PASSERELLE__QUIC__INITIAL_MTU", "1000")]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "quic.initial_mtu");
    assert_eq!(
        found[0].env_var.as_deref(),
        Some("PASSERELLE__QUIC__INITIAL_MTU")
    );
    assert!(
        found[0]
            .to_string()
            .ends_with("(from PASSERELLE__QUIC__INITIAL_MTU)")
    );
}

// --- Files. ---

#[test]
fn check_files_names_every_unreadable_input_file() {
    let dir = tempfile::tempdir().unwrap();
    for present in ["tls/site.crt", "tls/ca.crt", "keys/eurometropole.pub"] {
        let path = dir.path().join(present);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "x").unwrap();
    }
    // A directory where a file is expected.
    std::fs::create_dir_all(dir.path().join("keys/journal.key")).unwrap();
    let file = dir.path().join("passerelle.toml");
    std::fs::write(&file, MINIMAL).unwrap();
    let config = Config::load(&file, NO_ENV).unwrap_or_else(|err| panic!("{err}"));
    let err = config.check_files().unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["tls.key", "audit.journal_key"], "{err}");
    assert!(
        err.problems()[1].message.contains("is a directory"),
        "{err}"
    );

    std::fs::write(dir.path().join("tls/site.key"), "x").unwrap();
    std::fs::remove_dir(dir.path().join("keys/journal.key")).unwrap();
    std::fs::write(dir.path().join("keys/journal.key"), "x").unwrap();
    config.check_files().unwrap_or_else(|err| panic!("{err}"));
}

// --- Small types. ---

#[test]
fn dscp_names_round_trip() {
    for (name, codepoint) in [
        ("CS0", 0),
        ("CS1", 8),
        ("AF11", 10),
        ("AF41", 34),
        ("AF43", 38),
        ("EF", 46),
        ("CS7", 56),
    ] {
        let dscp = Dscp::from_name(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(dscp.codepoint(), codepoint, "{name}");
        assert_eq!(dscp.to_string(), name);
        assert_eq!(dscp.tos(), codepoint << 2);
    }
    for bad in ["AF14", "AF51", "CS8", "af4", "", "46"] {
        assert_eq!(Dscp::from_name(bad), None, "{bad}");
    }
}

#[test]
fn port_ranges_know_their_ports() {
    let range = PortRange::new(30000, 30999).unwrap();
    assert_eq!(range.len(), 1000);
    assert!(range.contains(30000) && range.contains(30999) && !range.contains(31000));
    assert!(range.overlaps(PortRange::new(30999, 31000).unwrap()));
    assert!(!range.overlaps(PortRange::new(31000, 31999).unwrap()));
    assert_eq!(PortRange::new(0, 10), None);
    assert_eq!(PortRange::new(11, 10), None);
    assert_eq!(range.to_string(), "30000-30999");
}

// --- The schema, the serde shape, the docs and the example agree. ---

/// Reads the field names a serde-derived struct declares, without any input.
mod probe {
    use serde::de::{self, Deserializer, Visitor};

    #[derive(Debug)]
    pub(super) struct Fields(pub(super) Option<&'static [&'static str]>);

    impl std::fmt::Display for Fields {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }

    impl std::error::Error for Fields {}

    impl de::Error for Fields {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Fields(None)
        }
    }

    pub(super) struct Probe;

    impl<'de> Deserializer<'de> for Probe {
        type Error = Fields;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(None))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(Some(fields)))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    pub(super) fn fields<'de, T: serde::Deserialize<'de>>() -> Vec<&'static str> {
        match T::deserialize(Probe) {
            Err(Fields(Some(fields))) => fields.to_vec(),
            _ => panic!("not a struct"),
        }
    }
}

#[test]
fn schema_and_file_config_have_the_same_keys() {
    use super::file::*;
    let sections: Vec<&str> = SECTIONS.iter().map(|s| s.name).collect();
    assert_eq!(probe::fields::<FileConfig>(), sections);
    let fields = [
        ("site", probe::fields::<SiteSection>()),
        ("tls", probe::fields::<TlsSection>()),
        ("quic", probe::fields::<QuicSection>()),
        ("camera", probe::fields::<CameraEntry>()),
        ("partner", probe::fields::<PartnerEntry>()),
        ("policy", probe::fields::<PolicySection>()),
        ("user", probe::fields::<UserEntry>()),
        ("rtsp", probe::fields::<RtspSection>()),
        ("http", probe::fields::<HttpSection>()),
        ("webrtc", probe::fields::<WebrtcSection>()),
        ("management", probe::fields::<ManagementSection>()),
        ("audit", probe::fields::<AuditSection>()),
        ("channel", probe::fields::<ChannelSection>()),
    ];
    assert_eq!(fields.len(), SECTIONS.len());
    for (section, (name, serde_fields)) in SECTIONS.iter().zip(fields) {
        assert_eq!(section.name, name);
        let keys: Vec<&str> = section.keys.iter().map(|k| k.name).collect();
        assert_eq!(keys, serde_fields, "[{name}]");
    }
}

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn the_reference_documents_every_key_and_default() {
    let doc = repo_file("docs/configuration.md");
    for section in SECTIONS {
        let header = if section.repeated {
            format!("## `[[{}]]`", section.name)
        } else {
            format!("## `[{}]`", section.name)
        };
        assert!(
            doc.contains(&header),
            "docs/configuration.md lacks {header}"
        );
        let body = doc.split(&header).nth(1).unwrap();
        let body = body.split("\n## ").next().unwrap();
        for key in section.keys {
            let row = format!("| `{}` |", key.name);
            let line = body
                .lines()
                .find(|line| line.starts_with(&row))
                .unwrap_or_else(|| panic!("{header} documents no {row}"));
            if let Some(default) = key.default {
                let shown = match default {
                    schema::DefaultValue::Text(text) => format!("`\"{text}\"`"),
                    schema::DefaultValue::Integer(n) => format!("`{n}`"),
                    schema::DefaultValue::Bool(b) => format!("`{b}`"),
                    schema::DefaultValue::EmptyList => "`[]`".to_owned(),
                };
                assert!(
                    line.contains(&shown),
                    "{header} {row}: default {shown} not shown in {line}"
                );
            }
        }
    }
}

#[test]
fn the_example_names_every_key() {
    let example = repo_file("deploy/passerelle.example.toml");
    // Commented-out keys count: optional keys are shown commented with their default.
    let uncommented: String = example
        .lines()
        .map(|line| line.trim_start().trim_start_matches('#').trim_start())
        .collect::<Vec<_>>()
        .join("\n");
    for section in SECTIONS {
        for key in section.keys {
            let assignment = format!("\n{} = ", key.name);
            let header = if section.repeated {
                format!("[[{}]]", section.name)
            } else {
                format!("[{}]", section.name)
            };
            let present = uncommented.split(&header).skip(1).any(|body| {
                let body = body.split("\n[").next().unwrap_or("");
                body.contains(&assignment)
            });
            assert!(
                present,
                "deploy/passerelle.example.toml: {header} has no {}",
                key.name
            );
        }
    }
}
