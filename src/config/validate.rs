//! From the file's shape ([`FileConfig`]) to typed settings ([`Config`]).
//!
//! Every check records its problem under the key's path and carries on, so one run
//! reports them all; a value that failed becomes `None` and the rules that depend on it
//! are skipped rather than reported a second time.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jiff::SignedDuration;
use url::Url;

use super::file::{
    AuditSection, CameraEntry, ChannelSection, FileConfig, HttpSection, ManagementSection,
    PartnerEntry, PolicySection, QuicSection, RtspSection, SiteSection, TlsSection, UserEntry,
    WebrtcSection,
};
use super::{
    AuditSettings, CameraSettings, CameraTransport, ChannelSettings, Config, DialAddress, Dscp,
    HttpSettings, HttpTls, ManagementSettings, MediaTransport, PartnerSettings, PolicySettings,
    PortRange, Problems, QuicSettings, RtspSecret, RtspSettings, SiteSettings, TlsSettings,
    UserKind, UserSettings, WebrtcSettings,
};
use crate::ids::{CameraId, CameraPattern, SiteId};

/// Smallest UDP payload every QUIC path must carry (RFC 9000 §14).
const QUIC_MIN_MTU: i64 = 1200;
/// Largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP), quinn's own upper bound.
const QUIC_MAX_MTU: i64 = 65527;
/// Longest user name: fits the RTSP digest `username` and a journal field comfortably.
const USER_NAME_MAX_LEN: usize = 64;
/// Query parameters some cameras accept credentials in; refused like URL userinfo.
const CREDENTIAL_QUERY_KEYS: &[&str] = &[
    "user", "username", "login", "pass", "password", "passwd", "pwd", "token", "auth",
];

/// Validates `file` into a [`Config`]. Returns `None` when any problem was recorded.
pub(crate) fn validate(
    file: FileConfig,
    path: &Path,
    sha256: [u8; 32],
    problems: &mut Problems,
) -> Option<Config> {
    let base = path.parent().unwrap_or(path);
    let mut check = Check { base, problems };

    // Rules across entries first, on the raw text, so that an entry with another bad key
    // is still compared with the others.
    check.unique_ids(&file);
    check.prefixes(&file);
    check.shared_cas(&file);
    check.ports(&file);

    // Exhaustive: a new section cannot be forgotten here.
    let FileConfig {
        site,
        tls,
        quic,
        camera,
        partner,
        policy,
        user,
        rtsp,
        http,
        webrtc,
        management,
        audit,
        channel,
    } = file;
    let site = check.site(site);
    let tls = check.tls(tls);
    let quic = check.quic(quic);
    let cameras: Vec<_> = camera
        .into_iter()
        .enumerate()
        .map(|(i, entry)| check.camera(i, entry))
        .collect();
    let partners: Vec<_> = partner
        .into_iter()
        .enumerate()
        .map(|(i, entry)| check.partner(i, entry))
        .collect();
    let policy = check.policy(policy);
    let users: Vec<_> = user
        .into_iter()
        .enumerate()
        .map(|(i, entry)| check.user(i, entry))
        .collect();
    let rtsp = check.rtsp(rtsp);
    let http = check.http(http, tls.as_ref());
    let webrtc = check.webrtc(webrtc);
    let management = check.management(management);
    let audit = check.audit(audit);
    let channel = check.channel(channel);

    Some(Config {
        path: path.to_path_buf(),
        sha256,
        site: site?,
        tls: tls?,
        quic: quic?,
        cameras: cameras.into_iter().collect::<Option<_>>()?,
        partners: partners.into_iter().collect::<Option<_>>()?,
        policy: policy?,
        users: users.into_iter().collect::<Option<_>>()?,
        rtsp: rtsp?,
        http: http?,
        webrtc: webrtc?,
        management: management?,
        audit: audit?,
        channel: channel?,
    })
}

struct Check<'a> {
    /// Directory relative paths resolve against.
    base: &'a Path,
    problems: &'a mut Problems,
}

