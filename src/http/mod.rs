//! The `[http]` listener: the status and interventions API ([`status`], [`api`]), the
//! status and viewer pages (`pages`), and WHEP, whose routes the composition layer
//! passes in as `extra` (the `webrtc` adapter).
//!
//! Layer 2 (I/O adapter). HTTPS when `[http].tls` is set (the configuration turns it on
//! unless the listener is on loopback), plain HTTP otherwise. Users authenticate with
//! bearer tokens ([`auth`]); browsers from `[http].cors_origins` only may read answers
//! (`cors`).
//!
//! How to drive it (the composition layer):
//! 1. [`HttpUsers::load`] reads the `[[user]]` token files; wrap them in a
//!    [`UsersHandle`] (swap them on SIGHUP with [`UsersHandle::replace`]).
//! 2. [`HttpServer::bind`] with the settings, an [`HttpApi`] (users, the
//!    [`InterventionStore`], the journal, the clock) and the extra routes to serve
//!    (`Router::new()` for none). It reads the certificate and binds; errors name the
//!    file or address.
//! 3. [`HttpServer::local_addr`] for `--ready-file`; [`HttpServer::tls`] for the SIGHUP
//!    certificate reload; then [`HttpServer::serve`] until shutdown.
//!
//! Every request passes, outermost first: request metrics, CORS, authentication, then
//! the routes. Extra routes get all three: a handler takes a [`Caller`] to require a user,
//! and wraps its method router in [`labelled`] so its requests are counted under its
//! route template rather than as `unmatched`.
//!
//! Metrics: `passerelle_http_requests_total{route,status}` (route: a template such as
//! `/api/v1/interventions/{id}`, `preflight` or `unmatched`, never a raw path),
//! `passerelle_auth_failures_total{source="http"}`,
//! `passerelle_http_tls_handshake_failures_total{reason}`; see [`describe_metrics`].

pub mod api;
pub mod auth;
mod cors;
mod pages;
pub mod status;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tokio::net::TcpListener;

pub use auth::{Caller, HttpUser, HttpUsers, TokenProblem, UsersHandle};
pub use tls::HttpTlsHandle;

use crate::config::HttpSettings;
use crate::interventions::InterventionStore;
use crate::journal::{Clock, Journal};

/// What the server's own routes need.
#[derive(Clone)]
pub struct HttpApi {
    /// The users who may authenticate.
    pub users: UsersHandle,
    /// The site's interventions.
    pub interventions: InterventionStore,
    /// The journal (authentication failures; the store journals interventions itself).
    pub journal: Journal,
    /// Where handlers read the time ([`crate::journal::SystemClock`] in the gateway).
    pub clock: Arc<dyn Clock>,
    /// The site's cameras, links and policy, for `/api/v1/{site,cameras,links}`.
    pub status: Arc<dyn crate::status::SiteStatus>,
}

/// Why the HTTP server could not start, or its certificate or users could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listener could not be bound.
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The certificate chain could not be read.
    #[error("HTTPS certificate {}: {source}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// The error.
        source: rustls::pki_types::pem::Error,
    },
    /// The private key could not be read.
    #[error("HTTPS key {}: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// The error.
        source: rustls::pki_types::pem::Error,
    },
    /// The key is not usable, or is not the certificate's.
    #[error("HTTPS key {} does not fit certificate {}: {source}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The error.
        source: rustls::Error,
    },
    /// rustls refused the configuration (cannot happen with ring and TLS 1.3).
    #[error("HTTPS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// A user's token file could not be read.
    #[error("token file {} of user {user}: {source}", path.display())]
    TokenFile {
        /// The user.
        user: String,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A user's token cannot be used.
    #[error("token file {} of user {user}: {problem}", path.display())]
    BadToken {
        /// The user.
        user: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: TokenProblem,
    },
    /// Two users have the same token.
    #[error("users {first} and {second} have the same token: give each user their own")]
    SharedToken {
        /// The first user with it.
        first: String,
        /// The second.
        second: String,
    },
}

/// The bound `[http]` listener.
pub struct HttpServer {
    listener: Listening,
    local_addr: SocketAddr,
    tls: Option<HttpTlsHandle>,
    router: Router,
}

enum Listening {
    Plain(TcpListener),
    Tls(tls::TlsListener),
}

