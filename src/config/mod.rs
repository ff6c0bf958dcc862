//! The configuration file, validated into one plain settings struct per section.
//!
//! [`Config::load`] reads one TOML file and layers, lowest first:
//! 1. the built-in defaults (the `config` crate's defaults),
//! 2. the file,
//! 3. `PASSERELLE__SECTION__KEY` environment variables, for the scalar keys of the table
//!    sections (`PASSERELLE__RTSP__LISTEN=127.0.0.1:9554`). An unknown `PASSERELLE__*`
//!    variable is an error; other variables are ignored.
//!
//! The environment is a parameter: `main` passes `std::env::vars_os()`, tests pass a list.
//!
//! Checking happens in two passes so that one run reports every problem, each naming its
//! key (`camera[3].url`, with the file's line when it has one):
//! 1. the parsed TOML is walked against the key schema (`schema.rs`): unknown sections and
//!    keys and values of the wrong TOML type are reported and dropped;
//! 2. what remains is deserialized (serde, `deny_unknown_fields`) into the file's shape
//!    and validated into typed values: addresses, durations, port ranges, ids, enums,
//!    and the rules that tie keys together (duplicate ids, overlapping prefixes, k of n).
//!
//! Relative paths resolve against the directory of the configuration file. Referenced files
//! need not exist when the configuration is loaded: each component opens its own files
//! (and re-reads them on SIGHUP). [`Config::check_files`] reports every referenced input
//! file that cannot be opened, for `passerelle check`.
//!
//! The reference of every key is `docs/configuration.md`; `deploy/passerelle.example.toml`
//! is a complete example.

mod file;
mod schema;
mod validate;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use url::Url;

use crate::ids::{CameraId, CameraPattern, SiteId};

/// A validated configuration: one settings struct per section.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The configuration file, as an absolute path.
    pub path: PathBuf,
    /// SHA-256 of the file's exact bytes, journaled at start.
    pub sha256: [u8; 32],
    /// `[site]`.
    pub site: SiteSettings,
    /// `[tls]`.
    pub tls: TlsSettings,
    /// `[quic]`.
    pub quic: QuicSettings,
    /// `[[camera]]`, in file order.
    pub cameras: Vec<CameraSettings>,
    /// `[[partner]]`, in file order.
    pub partners: Vec<PartnerSettings>,
    /// `[policy]`.
    pub policy: PolicySettings,
    /// `[[user]]`, in file order.
    pub users: Vec<UserSettings>,
    /// `[rtsp]`.
    pub rtsp: RtspSettings,
    /// `[http]`.
    pub http: HttpSettings,
    /// `[webrtc]`.
    pub webrtc: WebrtcSettings,
    /// `[management]`.
    pub management: ManagementSettings,
    /// `[audit]`.
    pub audit: AuditSettings,
    /// `[channel]`.
    pub channel: ChannelSettings,
}