/// Per-section validation. Each returns `None` when it recorded a problem.
impl Check<'_> {
    fn site(&mut self, site: SiteSection) -> Option<SiteSettings> {
        let SiteSection { id, state_dir } = site;
        let id = self
            .required("site.id", id)
            .and_then(|id| self.site_id("site.id", &id));
        let state_dir = self.required_path("site.state_dir", state_dir);
        Some(SiteSettings {
            id: id?,
            state_dir: state_dir?,
        })
    }

    fn tls(&mut self, tls: TlsSection) -> Option<TlsSettings> {
        let TlsSection { cert, key, ca, crl } = tls;
        let cert = self.required_path("tls.cert", cert);
        let key = self.required_path("tls.key", key);
        let ca = self.required_path("tls.ca", ca);
        let crl = self.optional_path("tls.crl", crl);
        Some(TlsSettings {
            cert: cert?,
            key: key?,
            ca: ca?,
            crl: crl?,
        })
    }

    fn quic(&mut self, quic: QuicSection) -> Option<QuicSettings> {
        let QuicSection {
            listen,
            keep_alive,
            idle_timeout,
            initial_mtu,
            max_mtu,
            mtu_discovery,
            dscp,
            media_transport,
        } = quic;
        let listen = self.socket_addr("quic.listen", &listen);
        let keep_alive = self.duration("quic.keep_alive", &keep_alive, NonZero);
        let idle_timeout = self.duration("quic.idle_timeout", &idle_timeout, NonZero);
        if let (Some(keep_alive), Some(idle_timeout)) = (keep_alive, idle_timeout)
            && keep_alive >= idle_timeout
        {
            self.bad(
                "quic.keep_alive",
                format!(
                    "must be shorter than quic.idle_timeout ({}), or idle links are closed",
                    show(idle_timeout)
                ),
            );
        }
        let initial_mtu: Option<u16> =
            self.integer("quic.initial_mtu", initial_mtu, QUIC_MIN_MTU, QUIC_MAX_MTU);
        let max_mtu: Option<u16> =
            self.integer("quic.max_mtu", max_mtu, QUIC_MIN_MTU, QUIC_MAX_MTU);
        if let (Some(initial), Some(max)) = (initial_mtu, max_mtu)
            && initial > max
        {
            self.bad(
                "quic.max_mtu",
                format!("must be at least quic.initial_mtu ({initial}), found {max}"),
            );
        }
        let dscp_value = Dscp::from_name(&dscp);
        if dscp_value.is_none() {
            self.bad(
                "quic.dscp",
                format!("expected a DSCP class name (CS0-CS7, AF11-AF43, EF), found {dscp:?}"),
            );
        }
        let media_transport = self.choice(
            "quic.media_transport",
            &media_transport,
            &[
                ("datagram", MediaTransport::Datagram),
                ("stream", MediaTransport::Stream),
            ],
        );
        Some(QuicSettings {
            listen: listen?,
            keep_alive: keep_alive?,
            idle_timeout: idle_timeout?,
            initial_mtu: initial_mtu?,
            max_mtu: max_mtu?,
            mtu_discovery,
            dscp: dscp_value?,
            media_transport: media_transport?,
        })
    }

    fn camera(&mut self, index: usize, entry: CameraEntry) -> Option<CameraSettings> {
        let CameraEntry {
            id,
            url,
            credentials_file,
            on_demand,
            transport,
            linger,
            probe_interval,
        } = entry;
        let at = |key: &str| format!("camera[{index}].{key}");
        let id = self
            .required(&at("id"), id)
            .and_then(|id| self.parse_id::<CameraId>(&at("id"), &id, "camera id"));
        let url = self
            .required(&at("url"), url)
            .and_then(|url| self.camera_url(&at("url"), &url));
        let credentials_file = self.optional_path(&at("credentials_file"), credentials_file);
        let transport = self.choice(
            &at("transport"),
            &transport,
            &[("tcp", CameraTransport::Tcp), ("udp", CameraTransport::Udp)],
        );
        let linger = self.duration(&at("linger"), &linger, ZeroAllowed);
        let probe_interval = self.duration(&at("probe_interval"), &probe_interval, NonZero);
        Some(CameraSettings {
            id: id?,
            url: url?,
            credentials_file: credentials_file?,
            on_demand,
            transport: transport?,
            linger: linger?,
            probe_interval: probe_interval?,
        })
    }

    fn partner(&mut self, index: usize, entry: PartnerEntry) -> Option<PartnerSettings> {
        let PartnerEntry {
            id,
            addresses,
            ca,
            allow_any_ca,
            prefix,
            import,
            max_bitrate_kbps,
        } = entry;
        let at = |key: &str| format!("partner[{index}].{key}");
        let id = self
            .required(&at("id"), id)
            .and_then(|id| self.site_id(&at("id"), &id));
        let addresses = self.each(&addresses, |check, i, text| {
            check.dial_address(&format!("partner[{index}].addresses[{i}]"), text)
        });
        let ca = self.required_path(&at("ca"), ca);
        let prefix = self.optional(prefix, |check, text| {
            check.parse_id::<CameraId>(&at("prefix"), text, "camera id prefix")
        });
        let import = self.each(&import, |check, i, text| {
            check.parse_id::<CameraPattern>(
                &format!("partner[{index}].import[{i}]"),
                text,
                "camera pattern",
            )
        });
        if let (Some(None), Some(import)) = (&prefix, &import)
            && !import.is_empty()
        {
            self.bad(
                &at("prefix"),
                "required when import is set: the imported cameras need a place in our ids",
            );
        }
        if let (Some(Some(prefix)), Some(import)) = (&prefix, &import) {
            for (i, pattern) in import.iter().enumerate() {
                if let Err(err) = pattern.with_prefix(prefix) {
                    self.bad(
                        &format!("partner[{index}].import[{i}]"),
                        format!("too long under prefix {:?}: {err}", prefix.as_str()),
                    );
                }
            }
        }
        let max_bitrate_kbps = self.optional(max_bitrate_kbps, |check, kbps| {
            check.integer(&at("max_bitrate_kbps"), *kbps, 1, i64::MAX)
        });
        Some(PartnerSettings {
            id: id?,
            addresses: addresses?,
            ca: ca?,
            allow_any_ca,
            prefix: prefix?,
            import: import?,
            max_bitrate_kbps: max_bitrate_kbps?,
        })
    }

    fn policy(&mut self, policy: PolicySection) -> Option<PolicySettings> {
        let PolicySection {
            file,
            trusted_keys,
            signatures_required,
        } = policy;
        let file = self.required_path("policy.file", file);
        if trusted_keys.is_empty() && !self.problems.about("policy.trusted_keys") {
            self.bad(
                "policy.trusted_keys",
                "at least one minisign public key file is required",
            );
        }
        let mut seen: HashMap<PathBuf, usize> = HashMap::new();
        let mut keys = Some(Vec::with_capacity(trusted_keys.len()));
        for (i, text) in trusted_keys.iter().enumerate() {
            let key = format!("policy.trusted_keys[{i}]");
            match self.path(&key, text) {
                Some(path) => {
                    if let Some(first) = seen.insert(path.clone(), i) {
                        self.bad(
                            &key,
                            format!("same file as policy.trusted_keys[{first}]; a key counts once"),
                        );
                    }
                    if let Some(keys) = &mut keys {
                        keys.push(path);
                    }
                }
                None => keys = None,
            }
        }
        let n = i64::try_from(trusted_keys.len()).unwrap_or(i64::MAX).max(1);
        let signatures_required: Option<usize> = if signatures_required < 1 {
            self.bad(
                "policy.signatures_required",
                format!("must be at least 1, found {signatures_required}"),
            );
            None
        } else if signatures_required > n && !trusted_keys.is_empty() {
            self.bad(
                "policy.signatures_required",
                format!(
                    "{signatures_required} signatures cannot be met by {} trusted key(s) \
                     (policy.trusted_keys)",
                    trusted_keys.len()
                ),
            );
            None
        } else {
            usize::try_from(signatures_required).ok()
        };
        Some(PolicySettings {
            file: file?,
            trusted_keys: keys.filter(|keys| !keys.is_empty())?,
            signatures_required: signatures_required?,
        })
    }

    fn user(&mut self, index: usize, entry: UserEntry) -> Option<UserSettings> {
        let UserEntry {
            name,
            kind,
            password_file,
            ha1_file,
            token_file,
            cameras,
        } = entry;
        let at = |key: &str| format!("user[{index}].{key}");
        let name = self.required(&at("name"), name).and_then(|name| {
            let valid = !name.is_empty()
                && name.len() <= USER_NAME_MAX_LEN
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
            if valid {
                Some(name)
            } else {
                self.bad(
                    &at("name"),
                    format!(
                        "expected 1 to {USER_NAME_MAX_LEN} characters of A-Z a-z 0-9 . _ @ -, \
                         found {name:?}"
                    ),
                );
                None
            }
        });
        let kind = self.required(&at("kind"), kind).and_then(|kind| {
            self.choice(
                &at("kind"),
                &kind,
                &[("agent", UserKind::Agent), ("service", UserKind::Service)],
            )
        });
        let has_token = token_file.is_some();
        let rtsp_secret = match (password_file, ha1_file) {
            (Some(password), None) => self
                .path(&at("password_file"), &password)
                .map(|path| Some(RtspSecret::PasswordFile(path))),
            (None, Some(ha1)) => self
                .path(&at("ha1_file"), &ha1)
                .map(|path| Some(RtspSecret::Ha1File(path))),
            (Some(_), Some(_)) => {
                self.bad(
                    &at("ha1_file"),
                    "set together with password_file; give exactly one of them",
                );
                None
            }
            (None, None) if !has_token && !self.problems.about(&format!("user[{index}]")) => {
                self.bad(
                    &format!("user[{index}]"),
                    "has no secret: set password_file or ha1_file (RTSP), or token_file \
                     (HTTP only)",
                );
                None
            }
            (None, None) => Some(None),
        };
        let token_file = self.optional_path(&at("token_file"), token_file);
        let cameras: Option<Vec<CameraPattern>> =
            self.required(&at("cameras"), cameras).and_then(|cameras| {
                self.each(&cameras, |check, i, text| {
                    check.parse_id::<CameraPattern>(
                        &format!("user[{index}].cameras[{i}]"),
                        text,
                        "camera pattern",
                    )
                })
            });
        Some(UserSettings {
            name: name?,
            kind: kind?,
            rtsp_secret: rtsp_secret?,
            token_file: token_file?,
            cameras: cameras?,
        })
    }

    fn rtsp(&mut self, rtsp: RtspSection) -> Option<RtspSettings> {
        let RtspSection {
            listen,
            udp_ports,
            session_timeout,
            describe_timeout,
        } = rtsp;
        let listen = self.socket_addr("rtsp.listen", &listen);
        let udp_ports = self.port_range("rtsp.udp_ports", &udp_ports);
        let session_timeout = self.duration("rtsp.session_timeout", &session_timeout, NonZero);
        let describe_timeout = self.duration("rtsp.describe_timeout", &describe_timeout, NonZero);
        Some(RtspSettings {
            listen: listen?,
            udp_ports: udp_ports?,
            session_timeout: session_timeout?,
            describe_timeout: describe_timeout?,
        })
    }

    fn http(&mut self, http: HttpSection, tls: Option<&TlsSettings>) -> Option<HttpSettings> {
        let HttpSection {
            listen,
            tls: enabled,
            cert,
            key,
            cors_origins,
        } = http;
        let listen = self.socket_addr("http.listen", &listen);
        let cert = self.optional_path("http.cert", cert);
        let key = self.optional_path("http.key", key);
        let cors_origins = self.each(&cors_origins, |check, i, text| {
            check.origin(&format!("http.cors_origins[{i}]"), text)
        });

        let listen_addr = listen?;
        let (enabled, why) = match enabled {
            Some(enabled) => (enabled, "http.tls = false"),
            None => (
                !listen_addr.ip().is_loopback(),
                "http.listen is loopback, so http.tls defaults to false",
            ),
        };
        let (cert, key) = (cert?, key?);
        let tls = if enabled {
            match (cert, key) {
                (Some(cert), Some(key)) => Some(HttpTls { cert, key }),
                (None, None) => {
                    let tls = tls?;
                    Some(HttpTls {
                        cert: tls.cert.clone(),
                        key: tls.key.clone(),
                    })
                }
                (Some(_), None) => {
                    self.bad("http.key", "required when http.cert is set");
                    return None;
                }
                (None, Some(_)) => {
                    self.bad("http.cert", "required when http.key is set");
                    return None;
                }
            }
        } else {
            let mut ignored = false;
            for (name, value) in [("http.cert", &cert), ("http.key", &key)] {
                if value.is_some() {
                    self.bad(
                        name,
                        format!("set, but HTTPS is off ({why}); set http.tls = true or remove it"),
                    );
                    ignored = true;
                }
            }
            if ignored {
                return None;
            }
            None
        };
        Some(HttpSettings {
            listen: listen_addr,
            tls,
            cors_origins: cors_origins?,
        })
    }

    fn webrtc(&mut self, webrtc: WebrtcSection) -> Option<WebrtcSettings> {
        let WebrtcSection {
            udp_ports,
            public_address,
            max_sessions,
        } = webrtc;
        let udp_ports = self.port_range("webrtc.udp_ports", &udp_ports);
        let public_address =
            self.optional(public_address, |check, text| match text.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                    check.bad(
                        "webrtc.public_address",
                        format!("{ip} cannot be reached by browsers; give the address they dial"),
                    );
                    None
                }
                Ok(ip) => Some(ip),
                Err(_) => {
                    check.bad(
                        "webrtc.public_address",
                        format!("expected an IP address without port, found {text:?}"),
                    );
                    None
                }
            });
        let max_sessions = self.integer("webrtc.max_sessions", max_sessions, 1, u32::MAX.into());
        Some(WebrtcSettings {
            udp_ports: udp_ports?,
            public_address: public_address?,
            max_sessions: max_sessions?,
        })
    }

    fn management(&mut self, management: ManagementSection) -> Option<ManagementSettings> {
        let ManagementSection { listen } = management;
        Some(ManagementSettings {
            listen: self.socket_addr("management.listen", &listen)?,
        })
    }

    fn audit(&mut self, audit: AuditSection) -> Option<AuditSettings> {
        let AuditSection {
            dir,
            retention_days,
            journal_key,
        } = audit;
        let dir = self.required_path("audit.dir", dir);
        // No default on purpose: how long viewing traces are kept is a legal decision
        // (SNCF: six months), so the operator writes it down.
        let retention_days = self
            .required("audit.retention_days", retention_days)
            .and_then(|days| self.integer("audit.retention_days", days, 1, 36_500));
        let journal_key = self.required_path("audit.journal_key", journal_key);
        Some(AuditSettings {
            dir: dir?,
            retention_days: retention_days?,
            journal_key: journal_key?,
        })
    }

    fn channel(&mut self, channel: ChannelSection) -> Option<ChannelSettings> {
        let ChannelSection {
            keyframe_cache_max_bytes,
            keyframe_cache_max_duration,
            sink_queue_packets,
            keyframe_request_interval,
        } = channel;
        let max_bytes = self.integer(
            "channel.keyframe_cache_max_bytes",
            keyframe_cache_max_bytes,
            1,
            i64::from(u32::MAX),
        );
        let max_duration = self.duration(
            "channel.keyframe_cache_max_duration",
            &keyframe_cache_max_duration,
            NonZero,
        );
        let queue = self.integer(
            "channel.sink_queue_packets",
            sink_queue_packets,
            1,
            1_000_000,
        );
        let request_interval = self.duration(
            "channel.keyframe_request_interval",
            &keyframe_request_interval,
            NonZero,
        );
        Some(ChannelSettings {
            keyframe_cache_max_bytes: max_bytes?,
            keyframe_cache_max_duration: max_duration?,
            sink_queue_packets: queue?,
            keyframe_request_interval: request_interval?,
        })
    }
}