impl HttpServer {
    /// Reads the certificate (when HTTPS), binds `settings.listen` and builds the routes:
    /// the API's, then `extra`'s (WHEP, pages). `extra` must not define the API's routes
    /// (axum panics on overlapping routes, at start, never later).
    pub async fn bind(
        settings: &HttpSettings,
        api: HttpApi,
        extra: Router,
    ) -> Result<HttpServer, HttpError> {
        let tls = settings.tls.as_ref().map(HttpTlsHandle::load).transpose()?;
        let tcp = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| HttpError::Bind {
                addr: settings.listen,
                source,
            })?;
        let local_addr = tcp.local_addr().map_err(|source| HttpError::Bind {
            addr: settings.listen,
            source,
        })?;
        let listener = match &tls {
            Some(tls) => Listening::Tls(tls::TlsListener::new(tcp, tls.server_config()?)),
            None => {
                if !local_addr.ip().is_loopback() {
                    tracing::warn!(
                        %local_addr,
                        "the HTTP listener serves plain HTTP off loopback: bearer tokens \
                         travel in clear unless a TLS reverse proxy is in front"
                    );
                }
                Listening::Plain(tcp)
            }
        };
        let router = router(api, &settings.cors_origins, extra);
        Ok(HttpServer {
            listener,
            local_addr,
            tls,
            router,
        })
    }

    /// The bound address (the configured port may be 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https` or `http`, for the URLs printed to users.
    pub fn scheme(&self) -> &'static str {
        match self.listener {
            Listening::Plain(_) => "http",
            Listening::Tls(_) => "https",
        }
    }

    /// The certificate in force, when serving HTTPS: call [`HttpTlsHandle::reload`] on
    /// SIGHUP.
    pub fn tls(&self) -> Option<HttpTlsHandle> {
        self.tls.clone()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match self.listener {
            Listening::Plain(tcp) => {
                axum::serve(tcp, self.router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Listening::Tls(tls) => {
                axum::serve(tls, self.router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
    }
}

/// The whole application the listener serves: the API's routes and `extra`'s, behind
/// request metrics, CORS (`cors_origins`) and authentication. [`HttpServer::bind`] uses
/// it; tests may drive it without a socket.
pub fn router(api: HttpApi, cors_origins: &[String], extra: Router) -> Router {
    let auth = auth::AuthState {
        users: api.users,
        journal: api.journal,
    };
    let state = api::ApiState {
        store: api.interventions,
        clock: api.clock,
    };
    api::router(state)
        .merge(status::router(api.status))
        .merge(pages::router())
        .merge(extra)
        .layer(middleware::from_fn_with_state(auth, auth::authenticate))
        .layer(middleware::from_fn_with_state(
            cors::CorsPolicy::new(cors_origins),
            cors::cors,
        ))
        .layer(middleware::from_fn(count_requests))
}

/// Marks `route`'s answers with its `template` for `passerelle_http_requests_total`, so
/// metrics count route templates, never raw paths (which a client chooses).
pub fn labelled<S>(template: &'static str, route: MethodRouter<S>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    route.layer(middleware::map_response_with_state(
        template,
        label_response,
    ))
}

/// Describes this module's metrics (call once with the recorder installed).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "passerelle_http_requests_total",
        "HTTP requests on the [http] listener, by route template and status."
    );
    metrics::describe_counter!(
        "passerelle_auth_failures_total",
        "Failed authentications, by source (http: a malformed or unknown bearer token)."
    );
    metrics::describe_counter!(
        "passerelle_http_tls_handshake_failures_total",
        "HTTPS handshakes that failed or timed out, by reason."
    );
    metrics::describe_gauge!("passerelle_interventions_open", "Interventions open now.");
    metrics::describe_counter!(
        "passerelle_interventions_total",
        "Interventions opened, closed and expired."
    );
}

/// The route template an answer came from (a response extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteLabel(pub(crate) &'static str);

async fn label_response(State(template): State<&'static str>, mut response: Response) -> Response {
    response.extensions_mut().insert(RouteLabel(template));
    response
}

async fn count_requests(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or("unmatched", |label| label.0);
    metrics::counter!(
        "passerelle_http_requests_total",
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

/// An error answer: `{"error": "<message>"}` with a status, and for 401 a
/// `WWW-Authenticate` challenge (RFC 6750 §3).
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    challenge: Option<&'static str>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: &str) -> ApiError {
        ApiError {
            status,
            message: message.to_owned(),
            challenge: None,
        }
    }

    /// 400 with `message`.
    pub fn bad_request(message: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// Adds a `WWW-Authenticate` challenge.
    pub fn challenge(mut self, challenge: &'static str) -> ApiError {
        self.challenge = Some(challenge);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
