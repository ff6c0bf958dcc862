//! The policy store: the serial rule, the state that makes it survive restarts, and the
//! policy in force (DESIGN.md "Signed policy"). Layer 1: unlike the rest of `policy`, it
//! reads and writes files; [`admit`], the decision itself, stays pure.
//!
//! # The serial rule ([`admit`])
//!
//! A verified candidate (signatures already checked by
//! [`load_policy_dir`](super::load_policy_dir)) is checked, in this order:
//!
//! 1. its `site` must be ours, else [`PolicyRefusal::WrongSite`];
//! 2. against the stored state: a serial above the stored one is accepted
//!    ([`Change::Newer`]); an equal serial with the same SHA-256 is the policy in force
//!    read again by a restart or a SIGHUP ([`Change::Same`]); an equal serial with other
//!    bytes is [`PolicyRefusal::SerialReuse`]; a lower serial is
//!    [`PolicyRefusal::Rollback`]. With no stored state (first start) any serial is
//!    accepted ([`Change::First`]).
//!
//! # Validity: admitted but not in force
//!
//! Validity does not decide admission; the serial does. A candidate outside its window
//! (`now` before `valid_from` or after `valid_until`, both bounds inclusive as in
//! [`policy_status`](super::policy_status)) is admitted with [`Validity::NotYetValid`]
//! or [`Validity::Expired`]: its state is persisted, it becomes the current policy, and
//! nothing crosses the boundary under it ([`evaluate`](super::evaluate) denies with
//! `not_yet_valid` / `expired`), while the gateway goes on running locally. Why:
//!
//! - DESIGN.md: "no valid policy, or an expired one, means nothing crosses". An expired
//!   policy never widens access, so admitting it is the fail-closed direction.
//! - A higher serial is the signers' latest word. Refusing it because it is out of its
//!   window would keep the *older* policy, which the signers have superseded, in force;
//!   and the state would not move, so a later reload could roll back below it.
//! - The policy in force expiring while running, or at a restart, is the same case: it
//!   stays current (so `/readyz`, `check` and the `valid_until` metric say "expired",
//!   not "no policy") and nothing crosses.
//!
//! `passerelle policy install` is stricter: it refuses to install a policy that is not in
//! force now (see [`super::install`]), so an operator cannot cut every stream by
//! installing next month's policy today.
//!
//! # The state file
//!
//! `<state_dir>/policy-state.json`, written by [`StoredPolicyState::persist`]:
//!
//! ```json
//! {
//!   "format": 1,
//!   "serial": 8,
//!   "sha256": "3f0c…64 hex digits…",
//!   "valid_until": "2027-02-01T23:59:59Z",
//!   "signers": ["1C3A8F2E5D7B9A04", "8E21D0C4B6F3A957"]
//! }
//! ```
//!
//! `sha256` is over the exact policy bytes; `signers` are the distinct trusted key ids
//! that signed, as `minisign` prints them. The file is replaced atomically: a temporary
//! file in `state_dir` is written and fsynced, renamed over the state file, then the
//! directory is fsynced, all before the policy is applied. A missing file means "no policy
//! ever accepted"; an unreadable or malformed one refuses every policy
//! ([`PolicyRefusal::StateUnreadable`]) until an operator repairs or removes it, since
//! without it a rollback could not be told apart.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::signature::{KeyId, PolicyLoadError, SignatureError, TrustedKey, VerifiedPolicy};
use crate::ids::SiteId;

/// The state file's name inside the state directory.
pub const STATE_FILE_NAME: &str = "policy-state.json";
/// The state file format this code writes and reads.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// What is remembered of the last policy accepted: enough to apply the serial rule after a
/// restart, and to journal what was in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicyState {
    /// The policy's serial.
    pub serial: u64,
    /// SHA-256 of the exact policy bytes.
    pub sha256: [u8; 32],
    /// The policy's `valid_until`.
    pub valid_until: Timestamp,
    /// Distinct trusted keys that signed it, in id order.
    pub signers: Vec<KeyId>,
}