impl Config {
    /// Reads, layers and validates the configuration file at `path`, with overrides from
    /// `env` (pass `std::env::vars_os()`; only `PASSERELLE__*` variables are looked at).
    ///
    /// Referenced files (certificates, keys, secrets) are not opened: see
    /// [`Config::check_files`].
    pub fn load<I, K, V>(path: &Path, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => {
                let at = err.utf8_error().valid_up_to();
                let prefix = String::from_utf8_lossy(&err.as_bytes()[..at]);
                let (line, column) = schema::LineIndex::new(&prefix).position(at);
                return Err(ConfigError::Syntax {
                    path: path.to_path_buf(),
                    errors: vec![TomlError {
                        line,
                        column,
                        message: "not valid UTF-8".to_owned(),
                    }],
                });
            }
        };
        Config::from_toml(&text, path, env)
    }

    /// As [`Config::load`], with the file's content already read. `path` is where it was
    /// read from: relative paths inside resolve against its directory.
    pub fn from_toml<I, K, V>(text: &str, path: &Path, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        // `absolute` only fails on an empty path or without a current directory; then
        // the path is kept as given and relative paths stay relative to the cwd.
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let sha256: [u8; 32] = Sha256::digest(text.as_bytes()).into();

        let (doc, syntax_errors) = toml::de::DeTable::parse_recoverable(text);
        if !syntax_errors.is_empty() {
            let lines = schema::LineIndex::new(text);
            let errors = syntax_errors
                .iter()
                .map(|err| {
                    let (line, column) = lines.position(err.span().map_or(0, |span| span.start));
                    TomlError {
                        line,
                        column,
                        message: err.message().trim().to_owned(),
                    }
                })
                .collect();
            return Err(ConfigError::Syntax { path, errors });
        }

        let mut problems = Problems::default();
        let tree = schema::walk_file(doc.get_ref(), text, &mut problems);
        let overrides = schema::env_overrides(env, &mut problems);
        let env_keys: HashMap<String, String> = overrides
            .iter()
            .map(|o| (o.key.clone(), o.var.clone()))
            .collect();
        let config = match schema::layer(tree.root, &overrides) {
            Ok(file) => validate::validate(file, &path, sha256, &mut problems),
            Err(err) => {
                problems.push(
                    "configuration",
                    format!("internal error: the loader and its key schema disagree: {err}"),
                );
                None
            }
        };
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid {
                problems: problems.located(&tree.lines, &env_keys),
                path,
            }),
        }
    }

    /// The SHA-256 of the configuration file, in lower-case hex.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Opens every input file the configuration names (certificates, keys, CRL, CAs,
    /// credentials, trusted policy keys, the journal key) and reports each one that cannot
    /// be read, by key. The policy file itself is left to the policy store: a missing
    /// policy is not a configuration error (the gateway starts and shares nothing).
    /// Directories (`site.state_dir`, `audit.dir`) are created by their components.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let problems: Vec<Problem> = self
            .input_files()
            .into_iter()
            .filter_map(|(key, path)| {
                let message = match std::fs::File::open(path) {
                    Ok(file) => match file.metadata() {
                        Ok(meta) if meta.is_dir() => "is a directory, not a file".to_owned(),
                        Ok(_) => return None,
                        Err(err) => err.to_string(),
                    },
                    Err(err) => err.to_string(),
                };
                Some(Problem {
                    key,
                    message: format!("{}: {message}", path.display()),
                    line: None,
                    env_var: None,
                })
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Files {
                path: self.path.clone(),
                problems,
            })
        }
    }

    /// Every input file with the key that names it, in file order.
    fn input_files(&self) -> Vec<(String, &Path)> {
        let mut files: Vec<(String, &Path)> = vec![
            ("tls.cert".into(), &self.tls.cert),
            ("tls.key".into(), &self.tls.key),
            ("tls.ca".into(), &self.tls.ca),
        ];
        if let Some(crl) = &self.tls.crl {
            files.push(("tls.crl".into(), crl));
        }
        for (i, camera) in self.cameras.iter().enumerate() {
            if let Some(credentials) = &camera.credentials_file {
                files.push((format!("camera[{i}].credentials_file"), credentials));
            }
        }
        for (i, partner) in self.partners.iter().enumerate() {
            files.push((format!("partner[{i}].ca"), &partner.ca));
        }
        for (i, key) in self.policy.trusted_keys.iter().enumerate() {
            files.push((format!("policy.trusted_keys[{i}]"), key));
        }
        for (i, user) in self.users.iter().enumerate() {
            match &user.rtsp_secret {
                Some(RtspSecret::PasswordFile(path)) => {
                    files.push((format!("user[{i}].password_file"), path));
                }
                Some(RtspSecret::Ha1File(path)) => {
                    files.push((format!("user[{i}].ha1_file"), path));
                }
                None => {}
            }
            if let Some(token) = &user.token_file {
                files.push((format!("user[{i}].token_file"), token));
            }
        }
        if let Some(tls) = &self.http.tls {
            if tls.cert != self.tls.cert {
                files.push(("http.cert".into(), &tls.cert));
            }
            if tls.key != self.tls.key {
                files.push(("http.key".into(), &tls.key));
            }
        }
        files.push(("audit.journal_key".into(), &self.audit.journal_key));
        files
    }
}

/// `[site]`: who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSettings {
    /// Our site id, the DNS name in our certificate.
    pub id: SiteId,
    /// Where persistent state lives (the accepted policy's serial and hash).
    pub state_dir: PathBuf,
}

/// `[tls]`: our identity on links, and what we check peers against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Our certificate chain (PEM), naming `site.id` as a DNS subjectAltName.
    pub cert: PathBuf,
    /// Its private key (PEM). A secret.
    pub key: PathBuf,
    /// The CA certificate(s) (PEM) that issued `cert`.
    pub ca: PathBuf,
    /// Certificate revocation lists (PEM), honoured for every peer.
    pub crl: Option<PathBuf>,
}