/// Rules across entries and sections, on the raw text.
impl Check<'_> {
    fn unique_ids(&mut self, file: &FileConfig) {
        let cameras = file.camera.iter().map(|c| c.id.as_deref());
        self.unique("camera", "id", cameras);
        let partners = file.partner.iter().map(|p| p.id.as_deref());
        self.unique("partner", "id", partners);
        let users = file.user.iter().map(|u| u.name.as_deref());
        self.unique("user", "name", users);
        if let Some(site) = &file.site.id {
            for (i, partner) in file.partner.iter().enumerate() {
                if partner.id.as_ref() == Some(site) {
                    self.bad(
                        &format!("partner[{i}].id"),
                        "is this site's own id (site.id); a site does not link with itself",
                    );
                }
            }
        }
    }

    fn unique<'f>(
        &mut self,
        section: &str,
        key: &str,
        values: impl Iterator<Item = Option<&'f str>>,
    ) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, value) in values.enumerate() {
            let Some(value) = value else { continue };
            if let Some(first) = seen.get(value) {
                self.bad(
                    &format!("{section}[{i}].{key}"),
                    format!("{value:?} is already used by {section}[{first}]"),
                );
            } else {
                seen.insert(value, i);
            }
        }
    }

    /// Partner prefixes own their part of our camera ids: no prefix may be equal to,
    /// inside or above another one or a local camera id.
    fn prefixes(&mut self, file: &FileConfig) {
        let parse = |text: Option<&String>| text.and_then(|t| t.parse::<CameraId>().ok());
        let prefixes: Vec<(usize, CameraId)> = file
            .partner
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, parse(p.prefix.as_ref())?)))
            .collect();
        let cameras: Vec<(usize, CameraId)> = file
            .camera
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, parse(c.id.as_ref())?)))
            .collect();
        for (n, (i, prefix)) in prefixes.iter().enumerate() {
            for (j, earlier) in &prefixes[..n] {
                if overlap(prefix, earlier) {
                    self.bad(
                        &format!("partner[{i}].prefix"),
                        format!(
                            "{:?} overlaps partner[{j}].prefix {:?}; each partner needs its \
                             own prefix, not nested in another",
                            prefix.as_str(),
                            earlier.as_str()
                        ),
                    );
                }
            }
            let clashes: Vec<&(usize, CameraId)> = cameras
                .iter()
                .filter(|(_, camera)| overlap(prefix, camera))
                .collect();
            if let Some((k, camera)) = clashes.first() {
                let others = match clashes.len() {
                    1 => String::new(),
                    n => format!(" and {} other local camera(s)", n - 1),
                };
                self.bad(
                    &format!("partner[{i}].prefix"),
                    format!(
                        "{:?} overlaps local camera[{k}].id {:?}{others}; imported and local \
                         ids must not mix",
                        prefix.as_str(),
                        camera.as_str()
                    ),
                );
            }
        }
    }

    /// A CA file named by several partners may speak for each of them: DESIGN.md wants
    /// that said explicitly with `allow_any_ca = true` on each such partner. Files are
    /// compared by path here; the TLS component compares certificates.
    fn shared_cas(&mut self, file: &FileConfig) {
        let mut first_user: HashMap<PathBuf, usize> = HashMap::new();
        for (i, partner) in file.partner.iter().enumerate() {
            let Some(ca) = partner.ca.as_deref().filter(|ca| !ca.is_empty()) else {
                continue;
            };
            let ca = self.resolve(ca);
            match first_user.get(&ca) {
                None => {
                    first_user.insert(ca, i);
                }
                Some(&first) => {
                    for k in [first, i] {
                        let entry = &file.partner[k];
                        let key = format!("partner[{k}].allow_any_ca");
                        if !entry.allow_any_ca && !self.problems.about(&key) {
                            self.bad(
                                &key,
                                format!(
                                    "must be true: partner[{k}].ca is also the CA of partner[{}]; \
                                     a CA shared by several partners needs allow_any_ca = true \
                                     on each of them",
                                    if k == first { i } else { first }
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    /// Listeners and port ranges must not collide with each other.
    fn ports(&mut self, file: &FileConfig) {
        let parse = |text: &str| text.parse::<SocketAddr>().ok();
        let tcp = [
            ("rtsp.listen", parse(&file.rtsp.listen)),
            ("http.listen", parse(&file.http.listen)),
            ("management.listen", parse(&file.management.listen)),
        ];
        for (n, (key, addr)) in tcp.iter().enumerate() {
            for (other_key, other) in &tcp[..n] {
                if let (Some(addr), Some(other)) = (addr, other)
                    && same_socket(*addr, *other)
                {
                    self.bad(key, format!("same TCP port as {other_key} ({other})"));
                }
            }
        }
        let range = |text: &str| parse_port_range(text).ok();
        let rtsp = range(&file.rtsp.udp_ports);
        let webrtc = range(&file.webrtc.udp_ports);
        if let (Some(rtsp), Some(webrtc)) = (rtsp, webrtc)
            && rtsp.overlaps(webrtc)
        {
            self.bad(
                "webrtc.udp_ports",
                format!("overlaps rtsp.udp_ports ({rtsp}); give each its own range"),
            );
        }
        if let Some(quic) = parse(&file.quic.listen) {
            for (key, range) in [("rtsp.udp_ports", rtsp), ("webrtc.udp_ports", webrtc)] {
                if let Some(range) = range
                    && range.contains(quic.port())
                {
                    self.bad(
                        "quic.listen",
                        format!("UDP port {} is inside {key} ({range})", quic.port()),
                    );
                }
            }
        }
    }
}

/// Value checks. Each records a problem under `key` and returns `None` on a bad value.
impl Check<'_> {
    fn bad(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(key, message);
    }

    fn required<T>(&mut self, key: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.problems.missing(key);
        }
        value
    }

    /// `Some(None)` when absent, `Some(Some(v))` when valid, `None` when invalid.
    fn optional<T, U>(
        &mut self,
        value: Option<T>,
        check: impl FnOnce(&mut Self, &T) -> Option<U>,
    ) -> Option<Option<U>> {
        match value {
            None => Some(None),
            Some(value) => check(self, &value).map(Some),
        }
    }

    /// Checks every item of a list, so that each bad one is reported, then gives all the
    /// values or `None`.
    fn each<T, U>(
        &mut self,
        items: &[T],
        mut check: impl FnMut(&mut Self, usize, &T) -> Option<U>,
    ) -> Option<Vec<U>> {
        let checked: Vec<Option<U>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| check(self, i, item))
            .collect();
        checked.into_iter().collect()
    }

    fn resolve(&self, text: &str) -> PathBuf {
        // `join` keeps an absolute `text` as it is.
        self.base.join(text)
    }

    fn path(&mut self, key: &str, text: &str) -> Option<PathBuf> {
        if text.trim().is_empty() {
            self.bad(key, "must not be empty");
            return None;
        }
        Some(self.resolve(text))
    }

    fn required_path(&mut self, key: &str, text: Option<String>) -> Option<PathBuf> {
        let text = self.required(key, text)?;
        self.path(key, &text)
    }

    fn optional_path(&mut self, key: &str, text: Option<String>) -> Option<Option<PathBuf>> {
        self.optional(text, |check, text| check.path(key, text))
    }

    fn integer<T: TryFrom<i64>>(&mut self, key: &str, value: i64, min: i64, max: i64) -> Option<T> {
        if value < min || value > max {
            let message = if max == i64::MAX {
                format!("must be at least {min}, found {value}")
            } else {
                format!("must be between {min} and {max}, found {value}")
            };
            self.bad(key, message);
            return None;
        }
        let converted = T::try_from(value).ok();
        if converted.is_none() {
            self.bad(key, format!("{value} is too large for this platform"));
        }
        converted
    }

    fn duration(&mut self, key: &str, text: &str, zero: ZeroDuration) -> Option<Duration> {
        let Ok(signed) = text.parse::<SignedDuration>() else {
            self.bad(
                key,
                format!(
                    "expected a duration such as \"10s\", \"500ms\" or \"1m30s\", found {text:?}"
                ),
            );
            return None;
        };
        if signed.is_negative() {
            self.bad(key, format!("must not be negative, found {text:?}"));
            return None;
        }
        if signed.is_zero() && zero == NonZero {
            self.bad(key, "must be longer than zero");
            return None;
        }
        // Not negative, checked above.
        Duration::try_from(signed).ok()
    }

    fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let message = match port_of(text) {
                    Some(Err(port)) => format!("port {port} is out of range (0-65535)"),
                    _ => format!(
                        "expected IP:port such as 0.0.0.0:8554 or [::]:8554, found {text:?}"
                    ),
                };
                self.bad(key, message);
                None
            }
        }
    }

    fn port_range(&mut self, key: &str, text: &str) -> Option<PortRange> {
        match parse_port_range(text) {
            Ok(range) => Some(range),
            Err(message) => {
                self.bad(key, message);
                None
            }
        }
    }

    fn dial_address(&mut self, key: &str, text: &str) -> Option<DialAddress> {
        match parse_dial_address(text) {
            Ok(address) => Some(address),
            Err(message) => {
                self.bad(key, message);
                None
            }
        }
    }

    fn site_id(&mut self, key: &str, text: &str) -> Option<SiteId> {
        self.parse_id::<SiteId>(key, text, "site id (a DNS name such as csu.metz.example)")
    }

    fn parse_id<T>(&mut self, key: &str, text: &str, what: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        match text.parse::<T>() {
            Ok(id) => Some(id),
            Err(err) => {
                self.bad(key, format!("{text:?} is not a valid {what}: {err}"));
                None
            }
        }
    }

    fn choice<T: Copy>(&mut self, key: &str, text: &str, choices: &[(&str, T)]) -> Option<T> {
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(*value);
        }
        let names: Vec<String> = choices
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        self.bad(
            key,
            format!("expected {}, found {text:?}", names.join(" or ")),
        );
        None
    }

    /// An `rtsp://` URL with a host and no credentials. The text is never echoed in a
    /// message: it may hold a password.
    fn camera_url(&mut self, key: &str, text: &str) -> Option<Url> {
        let url = match Url::parse(text) {
            Ok(url) => url,
            Err(err) => {
                self.bad(key, format!("not a valid URL: {err}"));
                return None;
            }
        };
        if url.scheme() != "rtsp" {
            self.bad(
                key,
                format!("expected an rtsp:// URL, found {}://", url.scheme()),
            );
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.bad(key, "credentials must not be inline; use credentials_file");
            return None;
        }
        if let Some((name, _)) = url.query_pairs().find(|(name, _)| {
            CREDENTIAL_QUERY_KEYS
                .iter()
                .any(|key| name.eq_ignore_ascii_case(key))
        }) {
            self.bad(
                key,
                format!(
                    "credentials must not be inline (query parameter {name:?}); use \
                     credentials_file"
                ),
            );
            return None;
        }
        if url.host().is_none() {
            self.bad(key, "has no host");
            return None;
        }
        Some(url)
    }

    /// A CORS origin, written exactly as browsers send it: `scheme://host[:port]`.
    fn origin(&mut self, key: &str, text: &str) -> Option<String> {
        let serialized = Url::parse(text)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .map(|url| url.origin().ascii_serialization());
        match serialized {
            Some(origin) if origin == text => Some(origin),
            Some(origin) => {
                self.bad(
                    key,
                    format!("expected an origin, scheme://host[:port] with no path: {origin:?}?"),
                );
                None
            }
            None => {
                self.bad(
                    key,
                    format!("expected an origin such as \"https://vms.example\", found {text:?}"),
                );
                None
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZeroDuration {
    ZeroAllowed,
    NonZero,
}
use ZeroDuration::{NonZero, ZeroAllowed};

/// `first-last`, both in 1-65535, `first <= last`.
fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let expected = || format!("expected a port range such as \"30000-30999\", found {text:?}");
    let (first, last) = text.split_once('-').ok_or_else(expected)?;
    let port = |part: &str| -> Result<u16, String> {
        let n: u32 = part.trim().parse().map_err(|_| expected())?;
        u16::try_from(n)
            .ok()
            .filter(|&p| p >= 1)
            .ok_or_else(|| format!("port {n} is out of range (1-65535)"))
    };
    let (first, last) = (port(first)?, port(last)?);
    PortRange::new(first, last)
        .ok_or_else(|| format!("first port {first} is above last port {last}"))
}

/// `host:port` with a DNS name or IPv4 host, or `[ipv6]:port`.
fn parse_dial_address(text: &str) -> Result<DialAddress, String> {
    let expected = || {
        format!(
            "expected host:port such as \"passerelle.sncf.metz.example:4433\" or \
             \"[2001:db8::1]:4433\", found {text:?}"
        )
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(expected)?;
        host.parse::<Ipv6Addr>().map_err(|_| expected())?;
        (host, port)
    } else {
        let (host, port) = text.rsplit_once(':').ok_or_else(expected)?;
        if host.contains(':') {
            return Err(format!(
                "write an IPv6 address in brackets, as in \"[2001:db8::1]:4433\", found {text:?}"
            ));
        }
        let is_dns_name = host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !is_dns_name {
            return Err(expected());
        }
        (host, port)
    };
    let port: u32 = port.parse().map_err(|_| expected())?;
    let port = u16::try_from(port)
        .ok()
        .filter(|&p| p >= 1)
        .ok_or_else(|| format!("port {port} is out of range (1-65535)"))?;
    Ok(DialAddress {
        host: host.to_owned(),
        port,
    })
}

/// The port of a `host:port` text: `Some(Err(n))` when it is a number too big for a port.
fn port_of(text: &str) -> Option<Result<u16, u64>> {
    let (_, port) = text.rsplit_once(':')?;
    let n: u64 = port.parse().ok()?;
    Some(u16::try_from(n).map_err(|_| n))
}

/// True when two ids share a namespace: equal, or one below the other segment by segment.
fn overlap(a: &CameraId, b: &CameraId) -> bool {
    a == b || a.strip_prefix(b).is_some() || b.strip_prefix(a).is_some()
}

/// True when two listeners would claim the same socket (an unspecified address claims the
/// port on every address). Port 0 asks the system for a free port and never collides.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A duration as the file writes it (`10s`, `1m 30s`).
fn show(duration: Duration) -> String {
    match SignedDuration::try_from(duration) {
        Ok(signed) => format!("{signed:#}"),
        Err(_) => format!("{duration:?}"),
    }
}
