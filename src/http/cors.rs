//! CORS (Fetch standard, "CORS protocol"): only the origins of `[http].cors_origins`, each
//! echoed back by name; never `*`, never credentials (tokens travel in `Authorization`,
//! which a page must set itself, so no cookie or ambient credential is involved).
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
//!   here, before authentication and routing: `204` with the allowed methods and headers
//!   for a listed origin, `403` with no CORS header for any other.
//! - Any other request from a listed origin gets `Access-Control-Allow-Origin` and the
//!   headers a script may read (WHEP's `Location`, `ETag`, `Link`); from another origin it
//!   is served as is, without CORS headers, so the browser withholds the answer from the
//!   page.
//! - Every answer says `Vary: Origin`, so no cache hands one origin's answer to another.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::RouteLabel;

/// What a preflight allows: the API's and WHEP's methods (PATCH: trickle ICE).
const ALLOW_METHODS: &str = "GET, POST, PATCH, DELETE, OPTIONS";
/// Request headers a page may set (WHEP's PATCH sends `If-Match`).
const ALLOW_HEADERS: &str = "authorization, content-type, if-match";
/// Response headers a page may read: WHEP's session `Location`, `ETag` and `Link`.
const EXPOSE_HEADERS: &str = "location, etag, link, www-authenticate";
/// How long a browser may cache a preflight, in seconds.
const MAX_AGE: &str = "600";

/// The allowed origins, as browsers serialize them (`https://vms.csu.example`).
#[derive(Debug, Clone, Default)]
pub(crate) struct CorsPolicy {
    origins: Arc<[String]>,
}

impl CorsPolicy {
    pub(crate) fn new(origins: &[String]) -> CorsPolicy {
        CorsPolicy {
            origins: origins
                .iter()
                .filter(|o| o.as_str() != "*")
                .cloned()
                .collect(),
        }
    }

    /// The request's `Origin` when it is allowed.
    fn allowed<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.origins.iter().any(|o| o == text).then_some(origin)
    }
}

/// The CORS middleware: see the module doc.
pub(crate) async fn cors(
    State(policy): State<CorsPolicy>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let allowed = policy.allowed(headers).cloned();
    let preflight = request.method() == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = match &allowed {
            Some(origin) => {
                let mut response = StatusCode::NO_CONTENT.into_response();
                let h = response.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static(ALLOW_METHODS),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static(ALLOW_HEADERS),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static(MAX_AGE),
                );
                response
            }
            None => StatusCode::FORBIDDEN.into_response(),
        };
        response.extensions_mut().insert(RouteLabel("preflight"));
        response
    } else {
        let mut response = next.run(request).await;
        if let Some(origin) = &allowed {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
        response
    };
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("Origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_exactly_are_allowed() {
        let policy = CorsPolicy::new(&["https://vms.csu.example".to_owned(), "*".to_owned()]);
        let with = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            h
        };
        assert!(policy.allowed(&with("https://vms.csu.example")).is_some());
        assert!(
            policy
                .allowed(&with("https://vms.csu.example:443"))
                .is_none()
        );
        assert!(policy.allowed(&with("http://vms.csu.example")).is_none());
        assert!(policy.allowed(&with("https://evil.example")).is_none());
        assert!(policy.allowed(&with("null")).is_none());
        // A "*" in the list never becomes a wildcard.
        assert!(policy.allowed(&with("*")).is_none());
        assert!(policy.allowed(&HeaderMap::new()).is_none());
    }
}