impl StoredPolicyState {
    /// The state recording `policy`.
    pub fn of(policy: &VerifiedPolicy) -> StoredPolicyState {
        StoredPolicyState {
            serial: policy.policy.serial,
            sha256: *policy.digest().as_bytes(),
            valid_until: policy.policy.valid_until,
            signers: policy.signers().to_vec(),
        }
    }

    /// The SHA-256 as 64 lower-case hex digits (as `sha256sum` prints it).
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    /// `<state_dir>/policy-state.json`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE_NAME)
    }

    /// Reads the state file in `state_dir`: `Ok(None)` when there is none (no policy was
    /// ever accepted there).
    pub fn read(state_dir: &Path) -> Result<Option<StoredPolicyState>, StateError> {
        let path = StoredPolicyState::path(state_dir);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        StoredPolicyState::from_json(&text)
            .map(Some)
            .map_err(|why| StateError::Malformed { path, why })
    }

    /// Replaces the state file in `state_dir` atomically and durably: temporary file,
    /// fsync, rename, fsync of the directory. Creates `state_dir` when missing. When this
    /// returns `Ok`, a power loss cannot bring back an older state.
    pub fn persist(&self, state_dir: &Path) -> Result<(), StateError> {
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Write { path, source }
        };
        if !state_dir.is_dir() {
            fs::create_dir_all(state_dir).map_err(write_err(state_dir))?;
            // A new directory's own entry must be durable too.
            if let Some(parent) = state_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent).map_err(write_err(parent))?;
            }
        }
        let path = StoredPolicyState::path(state_dir);
        let tmp = state_dir.join(format!(
            ".{STATE_FILE_NAME}.{}.{}.tmp",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(write_err(&tmp))?;
            file.write_all(self.to_json().as_bytes())
                .map_err(write_err(&tmp))?;
            file.sync_all().map_err(write_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(write_err(&path))?;
            fsync_dir(state_dir).map_err(write_err(state_dir))
        })();
        if result.is_err() {
            // Best effort: a leftover temporary file is harmless, never read.
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The state file's text (pretty JSON, one final newline).
    pub fn to_json(&self) -> String {
        let file = StateFile {
            format: STATE_FORMAT_VERSION,
            serial: self.serial,
            sha256: self.sha256_hex(),
            valid_until: self.valid_until,
            signers: self.signers.iter().map(ToString::to_string).collect(),
        };
        // Serializing plain strings, integers and a timestamp cannot fail.
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parses the state file's text.
    pub fn from_json(text: &str) -> Result<StoredPolicyState, String> {
        let file: StateFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if file.format != STATE_FORMAT_VERSION {
            return Err(format!(
                "format {} (this passerelle reads format {STATE_FORMAT_VERSION})",
                file.format
            ));
        }
        let sha256 = parse_sha256(&file.sha256)
            .ok_or_else(|| format!("sha256 {:?} is not 64 hex digits", file.sha256))?;
        let signers = file
            .signers
            .iter()
            .map(|s| s.parse::<KeyId>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StoredPolicyState {
            serial: file.serial,
            sha256,
            valid_until: file.valid_until,
            signers,
        })
    }
}

/// The state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file exists but could not be read.
    #[error("cannot read the policy state {}: {source}", path.display())]
    Read {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The state file is not one this code wrote. It guards against rollback: repair it
    /// or remove it knowingly (the next policy is then accepted whatever its serial).
    #[error(
        "the policy state {} is malformed ({why}); it guards against rollback: restore it, \
         or remove it to accept the next valid policy whatever its serial",
        path.display()
    )]
    Malformed {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Writing, syncing or renaming failed.
    #[error("cannot write the policy state at {}: {source}", path.display())]
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// How an admitted candidate relates to the stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// No state was stored: the first policy accepted here.
    First,
    /// A serial above the stored one.
    Newer {
        /// The stored serial it replaces.
        previous: u64,
    },
    /// The stored serial with the same SHA-256: the policy in force, read again.
    Same,
}

/// Whether an admitted policy lets anything cross now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// `valid_from <= now <= valid_until`.
    InForce,
    /// `now < valid_from`: nothing crosses yet.
    NotYetValid {
        /// The policy's `valid_from`.
        valid_from: Timestamp,
    },
    /// `now > valid_until`: nothing crosses any more.
    Expired {
        /// The policy's `valid_until`.
        valid_until: Timestamp,
    },
}

