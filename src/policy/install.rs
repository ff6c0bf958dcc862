//! `passerelle policy install DIR`: verify a policy and its signature files, then swap them
//! in atomically, so a reload never sees half a policy (DESIGN.md "Signed policy"); and
//! [`load_installed`], the reader that goes with it. Layer 1 (files).
//!
//! # Layout
//!
//! The configuration's `[policy] file` names the policy inside a directory of its own;
//! that directory is a symlink to an immutable version directory beside it:
//!
//! ```text
//! /etc/passerelle/
//!   passerelle.toml                  [policy] file = "policy/policy.toml"
//!   policy -> policy.v8-3f0c1a2b4d5e   symlink, replaced atomically by each install
//!   policy.v7-91ab02cd33ef/          the previous version, kept (older ones are removed)
//!     policy.toml
//!     policy.toml.minisig
//!   policy.v8-3f0c1a2b4d5e/          policy.v<serial>-<first 12 hex of its SHA-256>
//!     policy.toml
//!     policy.toml.minisig
//!     policy.toml.prefecture.minisig
//!   .policy.install.lock             serialises concurrent installs
//! ```
//!
//! An install writes the policy and its signature files into a hidden staging directory,
//! fsyncs them and the directory, renames it to its version name, then points a new
//! symlink at it and renames that symlink over `policy` (one `rename(2)`, atomic), and
//! fsyncs the parent. Version directories are never modified once named.
//!
//! The directory holding the policy must hold nothing else than the policy and its
//! signatures (`policy.toml.minisig`, `policy.toml.<signer>.minisig`): the whole directory
//! is what is swapped. A plain directory (the layout before the first install) is
//! converted by the first install: it is moved aside to `policy.original` and replaced
//! by the symlink. Those are two renames (a directory cannot be replaced by a symlink in
//! one), so for that one install the path is briefly absent; [`load_installed`] waits
//! for it. A missing directory is created as the symlink.
//!
//! # Reading the installed policy
//!
//! [`load_policy_dir`] opens the policy file, then lists its directory for signatures:
//! two path lookups. Through a symlink swapped between them, the old policy could be
//! paired with the new signatures. Such a pair never verifies (the signatures are over
//! the bytes), so this would be a spurious refusal, never a wrong acceptance; still, a
//! reload must not fail because an install ran at that moment. [`load_installed`]
//! resolves the directory once and reads the immutable version directory it points to,
//! and retries when a failure coincides with a swap. Every reader of an installed policy
//! (the store at start and reload, `check`, `policy verify`) should use it.
//!
//! # What an install refuses
//!
//! Everything a reload would refuse (signatures, content, site, the serial rule against
//! the stored state), and also a serial rule violation against the policy currently
//! installed (which a running gateway may not have loaded yet), and a policy that is not
//! in force now (expired or not yet valid): a reload would admit it and let nothing cross
//! (see [`super::store`]), which an install must not do by surprise.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;

use super::signature::{
    MAX_POLICY_BYTES, MAX_SIGNATURE_BYTES, PolicyLoadError, SignatureFile, TrustedKey,
    VerifiedPolicy, is_signature_name, load_policy_dir, verify_policy,
};
use super::store::{Admission, PolicyRefusal, StoredPolicyState, Validity, admit, fsync_dir};
use crate::ids::SiteId;

/// What [`install`] did.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The policy installed (its `path` is the configured policy file).
    pub policy: VerifiedPolicy,
    /// How a reload will admit it against the stored state given to [`install`].
    pub admission: Admission,
    /// The version directory the configured directory now points to.
    pub version_dir: PathBuf,
    /// What the configured directory was before: the previous version directory, or where
    /// a plain directory was moved; `None` when there was nothing.
    pub previous: Option<PathBuf>,
    /// A plain directory was converted to the symlink layout.
    pub converted: bool,
    /// `false` when exactly these files were already installed: nothing was written.
    pub changed: bool,
}

