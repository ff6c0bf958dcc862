//! Detached minisign signatures over the policy file, k of n (DESIGN.md "Signed policy").
//!
//! A policy `policy.toml` is signed by `policy.toml.minisig` and, for more signers,
//! `policy.toml.<signer>.minisig` (`minisign -Sm policy.toml -x policy.toml.<signer>.minisig`).
//! [`verify_signatures`] counts the distinct trusted keys with a valid signature over the
//! exact bytes; a key counts once, signatures by unknown keys are ignored and reported so
//! the caller can log them. Only prehashed (`ED`) signatures, the `minisign` default, are
//! accepted; legacy `Ed` signatures are refused.
//!
//! [`load_policy_dir`] reads a policy and its signature files, verifies the signatures
//! *before* parsing anything, then parses and validates. [`verify_policy`] is the same
//! on bytes already in memory. Whether `site` is our own id and whether the serial moves
//! forward are checked by the caller.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};

use super::model::{Policy, PolicyError};

/// Largest policy file read, in bytes. Bounds memory before the signature is checked.
pub const MAX_POLICY_BYTES: u64 = 1 << 20;
/// Largest signature file read, in bytes (a minisign signature is about 300 bytes plus its
/// trusted comment).
pub const MAX_SIGNATURE_BYTES: u64 = 8 << 10;
/// Suffix of signature files.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// A minisign key id, shown as `minisign` shows it: 16 upper-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// From the 8 key-id bytes as stored in minisign keys and signatures.
    pub fn from_bytes(bytes: [u8; 8]) -> KeyId {
        KeyId(bytes)
    }

    /// The 8 key-id bytes as stored in minisign keys and signatures.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // minisign prints the stored bytes as a little-endian u64.
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = KeyParseError;

    /// Parses the 16 hex digits `minisign` prints.
    fn from_str(s: &str) -> Result<KeyId, KeyParseError> {
        if s.len() != 16 {
            return Err(KeyParseError::BadKeyId(s.to_owned()));
        }
        let n = u64::from_str_radix(s, 16).map_err(|_| KeyParseError::BadKeyId(s.to_owned()))?;
        Ok(KeyId(n.to_le_bytes()))
    }
}

/// The SHA-256 of the exact policy bytes (journaled, persisted, compared on reload).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyDigest([u8; 32]);

impl PolicyDigest {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> PolicyDigest {
        PolicyDigest(Sha256::digest(bytes).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyDigest({self})")
    }
}

/// Why a public key (or key id) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// No base64 line where the key should be.
    #[error("no public key found (expected a minisign public key file or its base64 line)")]
    Missing,
    /// The base64 line does not decode to a 42-byte Ed25519 minisign key.
    #[error("not a minisign Ed25519 public key")]
    NotAKey,
    /// A key id that is not 16 hex digits.
    #[error("bad key id {0:?}: expected 16 hex digits as minisign prints them")]
    BadKeyId(String),
}

/// A public key whose signatures count towards the threshold.
#[derive(Clone)]
pub struct TrustedKey {
    id: KeyId,
    key: minisign_verify::PublicKey,
}

impl TrustedKey {
    /// Reads a minisign public key: the file form (`untrusted comment: ...` then the
    /// base64 line) or the bare base64 line, as `minisign -P` takes it.
    pub fn parse(text: &str) -> Result<TrustedKey, KeyParseError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let mut line = lines.next().ok_or(KeyParseError::Missing)?;
        if line.starts_with("untrusted comment:") {
            line = lines.next().ok_or(KeyParseError::Missing)?;
        }
        let bytes = BASE64.decode(line).map_err(|_| KeyParseError::NotAKey)?;
        // "Ed" || key id (8) || Ed25519 public key (32).
        if bytes.len() != 42 || &bytes[..2] != b"Ed" {
            return Err(KeyParseError::NotAKey);
        }
        let id = key_id_at(&bytes, 2).ok_or(KeyParseError::NotAKey)?;
        let key =
            minisign_verify::PublicKey::from_base64(line).map_err(|_| KeyParseError::NotAKey)?;
        Ok(TrustedKey { id, key })
    }

    /// Reads a public key file (see [`TrustedKey::parse`]).
    pub fn from_file(path: &Path) -> Result<TrustedKey, TrustedKeyFileError> {
        let text =
            read_capped(path, MAX_SIGNATURE_BYTES).map_err(|source| TrustedKeyFileError::Read {
                path: path.to_owned(),
                source,
            })?;
        let text = String::from_utf8(text).map_err(|_| TrustedKeyFileError::Parse {
            path: path.to_owned(),
            source: KeyParseError::NotAKey,
        })?;
        TrustedKey::parse(&text).map_err(|source| TrustedKeyFileError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedKey({})", self.id)
    }
}