impl Validity {
    /// The validity of `policy` at `now`, with the bounds of
    /// [`policy_status`](super::policy_status) (both inclusive).
    pub fn at(policy: &super::Policy, now: Timestamp) -> Validity {
        if now < policy.valid_from {
            Validity::NotYetValid {
                valid_from: policy.valid_from,
            }
        } else if now > policy.valid_until {
            Validity::Expired {
                valid_until: policy.valid_until,
            }
        } else {
            Validity::InForce
        }
    }

    /// True for [`Validity::InForce`].
    pub fn is_in_force(self) -> bool {
        self == Validity::InForce
    }

    /// Stable snake_case label: `in_force`, `not_yet_valid`, `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Validity::InForce => "in_force",
            Validity::NotYetValid { .. } => "not_yet_valid",
            Validity::Expired { .. } => "expired",
        }
    }
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Validity::InForce => f.write_str("in force"),
            Validity::NotYetValid { valid_from } => write!(f, "not valid before {valid_from}"),
            Validity::Expired { valid_until } => write!(f, "expired at {valid_until}"),
        }
    }
}

/// A candidate [`admit`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// How it relates to the stored state.
    pub change: Change,
    /// Whether anything may cross under it now.
    pub validity: Validity,
    /// The state to persist before applying it.
    pub state: StoredPolicyState,
}

/// Why a policy was refused; the policy in force (if any) stays.
#[derive(Debug, thiserror::Error)]
pub enum PolicyRefusal {
    /// Unreadable, badly signed, or invalid (from [`load_policy_dir`](super::load_policy_dir)).
    #[error(transparent)]
    Load(#[from] PolicyLoadError),
    /// The policy is for another site.
    #[error("policy serial {serial} is for site {policy_site}, not ours ({our_site})")]
    WrongSite {
        /// The policy's serial.
        serial: u64,
        /// The site the policy names.
        policy_site: SiteId,
        /// Our site id.
        our_site: SiteId,
    },
    /// A serial below the stored one.
    #[error("rollback refused: policy serial {offered} is below the stored serial {stored}")]
    Rollback {
        /// The stored serial.
        stored: u64,
        /// The candidate's serial.
        offered: u64,
    },
    /// The stored serial, with other content.
    #[error(
        "serial reuse refused: serial {serial} was accepted with SHA-256 {stored_sha256}, \
         this policy has {offered_sha256}; a changed policy needs a higher serial"
    )]
    SerialReuse {
        /// The serial.
        serial: u64,
        /// SHA-256 of the policy accepted under it (hex).
        stored_sha256: String,
        /// SHA-256 of the candidate (hex).
        offered_sha256: String,
    },
    /// The stored state cannot be read: no policy is accepted until it is repaired.
    #[error("policy refused: {0}")]
    StateUnreadable(StateError),
    /// The new state could not be persisted, so the policy was not applied.
    #[error("policy not applied: {0}")]
    StateWriteFailed(StateError),
}

impl PolicyRefusal {
    /// Every [`PolicyRefusal::reason`], for metrics pre-registration and tests.
    pub const REASONS: [&'static str; 11] = [
        "unreadable",
        "too_large",
        "not_enough_signatures",
        "signature_settings",
        "invalid",
        "trusted_comment_mismatch",
        "wrong_site",
        "rollback",
        "serial_reuse",
        "state_unreadable",
        "state_write_failed",
    ];

    /// Stable snake_case label: the `reason` label of
    /// `passerelle_policy_reload_failures_total` and the journal's refusal reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyRefusal::Load(load) => match load {
                PolicyLoadError::Read { .. } | PolicyLoadError::ListDir { .. } => "unreadable",
                PolicyLoadError::TooLarge { .. } => "too_large",
                PolicyLoadError::Signature { source, .. } => match source {
                    SignatureError::NotEnoughSignatures { .. } => "not_enough_signatures",
                    SignatureError::ZeroRequired | SignatureError::Unreachable { .. } => {
                        "signature_settings"
                    }
                },
                PolicyLoadError::NotUtf8 { .. } | PolicyLoadError::Invalid { .. } => "invalid",
                PolicyLoadError::TrustedCommentMismatch { .. } => "trusted_comment_mismatch",
            },
            PolicyRefusal::WrongSite { .. } => "wrong_site",
            PolicyRefusal::Rollback { .. } => "rollback",
            PolicyRefusal::SerialReuse { .. } => "serial_reuse",
            PolicyRefusal::StateUnreadable(_) => "state_unreadable",
            PolicyRefusal::StateWriteFailed(_) => "state_write_failed",
        }
    }
}