/// `[quic]`: the gateway-to-gateway links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicSettings {
    /// UDP address links are accepted on and dialled from.
    pub listen: SocketAddr,
    /// Interval of keep-alive packets on an idle link.
    pub keep_alive: Duration,
    /// A link silent this long is closed.
    pub idle_timeout: Duration,
    /// UDP payload size before path MTU discovery, in bytes.
    pub initial_mtu: u16,
    /// Largest UDP payload path MTU discovery may reach, in bytes.
    pub max_mtu: u16,
    /// Whether path MTU discovery runs.
    pub mtu_discovery: bool,
    /// DSCP mark of link packets.
    pub dscp: Dscp,
    /// How media travel on links.
    pub media_transport: MediaTransport,
}

/// How media travel on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTransport {
    /// RTP over QUIC DATAGRAM frames (draft-ietf-avtcore-rtp-over-quic): no head-of-line
    /// blocking; needs a path that carries datagrams of `initial_mtu`.
    Datagram,
    /// One QUIC stream per flow: the fallback for paths that mangle datagrams.
    Stream,
}

/// A Differentiated Services codepoint (RFC 2474), set on media sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dscp(u8);

impl Dscp {
    /// The 6-bit codepoint (AF41 is 34).
    pub fn codepoint(self) -> u8 {
        self.0
    }

    /// The value for `IP_TOS` / `IPV6_TCLASS`: the codepoint in the upper six bits, ECN
    /// bits clear.
    pub fn tos(self) -> u8 {
        self.0 << 2
    }

    /// Parses a class name: `CS0`..`CS7` (RFC 2474), `AF11`..`AF43` (RFC 2597), `EF`
    /// (RFC 3246). Case-insensitive. `CS0` is the default, unmarked class.
    pub fn from_name(name: &str) -> Option<Dscp> {
        let name = name.to_ascii_uppercase();
        if name == "EF" {
            return Some(Dscp(46));
        }
        let digits = |s: &str| -> Option<Vec<u8>> {
            s.bytes()
                .map(|b| b.is_ascii_digit().then(|| b - b'0'))
                .collect()
        };
        if let Some(rest) = name.strip_prefix("CS") {
            if let Some([class]) = digits(rest).as_deref()
                && *class <= 7
            {
                return Some(Dscp(class << 3));
            }
        } else if let Some(rest) = name.strip_prefix("AF")
            && let Some([class, drop]) = digits(rest).as_deref()
            && (1..=4).contains(class)
            && (1..=3).contains(drop)
        {
            return Some(Dscp((class << 3) | (drop << 1)));
        }
        None
    }
}

impl fmt::Display for Dscp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (class, rest) = (self.0 >> 3, self.0 & 0b111);
        match (class, rest) {
            (5, 0b110) => write!(f, "EF"),
            (_, 0) => write!(f, "CS{class}"),
            (1..=4, 2 | 4 | 6) => write!(f, "AF{class}{}", rest >> 1),
            _ => write!(f, "{}", self.0),
        }
    }
}

/// `[[camera]]`: one local camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraSettings {
    /// The camera's id here and in every partner's catalog.
    pub id: CameraId,
    /// Its RTSP URL, without credentials.
    pub url: Url,
    /// File holding `user:password` for the camera, if it needs them. A secret.
    pub credentials_file: Option<PathBuf>,
    /// Pulled only while watched (`true`), or always.
    pub on_demand: bool,
    /// How RTP comes from the camera.
    pub transport: CameraTransport,
    /// How long an on-demand camera stays pulled after its last viewer leaves.
    pub linger: Duration,
    /// Interval of the light OPTIONS/DESCRIBE probe of an idle on-demand camera.
    pub probe_interval: Duration,
}

/// How RTP comes from a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraTransport {
    /// Interleaved in the RTSP TCP connection: crosses NAT and firewalls, no loss.
    Tcp,
    /// RTP/RTCP over UDP.
    Udp,
}