/// A trusted key file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustedKeyFileError {
    /// The file could not be read.
    #[error("cannot read trusted key {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a minisign public key.
    #[error("trusted key {}: {source}", path.display())]
    Parse {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyParseError,
    },
}

/// One signature file, as read from disk (or built in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    /// Its file name, for reports (`policy.toml.alice.minisig`).
    pub name: String,
    /// Its content.
    pub text: String,
}

/// A signature that did not count, and why; for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredSignature {
    /// The signature file.
    pub file: String,
    /// The key id it claims, when it could be read.
    pub key_id: Option<KeyId>,
    /// Why it did not count.
    pub why: IgnoredWhy,
}

/// Why a signature did not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoredWhy {
    /// Signed by a key that is not trusted.
    UnknownKey,
    /// Not a minisign signature file.
    Malformed(String),
    /// A legacy (non-prehashed `Ed`) signature: refused.
    Legacy,
    /// By a trusted key, but does not verify: the policy or the signature was altered.
    Invalid,
    /// Valid, by a key that already counted: a key counts once.
    Duplicate,
}

impl fmt::Display for IgnoredSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(id) = self.key_id {
            write!(f, " (key {id})")?;
        }
        match &self.why {
            IgnoredWhy::UnknownKey => write!(f, ": key not trusted"),
            IgnoredWhy::Malformed(why) => write!(f, ": malformed: {why}"),
            IgnoredWhy::Legacy => write!(f, ": legacy non-prehashed signature refused"),
            IgnoredWhy::Invalid => write!(f, ": does not verify (altered file or signature)"),
            IgnoredWhy::Duplicate => write!(f, ": key already counted"),
        }
    }
}

/// The outcome of a successful [`verify_signatures`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignatures {
    /// Distinct trusted keys with a valid signature, in id order.
    pub signers: Vec<KeyId>,
    /// The trusted comment of each counted signature, in `signers` order.
    pub trusted_comments: Vec<String>,
    /// Signatures that did not count (unknown key, invalid, ...), for the log.
    pub ignored: Vec<IgnoredSignature>,
    /// SHA-256 of the policy bytes.
    pub digest: PolicyDigest,
}

/// Why signatures were not enough.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// `signatures_required` is 0: a policy must be signed.
    #[error("signatures_required must be at least 1")]
    ZeroRequired,
    /// More signatures required than there are trusted keys.
    #[error("signatures_required is {required} but only {trusted} distinct keys are trusted")]
    Unreachable {
        /// Signatures required.
        required: usize,
        /// Distinct trusted keys.
        trusted: usize,
    },
    /// Fewer distinct trusted keys signed than required.
    #[error(
        "{valid} valid signature(s) by distinct trusted keys, {required} required{}",
        ignored_suffix(ignored)
    )]
    NotEnoughSignatures {
        /// Distinct trusted keys with a valid signature.
        valid: usize,
        /// Signatures required.
        required: usize,
        /// Signatures that did not count, for the log.
        ignored: Vec<IgnoredSignature>,
    },
}

fn ignored_suffix(ignored: &[IgnoredSignature]) -> String {
    if ignored.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = ignored.iter().map(ToString::to_string).collect();
        format!("; not counted: {}", list.join("; "))
    }
}

