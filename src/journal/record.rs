//! The record model: one JSON object per line, chained by the SHA-256 of the previous
//! line. Pure: no I/O, no clock.
//!
//! A line is `{"seq":N,"time":"…Z","prev":"<hex>","kind":"…", <the kind's fields>}`. The
//! genesis (`seq` 0, kind `genesis`) has no `prev` and carries the random journal id. The
//! hash chained is over the line's exact bytes, without its final `\n`, so verification
//! never depends on re-serialising anything.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A record's sequence number: 0 for the genesis, then +1 per record, across files.
pub type Seq = u64;

/// Longest record line written, in bytes. Agents' reasons and refusal messages come from
/// outside; a record past this is refused rather than letting one caller fill the disk.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// The SHA-256 of one record line's exact bytes (without its final `\n`), lower-case hex
/// in the journal.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineHash([u8; 32]);

impl LineHash {
    /// Hashes one line (without its final `\n`).
    pub fn of_line(line: &[u8]) -> LineHash {
        LineHash(Sha256::digest(line).into())
    }

    /// From the raw digest.
    pub fn from_bytes(bytes: [u8; 32]) -> LineHash {
        LineHash(bytes)
    }

    /// The raw digest (what a `Checkpoint` control message carries).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<LineHash> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Some(LineHash(out))
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for LineHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for LineHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LineHash({self})")
    }
}

impl Serialize for LineHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LineHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LineHash, D::Error> {
        let text = String::deserialize(d)?;
        LineHash::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lower-case hex digits"))
    }
}

/// The random id a journal gets at its genesis (32 hex digits), carried by the genesis,
/// every checkpoint and every purge record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JournalId(String);

