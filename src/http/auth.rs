//! Bearer tokens (RFC 6750 §2.1): who a request comes from.
//!
//! Each `[[user]]` with a `token_file` authenticates with `Authorization: Bearer <token>`,
//! the token being the file's content, trimmed. No cookies, so no CSRF: a browser never
//! sends the token by itself.
//!
//! Only the SHA-256 of each token is kept. A presented token is hashed once and compared
//! with every user's digest in constant time, without stopping at a match, so the time
//! taken says nothing about which user, or which prefix, matched.
//!
//! The middleware (`authenticate`) runs on every route of the listener:
//! - no `Authorization` header: the request goes on anonymous (a route that needs a user
//!   answers 401 through the [`Caller`] extractor; not a failure, the way a first RTSP
//!   request without credentials is not);
//! - a malformed header or an unknown token: 401 at once, counted in
//!   `passerelle_auth_failures_total{source="http"}` and handed to the journal's
//!   per-minute aggregation with source `unknown` (a wrong token names no user);
//! - a known token: the request carries a [`Caller`].

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use super::{ApiError, HttpError};
use crate::config::{UserKind, UserSettings};
use crate::ids::{CameraId, CameraPattern};
use crate::journal::{FailureKind, Journal};

/// Shortest token accepted from a token file: a token is a password that is typed never
/// and guessed online, 16 characters of base64 are 96 bits.
pub const TOKEN_MIN_LEN: usize = 16;
/// Longest token accepted.
pub const TOKEN_MAX_LEN: usize = 4096;

/// A user who may authenticate over HTTP.
#[derive(Clone)]
pub struct HttpUser {
    /// `[[user]].name`.
    pub name: String,
    /// Agent or service.
    pub kind: UserKind,
    /// The cameras (our ids) the user may watch.
    pub cameras: Vec<CameraPattern>,
    token_sha256: [u8; 32],
}

impl std::fmt::Debug for HttpUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpUser")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("cameras", &self.cameras)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Why a token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    /// The file is empty or only blanks.
    #[error("the token is empty")]
    Empty,
    /// Shorter than [`TOKEN_MIN_LEN`].
    #[error("the token has {len} characters; at least {min} are needed")]
    TooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// Longer than [`TOKEN_MAX_LEN`].
    #[error("the token has {len} characters, more than {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A character a bearer token cannot hold.
    #[error(
        "the token holds a character a bearer token cannot carry (allowed: A-Z a-z 0-9 - . _ ~ + / and trailing =)"
    )]
    BadCharacter,
}

impl HttpUser {
    /// A user with its token (already trimmed or not: blanks around it are dropped).
    pub fn new(
        name: impl Into<String>,
        kind: UserKind,
        cameras: Vec<CameraPattern>,
        token: &str,
    ) -> Result<HttpUser, TokenProblem> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenProblem::Empty);
        }
        if !is_b64token(token) {
            return Err(TokenProblem::BadCharacter);
        }
        if token.len() < TOKEN_MIN_LEN {
            return Err(TokenProblem::TooShort {
                len: token.len(),
                min: TOKEN_MIN_LEN,
            });
        }
        if token.len() > TOKEN_MAX_LEN {
            return Err(TokenProblem::TooLong {
                len: token.len(),
                max: TOKEN_MAX_LEN,
            });
        }
        Ok(HttpUser {
            name: name.into(),
            kind,
            cameras,
            token_sha256: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether the user is a person, who may open interventions.
    pub fn is_agent(&self) -> bool {
        self.kind == UserKind::Agent
    }

    /// Whether `camera` is among the user's cameras.
    pub fn may_watch(&self, camera: &CameraId) -> bool {
        self.cameras.iter().any(|p| p.matches(camera))
    }
}

/// The users who may authenticate over HTTP.
#[derive(Debug, Clone, Default)]
pub struct HttpUsers {
    users: Vec<Arc<HttpUser>>,
}

impl HttpUsers {
    /// From users already built. Two users with one token are refused: a token must name
    /// one person.
    pub fn new(users: Vec<HttpUser>) -> Result<HttpUsers, HttpError> {
        for (i, user) in users.iter().enumerate() {
            if let Some(first) = users[..i]
                .iter()
                .find(|u| u.token_sha256 == user.token_sha256)
            {
                return Err(HttpError::SharedToken {
                    first: first.name.clone(),
                    second: user.name.clone(),
                });
            }
        }
        Ok(HttpUsers {
            users: users.into_iter().map(Arc::new).collect(),
        })
    }

    /// Reads the token file of every `[[user]]` that has one; users without one cannot
    /// use HTTP. Errors name the user and the file, never the token.
    pub fn load(settings: &[UserSettings]) -> Result<HttpUsers, HttpError> {
        let mut users = Vec::new();
        for user in settings {
            let Some(path) = &user.token_file else {
                continue;
            };
            let token = read_token(&user.name, path)?;
            let built = HttpUser::new(&user.name, user.kind, user.cameras.clone(), &token)
                .map_err(|problem| HttpError::BadToken {
                    user: user.name.clone(),
                    path: path.clone(),
                    problem,
                })?;
            users.push(built);
        }
        HttpUsers::new(users)
    }

    /// The user whose token this is. Hashes `token` once and compares it with every
    /// user's digest, all of them, in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Arc<HttpUser>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for user in &self.users {
            if constant_time_eq(&digest, &user.token_sha256) {
                found = Some(Arc::clone(user));
            }
        }
        found
    }

    /// The user named `name`, if any.
    pub fn by_name(&self, name: &str) -> Option<Arc<HttpUser>> {
        self.users.iter().find(|u| u.name == name).cloned()
    }

    /// How many users may authenticate.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether nobody may authenticate.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The users in force, swapped whole on reload (SIGHUP). A cheap `Clone` handle.