/// Checks `signatures` over `policy_bytes`: at least `required` distinct keys of `trusted`
/// must have signed. Pure: no I/O.
pub fn verify_signatures(
    policy_bytes: &[u8],
    signatures: &[SignatureFile],
    trusted: &[TrustedKey],
    required: usize,
) -> Result<VerifiedSignatures, SignatureError> {
    if required == 0 {
        return Err(SignatureError::ZeroRequired);
    }
    let mut trusted_ids: Vec<KeyId> = trusted.iter().map(TrustedKey::id).collect();
    trusted_ids.sort_unstable();
    trusted_ids.dedup();
    if required > trusted_ids.len() {
        return Err(SignatureError::Unreachable {
            required,
            trusted: trusted_ids.len(),
        });
    }

    let mut counted: Vec<(KeyId, String)> = Vec::new();
    let mut ignored = Vec::new();
    for file in signatures {
        let ignore = |key_id, why| IgnoredSignature {
            file: file.name.clone(),
            key_id,
            why,
        };
        let (key_id, prehashed) = match signature_header(&file.text) {
            Ok(header) => header,
            Err(why) => {
                ignored.push(ignore(None, IgnoredWhy::Malformed(why)));
                continue;
            }
        };
        let candidates: Vec<&TrustedKey> = trusted.iter().filter(|k| k.id == key_id).collect();
        if candidates.is_empty() {
            ignored.push(ignore(Some(key_id), IgnoredWhy::UnknownKey));
            continue;
        }
        if !prehashed {
            ignored.push(ignore(Some(key_id), IgnoredWhy::Legacy));
            continue;
        }
        let signature = match minisign_verify::Signature::decode(&file.text) {
            Ok(s) => s,
            Err(e) => {
                ignored.push(ignore(Some(key_id), IgnoredWhy::Malformed(e.to_string())));
                continue;
            }
        };
        let valid = candidates
            .iter()
            .any(|k| k.key.verify(policy_bytes, &signature, false).is_ok());
        if !valid {
            ignored.push(ignore(Some(key_id), IgnoredWhy::Invalid));
        } else if counted.iter().any(|(id, _)| *id == key_id) {
            ignored.push(ignore(Some(key_id), IgnoredWhy::Duplicate));
        } else {
            counted.push((key_id, signature.trusted_comment().to_owned()));
        }
    }

    if counted.len() < required {
        return Err(SignatureError::NotEnoughSignatures {
            valid: counted.len(),
            required,
            ignored,
        });
    }
    counted.sort_by_key(|(id, _)| *id);
    let (signers, trusted_comments) = counted.into_iter().unzip();
    Ok(VerifiedSignatures {
        signers,
        trusted_comments,
        ignored,
        digest: PolicyDigest::of(policy_bytes),
    })
}

/// The key id and algorithm of a minisign signature file, read before verifying so that
/// unknown keys and legacy signatures are told apart from forgeries.
fn signature_header(text: &str) -> Result<(KeyId, bool), String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(l) if l.starts_with("untrusted comment:") => {}
        _ => return Err("first line is not an untrusted comment".to_owned()),
    }
    let line = lines.next().ok_or("no signature line")?;
    let bytes = BASE64
        .decode(line.trim())
        .map_err(|_| "signature line is not base64".to_owned())?;
    // Algorithm (2) || key id (8) || Ed25519 signature (64).
    if bytes.len() != 74 {
        return Err(format!("signature is {} bytes, expected 74", bytes.len()));
    }
    let prehashed = match &bytes[..2] {
        b"ED" => true,
        b"Ed" => false,
        _ => return Err("unknown signature algorithm".to_owned()),
    };
    let id = key_id_at(&bytes, 2).ok_or("truncated key id")?;
    Ok((id, prehashed))
}

fn key_id_at(bytes: &[u8], at: usize) -> Option<KeyId> {
    let id: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(KeyId(id))
}

/// A policy whose signatures verified and whose content validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPolicy {
    /// The policy file.
    pub path: PathBuf,
    /// The validated policy.
    pub policy: Policy,
    /// Who signed, SHA-256 of the bytes, signatures that did not count.
    pub signatures: VerifiedSignatures,
}

impl VerifiedPolicy {
    /// SHA-256 of the policy bytes.
    pub fn digest(&self) -> PolicyDigest {
        self.signatures.digest
    }

    /// Distinct trusted keys that signed, in id order.
    pub fn signers(&self) -> &[KeyId] {
        &self.signatures.signers
    }
}

/// Why a policy could not be loaded. Every variant names the policy file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The policy file could not be read.
    #[error("cannot read policy {}: {source}", path.display())]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The policy file is larger than [`MAX_POLICY_BYTES`].
    #[error("policy {} is larger than {max} bytes", path.display())]
    TooLarge {
        /// The policy file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// The directory holding the policy could not be listed for signature files.
    #[error("cannot list {} for signature files: {source}", dir.display())]
    ListDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not enough valid signatures.
    #[error("policy {} refused: {source}", path.display())]
    Signature {
        /// The policy file.
        path: PathBuf,
        /// What was wrong with the signatures.
        source: SignatureError,
    },
    /// Signed, but not UTF-8.
    #[error("policy {} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The policy file.
        path: PathBuf,
    },
    /// Signed, but not a valid policy.
    #[error("policy {}: {source}", path.display())]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// Every problem found.
        source: PolicyError,
    },
    /// A signature's trusted comment states another site or serial than the policy.
    #[error(
        "policy {}: the trusted comment of key {key_id} says {field}:{signed} but the policy says {actual}",
        path.display()
    )]
    TrustedCommentMismatch {
        /// The policy file.
        path: PathBuf,
        /// The signer.
        key_id: KeyId,
        /// `site` or `serial`.
        field: &'static str,
        /// The value in the trusted comment.
        signed: String,
        /// The value in the policy.
        actual: String,
    },
}