/// Why [`install`] refused or failed. In every case the installed policy is untouched.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The configured policy path does not fit the install layout (module doc).
    #[error(
        "cannot install at {}: {problem}; expected [policy] file to name a policy inside a \
         directory of its own (e.g. /etc/passerelle/policy/policy.toml)",
        dir.display()
    )]
    UnsupportedLayout {
        /// The directory that should hold the policy.
        dir: PathBuf,
        /// What is wrong with it.
        problem: LayoutProblem,
    },
    /// The source directory has no policy of the configured name, or a file there could
    /// not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadSource {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A source file is larger than a policy or signature may be.
    #[error("{} is larger than {max} bytes", path.display())]
    SourceTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// Refused as a reload would refuse it: signatures, content, site, or the serial rule
    /// against the stored state.
    #[error("{0}")]
    Refused(PolicyRefusal),
    /// Refused by the serial rule against the policy currently installed.
    #[error("{refusal} (against the policy installed at {})", installed.display())]
    RefusedByInstalled {
        /// The installed policy file.
        installed: PathBuf,
        /// The refusal.
        refusal: PolicyRefusal,
    },
    /// Valid and signed, but not in force now: installing it would stop every stream.
    #[error("policy serial {serial} is {validity}; install it while it is in force")]
    NotInForce {
        /// Its serial.
        serial: u64,
        /// Why it is not in force.
        validity: Validity,
    },
    /// Another install holds the lock.
    #[error("another policy install is running (lock {} held)", lock.display())]
    Busy {
        /// The lock file.
        lock: PathBuf,
    },
    /// Writing, syncing or renaming failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

impl InstallError {
    /// Stable snake_case label, for the journal and the CLI: a [`PolicyRefusal::reason`]
    /// for refusals, otherwise `layout`, `unreadable_source`, `too_large`, `expired`,
    /// `not_yet_valid`, `busy`, `io`.
    pub fn reason(&self) -> &'static str {
        match self {
            InstallError::UnsupportedLayout { .. } => "layout",
            InstallError::ReadSource { .. } => "unreadable_source",
            InstallError::SourceTooLarge { .. } => "too_large",
            InstallError::Refused(refusal) | InstallError::RefusedByInstalled { refusal, .. } => {
                refusal.reason()
            }
            InstallError::NotInForce { validity, .. } => validity.as_str(),
            InstallError::Busy { .. } => "busy",
            InstallError::Io { .. } => "io",
        }
    }
}

/// What is wrong with the directory that should hold the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutProblem {
    /// The policy path has no file name, or no directory, or a name that is not UTF-8.
    #[error("the policy path must be <directory>/<file name>, in UTF-8")]
    BadPath,
    /// The path that should be a directory (or a symlink to one) is something else.
    #[error("not a directory")]
    NotADirectory,
    /// A plain directory holding other files than the policy and its signatures: it
    /// cannot be swapped as a whole.
    #[error("it holds other files than the policy and its signatures: {}", .0.join(", "))]
    ForeignFiles(Vec<String>),
}