#[derive(Debug, Clone, Default)]
pub struct UsersHandle(Arc<RwLock<Arc<HttpUsers>>>);

impl UsersHandle {
    /// A handle on `users`.
    pub fn new(users: HttpUsers) -> UsersHandle {
        UsersHandle(Arc::new(RwLock::new(Arc::new(users))))
    }

    /// Replaces the users: requests from now on authenticate against `users`.
    pub fn replace(&self, users: HttpUsers) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(users);
    }

    /// The users in force.
    pub fn current(&self) -> Arc<HttpUsers> {
        // The lock only guards a pointer swap: never poisoned in a harmful state.
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The authenticated user of a request. As an extractor, it answers 401 (with a
/// `WWW-Authenticate: Bearer` challenge) when the request carried no token; a wrong token
/// never reaches a handler. Routes merged into the server (WHEP, pages) use it too.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<HttpUser>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, Response> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::unauthorized("a bearer token is needed (Authorization: Bearer <token>)")
                .challenge("Bearer realm=\"passerelle\"")
                .into_response()
        })
    }
}

/// What the authentication middleware needs.
#[derive(Clone)]
pub(crate) struct AuthState {
    pub(crate) users: UsersHandle,
    pub(crate) journal: Journal,
}

/// The authentication middleware: see the module doc.
pub(crate) async fn authenticate(
    State(state): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    match bearer(request.headers()) {
        Bearer::Absent => next.run(request).await,
        Bearer::Malformed => refuse(
            &state,
            "malformed_authorization",
            "the Authorization header must be \"Bearer <token>\"",
            "Bearer realm=\"passerelle\", error=\"invalid_request\"",
        ),
        Bearer::Token(token) => match state.users.current().authenticate(token) {
            Some(user) => {
                request.extensions_mut().insert(Caller(user));
                next.run(request).await
            }
            None => refuse(
                &state,
                "bad_token",
                "the bearer token is not valid",
                "Bearer realm=\"passerelle\", error=\"invalid_token\"",
            ),
        },
    }
}

fn refuse(state: &AuthState, reason: &str, message: &str, challenge: &'static str) -> Response {
    metrics::counter!("passerelle_auth_failures_total", "source" => "http").increment(1);
    // A token that matches nobody names nobody: the source is bounded to "unknown".
    state
        .journal
        .note_failure(FailureKind::Authentication, "unknown", reason);
    tracing::debug!(reason, "HTTP authentication failed");
    ApiError::unauthorized(message)
        .challenge(challenge)
        .into_response()
}

enum Bearer<'a> {
    Absent,
    Malformed,
    Token(&'a str),
}

