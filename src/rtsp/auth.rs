//! Authentication of RTSP requests: Digest (RFC 2617, MD5, with and without `qop=auth`)
//! and, when enabled, Basic (RFC 7617).
//!
//! Nonces are stateless: the issue time (seconds since the [`Authenticator`] was made) and
//! a SHA-256 MAC of it under a per-process random key. A nonce older than
//! [`NONCE_LIFETIME`] is answered with `stale=true` so the client retries without asking
//! its user again (RFC 2617 §3.2.1). Nonce counts are not tracked: a captured
//! `Authorization` header can be replayed for the same URI until its nonce expires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::{RtspUser, Secret};

/// The Digest realm: part of every HA1, so pre-computed HA1s must use it.
pub const REALM: &str = "passerelle";

/// How long a nonce authorises new requests. Requests on an established session do not
/// authenticate again (the session, bound to its connection, is the credential), so this
/// only bounds how long a captured header can open new sessions.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// `HA1 = MD5(user ":" realm ":" password)` in lower-case hex (RFC 2617 §3.2.2.2), the
/// form a pre-computed `[[user]]` secret takes.
pub fn digest_ha1(user: &str, password: &str) -> String {
    md5_hex(&[user, ":", REALM, ":", password])
}

/// Why a request's credentials were refused. Every variant answers 401 with a fresh
/// challenge; only [`AuthError::StaleNonce`] sets `stale=true`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no credentials")]
    Missing,
    /// A scheme other than Digest (or Basic, when allowed).
    #[error("unsupported authorization scheme")]
    UnsupportedScheme,
    /// The header or one of its parameters does not parse.
    #[error("malformed authorization header")]
    Malformed,
    /// Digest with a realm, algorithm or qop this server never offers.
    #[error("digest parameters not offered by this server")]
    UnsupportedParameters,
    /// A nonce this server did not issue.
    #[error("nonce not issued by this server")]
    ForeignNonce,
    /// A nonce this server issued, now expired.
    #[error("stale nonce")]
    StaleNonce,
    /// The digest `uri` is not the request's URI.
    #[error("digest uri does not match the request")]
    UriMismatch,
    /// Unknown user or wrong password; the two are not told apart.
    #[error("bad credentials for user {user:?}")]
    BadCredentials {
        /// The user name as sent, for the log.
        user: String,
    },
}

impl AuthError {
    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::UnsupportedScheme => "unsupported_scheme",
            AuthError::Malformed => "malformed",
            AuthError::UnsupportedParameters => "unsupported_parameters",
            AuthError::ForeignNonce => "foreign_nonce",
            AuthError::StaleNonce => "stale_nonce",
            AuthError::UriMismatch => "uri_mismatch",
            AuthError::BadCredentials { .. } => "bad_credentials",
        }
    }
}

/// Checks `Authorization` headers against the configured users and makes challenges.
///
/// Pure: the caller passes `now` to [`Authenticator::check`] and
/// [`Authenticator::challenges`].
pub struct Authenticator {
    /// Replaced whole at SIGHUP ([`Authenticator::replace_users`]); sessions already
    /// authorised keep their user.
    users: std::sync::RwLock<Arc<HashMap<String, Entry>>>,
    allow_basic: bool,
    key: [u8; 32],
    epoch: Instant,
}

struct Entry {
    user: Arc<RtspUser>,
    /// Lower-case hex HA1.
    ha1: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users().keys().collect::<Vec<_>>())
            .field("allow_basic", &self.allow_basic)
            .finish_non_exhaustive()
    }
}

/// Each user by name, with its HA1.
fn entries(users: impl IntoIterator<Item = RtspUser>) -> HashMap<String, Entry> {
    users
        .into_iter()
        .map(|user| {
            let ha1 = match &user.secret {
                Secret::Password(p) => digest_ha1(&user.name, p),
                Secret::Ha1(h) => h.to_ascii_lowercase(),
            };
            (
                user.name.clone(),
                Entry {
                    user: Arc::new(user),
                    ha1,
                },
            )
        })
        .collect()
}