impl JournalId {
    /// A new random id (128 bits).
    pub fn random() -> JournalId {
        let bytes: [u8; 16] = rand::random();
        JournalId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// An id as read from a record or a control message.
    pub fn new(id: impl Into<String>) -> JournalId {
        JournalId(id.into())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JournalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A 64-byte Ed25519 signature, base64 in the journal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature64(pub [u8; 64]);

impl fmt::Debug for Signature64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature64({})", base64_encode(&self.0))
    }
}

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

impl Serialize for Signature64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64_encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Signature64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Signature64, D::Error> {
        let text = String::deserialize(d)?;
        base64_decode(&text)
            .and_then(|v| <[u8; 64]>::try_from(v).ok())
            .map(Signature64)
            .ok_or_else(|| serde::de::Error::custom("expected 64 bytes in base64"))
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the journal, from 0.
    pub seq: Seq,
    /// When it was written (RFC 3339, UTC, milliseconds).
    #[serde(with = "time_ms")]
    pub time: Timestamp,
    /// SHA-256 of the previous record's line; absent only on the genesis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<LineHash>,
    /// What happened (`kind` and its fields).
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    /// The line bytes, without the final `\n`.
    pub fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses one line (with or without its final `\n`).
    pub fn parse(line: &[u8]) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// The part of every record the chain needs; parsing it succeeds on kinds a later release
/// may add, so verification never depends on knowing every kind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordHead {
    /// Position in the journal.
    pub seq: Seq,
    /// SHA-256 of the previous line.
    #[serde(default)]
    pub prev: Option<LineHash>,
    /// The record kind.
    pub kind: String,
    /// When it was written.
    pub time: Timestamp,
}

/// Record times: RFC 3339 in UTC with milliseconds (`2026-02-02T08:15:00.042Z`).
pub(crate) mod time_ms {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{time:.3}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `time` truncated to the millisecond, as a record stores it.
pub fn record_time(time: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(time.as_millisecond()).unwrap_or(time)
}

/// What a record says happened. One variant per kind; the JSON tag is `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The first record of a journal (`seq` 0).
    Genesis {
        /// The journal's random id.
        journal: JournalId,
    },
    /// The gateway started.
    ProcessStart(ProcessStart),
    /// The gateway is stopping.
    ProcessStop(ProcessStop),
    /// A link with a partner came up.
    LinkUp(LinkUp),
    /// A link with a partner went down.
    LinkDown(LinkDown),
    /// A viewing session was allowed; written before its first packet.
    SessionOpened(Viewing),
    /// A viewing session was refused.
    SessionRefused(SessionRefused),
    /// A viewing session ended.
    SessionEnded(SessionEnded),
    /// A stream (one camera over one link) ended.
    StreamEnded(StreamEnded),
    /// A signed policy was accepted and applied.
    PolicyLoaded(PolicyLoaded),
    /// A policy was refused; the one in force (if any) stays.
    PolicyRefused(PolicyRefused),
    /// A certificate, CA bundle or CRL was reloaded (or the reload failed).
    TlsReloaded(TlsReloaded),
    /// An agent opened an intervention.
    InterventionOpened(InterventionOpened),
    /// An intervention was closed or expired.
    InterventionClosed(InterventionClosed),
    /// Journal files past the retention were deleted (written before deleting them).
    Purge(Purge),
    /// The clock synchronisation state changed.
    ClockState(ClockState),
    /// The clock jumped (seen by the journal, or reported by the caller).
    TimeJump(TimeJump),
    /// Authentication failures or refused handshakes of one minute, for one source and
    /// reason.
    AuthFailures(AuthFailures),
    /// A signed head of this journal.
    Checkpoint(Checkpoint),
    /// A signed head of a partner's journal, received over the link.
    PeerCheckpoint(PeerCheckpoint),
    /// At resume, bytes after the last whole record were set aside (a write torn by a
    /// crash or power loss).
    TailRepaired(TailRepaired),
    /// The journal's disk filled up (only records ending or refusing access are written
    /// from its reserve), or recovered.
    JournalStorage(JournalStorage),
}

impl Event {
    /// The `kind` tag (the `kind` label of `passerelle_journal_records_total`).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Genesis { .. } => "genesis",
            Event::ProcessStart(_) => "process_start",
            Event::ProcessStop(_) => "process_stop",
            Event::LinkUp(_) => "link_up",
            Event::LinkDown(_) => "link_down",
            Event::SessionOpened(_) => "session_opened",
            Event::SessionRefused(_) => "session_refused",
            Event::SessionEnded(_) => "session_ended",
            Event::StreamEnded(_) => "stream_ended",
            Event::PolicyLoaded(_) => "policy_loaded",
            Event::PolicyRefused(_) => "policy_refused",
            Event::TlsReloaded(_) => "tls_reloaded",
            Event::InterventionOpened(_) => "intervention_opened",
            Event::InterventionClosed(_) => "intervention_closed",
            Event::Purge(_) => "purge",
            Event::ClockState(_) => "clock_state",
            Event::TimeJump(_) => "time_jump",
            Event::AuthFailures(_) => "auth_failures",
            Event::Checkpoint(_) => "checkpoint",
            Event::PeerCheckpoint(_) => "peer_checkpoint",
            Event::TailRepaired(_) => "tail_repaired",
            Event::JournalStorage(_) => "journal_storage",
        }
    }

    /// Whether the record may use the space reserved for access records once the disk
    /// is full: records that end or refuse access, that make the journal verifiable
    /// (checkpoint, stop) or that free space (purge). A new session (`session_opened`) is
    /// not among them: with the disk full, new sessions are refused.
    pub fn uses_reserve(&self) -> bool {
        matches!(
            self,
            Event::SessionRefused(_)
                | Event::SessionEnded(_)
                | Event::StreamEnded(_)
                | Event::Checkpoint(_)
                | Event::ProcessStop(_)
                | Event::Purge(_)
                | Event::JournalStorage(_)
        )
    }

    /// The camera the record is about, for filters.
    pub fn camera(&self) -> Option<&str> {
        match self {
            Event::SessionOpened(v) => Some(&v.camera),
            Event::SessionRefused(r) => Some(&r.viewing.camera),
            Event::SessionEnded(e) => Some(&e.camera),
            Event::StreamEnded(s) => Some(&s.camera),
            _ => None,
        }
    }

    /// The partner site the record is about (a session's or stream's partner, a link's
    /// peer), for filters.
    pub fn partner(&self) -> Option<&str> {
        match self {
            Event::SessionOpened(v) => v.partner.as_deref(),
            Event::SessionRefused(r) => r.viewing.partner.as_deref(),
            Event::SessionEnded(e) => e.partner.as_deref(),
            Event::StreamEnded(s) => Some(&s.partner),
            Event::LinkUp(l) => Some(&l.peer),
            Event::LinkDown(l) => Some(&l.peer),
            Event::PeerCheckpoint(c) => Some(&c.peer),
            _ => None,
        }
    }

    /// The agent the record is about, for filters.
    pub fn agent(&self) -> Option<&str> {
        match self {
            Event::SessionOpened(v) => Some(&v.agent),
            Event::SessionRefused(r) => Some(&r.viewing.agent),
            Event::SessionEnded(e) => Some(&e.agent),
            Event::InterventionOpened(i) => Some(&i.agent),
            Event::InterventionClosed(i) => Some(&i.agent),
            _ => None,
        }
    }

    /// The intervention the record is about, for filters.
    pub fn intervention(&self) -> Option<&str> {
        match self {
            Event::SessionOpened(v) => v.intervention.as_deref(),
            Event::SessionRefused(r) => r.viewing.intervention.as_deref(),
            Event::SessionEnded(e) => e.intervention.as_deref(),
            Event::InterventionOpened(i) => Some(&i.intervention),
            Event::InterventionClosed(i) => Some(&i.intervention),
            _ => None,
        }
    }
}