/// Reads the policy at `policy_path` and the signature files next to it
/// (`<name>.minisig`, `<name>.<signer>.minisig`), verifies the signatures before parsing,
/// then parses and validates. Does not check that `site` is ours, nor the serial.
pub fn load_policy_dir(
    policy_path: &Path,
    trusted: &[TrustedKey],
    required: usize,
) -> Result<VerifiedPolicy, PolicyLoadError> {
    let bytes =
        read_capped(policy_path, MAX_POLICY_BYTES).map_err(|source| PolicyLoadError::Read {
            path: policy_path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(PolicyLoadError::TooLarge {
            path: policy_path.to_owned(),
            max: MAX_POLICY_BYTES,
        });
    }
    let signatures = read_signature_files(policy_path)?;
    verify_policy(policy_path, &bytes, &signatures, trusted, required)
}

/// [`load_policy_dir`] on bytes already read: verify, then parse and validate, then check
/// the trusted comments against the content. `path` is only used in errors and the result.
pub fn verify_policy(
    path: &Path,
    bytes: &[u8],
    signatures: &[SignatureFile],
    trusted: &[TrustedKey],
    required: usize,
) -> Result<VerifiedPolicy, PolicyLoadError> {
    let verified = verify_signatures(bytes, signatures, trusted, required).map_err(|source| {
        PolicyLoadError::Signature {
            path: path.to_owned(),
            source,
        }
    })?;
    // Only now, with the bytes authenticated, is anything parsed.
    let text = std::str::from_utf8(bytes).map_err(|_| PolicyLoadError::NotUtf8 {
        path: path.to_owned(),
    })?;
    let policy = Policy::parse(text).map_err(|source| PolicyLoadError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    for (key_id, comment) in verified.signers.iter().zip(&verified.trusted_comments) {
        if let Some((field, signed, actual)) = comment_mismatch(comment, &policy) {
            return Err(PolicyLoadError::TrustedCommentMismatch {
                path: path.to_owned(),
                key_id: *key_id,
                field,
                signed,
                actual,
            });
        }
    }
    Ok(VerifiedPolicy {
        path: path.to_owned(),
        policy,
        signatures: verified,
    })
}

/// The trusted comment `passerelle policy sign` writes: minisign's tab-separated
/// `key:value` fields, with the policy's site and serial mirrored for a cheap check.
pub fn policy_trusted_comment(policy: &Policy, file_name: &str, signed_at_unix: i64) -> String {
    let file: String = file_name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!(
        "timestamp:{signed_at_unix}\tfile:{file}\tsite:{}\tserial:{}",
        policy.site, policy.serial
    )
}

/// A `site:` or `serial:` field of a trusted comment that disagrees with the policy.
/// Comments without those fields (the `minisign` default) are not checked.
fn comment_mismatch(comment: &str, policy: &Policy) -> Option<(&'static str, String, String)> {
    for field in comment.split('\t') {
        match field.split_once(':') {
            Some(("site", v)) if v != policy.site.as_str() => {
                return Some(("site", v.to_owned(), policy.site.to_string()));
            }
            Some(("serial", v)) if v.parse::<u64>() != Ok(policy.serial) => {
                return Some(("serial", v.to_owned(), policy.serial.to_string()));
            }
            _ => {}
        }
    }
    None
}

/// The signature files of `policy_path`, in name order. Unreadable or oversized ones are
/// kept with an empty text, so they are reported as malformed rather than silently lost.
fn read_signature_files(policy_path: &Path) -> Result<Vec<SignatureFile>, PolicyLoadError> {
    let dir = match policy_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let Some(policy_name) = policy_path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let list_err = |source| PolicyLoadError::ListDir {
        dir: dir.clone(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        if let Some(name) = entry.file_name().to_str()
            && is_signature_name(policy_name, name)
            && entry.path().is_file()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| {
            let text = read_capped(&dir.join(&name), MAX_SIGNATURE_BYTES)
                .ok()
                .filter(|b| b.len() as u64 <= MAX_SIGNATURE_BYTES)
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            SignatureFile { name, text }
        })
        .collect())
}

/// `policy.toml.minisig` or `policy.toml.<signer>.minisig` for `policy.toml`.
pub fn is_signature_name(policy_name: &str, name: &str) -> bool {
    match name
        .strip_prefix(policy_name)
        .and_then(|rest| rest.strip_suffix(SIGNATURE_SUFFIX))
    {
        Some("") => true,
        Some(middle) => middle.len() > 1 && middle.starts_with('.'),
        None => false,
    }
}

/// Reads at most `max + 1` bytes, so that the caller can tell "too large" without reading
/// an arbitrarily large file.
fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