impl Authenticator {
    /// Whether `name` is one of the configured users (a refused name is only reported
    /// as itself when it is: anything else a client sends stays out of the journal).
    pub fn is_known(&self, name: &str) -> bool {
        self.users().contains_key(name)
    }

    /// Replaces the users (SIGHUP): new requests authenticate against `users`.
    pub fn replace_users(&self, users: impl IntoIterator<Item = RtspUser>) {
        let users = Arc::new(entries(users));
        *self
            .users
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = users;
    }

    fn users(&self) -> Arc<HashMap<String, Entry>> {
        self.users
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// An authenticator for `users`, with a random nonce key. `epoch` is any instant not
    /// after the first `now` passed in.
    pub fn new(
        users: impl IntoIterator<Item = RtspUser>,
        allow_basic: bool,
        epoch: Instant,
    ) -> Self {
        Self::with_key(users, allow_basic, epoch, rand::random())
    }

    fn with_key(
        users: impl IntoIterator<Item = RtspUser>,
        allow_basic: bool,
        epoch: Instant,
        key: [u8; 32],
    ) -> Self {
        let users = std::sync::RwLock::new(Arc::new(entries(users)));
        Authenticator {
            users,
            allow_basic,
            key,
            epoch,
        }
    }

    /// The `WWW-Authenticate` values for a 401, Digest first (clients take the first scheme
    /// they support, and Digest does not send the password).
    pub fn challenges(&self, now: Instant, stale: bool) -> Vec<String> {
        let mut out = vec![format!(
            "Digest realm=\"{REALM}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"{}",
            self.nonce(now),
            if stale { ", stale=true" } else { "" }
        )];
        if self.allow_basic {
            out.push(format!("Basic realm=\"{REALM}\""));
        }
        out
    }

    /// Authenticates a request: `method` as on the request line, `uri` the raw request-URI.
    pub fn check(
        &self,
        method: &str,
        uri: &str,
        authorization: Option<&str>,
        now: Instant,
    ) -> Result<Arc<RtspUser>, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("Digest") {
            self.check_digest(method, uri, rest, now)
        } else if scheme.eq_ignore_ascii_case("Basic") && self.allow_basic {
            self.check_basic(rest.trim())
        } else {
            Err(AuthError::UnsupportedScheme)
        }
    }