/// `[[partner]]`: one site we link with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerSettings {
    /// Its site id, matched against the DNS name in its certificate.
    pub id: SiteId,
    /// Where to dial it; empty when we only accept its connections.
    pub addresses: Vec<DialAddress>,
    /// The CA certificate(s) (PEM) allowed to speak for this partner.
    pub ca: PathBuf,
    /// True when `ca` may also speak for other partners (a shared CA).
    pub allow_any_ca: bool,
    /// Where its cameras appear in our ids (`sncf`); set whenever `import` is non-empty.
    pub prefix: Option<CameraId>,
    /// Which of its cameras we import, in its own ids.
    pub import: Vec<CameraPattern>,
    /// Cap on the bitrate we receive from it, in kbit/s.
    pub max_bitrate_kbps: Option<u64>,
}

/// A `host:port` to dial. The host is a DNS name or an IP address, resolved when dialling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialAddress {
    /// DNS name or IP address (IPv6 without brackets).
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl fmt::Display for DialAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `[policy]`: where the signed policy is and who may sign it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    /// The policy TOML; its signatures are `<file>.minisig` and `<file>.<signer>.minisig`.
    pub file: PathBuf,
    /// Minisign public key files whose signatures count.
    pub trusted_keys: Vec<PathBuf>,
    /// How many distinct trusted keys must sign (k of n), at least 1.
    pub signatures_required: usize,
}

/// `[[user]]`: one local account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSettings {
    /// Login name, used for RTSP authentication and in the journal.
    pub name: String,
    /// A person or a declared service.
    pub kind: UserKind,
    /// How RTSP authenticates this user; `None` for a token-only (HTTP) user.
    pub rtsp_secret: Option<RtspSecret>,
    /// File holding the HTTP bearer token. A secret.
    pub token_file: Option<PathBuf>,
    /// Which cameras (our ids) the user may watch.
    pub cameras: Vec<CameraPattern>,
}

/// What a user watches as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKind {
    /// A person: may open interventions and satisfy `on_request` grants.
    Agent,
    /// A declared service (a VMS pulling streams): never satisfies `on_request`.
    Service,
}

/// Where a user's RTSP secret is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtspSecret {
    /// A file holding the password in clear.
    PasswordFile(PathBuf),
    /// A file holding the digest HA1, `MD5(user:realm:password)` in hex.
    Ha1File(PathBuf),
}

/// `[rtsp]`: the RTSP server re-publishing cameras to the site's VMS and players.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspSettings {
    /// TCP address of the server.
    pub listen: SocketAddr,
    /// Local UDP ports for RTP/RTCP to clients that SETUP over UDP.
    pub udp_ports: PortRange,
    /// A session without a keep-alive this long is torn down (the `timeout` of the
    /// `Session` header).
    pub session_timeout: Duration,
    /// How long a DESCRIBE of a cold camera waits for it before answering 503.
    pub describe_timeout: Duration,
}

/// `[http]`: WHEP, viewer and status pages, the catalog and intervention API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// TCP address of the server.
    pub listen: SocketAddr,
    /// Certificate and key when serving HTTPS; `None` for plain HTTP.
    pub tls: Option<HttpTls>,
    /// Origins allowed by CORS (`https://vms.csu.example`), serialized as origins.
    pub cors_origins: Vec<String>,
}

/// The HTTPS certificate and key, `[tls]`'s unless `[http]` names others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM). A secret.
    pub key: PathBuf,
}

/// `[webrtc]`: WebRTC (WHEP) viewers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebrtcSettings {
    /// Local UDP ports for WebRTC media.
    pub udp_ports: PortRange,
    /// The address browsers reach us at, when it is not a local one (1:1 NAT).
    pub public_address: Option<IpAddr>,
    /// Most WebRTC sessions at once.
    pub max_sessions: u32,
}

/// `[management]`: metrics, health, API for operators' tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementSettings {
    /// TCP address; loopback by default.
    pub listen: SocketAddr,
}

/// `[audit]`: the append-only journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Directory of the journal files.
    pub dir: PathBuf,
    /// Records older than this many days are purged.
    pub retention_days: u32,
    /// The Ed25519 key that signs checkpoints (not a policy key). A secret.
    pub journal_key: PathBuf,
}