/// The bearer token of `Authorization: Bearer <token>` (scheme case-insensitive,
/// RFC 9110 §11.1). Two `Authorization` headers are malformed.
fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Bearer::Absent;
    };
    if values.next().is_some() {
        return Bearer::Malformed;
    }
    let Ok(value) = value.to_str() else {
        return Bearer::Malformed;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return Bearer::Malformed;
    };
    let token = token.trim_start_matches(' ');
    if !scheme.eq_ignore_ascii_case("bearer") || !is_b64token(token) {
        return Bearer::Malformed;
    }
    Bearer::Token(token)
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

fn read_token(user: &str, path: &Path) -> Result<String, HttpError> {
    let bytes = std::fs::read(path).map_err(|source| HttpError::TokenFile {
        user: user.to_owned(),
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| HttpError::BadToken {
        user: user.to_owned(),
        path: path.to_path_buf(),
        problem: TokenProblem::BadCharacter,
    })
}

impl ApiError {
    /// 401 with `message`.
    pub(crate) fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
    const TOKEN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

    fn user(name: &str, token: &str) -> HttpUser {
        HttpUser::new(name, UserKind::Agent, vec!["**".parse().unwrap()], token).unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_token_finds_its_user_and_only_its_own() {
        let users = HttpUsers::new(vec![user("a", TOKEN_A), user("b", TOKEN_B)]).unwrap();
        assert_eq!(users.authenticate(TOKEN_A).unwrap().name, "a");
        assert_eq!(users.authenticate(TOKEN_B).unwrap().name, "b");
        assert!(users.authenticate("aaaaaaaaaaaaaaaaaaaaaaab").is_none());
        assert!(users.authenticate(&TOKEN_A[1..]).is_none());
        assert!(users.authenticate("").is_none());
    }

    #[test]
    fn token_files_are_trimmed_and_checked() {
        let ok =
            HttpUser::new("a", UserKind::Agent, Vec::new(), &format!("  {TOKEN_A}\n")).unwrap();
        let users = HttpUsers::new(vec![ok]).unwrap();
        assert!(users.authenticate(TOKEN_A).is_some());
        let new = |token: &str| HttpUser::new("a", UserKind::Agent, Vec::new(), token).err();
        assert_eq!(new(" \n"), Some(TokenProblem::Empty));
        assert_eq!(
            new("short"),
            Some(TokenProblem::TooShort {
                len: 5,
                min: TOKEN_MIN_LEN
            })
        );
        assert_eq!(
            new("has a space in it ok"),
            Some(TokenProblem::BadCharacter)
        );
        assert_eq!(new("ééééééééééééééééé"), Some(TokenProblem::BadCharacter));
        assert_eq!(
            new("===================="),
            Some(TokenProblem::BadCharacter)
        );
        assert!(new("abcDEF0123-._~+/abc==").is_none());
    }

    #[test]
    fn two_users_may_not_share_a_token() {
        let err = HttpUsers::new(vec![user("a", TOKEN_A), user("b", TOKEN_A)]).unwrap_err();
        assert!(
            matches!(&err, HttpError::SharedToken { first, second } if first == "a" && second == "b"),
            "{err:?}"
        );
    }

    #[test]
    fn the_bearer_header_is_parsed_strictly() {
        assert!(matches!(bearer(&headers(&[])), Bearer::Absent));
        assert!(matches!(
            bearer(&headers(&[&format!("Bearer {TOKEN_A}")])),
            Bearer::Token(TOKEN_A)
        ));
        assert!(matches!(
            bearer(&headers(&[&format!("bearer  {TOKEN_A}")])),
            Bearer::Token(TOKEN_A)
        ));
        for bad in [
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            "Bearer",
            "Bearer ",
            "Bearertoken",
            "Bearer a b",
            "Bearer a\"b",
        ] {
            assert!(
                matches!(bearer(&headers(&[bad])), Bearer::Malformed),
                "{bad:?}"
            );
        }
        let two = headers(&[&format!("Bearer {TOKEN_A}"), &format!("Bearer {TOKEN_B}")]);
        assert!(matches!(bearer(&two), Bearer::Malformed));
    }

    #[test]
    fn debug_never_shows_the_token_digest() {
        let text = format!("{:?}", user("a", TOKEN_A));
        assert!(text.contains("[redacted]"));
        assert!(!text.contains("token_sha256"));
    }
}
