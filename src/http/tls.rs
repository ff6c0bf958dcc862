//! HTTPS for the `[http]` listener: the rustls server configuration and a listener that
//! does TLS handshakes off the accept path.
//!
//! - TLS 1.3 only, with the ring provider given explicitly (nothing depends on the
//!   process default); no client certificates (users authenticate with bearer tokens).
//! - ALPN `http/1.1`: the server stack here is axum built with hyper's HTTP/1 only; a
//!   client offering only `h2` fails the handshake rather than speaking a protocol nobody
//!   answers.
//! - The certificate and key are read from `[http]`'s files and can be re-read without a
//!   restart ([`HttpTlsHandle::reload`], on SIGHUP): new handshakes get the new
//!   certificate, open connections keep theirs.
//! - Handshakes run in their own tasks, at most [`MAX_PENDING_HANDSHAKES`] at once and each
//!   within [`HANDSHAKE_TIMEOUT`], so a client that opens a connection and says nothing
//!   holds neither the accept loop nor memory for long.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::HttpError;
use crate::config::HttpTls;

/// Handshakes in progress at most; past it, new connections wait in the kernel's backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 128;
/// A handshake not done by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTPS certificate in force; [`HttpTlsHandle::reload`] re-reads its files.
#[derive(Debug, Clone)]
pub struct HttpTlsHandle {
    files: HttpTls,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
}

#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

impl HttpTlsHandle {
    /// Reads the certificate chain and key. Errors name the file.
    pub fn load(files: &HttpTls) -> Result<HttpTlsHandle, HttpError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified_key(files, &provider)?;
        Ok(HttpTlsHandle {
            files: files.clone(),
            provider,
            current: Arc::new(CurrentCert(RwLock::new(Arc::new(key)))),
        })
    }

    /// Re-reads the files; on error the certificate in force stays.
    pub fn reload(&self) -> Result<(), HttpError> {
        let key = certified_key(&self.files, &self.provider)?;
        *self
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        tracing::info!(cert = %self.files.cert.display(), "HTTPS certificate reloaded");
        Ok(())
    }

    /// The certificate chain in force, leaf first (for expiry metrics).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .cert
            .clone()
    }

    /// The rustls server configuration (TLS 1.3, ring, ALPN `http/1.1`).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, HttpError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(HttpError::Tls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&self.current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn certified_key(files: &HttpTls, provider: &CryptoProvider) -> Result<CertifiedKey, HttpError> {
    let chain = read_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| HttpError::Key {
        path: files.key.clone(),
        source,
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| HttpError::KeyMismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let err = |source| HttpError::Certificate {
        path: path.to_path_buf(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    if chain.is_empty() {
        return Err(err(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(chain)
}

/// A TCP listener handing out connections once their TLS handshake is done.
pub(crate) struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<(SocketAddr, HandshakeOutcome)>,
}

type HandshakeOutcome = Result<std::io::Result<TlsStream<TcpStream>>, tokio::time::error::Elapsed>;

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_PENDING_HANDSHAKES => {
                    match accepted {
                        Ok((stream, peer)) => {
                            let acceptor = self.acceptor.clone();
                            self.handshakes.spawn(async move {
                                let outcome =
                                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                        .await;
                                (peer, outcome)
                            });
                        }
                        Err(error) => accept_error(error).await,
                    }
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    match done {
                        Ok((peer, Ok(Ok(stream)))) => return (stream, peer),
                        Ok((peer, Ok(Err(error)))) => {
                            handshake_failed("error");
                            tracing::debug!(%peer, %error, "HTTPS handshake failed");
                        }
                        Ok((peer, Err(_))) => {
                            handshake_failed("timeout");
                            tracing::debug!(%peer, "HTTPS handshake timed out");
                        }
                        Err(error) => {
                            tracing::warn!(%error, "HTTPS handshake task failed");
                        }
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

fn handshake_failed(reason: &'static str) {
    metrics::counter!("passerelle_http_tls_handshake_failures_total", "reason" => reason)
        .increment(1);
}

/// As axum's own listener: errors about one connection are skipped; others (out of file
/// descriptors) are logged and retried after a pause rather than spinning.
async fn accept_error(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "HTTP accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