/// `process_start`: version, configuration hash and the policy trust settings (DESIGN.md:
/// the trusted key ids and k are journaled at every start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStart {
    /// The gateway's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// SHA-256 of the configuration file's exact bytes, hex.
    pub config_sha256: String,
    /// Trusted policy key ids, as minisign prints them.
    pub trusted_keys: Vec<String>,
    /// Distinct signatures a policy needs (k of n).
    pub signatures_required: u32,
}

/// `process_stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStop {
    /// The gateway's version.
    pub version: String,
    /// Why it stops: `sigterm`, `sigint`, `fatal: …`.
    pub reason: String,
}

/// `link_up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkUp {
    /// The partner's site id.
    pub peer: String,
    /// SHA-256 of its certificate, hex.
    pub certificate_sha256: String,
    /// Its address (`ip:port`).
    pub address: String,
    /// `dialled` or `accepted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
}

/// `link_down`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkDown {
    /// The partner's site id.
    pub peer: String,
    /// Its address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Why: a close code's name, `idle_timeout`, `revoked`, `shutting_down`…
    pub why: String,
}

/// Which side of a viewing session this site is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionRole {
    /// The camera is ours, the viewer at a partner: our register is the authority.
    Provider,
    /// The viewer is ours, the camera at a partner.
    Viewer,
    /// Both are ours (the site's own VMS or operators).
    Local,
}

impl SessionRole {
    /// The journal spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionRole::Provider => "provider",
            SessionRole::Viewer => "viewer",
            SessionRole::Local => "local",
        }
    }
}

/// Person or service account (the journal's copy of `policy::AgentKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewerKind {
    /// An authorised agent.
    Agent,
    /// A declared service account.
    Service,
}

impl ViewerKind {
    /// The journal spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewerKind::Agent => "agent",
            ViewerKind::Service => "service",
        }
    }
}

impl From<crate::policy::AgentKind> for ViewerKind {
    fn from(kind: crate::policy::AgentKind) -> ViewerKind {
        match kind {
            crate::policy::AgentKind::Agent => ViewerKind::Agent,
            crate::policy::AgentKind::Service => ViewerKind::Service,
        }
    }
}