/// The serial rule (module doc): may `candidate` replace `stored` at `our_site`? Pure.
///
/// Signatures and content were checked by the caller (a [`VerifiedPolicy`] exists only
/// after [`load_policy_dir`](super::load_policy_dir) or
/// [`verify_policy`](super::verify_policy)). On `Ok`, persist [`Admission::state`] before
/// applying the candidate.
pub fn admit(
    stored: Option<&StoredPolicyState>,
    candidate: &VerifiedPolicy,
    our_site: &SiteId,
    now: Timestamp,
) -> Result<Admission, PolicyRefusal> {
    let policy = &candidate.policy;
    if policy.site != *our_site {
        return Err(PolicyRefusal::WrongSite {
            serial: policy.serial,
            policy_site: policy.site.clone(),
            our_site: our_site.clone(),
        });
    }
    let state = StoredPolicyState::of(candidate);
    let change = match stored {
        None => Change::First,
        Some(stored) if state.serial > stored.serial => Change::Newer {
            previous: stored.serial,
        },
        Some(stored) if state.serial < stored.serial => {
            return Err(PolicyRefusal::Rollback {
                stored: stored.serial,
                offered: state.serial,
            });
        }
        Some(stored) if state.sha256 == stored.sha256 => Change::Same,
        Some(stored) => {
            return Err(PolicyRefusal::SerialReuse {
                serial: state.serial,
                stored_sha256: stored.sha256_hex(),
                offered_sha256: state.sha256_hex(),
            });
        }
    };
    Ok(Admission {
        change,
        validity: Validity::at(policy, now),
        state,
    })
}

/// A policy [`PolicyStore::load_or_refuse`] admitted, persisted and made current.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The policy now current, to publish to the evaluators.
    pub policy: Arc<VerifiedPolicy>,
    /// How it was admitted (change, validity, the state persisted).
    pub admission: Admission,
}

/// The last refusal, kept for `/readyz`'s body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRefusal {
    /// [`PolicyRefusal::reason`].
    pub reason: &'static str,
    /// The refusal, as text.
    pub message: String,
    /// When it happened.
    pub at: Timestamp,
}

/// The stored state and the policy in force.
///
/// How to drive it:
///
/// 1. [`PolicyStore::new`] once at start (no I/O).
/// 2. [`PolicyStore::load_or_refuse`] at start, then at each reload (SIGHUP, after
///    `passerelle policy install`). It reads the stored state (on the first call, and
///    again on each call while it is unreadable), reads the policy through
///    [`load_installed`](super::load_installed) (signatures before parsing), [`admit`]s it,
///    persists the new state (durably) and only then makes it current.
/// 3. On `Ok(loaded)`, publish `loaded.policy` to whatever evaluates, then journal and
///    export what was applied. On `Err(refusal)`, log, journal and count
///    `passerelle_policy_reload_failures_total{reason = refusal.reason()}`: nothing
///    changed, [`PolicyStore::current`] is still in force (or still absent: fail closed).
///
/// [`PolicyStore::current`] may be outside its validity window (module doc);
/// [`evaluate`](super::evaluate) then denies everything.
#[derive(Debug)]
pub struct PolicyStore {
    state_dir: PathBuf,
    /// `None` until the state file was read successfully.
    stored: Option<Option<StoredPolicyState>>,
    current: Option<Arc<VerifiedPolicy>>,
    last_refusal: Option<LastRefusal>,
}

impl PolicyStore {
    /// A store keeping its state in `state_dir` (`site.state_dir`). Reads nothing yet.
    pub fn new(state_dir: impl Into<PathBuf>) -> PolicyStore {
        PolicyStore {
            state_dir: state_dir.into(),
            stored: None,
            current: None,
            last_refusal: None,
        }
    }

