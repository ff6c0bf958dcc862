//! Policy signing keys: generation (`passerelle keygen`) and signing
//! (`passerelle policy sign`), interoperable with the standard `minisign` tool both ways.
//!
//! Files written:
//! - `<name>.pub`: a minisign public key file (`untrusted comment: minisign public key
//!   <ID>` then the base64 key), usable as `minisign -V -p <name>.pub` and as a trusted key
//!   in the configuration.
//! - `<name>.key`: a minisign secret key file, mode 0600, never overwritten. With a
//!   password it is encrypted (scrypt, as `minisign -G` does). **Without a password it is
//!   stored unencrypted**, exactly as `minisign -G -W` does: anyone who can read the file
//!   can sign policies, so keep such keys offline or on a hardware-protected medium.
//!   Passwords are read from a file ([`read_password_file`]), never from the command line.
//! - `policy.toml.minisig` or `policy.toml.<signer>.minisig`: a prehashed (`ED`) detached
//!   signature whose trusted comment mirrors the policy's site and serial
//!   ([`super::signature::policy_trusted_comment`]).
//!
//! Keys made by `minisign -G` (with `-W`, or with a password) sign here too.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;

use super::model::{Policy, PolicyError};
use super::signature::{
    KeyId, MAX_POLICY_BYTES, SIGNATURE_SUFFIX, TrustedKey, policy_trusted_comment,
};

/// Why a key could not be generated, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// `keygen` never overwrites a key.
    #[error("{} already exists; refusing to overwrite a key", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Not a minisign secret key.
    #[error("not a minisign secret key: {0}")]
    BadSecretKey(String),
    /// The secret key is encrypted and no password was given.
    #[error("the secret key is encrypted: a password file is needed")]
    PasswordRequired,
    /// A password was given for an unencrypted secret key.
    #[error("the secret key is not encrypted but a password was given")]
    NotEncrypted,
    /// The password does not decrypt the key.
    #[error("wrong password for this secret key")]
    WrongPassword,
    /// The password file is empty (after its final newline).
    #[error("the password file {} is empty", path.display())]
    EmptyPassword {
        /// The password file.
        path: PathBuf,
    },
    /// An empty password was passed to key generation.
    #[error("an empty password cannot encrypt a key; give none for an unencrypted key")]
    BlankPassword,
    /// A key or signer name that cannot be used in a file name.
    #[error("bad name {0:?}: expected letters, digits, `_` or `-`")]
    BadName(String),
    /// A trusted comment must be one line (minisign's format is line-based).
    #[error("a trusted comment must be a single line")]
    MultiLineComment,
    /// The minisign library failed (randomness, key derivation, signing).
    #[error("minisign: {0}")]
    Minisign(String),
    /// The policy to sign does not validate: a broken policy is never signed.
    #[error("{}: {source}", path.display())]
    InvalidPolicy {
        /// The policy file.
        path: PathBuf,
        /// Every problem found.
        source: PolicyError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

fn minisign_err(e: minisign::PError) -> KeyError {
    KeyError::Minisign(e.to_string())
}

/// Where [`keygen`] wrote a key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairFiles {
    /// The new key's id.
    pub key_id: KeyId,
    /// `<name>.pub`.
    pub public: PathBuf,
    /// `<name>.key`.
    pub secret: PathBuf,
}

/// A secret key ready to sign.
pub struct SigningKey {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
    id: KeyId,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.id)
    }
}

// Layout of a minisign secret key (minisign's `SecretKey::to_bytes`): sig_alg (2),
// kdf_alg (2), chk_alg (2), kdf_salt (32), opslimit (8), memlimit (8), key id (8),
// secret key (64), checksum (32).
const SK_LEN: usize = 158;
const SK_KDF_ALG: std::ops::Range<usize> = 2..4;
const SK_KDF_PARAMS: std::ops::Range<usize> = 6..54;
const KDF_NONE: [u8; 2] = [0, 0];

impl SigningKey {
    /// A new random key, in memory. [`keygen`] writes one to files.
    pub fn generate() -> Result<SigningKey, KeyError> {
        // The minisign crate computes the checksum only on its "encrypted" path; with an
        // empty password it skips the encryption itself, which is what `-W` produces.
        let minisign::KeyPair { pk, sk } =
            minisign::KeyPair::generate_encrypted_keypair(Some(String::new()))
                .map_err(minisign_err)?;
        SigningKey::new(sk, pk)
    }