/// A viewing session as decided: the `session_opened` record, and the facts of a
/// `session_refused` one. One row of the access register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewing {
    /// The session's id, unique in this journal ([`new_session_id`]); pairs it with its
    /// `session_ended`.
    pub session: String,
    /// Which side of the session this site is on.
    pub role: SessionRole,
    /// The camera, in this site's ids.
    pub camera: String,
    /// The partner site on the link (requester for `provider`, camera's site for
    /// `viewer`); absent for `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// The site where the agent watches.
    pub origin: String,
    /// The agent's (or service account's) id at its site.
    pub agent: String,
    /// Person or service.
    pub agent_kind: ViewerKind,
    /// The reason, from the agent's open intervention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The open intervention that gave the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervention: Option<String>,
    /// Serial of the policy that decided; absent without a valid policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_serial: Option<u64>,
    /// Index of the grant that decided, in the policy file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<u32>,
    /// The grant's legal basis, copied from the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
}

/// A fresh viewing session id: 128 random bits in hex.
pub fn new_session_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `session_refused`: the session as requested, and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRefused {
    /// The session as requested.
    #[serde(flatten)]
    pub viewing: Viewing,
    /// The refusal reason (`not_granted`, `no_intervention`, `journal_unavailable`…).
    pub refusal: String,
}

/// `session_ended`. Repeats the session's camera, partner, origin, agent and
/// intervention so that a filter finds it alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnded {
    /// The id of its `session_opened`.
    pub session: String,
    /// The camera.
    pub camera: String,
    /// The partner site, absent for a local session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// The site where the agent watched.
    pub origin: String,
    /// The agent.
    pub agent: String,
    /// The intervention, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervention: Option<String>,
    /// How long it lasted, in milliseconds.
    pub duration_ms: u64,
    /// Video packets sent for it.
    pub packets: u64,
    /// Payload bytes sent for it.
    pub bytes: u64,
    /// Why it ended (`closed`, `withdrawn`, `link_down`, `shutting_down`…).
    pub why: String,
}

/// `stream_ended`: one camera carried over one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEnded {
    /// The camera, in this site's ids.
    pub camera: String,
    /// The partner site on the link.
    pub partner: String,
    /// The flow id it had on the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<u64>,
    /// How long it lasted, in milliseconds.
    pub duration_ms: u64,
    /// Video packets carried.
    pub packets: u64,
    /// Payload bytes carried.
    pub bytes: u64,
    /// Why it ended.
    pub why: String,
}

/// `policy_loaded`: with the trust settings it was checked against (k of n).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyLoaded {
    /// The policy's serial.
    pub serial: u64,
    /// SHA-256 of its exact bytes, hex.
    pub sha256: String,
    /// Key ids of the distinct trusted keys that signed it.
    pub signers: Vec<String>,
    /// Its `valid_until`.
    pub valid_until: Timestamp,
    /// The trusted key ids.
    pub trusted_keys: Vec<String>,
    /// Signatures required (k).
    pub signatures_required: u32,
}

/// `policy_refused`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRefused {
    /// Its serial, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// SHA-256 of its bytes, when they could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Trusted keys whose signature counted.
    #[serde(default)]
    pub signers: Vec<String>,
    /// Why it was refused.
    pub error: String,
}

/// What a `tls_reloaded` record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsItem {
    /// Our certificate and key.
    Certificate,
    /// A CA bundle.
    Ca,
    /// A certificate revocation list.
    Crl,
}

/// `tls_reloaded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsReloaded {
    /// Certificate, CA or CRL.
    pub item: TlsItem,
    /// The file.
    pub path: String,
    /// SHA-256 of the (first) certificate or of the CRL, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The certificate's notAfter, or the CRL's nextUpdate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
    /// Set when the reload failed (the previous one stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `intervention_opened`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterventionOpened {
    /// Its id.
    pub intervention: String,
    /// The agent who opened it.
    pub agent: String,
    /// The reason it gives its sessions.
    pub reason: String,
    /// The camera patterns it covers.
    pub cameras: Vec<String>,
    /// When it ends at the latest.
    pub until: Timestamp,
}

/// How an intervention ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterventionEnd {
    /// Closed by the agent (`DELETE`).
    Closed,
    /// Its `until` passed.
    Expired,
}