    /// Reads, verifies ([`load_installed`](super::load_installed) on `policy_file`, `k` of
    /// `trusted`) and admits the configured policy; on success persists its state, then
    /// makes it current. On refusal nothing changes.
    pub fn load_or_refuse(
        &mut self,
        policy_file: &Path,
        trusted: &[TrustedKey],
        k: usize,
        our_site: &SiteId,
        now: Timestamp,
    ) -> Result<Loaded, PolicyRefusal> {
        let result = self.try_load(policy_file, trusted, k, our_site, now);
        match &result {
            Ok(_) => self.last_refusal = None,
            Err(refusal) => {
                self.last_refusal = Some(LastRefusal {
                    reason: refusal.reason(),
                    message: refusal.to_string(),
                    at: now,
                });
            }
        }
        result
    }

    fn try_load(
        &mut self,
        policy_file: &Path,
        trusted: &[TrustedKey],
        k: usize,
        our_site: &SiteId,
        now: Timestamp,
    ) -> Result<Loaded, PolicyRefusal> {
        let stored = match &self.stored {
            Some(stored) => stored.clone(),
            None => {
                let stored = StoredPolicyState::read(&self.state_dir)
                    .map_err(PolicyRefusal::StateUnreadable)?;
                self.stored = Some(stored.clone());
                stored
            }
        };
        let candidate = super::install::load_installed(policy_file, trusted, k)?;
        let admission = admit(stored.as_ref(), &candidate, our_site, now)?;
        if stored.as_ref() != Some(&admission.state) {
            // Durable before applied: after a crash from here on, a restart refuses
            // anything below this serial.
            admission
                .state
                .persist(&self.state_dir)
                .map_err(PolicyRefusal::StateWriteFailed)?;
            self.stored = Some(Some(admission.state.clone()));
        }
        let policy = Arc::new(candidate);
        self.current = Some(Arc::clone(&policy));
        Ok(Loaded { policy, admission })
    }

    /// The policy admitted last, if any: the one in force (it may be expired or not yet
    /// valid, in which case nothing crosses).
    pub fn current(&self) -> Option<&Arc<VerifiedPolicy>> {
        self.current.as_ref()
    }

    /// The stored state as last read or written; `None` when none is known (not read yet,
    /// unreadable, or no policy ever accepted).
    pub fn stored(&self) -> Option<&StoredPolicyState> {
        self.stored.as_ref().and_then(Option::as_ref)
    }

    /// The last refusal, cleared by the next successful load.
    pub fn last_refusal(&self) -> Option<&LastRefusal> {
        self.last_refusal.as_ref()
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

/// The state file, as serialized.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    serial: u64,
    sha256: String,
    valid_until: Timestamp,
    signers: Vec<String>,
}

/// Distinguishes temporary file names within one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Makes a directory's entries (a rename, a new file) durable.
pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixtures::CSU_POLICY;
    use crate::policy::{SignatureFile, SigningKey, policy_status, verify_policy};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn csu() -> SiteId {
        "csu.metz.example".parse().unwrap()
    }

    /// CSU_POLICY with `serial`, plus `extra` appended (to change the bytes), signed.
    fn verified(serial: u64, extra: &str) -> VerifiedPolicy {
        let key = SigningKey::generate().unwrap();
        let text = format!(
            "{}{extra}",
            CSU_POLICY.replace("serial = 7", &format!("serial = {serial}"))
        );
        let sig = key.sign(text.as_bytes(), "test").unwrap();
        let sigs = [SignatureFile {
            name: "policy.toml.minisig".to_owned(),
            text: sig,
        }];
        verify_policy(
            Path::new("policy.toml"),
            text.as_bytes(),
            &sigs,
            &[key.trusted_key().unwrap()],
            1,
        )
        .unwrap()
    }

    const NOW: &str = "2026-06-01T00:00:00Z";

