//! The interventions API on the `[http]` listener, in process on 127.0.0.1:0, over plain
//! HTTP and over HTTPS (development certificates from `passerelle::pki`), with a real
//! journal in a temporary directory and a small HTTP/1.1 client written here (over
//! tokio-rustls for HTTPS), so nothing outside the crate is needed.
//!
//! Each scenario: authentication (none, bad token), a service account, a camera outside
//! the agent's patterns, bad input, an agent opening an intervention that the store then
//! gives to covered cameras only, listing, closing by another agent and by its own, CORS
//! preflights from a listed and another origin, the request metrics' labels, and the
//! journal's records.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use metrics_exporter_prometheus::PrometheusHandle;
use passerelle::config::{HttpSettings, HttpTls, UserKind, UserSettings};
use passerelle::http::{HttpApi, HttpServer, HttpUsers, UsersHandle};
use passerelle::ids::{CameraId, SiteId};
use passerelle::interventions::{InterventionSettings, InterventionStore};
use passerelle::journal::{Event, InterventionEnd, Journal, JournalSettings, Record, SystemClock};
use passerelle::pki::{self, Validity};
use passerelle::policy::SigningKey;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Bound of every network exchange of a test.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

const SITE: &str = "csu.metz.example";
const ALLOWED_ORIGIN: &str = "https://vms.csu.metz.example";
const OTHER_ORIGIN: &str = "https://evil.example";

const MARTIN: &str = "operateur.martin";
const MARTIN_TOKEN: &str = "martin-0123456789abcdefABCDEF";
const DURAND: &str = "superviseur.durand";
const DURAND_TOKEN: &str = "durand-0123456789abcdefABCDEF";
const VMS: &str = "vms-csu";
const VMS_TOKEN: &str = "vms-csu-0123456789abcdefABCDEF";

fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = passerelle::metrics::install().expect("the only recorder of this binary");
        passerelle::http::describe_metrics();
        handle
    })
}

/// A reply as read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// A minimal HTTP/1.1 client: one request per connection (`Connection: close`).
struct Client {
    addr: SocketAddr,
    tls: Option<TlsConnector>,
}