/// Verifies the policy named like `policy_file` in `source_dir` and its signature files
/// (signatures first, then content, site, the serial rule against `stored` and against
/// the installed policy, then validity at `now`), then swaps them in atomically at
/// `policy_file` (module doc).
///
/// `stored` is the gateway's state ([`StoredPolicyState::read`] on `site.state_dir`);
/// when it cannot be read, refuse as a reload would. The state file is not written: the
/// gateway persists it when it applies the policy.
pub fn install(
    source_dir: &Path,
    policy_file: &Path,
    trusted: &[TrustedKey],
    k: usize,
    our_site: &SiteId,
    stored: Option<&StoredPolicyState>,
    now: Timestamp,
) -> Result<Installed, InstallError> {
    let layout = Layout::of(policy_file)?;

    // Verified in memory, then exactly these bytes are written: nothing can change
    // between the check and the copy.
    let source_policy = source_dir.join(&layout.policy_name);
    let files = PolicyFiles::read(source_dir, &layout.policy_name)?;
    let mut verified = verify_policy(
        &source_policy,
        &files.policy,
        &files.signature_files(),
        trusted,
        k,
    )
    .map_err(|e| InstallError::Refused(e.into()))?;
    let admission = admit(stored, &verified, our_site, now).map_err(InstallError::Refused)?;

    let lock_path = layout
        .base
        .join(format!(".{}.install.lock", layout.dir_name));
    let lock = fs::File::create(&lock_path).map_err(io_err("create lock", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(InstallError::Busy { lock: lock_path }),
        Err(fs::TryLockError::Error(source)) => {
            return Err(InstallError::Io {
                op: "lock",
                path: lock_path,
                source,
            });
        }
    }

    let current = layout.inspect()?;
    let installed = load_installed(policy_file, trusted, k).ok();
    if let Some(installed) = &installed {
        admit(
            Some(&StoredPolicyState::of(installed)),
            &verified,
            our_site,
            now,
        )
        .map_err(|refusal| InstallError::RefusedByInstalled {
            installed: policy_file.to_owned(),
            refusal,
        })?;
    }
    if !admission.validity.is_in_force() {
        return Err(InstallError::NotInForce {
            serial: verified.policy.serial,
            validity: admission.validity,
        });
    }
    verified.path = policy_file.to_owned();

    let resolved_dir = fs::canonicalize(&layout.dir).ok();
    if let Some(dir) = &resolved_dir
        && PolicyFiles::read(dir, &layout.policy_name).ok().as_ref() == Some(&files)
    {
        return Ok(Installed {
            policy: verified,
            admission,
            version_dir: dir.clone(),
            previous: Some(dir.clone()),
            converted: false,
            changed: false,
        });
    }

    layout.remove_leftovers();
    let version_name = layout.free_name(&format!(
        "{}.v{}-{}",
        layout.dir_name,
        verified.policy.serial,
        &verified.digest().to_string()[..12]
    ));
    let version_dir = layout.base.join(&version_name);
    layout.write_version(&files, &version_dir)?;

    let (previous, converted) = match current {
        Current::Missing => (None, false),
        Current::Symlink => (
            fs::read_link(&layout.dir).ok().map(|t| layout.base.join(t)),
            false,
        ),
        Current::Plain => {
            let aside = layout
                .base
                .join(layout.free_name(&format!("{}.original", layout.dir_name)));
            fs::rename(&layout.dir, &aside).map_err(io_err("move aside", &layout.dir))?;
            (Some(aside), true)
        }
    };
    layout.point_at(&version_name)?;
    layout.remove_old_versions(&version_dir, previous.as_deref());
    drop(lock);
    Ok(Installed {
        policy: verified,
        admission,
        version_dir,
        previous,
        converted,
        changed: true,
    })
}

/// [`load_policy_dir`] for a policy installed by [`install`] (or in a plain directory):
/// resolves the policy's directory once and reads from there, so an install swapping the
/// directory meanwhile cannot pair one version's policy with another's signatures; a
/// failure that coincides with a swap is retried. The result's `path` is `policy_file`.
pub fn load_installed(
    policy_file: &Path,
    trusted: &[TrustedKey],
    k: usize,
) -> Result<VerifiedPolicy, PolicyLoadError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last_attempt = attempt >= READ_ATTEMPTS;
        let resolved = match resolve(policy_file) {
            Ok(resolved) => resolved,
            // Absent: not installed, or between the two renames of a first install
            // converting a plain directory.
            Err(source) if source.kind() == io::ErrorKind::NotFound && !last_attempt => {
                std::thread::sleep(RETRY_PAUSE);
                continue;
            }
            Err(source) => {
                return Err(PolicyLoadError::Read {
                    path: policy_file.to_owned(),
                    source,
                });
            }
        };
        match load_policy_dir(&resolved, trusted, k) {
            Ok(mut verified) => {
                verified.path = policy_file.to_owned();
                return Ok(verified);
            }
            Err(error) => {
                let swapped = resolve(policy_file).ok().as_ref() != Some(&resolved);
                if !swapped || last_attempt {
                    return Err(error);
                }
            }
        }
    }
}

/// How many times [`load_installed`] reads before giving up on a moving target.
const READ_ATTEMPTS: u32 = 10;
/// Pause before re-resolving a path that is absent (at most `READ_ATTEMPTS` times).
const RETRY_PAUSE: Duration = Duration::from_millis(2);

/// `policy_file` with its directory resolved through symlinks.
fn resolve(policy_file: &Path) -> io::Result<PathBuf> {
    let (dir, name) = split(policy_file);
    let Some(name) = name else {
        return Ok(policy_file.to_owned());
    };
    Ok(fs::canonicalize(dir)?.join(name))
}

/// The directory of `path` (`.` when it has none) and its file name.
fn split(path: &Path) -> (&Path, Option<&std::ffi::OsStr>) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    (dir, path.file_name())
}