    fn check_basic(&self, token: &str) -> Result<Arc<RtspUser>, AuthError> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|_| AuthError::Malformed)?;
        let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (name, password) = text.split_once(':').ok_or(AuthError::Malformed)?;
        let computed = digest_ha1(name, password);
        self.verify(name, |ha1| ct_eq(ha1.as_bytes(), computed.as_bytes()))
    }

    fn check_digest(
        &self,
        method: &str,
        uri: &str,
        params: &str,
        now: Instant,
    ) -> Result<Arc<RtspUser>, AuthError> {
        let p = parse_params(params).ok_or(AuthError::Malformed)?;
        let get = |k: &str| p.get(k).map(String::as_str);
        let (Some(name), Some(realm), Some(nonce), Some(duri), Some(response)) = (
            get("username"),
            get("realm"),
            get("nonce"),
            get("uri"),
            get("response"),
        ) else {
            return Err(AuthError::Malformed);
        };
        if realm != REALM {
            return Err(AuthError::UnsupportedParameters);
        }
        if let Some(alg) = get("algorithm")
            && !alg.eq_ignore_ascii_case("MD5")
        {
            return Err(AuthError::UnsupportedParameters);
        }
        self.check_nonce(nonce, now)?;
        if uri_path(duri) != uri_path(uri) {
            return Err(AuthError::UriMismatch);
        }
        let ha2 = md5_hex(&[method, ":", duri]);
        let qop = get("qop");
        let tail: Vec<&str> = match qop {
            None => vec![nonce, ":", &ha2],
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
                    return Err(AuthError::Malformed);
                };
                vec![nonce, ":", nc, ":", cnonce, ":", q, ":", &ha2]
            }
            Some(_) => return Err(AuthError::UnsupportedParameters),
        };
        let response = response.to_ascii_lowercase();
        self.verify(name, |ha1| {
            let mut parts = vec![ha1, ":"];
            parts.extend(&tail);
            ct_eq(md5_hex(&parts).as_bytes(), response.as_bytes())
        })
    }

    /// Looks the user up and runs `ok` on its HA1; an unknown user runs it on a dummy HA1
    /// so the two failures cost the same.
    fn verify(&self, name: &str, ok: impl Fn(&str) -> bool) -> Result<Arc<RtspUser>, AuthError> {
        let bad = || AuthError::BadCredentials {
            user: name.chars().take(64).collect(),
        };
        match self.users().get(name) {
            Some(entry) if ok(&entry.ha1) => Ok(entry.user.clone()),
            Some(_) => Err(bad()),
            None => {
                let _ = ok("00000000000000000000000000000000");
                Err(bad())
            }
        }
    }

    fn nonce(&self, now: Instant) -> String {
        let issued = now.saturating_duration_since(self.epoch).as_secs();
        format!("{issued:016x}{}", self.nonce_mac(issued))
    }

    fn nonce_mac(&self, issued: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(issued.to_be_bytes());
        hex(&h.finalize()[..16])
    }

    fn check_nonce(&self, nonce: &str, now: Instant) -> Result<(), AuthError> {
        if nonce.len() != 48 || !nonce.is_ascii() {
            return Err(AuthError::ForeignNonce);
        }
        let (issued_hex, mac) = nonce.split_at(16);
        let issued = u64::from_str_radix(issued_hex, 16).map_err(|_| AuthError::ForeignNonce)?;
        if !ct_eq(mac.as_bytes(), self.nonce_mac(issued).as_bytes()) {
            return Err(AuthError::ForeignNonce);
        }
        let age = now
            .saturating_duration_since(self.epoch)
            .as_secs()
            .checked_sub(issued)
            .ok_or(AuthError::ForeignNonce)?;
        if age > NONCE_LIFETIME.as_secs() {
            return Err(AuthError::StaleNonce);
        }
        Ok(())
    }
}

/// The path and query of a URI (`rtsp://host:port/a/b?x` → `/a/b?x`), so that a digest
/// `uri` naming the host differently (NAT, a name vs an address) still matches.
fn uri_path(uri: &str) -> &str {
    match uri.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => uri,
    }
}

/// Parses `k=v, k="quoted \"v\""` (RFC 2617 §3.2.2 auth-params). Keys are lower-cased.
fn parse_params(s: &str) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_ascii_lowercase();
        if key.is_empty() || key.contains([',', ' ', '"']) {
            return None;
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => v.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            rest = &quoted[end?..];
            value = v;
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            if value.contains(char::is_whitespace) {
                return None;
            }
            rest = &rest[end..];
        }
        out.insert(key, value);
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Constant-time comparison for equal-length secrets (the length itself is public).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a client computes (RFC 2617 §3.2.2.1), for tests here and in the session core.
#[cfg(test)]
pub(crate) fn digest_header(
    user: &str,
    pass: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: bool,
) -> String {
    let ha1 = digest_ha1(user, pass);
    let ha2 = md5_hex(&[method, ":", uri]);
    if qop {
        let r = md5_hex(&[
            &ha1, ":", nonce, ":", "00000001", ":", "abcdef", ":", "auth", ":", &ha2,
        ]);
        format!(
            "Digest username=\"{user}\", realm=\"passerelle\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{r}\", qop=auth, nc=00000001, cnonce=\"abcdef\", algorithm=MD5"
        )
    } else {
        let r = md5_hex(&[&ha1, ":", nonce, ":", &ha2]);
        format!(
            "Digest username=\"{user}\", realm=\"passerelle\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\""
        )
    }
}

