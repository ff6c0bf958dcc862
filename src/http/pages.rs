//! The browser pages of the `[http]` listener: the status page `/`, the viewer
//! `/view/<camera-id>` and their assets, all embedded in the binary.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /` | the status page: site, user, policy, cameras (lazy WHEP tiles), links, interventions |
//! | `GET /view/<camera-id>` | the viewer: one camera over WHEP with live statistics; `404` for a malformed id, `414` for an overlong one |
//! | `GET /assets/<name>-<hash>.<ext>` | the script, the style sheet, the icon; `404` for any other name |
//!
//! The pages are static: they need no token to load (the script reads the camera id from
//! the address and fetches the data with the bearer token it keeps in `sessionStorage`),
//! so nothing a request carries is ever written into a page. Asset names carry a hash of
//! their content, so browsers may keep them for a year and still never run a stale script
//! after an upgrade; the pages themselves are revalidated at every load.
//!
//! Every answer carries a Content-Security-Policy that allows only this origin's script
//! and style sheet, no inline code, no frames, no form submission, and no string-to-code
//! sinks (Trusted Types): the script builds the DOM with `textContent` only.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

use super::labelled;
use crate::ids::CameraId;

/// The status page's route.
pub const INDEX: &str = "/";
/// The viewer's route template (the camera id may hold `/`).
pub const VIEW: &str = "/view/{*camera}";
/// The assets' route template.
pub const ASSET: &str = "/assets/{name}";

/// `default-src 'none'` denies everything not listed; `require-trusted-types-for` makes
/// `innerHTML` and friends throw, so text from the gateway or a partner can never
/// become markup. `media-src blob:` keeps `<video>` usable should a browser route a
/// `MediaStream` through a blob URL.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'; \
    require-trusted-types-for 'script'; trusted-types 'none'";

/// Pages are small and must follow an upgrade at once: revalidate every time.
const PAGE_CACHE: &str = "no-cache";
/// Assets are named by their content: cache them for a year, never revalidate.
const ASSET_CACHE: &str = "public, max-age=31536000, immutable";
/// Errors are never cached: the next release may serve that name.
const ERROR_CACHE: &str = "no-store";

/// The routes of the pages, each labelled with its template for the request metrics.
pub(crate) fn router() -> Router {
    Router::new()
        .route(INDEX, labelled(INDEX, get(index)))
        .route(VIEW, labelled(VIEW, get(view)))
        .route(ASSET, labelled(ASSET, get(asset)))
        .layer(middleware::map_response(security_headers))
}

/// One embedded file served under `/assets/`.
struct Asset {
    /// The name it is served under, with its content hash.
    name: String,
    content_type: &'static str,
    body: &'static [u8],
}

/// The pages with their asset references resolved to hashed names, and the assets.
struct Bundle {
    index: String,
    view: String,
    assets: Vec<Asset>,
}

/// Built once, at the first request.
static BUNDLE: LazyLock<Bundle> = LazyLock::new(Bundle::build);

impl Bundle {
    fn build() -> Bundle {
        // (name in the HTML sources, content type, content)
        let sources: [(&str, &'static str, &'static [u8]); 3] = [
            (
                "passerelle.js",
                "text/javascript; charset=utf-8",
                include_bytes!("pages/passerelle.js"),
            ),
            (
                "passerelle.css",
                "text/css; charset=utf-8",
                include_bytes!("pages/passerelle.css"),
            ),
            (
                "favicon.svg",
                "image/svg+xml",
                include_bytes!("pages/favicon.svg"),
            ),
        ];
        let mut index = include_str!("pages/index.html").to_owned();
        let mut view = include_str!("pages/view.html").to_owned();
        let mut assets = Vec::with_capacity(sources.len());
        for (source, content_type, body) in sources {
            let name = hashed_name(source, body);
            let from = format!("\"/assets/{source}\"");
            let to = format!("\"/assets/{name}\"");
            index = index.replace(&from, &to);
            view = view.replace(&from, &to);
            assets.push(Asset {
                name,
                content_type,
                body,
            });
        }
        Bundle {
            index,
            view,
            assets,
        }
    }
}

/// `passerelle.js` becomes `passerelle-<16 hex digits of its SHA-256>.js`.
fn hashed_name(source: &str, body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    match source.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}-{hash}.{ext}"),
        None => format!("{source}-{hash}"),
    }
}

async fn index() -> Response {
    page(&BUNDLE.index)
}