/// The policy file and its signature files, as bytes; signatures sorted by name.
#[derive(Debug, PartialEq, Eq)]
struct PolicyFiles {
    policy_name: String,
    policy: Vec<u8>,
    signatures: BTreeMap<String, Vec<u8>>,
}

impl PolicyFiles {
    fn read(dir: &Path, policy_name: &str) -> Result<PolicyFiles, InstallError> {
        let policy = read_capped(&dir.join(policy_name), MAX_POLICY_BYTES)?;
        let mut signatures = BTreeMap::new();
        let read_err = |source| InstallError::ReadSource {
            path: dir.to_owned(),
            source,
        };
        for entry in fs::read_dir(dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            if let Some(name) = entry.file_name().to_str()
                && is_signature_name(policy_name, name)
                && entry.path().is_file()
            {
                let bytes = read_capped(&entry.path(), MAX_SIGNATURE_BYTES)?;
                signatures.insert(name.to_owned(), bytes);
            }
        }
        Ok(PolicyFiles {
            policy_name: policy_name.to_owned(),
            policy,
            signatures,
        })
    }

    /// As [`load_policy_dir`] sees them (a non-UTF-8 signature reads as empty: malformed).
    fn signature_files(&self) -> Vec<SignatureFile> {
        self.signatures
            .iter()
            .map(|(name, bytes)| SignatureFile {
                name: name.clone(),
                text: String::from_utf8(bytes.clone()).unwrap_or_default(),
            })
            .collect()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        std::iter::once((self.policy_name.as_str(), self.policy.as_slice())).chain(
            self.signatures
                .iter()
                .map(|(name, bytes)| (name.as_str(), bytes.as_slice())),
        )
    }
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, InstallError> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|source| InstallError::ReadSource {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(InstallError::SourceTooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(bytes)
}

/// Where the policy is installed: `<base>/<dir_name>/<policy_name>`.
struct Layout {
    base: PathBuf,
    dir: PathBuf,
    dir_name: String,
    policy_name: String,
}

/// What the configured directory is before the swap.
enum Current {
    Missing,
    Symlink,
    Plain,
}

impl Layout {
    fn of(policy_file: &Path) -> Result<Layout, InstallError> {
        let bad = |dir: &Path| InstallError::UnsupportedLayout {
            dir: dir.to_owned(),
            problem: LayoutProblem::BadPath,
        };
        let (dir, policy_name) = split(policy_file);
        let policy_name = policy_name
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad(dir))?;
        // `.` or `..` cannot be swapped; a real name is needed.
        let dir_name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad(dir))?;
        let (base, _) = split(dir);
        Ok(Layout {
            base: base.to_owned(),
            dir: dir.to_owned(),
            dir_name: dir_name.to_owned(),
            policy_name: policy_name.to_owned(),
        })
    }