/// `[channel]`: the per-camera fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSettings {
    /// Cap of one camera's keyframe (GOP) cache, in bytes.
    pub keyframe_cache_max_bytes: usize,
    /// Cap of one camera's keyframe cache, in media time.
    pub keyframe_cache_max_duration: Duration,
    /// Bound of each sink's queue, in packets; past it the sink drops until a keyframe.
    pub sink_queue_packets: usize,
    /// Least interval between two keyframe requests sent upstream for one camera.
    pub keyframe_request_interval: Duration,
}

/// An inclusive range of ports, `first-last` in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// `None` unless `1 <= first <= last`.
    pub fn new(first: u16, last: u16) -> Option<PortRange> {
        (first >= 1 && first <= last).then_some(PortRange { first, last })
    }

    /// The lowest port.
    pub fn first(self) -> u16 {
        self.first
    }

    /// The highest port, included.
    pub fn last(self) -> u16 {
        self.last
    }

    /// How many ports.
    pub fn len(self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Never true: a range holds at least one port.
    pub fn is_empty(self) -> bool {
        false
    }

    /// True when `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// True when the two ranges share a port.
    pub fn overlaps(self, other: PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Why a configuration was refused. `passerelle` exits 64 on any of them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}: not valid TOML{}", path.display(), Lines(errors))]
    Syntax {
        path: PathBuf,
        errors: Vec<TomlError>,
    },
    /// Keys are unknown, missing or have bad values. Every one is listed.
    #[error("{}: {}{}", path.display(), count(problems.len(), "configuration problem"), Lines(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    /// Input files named by the configuration cannot be read ([`Config::check_files`]).
    #[error("{}: {}{}", path.display(), count(problems.len(), "unreadable file"), Lines(problems))]
    Files {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems found, each naming its key; empty for `Read` and `Syntax`.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } | ConfigError::Files { problems, .. } => problems,
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => &[],
        }
    }
}

/// One bad, unknown or missing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key's path (`quic.idle_timeout`, `camera[3].url`, `partner[0].import[1]`, indices
    /// from 0), or the environment variable's name for a bad `PASSERELLE__*` variable.
    pub key: String,
    /// What is wrong, and when it helps, what to do.
    pub message: String,
    /// The 1-based line of the key (or of its entry) in the file, when it has one.
    pub line: Option<usize>,
    /// The variable the value came from, when it came from the environment.
    pub env_var: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(var) = &self.env_var {
            write!(f, " (from {var})")
        } else if let Some(line) = self.line {
            write!(f, " (line {line})")
        } else {
            Ok(())
        }
    }
}

/// A TOML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in bytes.
    pub column: usize,
    /// The parser's message.
    pub message: String,
}

impl fmt::Display for TomlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// Displays each item on its own indented line.
struct Lines<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for Lines<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in self.0 {
            write!(f, "\n  {item}")?;
        }
        Ok(())
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Collects problems during loading, keyed by path; located and sorted at the end.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<(String, String)>,
}

impl Problems {
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.list.push((key.into(), message.into()));
    }

    /// Records that the required `key` is missing, unless a problem about it (or about
    /// one of its items) was already reported: a value dropped for its type is absent.
    pub(crate) fn missing(&mut self, key: &str) {
        if !self.about(key) {
            self.push(key, "required key missing");
        }
    }

    /// True when a problem names `key` or something inside it.
    pub(crate) fn about(&self, key: &str) -> bool {
        self.list.iter().any(|(k, _)| {
            k == key
                || k.strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Attaches the line or environment variable of each problem, and sorts by line; the
    /// problems with no line (missing keys, environment) come last, in the order found.
    fn located(
        self,
        lines: &HashMap<String, usize>,
        env_keys: &HashMap<String, String>,
    ) -> Vec<Problem> {
        let mut problems: Vec<Problem> = self
            .list
            .into_iter()
            .map(|(key, message)| {
                let env_var = env_keys.get(&key).cloned();
                let line = if env_var.is_some() {
                    None
                } else {
                    line_of(lines, &key)
                };
                Problem {
                    key,
                    message,
                    line,
                    env_var,
                }
            })
            .collect();
        problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
        problems
    }
}

/// The line of `key`, or of the nearest enclosing key the file has.
fn line_of(lines: &HashMap<String, usize>, key: &str) -> Option<usize> {
    let mut key = key;
    loop {
        if let Some(&line) = lines.get(key) {
            return Some(line);
        }
        key = &key[..key.rfind(['.', '['])?];
    }
}

#[cfg(test)]
mod tests;