/// The nonce of a Digest challenge, for tests.
#[cfg(test)]
pub(crate) fn challenge_nonce(challenge: &str) -> String {
    let p =
        parse_params(challenge.strip_prefix("Digest ").unwrap_or(challenge)).unwrap_or_default();
    p.get("nonce").cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AgentKind as UserKind;

    const URI: &str = "rtsp://gw.example:8554/metz/cam-1";

    fn users() -> Vec<RtspUser> {
        vec![
            RtspUser {
                name: "alice".into(),
                kind: UserKind::Agent,
                secret: Secret::Password("wonderland".into()),
                cameras: vec![],
            },
            RtspUser {
                name: "vms".into(),
                kind: UserKind::Service,
                secret: Secret::Ha1(digest_ha1("vms", "s3cret").to_ascii_uppercase()),
                cameras: vec![],
            },
        ]
    }

    fn auth(t0: Instant) -> Authenticator {
        Authenticator::with_key(users(), true, t0, [7; 32])
    }

    fn nonce_of(challenge: &str) -> String {
        challenge_nonce(challenge)
    }

    #[test]
    fn ha1_matches_rfc_2617_example_shape() {
        // RFC 2617 §3.5: Mufasa / "Circle Of Life" in realm testrealm@host.com.
        assert_eq!(
            md5_hex(&["Mufasa:testrealm@host.com:Circle Of Life"]),
            "939e7578ed9e3c518a452acee763bce9"
        );
    }

    #[test]
    fn digest_without_qop_succeeds() {
        let t0 = Instant::now();
        let a = auth(t0);
        let nonce = nonce_of(&a.challenges(t0, false)[0]);
        let h = digest_header("alice", "wonderland", "DESCRIBE", URI, &nonce, false);
        let user = a
            .check("DESCRIBE", URI, Some(&h), t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(user.name, "alice");
    }

    #[test]
    fn digest_with_qop_and_precomputed_ha1_succeeds() {
        let t0 = Instant::now();
        let a = auth(t0);
        let nonce = nonce_of(&a.challenges(t0, false)[0]);
        let h = digest_header(
            "vms",
            "s3cret",
            "SETUP",
            &format!("{URI}/track=0"),
            &nonce,
            true,
        );
        let user = a
            .check("SETUP", &format!("{URI}/track=0"), Some(&h), t0)
            .unwrap();
        assert_eq!(user.name, "vms");
        assert_eq!(user.kind, UserKind::Service);
    }

    #[test]
    fn digest_uri_may_name_the_host_differently() {
        let t0 = Instant::now();
        let a = auth(t0);
        let nonce = nonce_of(&a.challenges(t0, false)[0]);
        let h = digest_header(
            "alice",
            "wonderland",
            "DESCRIBE",
            "/metz/cam-1",
            &nonce,
            false,
        );
        assert!(a.check("DESCRIBE", URI, Some(&h), t0).is_ok());
    }

    #[test]
    fn digest_failures() {
        let t0 = Instant::now();
        let a = auth(t0);
        let nonce = nonce_of(&a.challenges(t0, false)[0]);
        let wrong = digest_header("alice", "nope", "DESCRIBE", URI, &nonce, false);
        assert_eq!(
            a.check("DESCRIBE", URI, Some(&wrong), t0),
            Err(AuthError::BadCredentials {
                user: "alice".into()
            })
        );
        let unknown = digest_header("mallory", "wonderland", "DESCRIBE", URI, &nonce, true);
        assert!(matches!(
            a.check("DESCRIBE", URI, Some(&unknown), t0),
            Err(AuthError::BadCredentials { .. })
        ));
        // Computed for another method: the response does not match.
        let other_method = digest_header("alice", "wonderland", "SETUP", URI, &nonce, false);
        assert!(matches!(
            a.check("DESCRIBE", URI, Some(&other_method), t0),
            Err(AuthError::BadCredentials { .. })
        ));
        // Valid for another camera: refused before the response is even checked.
        let other_uri = digest_header(
            "alice",
            "wonderland",
            "DESCRIBE",
            "rtsp://gw/other",
            &nonce,
            false,
        );
        assert_eq!(
            a.check("DESCRIBE", URI, Some(&other_uri), t0),
            Err(AuthError::UriMismatch)
        );
        // A nonce from another server instance (another key).
        let other = Authenticator::with_key(users(), true, t0, [8; 32]);
        let foreign = nonce_of(&other.challenges(t0, false)[0]);
        let h = digest_header("alice", "wonderland", "DESCRIBE", URI, &foreign, false);
        assert_eq!(
            a.check("DESCRIBE", URI, Some(&h), t0),
            Err(AuthError::ForeignNonce)
        );
        // A made-up nonce.
        let h = digest_header("alice", "wonderland", "DESCRIBE", URI, "abc", false);
        assert_eq!(
            a.check("DESCRIBE", URI, Some(&h), t0),
            Err(AuthError::ForeignNonce)
        );
        assert_eq!(a.check("DESCRIBE", URI, None, t0), Err(AuthError::Missing));
        assert_eq!(
            a.check("DESCRIBE", URI, Some("Digest username=\"alice"), t0),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            a.check("DESCRIBE", URI, Some("Bearer abc"), t0),
            Err(AuthError::UnsupportedScheme)
        );
    }

    #[test]
    fn stale_nonces_are_refused_and_flagged() {
        let t0 = Instant::now();
        let a = auth(t0);
        let nonce = nonce_of(&a.challenges(t0, false)[0]);
        let h = digest_header("alice", "wonderland", "DESCRIBE", URI, &nonce, true);
        let late = t0 + NONCE_LIFETIME + Duration::from_secs(1);
        assert_eq!(
            a.check("DESCRIBE", URI, Some(&h), late),
            Err(AuthError::StaleNonce)
        );
        assert!(
            a.check("DESCRIBE", URI, Some(&h), t0 + NONCE_LIFETIME)
                .is_ok()
        );
        let c = &a.challenges(late, true)[0];
        assert!(c.contains("stale=true"), "{c}");
        assert_ne!(nonce_of(c), nonce);
    }

    #[test]
    fn basic_success_and_failure() {
        let t0 = Instant::now();
        let a = auth(t0);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ok = format!("Basic {}", b64("alice:wonderland"));
        assert_eq!(
            a.check("DESCRIBE", URI, Some(&ok), t0).unwrap().name,
            "alice"
        );
        // Basic checks against a pre-computed HA1 too.
        let ok = format!("Basic {}", b64("vms:s3cret"));
        assert_eq!(a.check("DESCRIBE", URI, Some(&ok), t0).unwrap().name, "vms");
        let bad = format!("Basic {}", b64("alice:wrong"));
        assert!(matches!(
            a.check("DESCRIBE", URI, Some(&bad), t0),
            Err(AuthError::BadCredentials { .. })
        ));
        assert_eq!(
            a.check("DESCRIBE", URI, Some("Basic !!!"), t0),
            Err(AuthError::Malformed)
        );
        // Basic disabled: refused even with the right password, and not offered.
        let strict = Authenticator::with_key(users(), false, t0, [7; 32]);
        let ok = format!("Basic {}", b64("alice:wonderland"));
        assert_eq!(
            strict.check("DESCRIBE", URI, Some(&ok), t0),
            Err(AuthError::UnsupportedScheme)
        );
        assert_eq!(strict.challenges(t0, false).len(), 1);
        assert_eq!(a.challenges(t0, false)[1], "Basic realm=\"passerelle\"");
    }

    #[test]
    fn params_parse_quoted_and_bare_values() {
        let p = parse_params(r#"a="x, \"y\"", b=2 ,c="""#).unwrap();
        assert_eq!(p["a"], "x, \"y\"");
        assert_eq!(p["b"], "2");
        assert_eq!(p["c"], "");
        assert!(parse_params("a=\"open").is_none());
        assert!(parse_params("a=1 b=2").is_none());
    }
}
