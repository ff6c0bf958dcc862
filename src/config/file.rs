//! The file's shape as serde sees it: strings, integers, booleans and lists, before
//! validation turns them into typed settings. Nothing here leaves the `config` module.
//!
//! Every field is a plain TOML type so that, once [`super::schema::walk_file`] has removed
//! unknown and mistyped keys, deserializing cannot fail and every remaining problem is
//! found by validation, with its key. Keys with a built-in default are never absent (the
//! loader supplies them); required keys are `Option` so that validation can name every
//! missing one. `deny_unknown_fields` is a second guard: the schema walk already reports
//! unknown keys, all of them.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub(crate) site: SiteSection,
    #[serde(default)]
    pub(crate) tls: TlsSection,
    pub(crate) quic: QuicSection,
    #[serde(default)]
    pub(crate) camera: Vec<CameraEntry>,
    #[serde(default)]
    pub(crate) partner: Vec<PartnerEntry>,
    pub(crate) policy: PolicySection,
    #[serde(default)]
    pub(crate) user: Vec<UserEntry>,
    pub(crate) rtsp: RtspSection,
    pub(crate) http: HttpSection,
    pub(crate) webrtc: WebrtcSection,
    pub(crate) management: ManagementSection,
    #[serde(default)]
    pub(crate) audit: AuditSection,
    pub(crate) channel: ChannelSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SiteSection {
    pub(crate) id: Option<String>,
    pub(crate) state_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSection {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) ca: Option<String>,
    pub(crate) crl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuicSection {
    pub(crate) listen: String,
    pub(crate) keep_alive: String,
    pub(crate) idle_timeout: String,
    pub(crate) initial_mtu: i64,
    pub(crate) max_mtu: i64,
    pub(crate) mtu_discovery: bool,
    pub(crate) dscp: String,
    pub(crate) media_transport: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CameraEntry {
    pub(crate) id: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) credentials_file: Option<String>,
    pub(crate) on_demand: bool,
    pub(crate) transport: String,
    pub(crate) linger: String,
    pub(crate) probe_interval: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartnerEntry {
    pub(crate) id: Option<String>,
    pub(crate) addresses: Vec<String>,
    pub(crate) ca: Option<String>,
    pub(crate) allow_any_ca: bool,
    pub(crate) prefix: Option<String>,
    pub(crate) import: Vec<String>,
    pub(crate) max_bitrate_kbps: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicySection {
    pub(crate) file: Option<String>,
    pub(crate) trusted_keys: Vec<String>,
    pub(crate) signatures_required: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserEntry {
    pub(crate) name: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) password_file: Option<String>,
    pub(crate) ha1_file: Option<String>,
    pub(crate) token_file: Option<String>,
    pub(crate) cameras: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RtspSection {
    pub(crate) listen: String,
    pub(crate) udp_ports: String,
    pub(crate) session_timeout: String,
    pub(crate) describe_timeout: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpSection {
    pub(crate) listen: String,
    pub(crate) tls: Option<bool>,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) cors_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebrtcSection {
    pub(crate) udp_ports: String,
    pub(crate) public_address: Option<String>,
    pub(crate) max_sessions: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManagementSection {
    pub(crate) listen: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditSection {
    pub(crate) dir: Option<String>,
    pub(crate) retention_days: Option<i64>,
    pub(crate) journal_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelSection {
    pub(crate) keyframe_cache_max_bytes: i64,
    pub(crate) keyframe_cache_max_duration: String,
    pub(crate) sink_queue_packets: i64,
    pub(crate) keyframe_request_interval: String,
}