    fn inspect(&self) -> Result<Current, InstallError> {
        let meta = match fs::symlink_metadata(&self.dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Current::Missing),
            Err(source) => return Err(io_err("inspect", &self.dir)(source)),
        };
        let problem = |problem| InstallError::UnsupportedLayout {
            dir: self.dir.clone(),
            problem,
        };
        if meta.file_type().is_symlink() {
            return Ok(Current::Symlink);
        }
        if !meta.is_dir() {
            return Err(problem(LayoutProblem::NotADirectory));
        }
        let mut foreign = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != self.policy_name && !is_signature_name(&self.policy_name, &name) {
                foreign.push(name);
            }
        }
        if foreign.is_empty() {
            Ok(Current::Plain)
        } else {
            foreign.sort();
            Err(problem(LayoutProblem::ForeignFiles(foreign)))
        }
    }

    /// `stem`, or `stem~2`, `stem~3`... whichever does not exist in `base`.
    fn free_name(&self, stem: &str) -> String {
        let mut name = stem.to_owned();
        let mut n = 1;
        while fs::symlink_metadata(self.base.join(&name)).is_ok() {
            n += 1;
            name = format!("{stem}~{n}");
        }
        name
    }

    /// A hidden name in `base` for a staging directory or a new symlink.
    fn temp_name(&self, what: &str) -> PathBuf {
        self.base.join(format!(
            ".{}.{what}-{}-{}",
            self.dir_name,
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Writes `files` durably into a staging directory, then names it `version_dir`.
    fn write_version(&self, files: &PolicyFiles, version_dir: &Path) -> Result<(), InstallError> {
        let staging = self.temp_name("staging");
        let result = (|| {
            fs::create_dir(&staging).map_err(io_err("create", &staging))?;
            for (name, bytes) in files.iter() {
                let path = staging.join(name);
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io_err("create", &path))?;
                file.write_all(bytes).map_err(io_err("write", &path))?;
                file.sync_all().map_err(io_err("sync", &path))?;
            }
            fsync_dir(&staging).map_err(io_err("sync", &staging))?;
            fs::rename(&staging, version_dir).map_err(io_err("rename", version_dir))?;
            fsync_dir(&self.base).map_err(io_err("sync", &self.base))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    /// Points the configured directory at `version_name` with one rename of a new symlink.
    fn point_at(&self, version_name: &str) -> Result<(), InstallError> {
        let link = self.temp_name("link");
        let result = (|| {
            // Relative, so the tree can be moved or mounted elsewhere.
            std::os::unix::fs::symlink(version_name, &link).map_err(io_err("symlink", &link))?;
            fs::rename(&link, &self.dir).map_err(io_err("rename", &self.dir))?;
            fsync_dir(&self.base).map_err(io_err("sync", &self.base))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&link);
        }
        result
    }

    /// Staging directories and symlinks left by an install that crashed.
    fn remove_leftovers(&self) {
        for (name, path) in self.entries() {
            let ours = |what: &str| name.starts_with(&format!(".{}.{what}-", self.dir_name));
            let removed = if ours("staging") {
                fs::remove_dir_all(&path)
            } else if ours("link") {
                fs::remove_file(&path)
            } else {
                continue;
            };
            if let Err(error) = removed {
                tracing::warn!(path = %path.display(), %error, "cannot remove an install leftover");
            }
        }
    }

    /// Removes version directories other than `keep` and `previous` (both in `base`). A
    /// reader still on one of them retries ([`load_installed`]).
    fn remove_old_versions(&self, keep: &Path, previous: Option<&Path>) {
        let kept = |path: &Path| {
            path.file_name() == keep.file_name()
                || previous.is_some_and(|p| p.file_name() == path.file_name())
        };
        for (name, path) in self.entries() {
            let is_version = name
                .strip_prefix(&self.dir_name)
                .and_then(|rest| rest.strip_prefix(".v"))
                .is_some_and(is_version_suffix);
            let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if !is_version || !is_dir || kept(&path) {
                continue;
            }
            if let Err(error) = fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot remove an old policy version");
            }
        }
    }

    fn entries(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = fs::read_dir(&self.base) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect()
    }
}

/// `<serial>-<12 hex>` or `<serial>-<12 hex>~<n>`, as [`install`] names versions.
fn is_version_suffix(rest: &str) -> bool {
    let (main, n) = match rest.split_once('~') {
        Some((main, n)) => (main, Some(n)),
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some((serial, sha)) = main.split_once('-') else {
        return false;
    };
    digits(serial)
        && sha.len() == 12
        && sha.bytes().all(|b| b.is_ascii_hexdigit())
        && n.is_none_or(digits)
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError::Io { op, path, source }
}

/// Distinguishes temporary names within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names() {
        assert!(is_version_suffix("8-3f0c1a2b4d5e"));
        assert!(is_version_suffix("12-3f0c1a2b4d5e~2"));
        for bad in [
            "",
            "8",
            "8-3f0c",
            "x-3f0c1a2b4d5e",
            "8-3f0c1a2b4d5e~",
            "8-3f0c1a2b4d5g",
        ] {
            assert!(!is_version_suffix(bad), "{bad}");
        }
    }

    #[test]
    fn layout_of_the_configured_path() {
        let layout = Layout::of(Path::new("/etc/passerelle/policy/policy.toml")).unwrap();
        assert_eq!(layout.base, Path::new("/etc/passerelle"));
        assert_eq!(layout.dir_name, "policy");
        assert_eq!(layout.policy_name, "policy.toml");
        let relative = Layout::of(Path::new("policy/policy.toml")).unwrap();
        assert_eq!(relative.base, Path::new("."));
        for bad in ["policy.toml", "/policy.toml", "../policy.toml"] {
            assert!(
                matches!(
                    Layout::of(Path::new(bad)),
                    Err(InstallError::UnsupportedLayout {
                        problem: LayoutProblem::BadPath,
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