    fn new(sk: minisign::SecretKey, pk: minisign::PublicKey) -> Result<SigningKey, KeyError> {
        let id = key_id_of(&pk)?;
        Ok(SigningKey { sk, pk, id })
    }

    /// Reads a minisign secret key file's text. `password` must be given exactly when
    /// the key is encrypted.
    pub fn from_secret_key_text(
        text: &str,
        password: Option<&str>,
    ) -> Result<SigningKey, KeyError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let mut line = lines
            .next()
            .ok_or_else(|| KeyError::BadSecretKey("empty".to_owned()))?;
        if line.starts_with("untrusted comment:") {
            line = lines
                .next()
                .ok_or_else(|| KeyError::BadSecretKey("no key line".to_owned()))?;
        }
        let bytes = BASE64
            .decode(line)
            .map_err(|_| KeyError::BadSecretKey("key line is not base64".to_owned()))?;
        if bytes.len() != SK_LEN || &bytes[..2] != b"Ed" {
            return Err(KeyError::BadSecretKey(
                "not an Ed25519 minisign secret key".to_owned(),
            ));
        }
        let encrypted = bytes[SK_KDF_ALG] != KDF_NONE;
        let sk = match (encrypted, password) {
            (true, None) => return Err(KeyError::PasswordRequired),
            (false, Some(_)) => return Err(KeyError::NotEncrypted),
            (true, Some(password)) => {
                // Decrypts and checks the checksum, which is how a wrong password shows.
                // Never pass `None` to the minisign crate: it would prompt on the terminal.
                let boxed = format!("untrusted comment: key\n{line}\n");
                minisign::SecretKey::from_box(boxed.into(), Some(password.to_owned())).map_err(
                    |e| {
                        if e.to_string().contains("Wrong password") {
                            KeyError::WrongPassword
                        } else {
                            minisign_err(e)
                        }
                    },
                )?
            }
            // `minisign -G -W` (0.11) leaves the checksum of unencrypted keys zero, so it
            // is not checked here; the self-test below catches a damaged key instead.
            (false, None) => minisign::SecretKey::from_bytes(&bytes).map_err(minisign_err)?,
        };
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(minisign_err)?;
        let key = SigningKey::new(sk, pk)?;
        // Sign once and verify with the public half: a damaged key fails here, at load
        // time, rather than producing signatures nobody can verify.
        key.sign(b"", "self-test").map_err(|_| {
            KeyError::BadSecretKey("the secret and public halves disagree".to_owned())
        })?;
        Ok(key)
    }

    /// Reads a minisign secret key file (see [`SigningKey::from_secret_key_text`]).
    pub fn from_file(path: &Path, password: Option<&str>) -> Result<SigningKey, KeyError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        SigningKey::from_secret_key_text(&text, password)
    }

    /// The key id, as minisign prints it.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The public key file's text, as `minisign -G` writes it.
    pub fn public_key_text(&self) -> String {
        public_key_text(self.id, &self.pk)
    }

    /// The public key, as a verifier would trust it.
    pub fn trusted_key(&self) -> Result<TrustedKey, KeyError> {
        TrustedKey::parse(&self.public_key_text()).map_err(|e| KeyError::Minisign(e.to_string()))
    }

    /// The secret key file's text, **unencrypted**, in the layout `minisign -G -W` writes
    /// (no key derivation, zero salt and limits). Whoever reads it can sign.
    pub fn secret_key_text_unencrypted(&self) -> String {
        let mut bytes = self.sk.to_bytes();
        bytes[SK_KDF_ALG].copy_from_slice(&KDF_NONE);
        bytes[SK_KDF_PARAMS].fill(0);
        format!(
            "untrusted comment: minisign secret key {} (unencrypted)\n{}\n",
            self.id,
            BASE64.encode(&bytes)
        )
    }

    /// Signs `data` with `trusted_comment` (one line), returning the `.minisig` text.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<String, KeyError> {
        if trusted_comment.contains(['\n', '\r']) {
            return Err(KeyError::MultiLineComment);
        }
        let untrusted = format!("signature from passerelle key {}", self.id);
        let signature = minisign::sign(
            Some(&self.pk),
            &self.sk,
            data,
            Some(trusted_comment),
            Some(&untrusted),
        )
        .map_err(minisign_err)?;
        Ok(signature.into_string())
    }
}

fn public_key_text(id: KeyId, pk: &minisign::PublicKey) -> String {
    format!(
        "untrusted comment: minisign public key {id}\n{}\n",
        pk.to_base64()
    )
}