async fn view(Path(camera): Path<String>) -> Response {
    match camera.parse::<CameraId>() {
        Ok(_) => page(&BUNDLE.view),
        Err(e) if e.is_too_long() => error(StatusCode::URI_TOO_LONG, &e.to_string()),
        Err(e) => error(StatusCode::NOT_FOUND, &format!("not a camera id: {e}")),
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    match BUNDLE.assets.iter().find(|a| a.name == name) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, ASSET_CACHE),
            ],
            asset.body,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "no such asset"),
    }
}

fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, PAGE_CACHE),
        ],
        html,
    )
        .into_response()
}

/// Plain text, so that nothing from the request can be read as markup.
fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, ERROR_CACHE),
        ],
        format!("{message}\n"),
    )
        .into_response()
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=()",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Every wait of these tests.
    const BOUND: Duration = Duration::from_secs(10);

    struct Answer {
        status: u16,
        headers: HashMap<String, String>,
        body: Vec<u8>,
    }

    impl Answer {
        fn header(&self, name: &str) -> &str {
            self.headers.get(name).map_or("", String::as_str)
        }

        fn text(&self) -> &str {
            std::str::from_utf8(&self.body).unwrap()
        }
    }

    /// Serves the pages on loopback, as the listener does (through the whole server's
    /// router would need a journal and a site; the routes and headers are all here).
    /// The metrics label of each answer comes back in `x-route`.
    async fn serve() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router().layer(middleware::map_response(|mut response: Response| async {
            if let Some(label) = response.extensions().get::<crate::http::RouteLabel>() {
                let value = HeaderValue::from_static(label.0);
                response.headers_mut().insert("x-route", value);
            }
            response
        }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// One HTTP/1.1 request on its own connection.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let head =
                format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.unwrap();
            raw
        };
        let raw = tokio::time::timeout(BOUND, exchange)
            .await
            .expect("no answer in time");
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("no header end");
        let head = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        Answer {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> Answer {
        request(addr, "GET", path).await
    }

    fn assert_secured(answer: &Answer) {
        let csp = answer.header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "require-trusted-types-for 'script'",
        ] {
            assert!(csp.contains(directive), "{directive} missing from {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(answer.header("x-content-type-options"), "nosniff");
        assert_eq!(answer.header("referrer-policy"), "no-referrer");
    }

    /// The `/assets/...` a page refers to.
    fn asset_paths(html: &str) -> Vec<String> {
        html.split("\"/assets/")
            .skip(1)
            .map(|rest| format!("/assets/{}", &rest[..rest.find('"').unwrap()]))
            .collect()
    }

    #[tokio::test]
    async fn the_pages_are_html_with_a_strict_policy_and_revalidated() {
        let addr = serve().await;
        for (path, page) in [("/", "status"), ("/view/metz/centre", "view")] {
            let answer = get(addr, path).await;
            assert_eq!(answer.status, 200, "{path}");
            assert_eq!(answer.header("content-type"), "text/html; charset=utf-8");
            assert_eq!(answer.header("cache-control"), "no-cache");
            assert_secured(&answer);
            assert!(
                answer.text().contains(&format!("data-page=\"{page}\"")),
                "{path}"
            );
        }
        assert_eq!(request(addr, "POST", "/").await.status, 405);
    }

    #[tokio::test]
    async fn requests_are_counted_under_their_route_template() {
        let addr = serve().await;
        let asset = format!("/assets/{}", BUNDLE.assets[1].name);
        for (path, template) in [
            ("/", INDEX),
            ("/view/sncf/metz-ville/quai-1", VIEW),
            ("/view/a//b", VIEW),
            (asset.as_str(), ASSET),
            ("/assets/nope.js", ASSET),
        ] {
            assert_eq!(get(addr, path).await.header("x-route"), template, "{path}");
        }
    }

    #[tokio::test]
    async fn every_asset_a_page_names_is_served_by_its_hash_and_kept_for_good() {
        let addr = serve().await;
        let mut seen = Vec::new();
        for path in ["/", "/view/metz/centre"] {
            let html = get(addr, path).await.text().to_owned();
            let assets = asset_paths(&html);
            assert_eq!(assets.len(), 3, "{path}: {assets:?}");
            for asset in assets {
                assert!(
                    asset.split('/').next_back().unwrap().contains('-'),
                    "{asset} has no hash"
                );
                let answer = get(addr, &asset).await;
                assert_eq!(answer.status, 200, "{asset}");
                assert_eq!(answer.header("cache-control"), ASSET_CACHE);
                assert_secured(&answer);
                let want = BUNDLE
                    .assets
                    .iter()
                    .find(|a| asset.ends_with(&a.name))
                    .unwrap();
                assert_eq!(answer.header("content-type"), want.content_type);
                assert_eq!(answer.body, want.body, "{asset}");
                seen.push(asset);
            }
        }
        for ext in [".js", ".css", ".svg"] {
            assert!(
                seen.iter().any(|a| a.ends_with(ext)),
                "no {ext} in {seen:?}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_assets_answer_404_in_plain_text() {
        let addr = serve().await;
        let js = &BUNDLE.assets[0].name;
        let stale = js.replace(&js[11..27], "0000000000000000");
        for path in [
            "/assets/passerelle.js".to_owned(),
            format!("/assets/{stale}"),
            "/assets/..%2fCargo.toml".to_owned(),
            "/assets/".to_owned(),
        ] {
            let answer = get(addr, &path).await;
            assert_eq!(answer.status, 404, "{path}");
            // `/assets/` matches no route: the server's own 404.
            if path != "/assets/" {
                assert_eq!(answer.header("content-type"), "text/plain; charset=utf-8");
                assert_eq!(answer.header("cache-control"), "no-store");
                assert_secured(&answer);
            }
        }
    }

    #[tokio::test]
    async fn a_camera_id_with_slashes_reaches_the_viewer() {
        let addr = serve().await;
        for path in [
            "/view/sncf/metz-ville/quai-1",
            "/view/metz/centre",
            "/view/a/b/c/d/e/f/g/h",
            "/view/cam_1.hd",
        ] {
            let answer = get(addr, path).await;
            assert_eq!(answer.status, 200, "{path}");
            assert!(answer.text().contains("data-page=\"view\""));
        }
    }

    #[tokio::test]
    async fn malformed_camera_ids_are_refused_without_echoing_markup() {
        let addr = serve().await;
        for path in [
            "/view/sncf/../etc",
            "/view/%2e%2e/x",
            "/view/a//b",
            "/view/Metz/centre",
            "/view/a/b/c/d/e/f/g/h/i",
            "/view/%3Cscript%3E",
        ] {
            let answer = get(addr, path).await;
            assert_eq!(answer.status, 404, "{path}");
            assert_eq!(answer.header("content-type"), "text/plain; charset=utf-8");
            assert_secured(&answer);
        }
        let long = format!("/view/{}", "a".repeat(300));
        assert_eq!(get(addr, &long).await.status, 414);
    }

    /// The CSP forbids inline code and Trusted Types forbid string-to-markup sinks:
    /// either in the sources would fail silently in the browser.
    #[test]
    fn the_sources_hold_nothing_the_policy_would_block() {
        for (name, html) in [("index", &BUNDLE.index), ("view", &BUNDLE.view)] {
            let lower = html.to_ascii_lowercase();
            for script in lower.split("<script").skip(1) {
                let tag = &script[..script.find('>').unwrap()];
                assert!(
                    tag.contains(" src=\"/assets/"),
                    "{name}: inline script {tag}"
                );
            }
            for bad in [
                " style=",
                "<style",
                " onclick=",
                " onload=",
                " onsubmit=",
                "javascript:",
                "http://",
                "https://",
            ] {
                assert!(!lower.contains(bad), "{name} holds {bad}");
            }
        }
        let js = include_str!("pages/passerelle.js");
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setTimeout('",
            "http://",
            "https://",
        ] {
            assert!(!js.contains(bad), "passerelle.js holds {bad}");
        }
    }

    /// Automated browser tests find these ids: keep them.
    #[test]
    fn the_pages_keep_the_ids_tests_rely_on() {
        let ids = |html: &str, wanted: &[&str]| {
            for id in wanted {
                assert!(html.contains(&format!("id=\"{id}\"")), "id {id} missing");
            }
        };
        ids(
            &BUNDLE.view,
            &[
                "camera-id",
                "video",
                "player-state",
                "player-message",
                "player-error",
                "player-error-status",
                "player-error-message",
                "play",
                "stop",
                "signin",
                "signin-token",
                "stat-resolution",
                "stat-fps",
                "stat-bitrate",
                "stat-packets-lost",
                "stat-frames-decoded",
                "stat-ttff",
                "stat-lag",
                "stat-playout-lag",
                "stat-session",
            ],
        );
        ids(
            &BUNDLE.index,
            &[
                "site-id",
                "user-name",
                "policy",
                "policy-state",
                "policy-serial",
                "policy-signers",
                "webrtc-sessions",
                "cameras",
                "camera-filter",
                "players-count",
                "links-body",
                "interventions",
                "intervention-form",
                "intervention-reason",
                "intervention-cameras",
                "intervention-until",
                "signin",
                "signin-token",
            ],
        );
    }
}