    #[test]
    fn the_serial_rule() {
        let p7 = verified(7, "");
        let stored = StoredPolicyState::of(&p7);
        let now = at(NOW);

        let first = admit(None, &p7, &csu(), now).unwrap();
        assert_eq!(first.change, Change::First);
        assert_eq!(first.validity, Validity::InForce);
        assert_eq!(first.state, stored);

        let same = admit(Some(&stored), &p7, &csu(), now).unwrap();
        assert_eq!(same.change, Change::Same);

        let newer = admit(Some(&stored), &verified(8, ""), &csu(), now).unwrap();
        assert_eq!(newer.change, Change::Newer { previous: 7 });
        assert_eq!(newer.state.serial, 8);

        let reuse = admit(Some(&stored), &verified(7, "\n# edited\n"), &csu(), now);
        assert!(
            matches!(reuse, Err(PolicyRefusal::SerialReuse { serial: 7, .. })),
            "{reuse:?}"
        );
        let rollback = admit(Some(&stored), &verified(6, ""), &csu(), now);
        assert!(
            matches!(
                rollback,
                Err(PolicyRefusal::Rollback {
                    stored: 7,
                    offered: 6
                })
            ),
            "{rollback:?}"
        );
        let other: SiteId = "ccor.metz.example".parse().unwrap();
        let wrong = admit(None, &p7, &other, now).unwrap_err();
        assert_eq!(wrong.reason(), "wrong_site");
    }

    #[test]
    fn validity_bounds_agree_with_policy_status() {
        let p = verified(7, "");
        let from = p.policy.valid_from;
        let until = p.policy.valid_until;
        let second = jiff::SignedDuration::from_secs(1);
        for (now, want) in [
            (from - second, "not_yet_valid"),
            (from, "in_force"),
            (until, "in_force"),
            (until + second, "expired"),
        ] {
            let admission = admit(None, &p, &csu(), now).unwrap();
            assert_eq!(admission.validity.as_str(), want, "at {now}");
            let status = policy_status(&p.policy, &csu(), now).map_err(|r| r.as_str());
            assert_eq!(status.err().unwrap_or("in_force"), want, "at {now}");
        }
    }

    #[test]
    fn state_json_round_trips_and_rejects_damage() {
        let state = StoredPolicyState::of(&verified(9, ""));
        let json = state.to_json();
        assert_eq!(StoredPolicyState::from_json(&json).unwrap(), state);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["format"], 1);
        assert_eq!(value["serial"], 9);
        assert_eq!(value["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(value["valid_until"], "2027-02-01T23:59:59Z");
        assert_eq!(value["signers"].as_array().unwrap().len(), 1);

        for damaged in [
            json.replace("\"format\": 1", "\"format\": 2"),
            json.replace(&state.sha256_hex(), "abc"),
            json.replace("\"serial\": 9", "\"serial\": -1"),
            json.replace("\"serial\"", "\"serial\": 1, \"extra\""),
            String::new(),
        ] {
            assert!(StoredPolicyState::from_json(&damaged).is_err(), "{damaged}");
        }
    }

    #[test]
    fn reasons_are_stable_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for reason in PolicyRefusal::REASONS {
            assert!(
                reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{reason}"
            );
            assert!(seen.insert(reason), "{reason} twice");
        }
        let refusals = [
            PolicyRefusal::Rollback {
                stored: 2,
                offered: 1,
            },
            PolicyRefusal::SerialReuse {
                serial: 1,
                stored_sha256: String::new(),
                offered_sha256: String::new(),
            },
            PolicyRefusal::StateWriteFailed(StateError::Malformed {
                path: PathBuf::new(),
                why: String::new(),
            }),
        ];
        for refusal in refusals {
            assert!(
                PolicyRefusal::REASONS.contains(&refusal.reason()),
                "{refusal}"
            );
        }
    }

    #[test]
    fn persist_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        assert_eq!(StoredPolicyState::read(&state_dir).unwrap(), None);
        let a = StoredPolicyState::of(&verified(1, ""));
        let b = StoredPolicyState::of(&verified(2, ""));
        a.persist(&state_dir).unwrap();
        b.persist(&state_dir).unwrap();
        assert_eq!(StoredPolicyState::read(&state_dir).unwrap(), Some(b));
        let names: Vec<_> = fs::read_dir(&state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [STATE_FILE_NAME]);
    }
}