fn key_id_of(pk: &minisign::PublicKey) -> Result<KeyId, KeyError> {
    let id: [u8; 8] = pk
        .keynum()
        .try_into()
        .map_err(|_| KeyError::BadSecretKey("key id is not 8 bytes".to_owned()))?;
    Ok(KeyId::from_bytes(id))
}

/// Writes a new key pair as `<dir>/<name>.pub` and `<dir>/<name>.key` (mode 0600). The
/// secret key is encrypted with `password` when given, **unencrypted otherwise** (like
/// `minisign -G -W`). Refuses to overwrite either file.
pub fn keygen(dir: &Path, name: &str, password: Option<&str>) -> Result<KeyPairFiles, KeyError> {
    check_name(name)?;
    let public = dir.join(format!("{name}.pub"));
    let secret = dir.join(format!("{name}.key"));
    for path in [&public, &secret] {
        if path.exists() {
            return Err(KeyError::Exists { path: path.clone() });
        }
    }
    let (key_id, public_text, secret_text) = match password {
        None => {
            let key = SigningKey::generate()?;
            (
                key.id,
                key.public_key_text(),
                key.secret_key_text_unencrypted(),
            )
        }
        Some("") => return Err(KeyError::BlankPassword),
        Some(password) => {
            // Encrypted with scrypt by the minisign crate, in the layout `minisign -G`
            // reads; the in-memory secret is the encrypted form, only fit for writing.
            let minisign::KeyPair { pk, sk } =
                minisign::KeyPair::generate_encrypted_keypair(Some(password.to_owned()))
                    .map_err(minisign_err)?;
            let key_id = key_id_of(&pk)?;
            let boxed = sk.to_box(None).map_err(minisign_err)?.into_string();
            let line = boxed
                .lines()
                .nth(1)
                .ok_or_else(|| KeyError::Minisign("empty secret key box".to_owned()))?;
            let secret_text =
                format!("untrusted comment: minisign encrypted secret key {key_id}\n{line}\n");
            (key_id, public_key_text(key_id, &pk), secret_text)
        }
    };
    write_new(&secret, secret_text.as_bytes(), 0o600)?;
    write_new(&public, public_text.as_bytes(), 0o644)?;
    Ok(KeyPairFiles {
        key_id,
        public,
        secret,
    })
}

/// Reads a password file: its content without one final newline (`\n` or `\r\n`).
pub fn read_password_file(path: &Path) -> Result<String, KeyError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let password = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(KeyError::EmptyPassword {
            path: path.to_owned(),
        });
    }
    Ok(password.to_owned())
}

/// `policy.toml.minisig`, or `policy.toml.<signer>.minisig` for an additional signer.
pub fn signature_path(policy_path: &Path, signer: Option<&str>) -> Result<PathBuf, KeyError> {
    let mut name = policy_path
        .file_name()
        .ok_or_else(|| KeyError::BadName(policy_path.display().to_string()))?
        .to_os_string();
    if let Some(signer) = signer {
        check_name(signer)?;
        name.push(".");
        name.push(signer);
    }
    name.push(SIGNATURE_SUFFIX);
    Ok(policy_path.with_file_name(name))
}

/// Signs the policy file at `policy_path` with `key`, writing
/// [`signature_path`]`(policy_path, signer)` atomically. The policy must validate; its site
/// and serial are mirrored in the trusted comment, with `now` as the signing time.
pub fn sign_policy_file(
    policy_path: &Path,
    key: &SigningKey,
    signer: Option<&str>,
    now: Timestamp,
) -> Result<PathBuf, KeyError> {
    let out = signature_path(policy_path, signer)?;
    let bytes = fs::read(policy_path).map_err(io_err(policy_path))?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(KeyError::Io {
            path: policy_path.to_owned(),
            source: io::Error::other(format!("larger than {MAX_POLICY_BYTES} bytes")),
        });
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::InvalidPolicy {
        path: policy_path.to_owned(),
        source: PolicyError::Syntax("not UTF-8 text".to_owned()),
    })?;
    let policy = Policy::parse(text).map_err(|source| KeyError::InvalidPolicy {
        path: policy_path.to_owned(),
        source,
    })?;
    let file_name = policy_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let comment = policy_trusted_comment(&policy, &file_name, now.as_second());
    let signature = key.sign(&bytes, &comment)?;
    write_atomic(&out, signature.as_bytes())?;
    Ok(out)
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadName(name.to_owned()))
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_owned(),
            }
        } else {
            io_err(path)(e)
        }
    })?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`, so a
/// reader never sees half a signature.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests;