/// `intervention_closed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterventionClosed {
    /// Its id.
    pub intervention: String,
    /// The agent who opened it.
    pub agent: String,
    /// Closed or expired.
    pub why: InterventionEnd,
}

/// `purge`: written *before* the files are deleted. `through_seq` / `through_hash` are the
/// last record of the newest purged file, so a verifier starting after the purge can
/// check the first record it has against them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    /// The journal.
    pub journal: JournalId,
    /// The retention in force.
    pub retention_days: u32,
    /// The files deleted, oldest first.
    pub files: Vec<String>,
    /// The last record deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through_seq: Option<Seq>,
    /// Its line hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through_hash: Option<LineHash>,
}

/// `clock_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockState {
    /// Whether the system clock is synchronised (NTP).
    pub synchronized: bool,
    /// The time source, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The estimated offset, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<i64>,
}

/// `time_jump`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeJump {
    /// The time before the jump (the previous record's time, when the journal saw it).
    pub from: Timestamp,
    /// The time after it.
    pub to: Timestamp,
}

/// What an `auth_failures` record counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A local user failed to authenticate (RTSP digest, bearer token, WHEP).
    Authentication,
    /// A TLS handshake of a link was refused.
    Handshake,
}

/// `auth_failures`: one minute of failures for one source and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFailures {
    /// Authentication or handshake.
    pub what: FailureKind,
    /// The minute counted (its first second).
    pub minute: Timestamp,
    /// The user name, peer site id or address; absent for the sources past the per-minute
    /// cap, counted together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why it failed (`bad_password`, `unknown_peer`, `wrong_ca`…).
    pub reason: String,
    /// How many in that minute.
    pub count: u64,
}

/// `checkpoint`: `{journal, head_seq, head_hash, at}` signed with the journal key.
///
/// `head_seq` / `head_hash` are the record just before the checkpoint (its `prev`): a
/// checkpoint vouches for every record up to `head_seq`. The signature is a minisign
/// prehashed (`ED`) signature of [`super::checkpoint::canonical_text`], with that same
/// text as trusted comment; `signature` is the Ed25519 signature proper (what the
/// `Checkpoint` control message carries), `global_signature` minisign's signature over it
/// and the trusted comment. Together they rebuild a `.minisig` file the standard
/// `minisign -V` checks ([`Checkpoint::minisig_text`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The journal.
    pub journal: JournalId,
    /// The last record covered.
    pub head_seq: Seq,
    /// Its line hash.
    pub head_hash: LineHash,
    /// When it was signed, whole seconds (the control message carries Unix seconds).
    pub at: Timestamp,
    /// The journal key's id.
    pub key: String,
    /// Ed25519 signature of the Blake2b-512 of the canonical text.
    pub signature: Signature64,
    /// minisign's global signature (over `signature` and the trusted comment).
    pub global_signature: Signature64,
}

/// `peer_checkpoint`: a partner's signed journal head, as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCheckpoint {
    /// The partner site.
    pub peer: String,
    /// Its journal.
    pub journal: JournalId,
    /// The last record its checkpoint covers.
    pub head_seq: Seq,
    /// That record's line hash.
    pub head_hash: LineHash,
    /// When it was signed.
    pub at: Timestamp,
    /// The Ed25519 signature it carried.
    pub signature: Signature64,
}

/// `tail_repaired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailRepaired {
    /// The journal file that had the torn tail.
    pub file: String,
    /// Bytes set aside.
    pub discarded_bytes: u64,
    /// Their SHA-256.
    pub discarded_sha256: LineHash,
    /// Where they were saved, next to the journal.
    pub saved_as: String,
}

/// The journal's storage state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageState {
    /// The disk filled: the reserve was released, only records ending or refusing
    /// access are written, new sessions are refused.
    Full,
    /// Space came back: the reserve is in place again, every record is written.
    Recovered,
}

/// `journal_storage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStorage {
    /// Full or recovered.
    pub state: StorageState,
}