impl Client {
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {SITE}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or(""));

        let exchange = async {
            let tcp = TcpStream::connect(self.addr).await.unwrap();
            match &self.tls {
                Some(connector) => {
                    let name = ServerName::try_from(SITE).unwrap();
                    let stream = connector.connect(name, tcp).await.unwrap();
                    assert_eq!(
                        stream.get_ref().1.alpn_protocol(),
                        Some(&b"http/1.1"[..]),
                        "ALPN"
                    );
                    exchange(stream, &request).await
                }
                None => exchange(tcp, &request).await,
            }
        };
        let raw = tokio::time::timeout(IO_TIMEOUT, exchange)
            .await
            .expect("the server answers within the bound");
        parse_reply(&raw)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.send(method, path, &headers, body).await
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> Vec<u8> {
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify: what was read is kept either way.
    if let Err(e) = stream.read_to_end(&mut raw).await {
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }
    raw
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&data[..end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A server with three users, a store and a journal in `dir`.
struct Setup {
    client: Client,
    store: InterventionStore,
    journal: Journal,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The CA certificate, when serving HTTPS.
    ca_pem: Option<String>,
}

fn user(dir: &Path, name: &str, kind: UserKind, token: &str, cameras: &[&str]) -> UserSettings {
    let token_file = dir.join(format!("{name}.token"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    UserSettings {
        name: name.to_owned(),
        kind,
        rtsp_secret: None,
        token_file: Some(token_file),
        cameras: cameras.iter().map(|c| c.parse().unwrap()).collect(),
    }
}

async fn start(dir: &Path, https: bool) -> Setup {
    recorder();
    let journal = Journal::open(
        JournalSettings::new(dir.join("audit"), 30),
        SigningKey::generate().unwrap(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let users = HttpUsers::load(&[
        user(
            dir,
            MARTIN,
            UserKind::Agent,
            MARTIN_TOKEN,
            &["metz/**", "sncf/metz-ville/**"],
        ),
        user(dir, DURAND, UserKind::Agent, DURAND_TOKEN, &["**"]),
        user(dir, VMS, UserKind::Service, VMS_TOKEN, &["**"]),
    ])
    .unwrap();
    assert_eq!(users.len(), 3);
    let store = InterventionStore::new(InterventionSettings::default(), journal.clone());

    let (tls, ca_pem) = if https {
        let now = Timestamp::now();
        let ca = pki::generate_ca("csu-test", Validity::days_from(now, 30).unwrap()).unwrap();
        let site: SiteId = SITE.parse().unwrap();
        let issued = pki::issue_pem(&ca, &site, Validity::days_from(now, 30).unwrap()).unwrap();
        let cert = dir.join("https.pem");
        let key = dir.join("https.key");
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        (Some(HttpTls { cert, key }), Some(ca.cert_pem))
    } else {
        (None, None)
    };
    let settings = HttpSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls,
        cors_origins: vec![ALLOWED_ORIGIN.to_owned()],
    };
    let api = HttpApi {
        users: UsersHandle::new(users),
        interventions: store.clone(),
        journal: journal.clone(),
        clock: Arc::new(SystemClock),
        status: Arc::new(NoCameras),
    };
    let server = HttpServer::bind(&settings, api, axum::Router::new())
        .await
        .unwrap();
    assert_eq!(server.scheme(), if https { "https" } else { "http" });
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let tls = ca_pem.as_deref().map(|ca| connector(Some(ca)));
    Setup {
        client: Client { addr, tls },
        store,
        journal,
        stop,
        served,
        ca_pem,
    }
}

/// A TLS 1.3 client trusting `ca` (or nothing), offering `http/1.1`.
fn connector(ca: Option<&str>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
            .unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

fn cam(id: &str) -> CameraId {
    id.parse().unwrap()
}

fn open_body(reason: &str, cameras: &[&str], until: Timestamp) -> String {
    serde_json::json!({ "reason": reason, "cameras": cameras, "until": until.to_string() })
        .to_string()
}

/// The whole scenario, on either transport.
async fn scenario(https: bool) {
    let dir = tempfile::tempdir().unwrap();
    let setup = start(dir.path(), https).await;
    let client = &setup.client;
    let in_an_hour = Timestamp::now() + SignedDuration::from_hours(1);
    let good = open_body("Rixe place Saint-Louis", &["metz/centre/**"], in_an_hour);

    // No token, a bad token, a malformed header: 401 with a Bearer challenge.
    let r = client
        .call("POST", "/api/v1/interventions", None, Some(&good))
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let r = client
        .call(
            "POST",
            "/api/v1/interventions",
            Some("not-the-token-0123456789"),
            Some(&good),
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let r = client
        .send(
            "GET",
            "/api/v1/interventions",
            &[("Authorization", &format!("Basic {MARTIN_TOKEN}"))],
            None,
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    // A token of one user with a prefix cut is not that user's.
    let r = client
        .call(
            "GET",
            "/api/v1/interventions",
            Some(&MARTIN_TOKEN[1..]),
            None,
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");

    // A service account never opens an intervention.
    let r = client
        .call(
            "POST",
            "/api/v1/interventions",
            Some(VMS_TOKEN),
            Some(&good),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.json()["error"].as_str().unwrap().contains("service"));

    // Cameras outside the agent's own patterns: 403 naming the pattern.
    let outside = open_body("Contrôle", &["metz/centre/**", "marly/**"], in_an_hour);
    let r = client
        .call(
            "POST",
            "/api/v1/interventions",
            Some(MARTIN_TOKEN),
            Some(&outside),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.json()["error"].as_str().unwrap().contains("marly/**"),
        "{r:?}"
    );
    let wider = open_body("Contrôle", &["sncf/**"], in_an_hour);
    let r = client
        .call(
            "POST",
            "/api/v1/interventions",
            Some(MARTIN_TOKEN),
            Some(&wider),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");

    // Bad input: 400 with a message saying what.
    let past = open_body(
        "Rixe",
        &["metz/**"],
        Timestamp::now() - SignedDuration::from_mins(1),
    );
    let too_far = open_body(
        "Rixe",
        &["metz/**"],
        Timestamp::now() + SignedDuration::from_hours(25),
    );
    let bad_pattern = open_body("Rixe", &["metz/../x"], in_an_hour);
    let no_reason = open_body("  ", &["metz/**"], in_an_hour);
    for (body, says) in [
        (past.as_str(), "until"),
        (too_far.as_str(), "until"),
        (bad_pattern.as_str(), "metz/../x"),
        (no_reason.as_str(), "reason"),
        (
            r#"{"reason": "Rixe", "cameras": ["metz/**"], "until": "tomorrow"}"#,
            "until",
        ),
        (r#"{"reason": "Rixe", "cameras": ["metz/**"]}"#, "until"),
        (
            r#"{"reason": "x", "cameras": ["metz/**"], "until": "2099-01-01T00:00:00Z", "agent": "durand"}"#,
            "agent",
        ),
        ("not json", "body"),
    ] {
        let r = client
            .call(
                "POST",
                "/api/v1/interventions",
                Some(MARTIN_TOKEN),
                Some(body),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        let message = r.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains(says), "{body}: {message}");
    }
    let r = client
        .send(
            "POST",
            "/api/v1/interventions",
            &[
                ("Authorization", &format!("Bearer {MARTIN_TOKEN}")),
                ("Content-Type", "text/plain"),
            ],
            Some(&good),
        )
        .await;
    assert_eq!(r.status, 415, "{r:?}");
    assert!(
        setup.store.all(Timestamp::now()).is_empty(),
        "nothing opened so far"
    );

    // The agent opens one: 201, Location, its id and end.
    let r = client
        .call(
            "POST",
            "/api/v1/interventions",
            Some(MARTIN_TOKEN),
            Some(&good),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let body = r.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/api/v1/interventions/{id}").as_str())
    );
    assert_eq!(
        body["until"]
            .as_str()
            .unwrap()
            .parse::<Timestamp>()
            .unwrap(),
        in_an_hour
    );
    assert_eq!(body["agent"], MARTIN);
    assert_eq!(body["cameras"], serde_json::json!(["metz/centre/**"]));

    // The store gives its reason to covered cameras of that agent, and nothing else.
    let now = Timestamp::now();
    let active = setup
        .store
        .active_for(MARTIN, &cam("metz/centre/place-saint-louis"), now)
        .expect("a covered camera carries the intervention");
    assert_eq!(active.id.as_str(), id);
    assert_eq!(active.reason, "Rixe place Saint-Louis");
    assert_eq!(
        setup.store.active_for(MARTIN, &cam("metz/nord/cam-1"), now),
        None
    );
    assert_eq!(
        setup
            .store
            .active_for(DURAND, &cam("metz/centre/place-saint-louis"), now),
        None
    );

    // Listing and reading: the owner sees it, another agent does not.
    let r = client
        .call("GET", "/api/v1/interventions", Some(MARTIN_TOKEN), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["interventions"][0]["id"], id.as_str());
    let r = client
        .call("GET", "/api/v1/interventions", Some(DURAND_TOKEN), None)
        .await;
    assert_eq!(r.json()["interventions"], serde_json::json!([]));
    let location = format!("/api/v1/interventions/{id}");
    let r = client
        .call("GET", &location, Some(MARTIN_TOKEN), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = client
        .call("GET", &location, Some(DURAND_TOKEN), None)
        .await;
    assert_eq!(r.status, 404, "{r:?}");

    // Closing: another agent gets 404 and changes nothing; the owner gets 204.
    let r = client
        .call("DELETE", &location, Some(DURAND_TOKEN), None)
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = client.call("DELETE", &location, None, None).await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = client
        .call(
            "DELETE",
            "/api/v1/interventions/..%2f..%2fetc",
            Some(MARTIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        setup
            .store
            .active_for(
                MARTIN,
                &cam("metz/centre/place-saint-louis"),
                Timestamp::now()
            )
            .is_some()
    );
    let r = client
        .call("DELETE", &location, Some(MARTIN_TOKEN), None)
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        setup.store.active_for(
            MARTIN,
            &cam("metz/centre/place-saint-louis"),
            Timestamp::now()
        ),
        None
    );
    let r = client
        .call("DELETE", &location, Some(MARTIN_TOKEN), None)
        .await;
    assert_eq!(r.status, 404, "{r:?}");

    // CORS: a preflight from the listed origin gets the headers, another origin none.
    let preflight = |origin: &'static str| {
        [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ]
    };
    let r = client
        .send(
            "OPTIONS",
            "/api/v1/interventions",
            &preflight(ALLOWED_ORIGIN),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("DELETE")
    );
    let allowed_headers = r.header("access-control-allow-headers").unwrap();
    assert!(allowed_headers.contains("authorization") && allowed_headers.contains("content-type"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    let r = client
        .send(
            "OPTIONS",
            "/api/v1/interventions",
            &preflight(OTHER_ORIGIN),
            None,
        )
        .await;
    assert_ne!(r.status / 100, 2, "{r:?}");
    assert!(
        r.headers
            .iter()
            .all(|(n, _)| !n.to_ascii_lowercase().starts_with("access-control-")),
        "{r:?}"
    );
    // An actual request: the listed origin may read the answer, another may not.
    let bearer = format!("Bearer {MARTIN_TOKEN}");
    let r = client
        .send(
            "GET",
            "/api/v1/interventions",
            &[("Origin", ALLOWED_ORIGIN), ("Authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert!(
        r.header("access-control-expose-headers")
            .unwrap()
            .contains("location")
    );
    let r = client
        .send(
            "GET",
            "/api/v1/interventions",
            &[("Origin", OTHER_ORIGIN), ("Authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");

    // An unknown path is counted as "unmatched", never under its raw path.
    let r = client
        .call("GET", "/no/such/path-7f3a9c", Some(MARTIN_TOKEN), None)
        .await;
    assert_eq!(r.status, 404, "{r:?}");

    // Metrics: route templates and statuses, no raw path or id in any label.
    let text = recorder().render();
    let has = |route: &str, status: &str| {
        text.lines().any(|l| {
            l.starts_with("passerelle_http_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(has("/api/v1/interventions", "201"), "{text}");
    assert!(has("/api/v1/interventions", "401"), "{text}");
    assert!(has("/api/v1/interventions/{id}", "204"), "{text}");
    assert!(has("/api/v1/interventions/{id}", "404"), "{text}");
    assert!(has("preflight", "204"), "{text}");
    assert!(has("unmatched", "404"), "{text}");
    assert!(!text.contains(&id), "an id in a label: {text}");
    assert!(
        !text.contains("path-7f3a9c"),
        "a raw path in a label: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("passerelle_auth_failures_total{source=\"http\"}")),
        "{text}"
    );

    // Stop, close the journal and read what it recorded.
    setup.stop.send(()).unwrap();
    tokio::time::timeout(IO_TIMEOUT, setup.served)
        .await
        .expect("the server stops within the bound")
        .unwrap()
        .unwrap();
    setup.journal.close().unwrap();
    let records = read_journal(&dir.path().join("audit"));
    let opened: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::InterventionOpened(o) => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(opened.len(), 1, "{records:?}");
    assert_eq!(opened[0].intervention, id);
    assert_eq!(opened[0].agent, MARTIN);
    assert_eq!(opened[0].reason, "Rixe place Saint-Louis");
    assert_eq!(opened[0].cameras, vec!["metz/centre/**".to_owned()]);
    assert_eq!(opened[0].until, in_an_hour);
    let closed: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::InterventionClosed(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(closed.len(), 1, "{records:?}");
    assert_eq!(closed[0].intervention, id);
    assert_eq!(closed[0].agent, MARTIN);
    assert_eq!(closed[0].why, InterventionEnd::Closed);
    let failures: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::AuthFailures(f) => Some(f),
            _ => None,
        })
        .collect();
    let bad_tokens: u64 = failures
        .iter()
        .filter(|f| f.reason == "bad_token")
        .inspect(|f| assert_eq!(f.source.as_deref(), Some("unknown")))
        .map(|f| f.count)
        .sum();
    assert_eq!(bad_tokens, 2, "{failures:?}");
    assert!(
        failures
            .iter()
            .any(|f| f.reason == "malformed_authorization"),
        "{failures:?}"
    );
}

fn read_journal(dir: &Path) -> Vec<Record> {
    let mut records = Vec::new();
    for (_, path) in passerelle::journal::journal_files(dir).unwrap() {
        let text = std::fs::read(&path).unwrap();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            records.push(Record::parse(line).unwrap());
        }
    }
    assert!(!records.is_empty());
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interventions_over_plain_http() {
    scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interventions_over_https() {
    scenario(true).await;
}

/// HTTPS refuses a client that does not trust the certificate's CA, and serves nothing
/// in clear on the HTTPS port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_needs_a_trusted_certificate_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let setup = start(dir.path(), true).await;
    assert!(setup.ca_pem.is_some());
    let addr = setup.client.addr;

    let untrusting = connector(None);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let handshake = tokio::time::timeout(
        IO_TIMEOUT,
        untrusting.connect(ServerName::try_from(SITE).unwrap(), tcp),
    )
    .await
    .expect("the handshake ends within the bound");
    assert!(
        handshake.is_err(),
        "a client without the CA must not connect"
    );

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /api/v1/interventions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(IO_TIMEOUT, tcp.read_to_end(&mut raw))
        .await
        .expect("the server drops the connection within the bound");
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );

    // And the trusting client still gets through afterwards.
    let r = setup
        .client
        .call("GET", "/api/v1/interventions", Some(MARTIN_TOKEN), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    setup.stop.send(()).unwrap();
}

/// A site without cameras or links: these tests are about interventions.
struct NoCameras;

impl passerelle::status::SiteStatus for NoCameras {
    fn site(&self) -> String {
        "csu.metz.example".to_owned()
    }
    fn cameras(&self) -> Vec<passerelle::status::CameraView> {
        Vec::new()
    }
    fn links(&self) -> Vec<passerelle::status::LinkView> {
        Vec::new()
    }
    fn policy(&self) -> passerelle::status::PolicyView {
        passerelle::status::PolicyView {
            state: "none",
            serial: None,
            valid_from: None,
            valid_until: None,
            signers: Vec::new(),
            problem: None,
        }
    }
    fn webrtc(&self) -> passerelle::status::WebrtcView {
        passerelle::status::WebrtcView {
            sessions: 0,
            max_sessions: 0,
        }
    }
}
