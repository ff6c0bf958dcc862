//! TLS for links between gateways: the rustls configurations QUIC runs on, and who a peer
//! is once the handshake is done.
//!
//! Layer 2 (I/O adapter). The contract (DESIGN.md, "Identity and transport security"):
//! TLS 1.3 only, mutual; ALPN `passerelle/1`; no 0-RTT, no session tickets, no resumption;
//! each `[[partner]]` names the CA that may speak for it; CRLs honoured; a peer whose
//! certificate names no configured partner is refused before any control message.
//!
//! How to drive it:
//! 1. `main` calls [`install_crypto_provider`] once; every config here is also built with
//!    an explicit ring provider, so nothing depends on the process default.
//! 2. [`LinkTls::load`] reads the certificate, key, CA bundle, CRLs and partner CAs once
//!    (errors name the file) and builds everything. Reload (SIGHUP) = load again and swap:
//!    `Endpoint::set_server_config` for new inbound links, the new client configs for new
//!    dials, and [`identify_peer`] with the new [`PeerTrust`] on every live link, closing
//!    those it refuses.
//! 3. Accept with [`LinkTls::server_config`]; dial partner `p` with
//!    [`LinkTls::client_config`]`(p)` **and server name `p`** (the client checks that the
//!    server's certificate names `p` and chains to `p`'s CA).
//! 4. After the handshake, before any control message, call [`identify_connection`] (or
//!    [`identify_peer`] on the peer's chain). On `Err(refusal)`, close the connection with
//!    [`PeerRefusal::close_code`] and count it under [`PeerRefusal::reason`].
//!
//! Two checks, on purpose. The handshake accepts a client certificate chaining to *any*
//! partner's CA (rustls checks one root set per config); [`identify_peer`] then finds the
//! partner the certificate names and checks that **that partner's** CA issued it, so
//! partner B's CA cannot speak for partner A. A partner with `allow_any_ca = true` accepts
//! any configured partner CA instead, and [`LinkTls::load`] refuses two partners that share
//! a CA unless both say `allow_any_ca = true`.
//!
//! Revocation: CRLs apply to the certificates their issuer signed; certificates of a CA
//! with no configured CRL are not revocation-checked; a CRL past its nextUpdate fails
//! closed (every certificate of that issuer is refused until a fresh CRL is loaded).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, VerifierBuilderError, WebPkiClientVerifier};
use rustls::{CertificateError, RootCertStore};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;

use crate::ids::SiteId;

/// The ALPN protocol id of links (DESIGN.md, wire protocol).
pub const ALPN: &[u8] = b"passerelle/1";

/// Most DNS names a [`PeerRefusal::UnknownPeer`] keeps, so a certificate with thousands
/// of names cannot flood logs and the journal.
pub const REFUSAL_MAX_NAMES: usize = 8;

/// Installs ring as the process-wide rustls provider. Idempotent.
///
/// Configs built here never use the process default (they carry their own provider);
/// this is for any other rustls user in the process (e.g. the HTTPS listener).
pub fn install_crypto_provider() {
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        // Already installed: by an earlier call (the usual case), or by a dependency.
        tracing::debug!("a rustls crypto provider was already installed");
    }
}

/// The crypto provider every config of this module uses: ring, TLS 1.3 suites.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The `[tls]` section, validated: paths of our own certificate material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Our certificate chain, PEM, leaf first (the leaf alone for a CA-issued leaf).
    pub cert: PathBuf,
    /// Our private key, PEM (PKCS#8, SEC1 or PKCS#1). Secret: should be mode 0600.
    pub key: PathBuf,
    /// Our own CA bundle, PEM. [`LinkTls::load`] checks that our certificate chains to it
    /// (with both usages, for our site id) so a mismatch shows at start, not at the first
    /// handshake. Peers are trusted only through [`PartnerTrust::ca`]; the config may
    /// point a partner's `ca` at this same file.
    pub ca: PathBuf,
    /// CRLs, PEM (`X509 CRL`), each issued by our CA or a partner's CA.
    pub crl: Vec<PathBuf>,
}

/// One `[[partner]]`, as far as TLS is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerTrust {
    /// The partner's site id: the DNS name its certificate must carry.
    pub id: SiteId,
    /// The CA (PEM, one or more certificates) that may speak for this partner.
    pub ca: PathBuf,
    /// Accept a certificate for this partner from any configured partner's CA, not only
    /// its own. Required on each partner of a CA shared between partners.
    pub allow_any_ca: bool,
}

/// Why [`LinkTls::load`] failed. Every variant about a file names it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file is (certificate, private key, CA bundle, CRL, partner CA).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file is not valid PEM, or holds none of what it should.
    #[error("{what} {path}: {source}")]
    Pem {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM error (`NoItemsFound` when the file holds no item of the right kind).
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate cannot be parsed as X.509.
    #[error("{what} {path}: certificate cannot be parsed: {source}")]
    BadCertificate {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: X509Error,
    },
    /// A CA certificate is not usable as a trust anchor.
    #[error("{what} {path}: not usable as a trust anchor: {source}")]
    BadCa {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// rustls's error.
        #[source]
        source: Box<rustls::Error>,
    },
    /// A CRL cannot be parsed as X.509.
    #[error("CRL {path} cannot be parsed: {source}")]
    CrlParse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: X509Error,
    },
    /// A CRL webpki refuses.
    #[error("CRL {path}: {source}")]
    BadCrl {
        /// The file.
        path: PathBuf,
        /// rustls's error.
        #[source]
        source: VerifierBuilderError,
    },
    /// A CRL issued by no configured CA: it would silently never apply.
    #[error("CRL {path} was issued by none of the configured CAs (ours or a partner's)")]
    CrlIssuerUnknown {
        /// The file.
        path: PathBuf,
    },
    /// The key does not match the certificate, or is unusable.
    #[error("private key {key} does not match certificate {cert} or is unusable: {source}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's error.
        #[source]
        source: Box<rustls::Error>,
    },
    /// Our certificate does not verify: wrong CA, not for our site id, missing a usage,
    /// expired, not yet valid or revoked.
    #[error(
        "certificate {cert} is not valid for site {site} as a server and a client \
         under CA bundle {ca}: {source}"
    )]
    OwnCertificate {
        /// Our certificate file.
        cert: PathBuf,
        /// Our CA bundle.
        ca: PathBuf,
        /// Our site id.
        site: SiteId,
        /// rustls's verdict.
        #[source]
        source: Box<rustls::Error>,
    },
    /// The same partner twice.
    #[error("partner {partner} is listed twice")]
    DuplicatePartner {
        /// The partner.
        partner: SiteId,
    },
    /// Two partners trust the same CA without both opting in.
    #[error(
        "partners {first} and {second} share a CA (in {ca}): set allow_any_ca = true on \
         both, or give each its own CA"
    )]
    SharedCa {
        /// One partner.
        first: SiteId,
        /// The other.
        second: SiteId,
        /// The file of `second` holding the shared CA.
        ca: PathBuf,
    },
    /// No partner: links would have nobody to trust, so there is nothing to accept.
    #[error("no partner configured: links have nobody to trust")]
    NoPartners,
    /// A partner id rustls does not take as a server name (cannot happen for a valid
    /// [`SiteId`]; kept rather than unwrapped).
    #[error("partner {partner} is not a valid TLS server name")]
    BadServerName {
        /// The partner.
        partner: SiteId,
    },
    /// Building a certificate verifier failed.
    #[error("building the certificate verifier: {source}")]
    Verifier {
        /// rustls's error.
        #[source]
        source: VerifierBuilderError,
    },
    /// rustls refused a TLS-1.3-only config (cannot happen with ring).
    #[error("TLS 1.3 configuration refused: {source}")]
    Protocol {
        /// rustls's error.
        #[source]
        source: Box<rustls::Error>,
    },
    /// quinn refused the config (cannot happen with ring, which has the QUIC initial suite).
    #[error("QUIC refused the TLS configuration: {source}")]
    Quic {
        /// quinn's error.
        #[source]
        source: quinn::crypto::rustls::NoInitialCipherSuite,
    },
}

/// A certificate's journal and metrics facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-256 of the DER certificate, lower-case hex (64 characters).
    pub sha256: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

impl CertInfo {
    /// Parses `cert` for its fingerprint and notAfter.
    pub fn of(cert: &CertificateDer<'_>) -> Result<CertInfo, X509Error> {
        let parsed = parse_certificate(cert)?;
        Ok(CertInfo {
            sha256: sha256_hex(cert),
            not_after: parsed.validity().not_after.timestamp(),
        })
    }
}

/// One value of `passerelle_tls_cert_expiry_timestamp_seconds{cert}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExpiry {
    /// The `cert` label: `site` (our certificate), `ca` (our CA bundle), or
    /// `partner_ca:<site id>`. A bundle reports its earliest notAfter.
    pub cert: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// A loaded CRL, for a `nextUpdate` metric: a stale CRL refuses its issuer's certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// The file.
    pub path: PathBuf,
    /// nextUpdate, Unix seconds (`None` if the CRL has none).
    pub next_update: Option<i64>,
}

/// Everything links need from TLS, built once by [`LinkTls::load`]. See the module doc
/// for how to drive it.
pub struct LinkTls {
    site: SiteId,
    server: Arc<rustls::ServerConfig>,
    quic_server: Arc<QuicServerConfig>,
    clients: BTreeMap<SiteId, ClientConfigs>,
    trust: PeerTrust,
    own: CertInfo,
    expiries: Vec<CertExpiry>,
    crls: Vec<CrlInfo>,
}

struct ClientConfigs {
    rustls: Arc<rustls::ClientConfig>,
    quic: Arc<QuicClientConfig>,
}

impl fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkTls")
            .field("site", &self.site)
            .field("own", &self.own)
            .field("partners", &self.clients.keys().collect::<Vec<_>>())
            .field("expiries", &self.expiries)
            .field("crls", &self.crls)
            .finish_non_exhaustive()
    }
}

impl LinkTls {
    /// Reads every file once and builds the server config, one client config per partner
    /// and the [`PeerTrust`]. Checks that our certificate matches our key and verifies
    /// under `settings.ca` for `site` as both server and client, now.
    pub fn load(
        site: &SiteId,
        settings: &TlsSettings,
        partners: &[PartnerTrust],
    ) -> Result<LinkTls, TlsError> {
        let provider = provider();
        let now = UnixTime::now();

        let chain = read_certificates("certificate", &settings.cert)?;
        let key = read_key(&settings.key)?;
        // read_certificates never returns an empty chain.
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(TlsError::Pem {
                what: "certificate",
                path: settings.cert.clone(),
                source: rustls::pki_types::pem::Error::NoItemsFound,
            });
        };
        let own = CertInfo::of(leaf).map_err(|source| TlsError::BadCertificate {
            what: "certificate",
            path: settings.cert.clone(),
            source,
        })?;

        let own_ca = CaFile::read("CA bundle", &settings.ca)?;
        let crl_files = settings
            .crl
            .iter()
            .map(|path| read_crls(path, &own_ca.roots))
            .collect::<Result<Vec<_>, _>>()?;
        let crls: Vec<_> = crl_files
            .iter()
            .flat_map(|file| file.crls.iter().cloned())
            .collect();

        if partners.is_empty() {
            return Err(TlsError::NoPartners);
        }
        let mut partner_cas: BTreeMap<SiteId, (CaFile, bool)> = BTreeMap::new();
        for partner in partners {
            if partner_cas.contains_key(&partner.id) {
                return Err(TlsError::DuplicatePartner {
                    partner: partner.id.clone(),
                });
            }
            let ca = CaFile::read("partner CA", &partner.ca)?;
            for (other, (other_ca, other_any)) in &partner_cas {
                if ca.shares_key_with(other_ca) && !(partner.allow_any_ca && *other_any) {
                    return Err(TlsError::SharedCa {
                        first: other.clone(),
                        second: partner.id.clone(),
                        ca: partner.ca.clone(),
                    });
                }
            }
            partner_cas.insert(partner.id.clone(), (ca, partner.allow_any_ca));
        }

        // A CRL must come from a CA we know, or it silently never applies.
        for file in &crl_files {
            for issuer in &file.issuers {
                let known = own_ca.has_subject(issuer)
                    || partner_cas.values().any(|(ca, _)| ca.has_subject(issuer));
                if !known {
                    return Err(TlsError::CrlIssuerUnknown {
                        path: file.info.path.clone(),
                    });
                }
            }
        }

        // Our own certificate: right key, right CA, right name, both usages, not revoked.
        let own_roots = Arc::new(own_ca.roots.clone());
        let server_name = server_name_of(site)?;
        let own_as_server = server_verifier(own_roots.clone(), &crls, &provider)?;
        let own_as_client = client_verifier(own_roots, &crls, &provider)?;
        let own_check = own_as_server
            .verify_server_cert(leaf, intermediates, &server_name, &[], now)
            .and_then(|_| own_as_client.verify_client_cert(leaf, intermediates, now));
        if let Err(source) = own_check {
            return Err(TlsError::OwnCertificate {
                cert: settings.cert.clone(),
                ca: settings.ca.clone(),
                site: site.clone(),
                source: Box::new(source),
            });
        }

        let mut union = RootCertStore::empty();
        for (ca, _) in partner_cas.values() {
            union.roots.extend(ca.roots.roots.iter().cloned());
        }
        let union = Arc::new(union);

        let mut trust = BTreeMap::new();
        let mut clients = BTreeMap::new();
        for (id, (ca, allow_any_ca)) in &partner_cas {
            let roots = if *allow_any_ca {
                union.clone()
            } else {
                Arc::new(ca.roots.clone())
            };
            let as_server = server_verifier(roots.clone(), &crls, &provider)?;
            let as_client = client_verifier(roots, &crls, &provider)?;
            let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|source| TlsError::Protocol {
                    source: Box::new(source),
                })?
                .with_webpki_verifier(as_server.clone())
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|source| TlsError::KeyMismatch {
                    cert: settings.cert.clone(),
                    key: settings.key.clone(),
                    source: Box::new(source),
                })?;
            client.alpn_protocols = vec![ALPN.to_vec()];
            client.resumption = Resumption::disabled();
            client.enable_early_data = false;
            let client = Arc::new(client);
            let quic = QuicClientConfig::try_from(client.clone())
                .map_err(|source| TlsError::Quic { source })?;
            clients.insert(
                id.clone(),
                ClientConfigs {
                    rustls: client,
                    quic: Arc::new(quic),
                },
            );
            trust.insert(
                id.clone(),
                PartnerVerifiers {
                    server_name: server_name_of(id)?,
                    as_server,
                    as_client,
                },
            );
        }

        let handshake_verifier = client_verifier(union, &crls, &provider)?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| TlsError::Protocol {
                source: Box::new(source),
            })?
            .with_client_cert_verifier(handshake_verifier)
            .with_single_cert(chain.clone(), key)
            .map_err(|source| TlsError::KeyMismatch {
                cert: settings.cert.clone(),
                key: settings.key.clone(),
                source: Box::new(source),
            })?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        // No resumption: every link authenticates in full, so a revoked or removed
        // partner cannot ride an old session.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        // No 0-RTT: replayable data has no place on links (quinn accepts 0 or u32::MAX).
        server.max_early_data_size = 0;
        let server = Arc::new(server);
        let quic_server = Arc::new(
            QuicServerConfig::try_from(server.clone())
                .map_err(|source| TlsError::Quic { source })?,
        );

        let mut expiries = vec![
            CertExpiry {
                cert: "site".to_owned(),
                not_after: own.not_after,
            },
            CertExpiry {
                cert: "ca".to_owned(),
                not_after: own_ca.not_after,
            },
        ];
        for (id, (ca, _)) in &partner_cas {
            expiries.push(CertExpiry {
                cert: format!("partner_ca:{id}", id = id.as_str()),
                not_after: ca.not_after,
            });
        }

        Ok(LinkTls {
            site: site.clone(),
            server,
            quic_server,
            clients,
            trust: PeerTrust {
                partners: Arc::new(trust),
            },
            own,
            expiries,
            crls: crl_files.into_iter().map(|file| file.info).collect(),
        })
    }

    /// Our site id, as checked against our certificate.
    pub fn site(&self) -> &SiteId {
        &self.site
    }

    /// The crypto config for `quinn::ServerConfig::with_crypto`.
    pub fn server_config(&self) -> Arc<QuicServerConfig> {
        self.quic_server.clone()
    }

    /// The crypto config for `quinn::ClientConfig::new` to dial `partner`, or `None` for a
    /// site that is not a partner. Connect with server name `partner.as_str()`.
    pub fn client_config(&self, partner: &SiteId) -> Option<Arc<QuicClientConfig>> {
        self.clients.get(partner).map(|c| c.quic.clone())
    }

    /// The underlying rustls server config (what [`Self::server_config`] wraps).
    pub fn rustls_server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// The underlying rustls client config for `partner`.
    pub fn rustls_client_config(&self, partner: &SiteId) -> Option<Arc<rustls::ClientConfig>> {
        self.clients.get(partner).map(|c| c.rustls.clone())
    }

    /// The partner trust for [`identify_peer`] (cheap to clone; keep it per link).
    pub fn peer_trust(&self) -> &PeerTrust {
        &self.trust
    }

    /// Our certificate's fingerprint and notAfter.
    pub fn own_certificate(&self) -> &CertInfo {
        &self.own
    }

    /// Values for `passerelle_tls_cert_expiry_timestamp_seconds{cert}`.
    pub fn expiries(&self) -> &[CertExpiry] {
        &self.expiries
    }

    /// The CRLs loaded, with their nextUpdate.
    pub fn crls(&self) -> &[CrlInfo] {
        &self.crls
    }
}

/// Which partner CAs may speak for which partner: the second check of the module doc.
#[derive(Clone)]
pub struct PeerTrust {
    partners: Arc<BTreeMap<SiteId, PartnerVerifiers>>,
}

struct PartnerVerifiers {
    server_name: ServerName<'static>,
    /// Checks a peer we dialled (serverAuth usage, name).
    as_server: Arc<WebPkiServerVerifier>,
    /// Checks a peer that dialled us (clientAuth usage).
    as_client: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for PeerTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTrust")
            .field("partners", &self.partners.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PeerTrust {
    /// The configured partners.
    pub fn partners(&self) -> impl Iterator<Item = &SiteId> {
        self.partners.keys()
    }
}

/// Who opened the link, which decides the usage the peer's certificate must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer dialled us: it is the TLS client (clientAuth).
    Inbound,
    /// We dialled the peer: it is the TLS server (serverAuth).
    Outbound,
}

/// A peer identified by [`identify_peer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The partner.
    pub site: SiteId,
    /// Its certificate's fingerprint and notAfter, for the journal and for closing the
    /// link at expiry.
    pub certificate: CertInfo,
}

/// Why a peer was refused after the handshake. Each maps to a [`CloseCode`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerRefusal {
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The negotiated application protocol is not [`ALPN`].
    #[error("the peer did not negotiate ALPN passerelle/1")]
    WrongProtocol,
    /// The leaf certificate cannot be parsed.
    #[error("the peer's certificate cannot be parsed: {source}")]
    BadCertificate {
        /// The parser's error.
        #[source]
        source: X509Error,
    },
    /// The leaf carries no DNS subjectAltName.
    #[error("the peer's certificate carries no DNS name")]
    NoDnsName,
    /// No DNS name of the leaf is a configured partner.
    #[error("the peer's certificate names no configured partner: {names:?}")]
    UnknownPeer {
        /// The leaf's DNS names (at most [`REFUSAL_MAX_NAMES`]).
        names: Vec<String>,
    },
    /// The leaf names more than one configured partner.
    #[error("the peer's certificate names several partners: {partners:?}")]
    AmbiguousPeer {
        /// The partners named.
        partners: Vec<SiteId>,
    },
    /// The leaf names `partner` but does not chain to a CA that may speak for it.
    #[error("the peer's certificate for {partner} was not issued by a CA trusted for it")]
    WrongCa {
        /// The partner the certificate names.
        partner: SiteId,
    },
    /// The certificate is revoked by a configured CRL.
    #[error("the peer's certificate for {partner} is revoked")]
    Revoked {
        /// The partner.
        partner: SiteId,
    },
    /// The certificate has expired.
    #[error("the peer's certificate for {partner} has expired")]
    Expired {
        /// The partner.
        partner: SiteId,
    },
    /// The certificate is not valid yet.
    #[error("the peer's certificate for {partner} is not valid yet")]
    NotYetValid {
        /// The partner.
        partner: SiteId,
    },
    /// The certificate lacks the usage its role needs (clientAuth inbound, serverAuth
    /// outbound).
    #[error("the peer's certificate for {partner} lacks the extended key usage for its role")]
    WrongUsage {
        /// The partner.
        partner: SiteId,
    },
    /// The issuer's CRL has expired (nextUpdate passed): revocation cannot be checked.
    #[error("revocation of the peer's certificate for {partner} cannot be checked (stale CRL)")]
    RevocationUnknown {
        /// The partner.
        partner: SiteId,
    },
    /// Any other verification failure.
    #[error("the peer's certificate for {partner} was rejected: {source}")]
    CertificateRejected {
        /// The partner.
        partner: SiteId,
        /// rustls's verdict.
        #[source]
        source: rustls::Error,
    },
}

impl PeerRefusal {
    /// The QUIC application close code for this refusal.
    pub fn close_code(&self) -> CloseCode {
        match self {
            PeerRefusal::NoCertificate => CloseCode::NoCertificate,
            PeerRefusal::WrongProtocol => CloseCode::WrongProtocol,
            PeerRefusal::BadCertificate { .. } => CloseCode::BadCertificate,
            PeerRefusal::NoDnsName => CloseCode::NoDnsName,
            PeerRefusal::UnknownPeer { .. } => CloseCode::UnknownPeer,
            PeerRefusal::AmbiguousPeer { .. } => CloseCode::AmbiguousPeer,
            PeerRefusal::WrongCa { .. } => CloseCode::WrongCa,
            PeerRefusal::Revoked { .. } => CloseCode::Revoked,
            PeerRefusal::Expired { .. } => CloseCode::Expired,
            PeerRefusal::NotYetValid { .. } => CloseCode::NotYetValid,
            PeerRefusal::WrongUsage { .. } => CloseCode::WrongUsage,
            PeerRefusal::RevocationUnknown { .. } => CloseCode::RevocationUnknown,
            PeerRefusal::CertificateRejected { .. } => CloseCode::CertificateRejected,
        }
    }

    /// The snake_case reason, for `passerelle_access_denied_total{reason}` and the journal.
    pub fn reason(&self) -> &'static str {
        self.close_code().reason()
    }

    /// The partner the certificate named, when the refusal is about one.
    pub fn partner(&self) -> Option<&SiteId> {
        match self {
            PeerRefusal::WrongCa { partner }
            | PeerRefusal::Revoked { partner }
            | PeerRefusal::Expired { partner }
            | PeerRefusal::NotYetValid { partner }
            | PeerRefusal::WrongUsage { partner }
            | PeerRefusal::RevocationUnknown { partner }
            | PeerRefusal::CertificateRejected { partner, .. } => Some(partner),
            PeerRefusal::NoCertificate
            | PeerRefusal::WrongProtocol
            | PeerRefusal::BadCertificate { .. }
            | PeerRefusal::NoDnsName
            | PeerRefusal::UnknownPeer { .. }
            | PeerRefusal::AmbiguousPeer { .. } => None,
        }
    }
}

/// QUIC application close codes for identity refusals (range `0x0100..=0x01ff`, kept for
/// identity; the link module's other codes live outside it). Stable: peers and scripts
/// read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// [`PeerRefusal::NoCertificate`].
    NoCertificate = 0x0100,
    /// [`PeerRefusal::WrongProtocol`].
    WrongProtocol = 0x0101,
    /// [`PeerRefusal::BadCertificate`].
    BadCertificate = 0x0102,
    /// [`PeerRefusal::NoDnsName`].
    NoDnsName = 0x0103,
    /// [`PeerRefusal::UnknownPeer`].
    UnknownPeer = 0x0104,
    /// [`PeerRefusal::AmbiguousPeer`].
    AmbiguousPeer = 0x0105,
    /// [`PeerRefusal::WrongCa`].
    WrongCa = 0x0106,
    /// [`PeerRefusal::Revoked`].
    Revoked = 0x0107,
    /// [`PeerRefusal::Expired`].
    Expired = 0x0108,
    /// [`PeerRefusal::NotYetValid`].
    NotYetValid = 0x0109,
    /// [`PeerRefusal::WrongUsage`].
    WrongUsage = 0x010a,
    /// [`PeerRefusal::RevocationUnknown`].
    RevocationUnknown = 0x010b,
    /// [`PeerRefusal::CertificateRejected`].
    CertificateRejected = 0x010c,
}

impl CloseCode {
    /// Every code, in numeric order.
    pub const ALL: [CloseCode; 13] = [
        CloseCode::NoCertificate,
        CloseCode::WrongProtocol,
        CloseCode::BadCertificate,
        CloseCode::NoDnsName,
        CloseCode::UnknownPeer,
        CloseCode::AmbiguousPeer,
        CloseCode::WrongCa,
        CloseCode::Revoked,
        CloseCode::Expired,
        CloseCode::NotYetValid,
        CloseCode::WrongUsage,
        CloseCode::RevocationUnknown,
        CloseCode::CertificateRejected,
    ];

    /// The numeric code.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The code as a QUIC varint, for `Connection::close`.
    pub fn var_int(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self.code())
    }

    /// The code for a number, if it is one of ours.
    pub fn from_code(code: u64) -> Option<CloseCode> {
        CloseCode::ALL
            .into_iter()
            .find(|c| u64::from(c.code()) == code)
    }

    /// The snake_case reason, also sent as the close reason bytes.
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::NoCertificate => "no_certificate",
            CloseCode::WrongProtocol => "wrong_protocol",
            CloseCode::BadCertificate => "bad_certificate",
            CloseCode::NoDnsName => "no_dns_name",
            CloseCode::UnknownPeer => "unknown_peer",
            CloseCode::AmbiguousPeer => "ambiguous_peer",
            CloseCode::WrongCa => "wrong_ca",
            CloseCode::Revoked => "revoked",
            CloseCode::Expired => "expired",
            CloseCode::NotYetValid => "not_yet_valid",
            CloseCode::WrongUsage => "wrong_usage",
            CloseCode::RevocationUnknown => "revocation_unknown",
            CloseCode::CertificateRejected => "certificate_rejected",
        }
    }
}

/// Identifies the peer of an established QUIC connection: checks the negotiated ALPN,
/// then [`identify_peer`] on its certificate chain.
pub fn identify_connection(
    connection: &quinn::Connection,
    trust: &PeerTrust,
    direction: Direction,
    now: UnixTime,
) -> Result<PeerIdentity, PeerRefusal> {
    if negotiated_alpn(connection).as_deref() != Some(ALPN) {
        return Err(PeerRefusal::WrongProtocol);
    }
    identify_peer(&peer_certificates(connection), trust, direction, now)
}

/// The peer's certificate chain (leaf first), empty if it sent none.
pub fn peer_certificates(connection: &quinn::Connection) -> Vec<CertificateDer<'static>> {
    connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|certs| *certs)
        .unwrap_or_default()
}

/// The ALPN protocol negotiated on `connection`.
pub fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<HandshakeData>()
        .ok()?
        .protocol
}

/// Who the peer presenting `certs` (leaf first) is, at `now`.
///
/// Finds the configured partner among the leaf's DNS subjectAltNames (never the CN), then
/// verifies the chain against the CAs that may speak for **that** partner, with the usage
/// its `direction` needs and the configured CRLs. Also the re-check of a live link at a
/// reload (pass the new trust) and at the certificate's expiry.
pub fn identify_peer(
    certs: &[CertificateDer<'_>],
    trust: &PeerTrust,
    direction: Direction,
    now: UnixTime,
) -> Result<PeerIdentity, PeerRefusal> {
    let (leaf, intermediates) = certs.split_first().ok_or(PeerRefusal::NoCertificate)?;
    let parsed =
        parse_certificate(leaf).map_err(|source| PeerRefusal::BadCertificate { source })?;
    let names = dns_names(&parsed).map_err(|source| PeerRefusal::BadCertificate { source })?;
    if names.is_empty() {
        return Err(PeerRefusal::NoDnsName);
    }
    let mut named: Vec<(&SiteId, &PartnerVerifiers)> = Vec::new();
    for name in &names {
        // DNS names compare case-insensitively (RFC 4343); a wildcard never parses as a
        // SiteId, so it never identifies a site.
        let Ok(id) = name.to_ascii_lowercase().parse::<SiteId>() else {
            continue;
        };
        if let Some((id, verifiers)) = trust.partners.get_key_value(&id)
            && !named.iter().any(|(known, _)| *known == id)
        {
            named.push((id, verifiers));
        }
    }
    let (partner, verifiers) = match named.as_slice() {
        [] => {
            return Err(PeerRefusal::UnknownPeer {
                names: names.into_iter().take(REFUSAL_MAX_NAMES).collect(),
            });
        }
        [one] => *one,
        several => {
            return Err(PeerRefusal::AmbiguousPeer {
                partners: several.iter().map(|(id, _)| (*id).clone()).collect(),
            });
        }
    };
    let verdict = match direction {
        Direction::Inbound => verifiers
            .as_client
            .verify_client_cert(leaf, intermediates, now)
            .map(|_| ()),
        Direction::Outbound => verifiers
            .as_server
            .verify_server_cert(leaf, intermediates, &verifiers.server_name, &[], now)
            .map(|_| ()),
    };
    verdict.map_err(|error| refusal(partner.clone(), error))?;
    Ok(PeerIdentity {
        site: partner.clone(),
        certificate: CertInfo {
            sha256: sha256_hex(leaf),
            not_after: parsed.validity().not_after.timestamp(),
        },
    })
}

/// SHA-256 of `der`, lower-case hex.
pub fn sha256_hex(der: &[u8]) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(der);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn refusal(partner: SiteId, error: rustls::Error) -> PeerRefusal {
    use CertificateError as E;
    let rustls::Error::InvalidCertificate(certificate_error) = &error else {
        return PeerRefusal::CertificateRejected {
            partner,
            source: error,
        };
    };
    match certificate_error {
        // Not signed by a CA trusted for this partner (BadSignature: a CA with the same
        // name but another key).
        E::UnknownIssuer | E::BadSignature => PeerRefusal::WrongCa { partner },
        E::Revoked => PeerRefusal::Revoked { partner },
        E::Expired | E::ExpiredContext { .. } => PeerRefusal::Expired { partner },
        E::NotValidYet | E::NotValidYetContext { .. } => PeerRefusal::NotYetValid { partner },
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => PeerRefusal::WrongUsage { partner },
        E::UnknownRevocationStatus
        | E::ExpiredRevocationList
        | E::ExpiredRevocationListContext { .. } => PeerRefusal::RevocationUnknown { partner },
        _ => PeerRefusal::CertificateRejected {
            partner,
            source: error,
        },
    }
}

fn dns_names(cert: &X509Certificate<'_>) -> Result<Vec<String>, X509Error> {
    let Some(san) = cert.subject_alternative_name()? else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
        .collect())
}

fn parse_certificate<'a>(der: &'a [u8]) -> Result<X509Certificate<'a>, X509Error> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => Ok(cert),
        Err(x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e)) => Err(e),
        Err(x509_parser::nom::Err::Incomplete(_)) => Err(X509Error::InvalidCertificate),
    }
}

fn server_name_of(site: &SiteId) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(site.as_str().to_owned()).map_err(|_| TlsError::BadServerName {
        partner: site.clone(),
    })
}

/// Verifier of client certificates (peers that dial us).
fn client_verifier(
    roots: Arc<RootCertStore>,
    crls: &[CertificateRevocationListDer<'static>],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    // No root hints: the CertificateRequest would otherwise list every partner's CA to
    // anyone who connects.
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .clear_root_hint_subjects();
    if !crls.is_empty() {
        builder = builder
            .with_crls(crls.iter().cloned())
            .allow_unknown_revocation_status()
            .enforce_revocation_expiration();
    }
    builder
        .build()
        .map_err(|source| TlsError::Verifier { source })
}

/// Verifier of server certificates (peers we dial).
fn server_verifier(
    roots: Arc<RootCertStore>,
    crls: &[CertificateRevocationListDer<'static>],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut builder = WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
    if !crls.is_empty() {
        // Certificates of a CA without a configured CRL stay unchecked ("unknown" is
        // allowed); a CRL past its nextUpdate fails closed.
        builder = builder
            .with_crls(crls.iter().cloned())
            .allow_unknown_revocation_status()
            .enforce_revocation_expiration();
    }
    builder
        .build()
        .map_err(|source| TlsError::Verifier { source })
}

/// One CA file: its trust anchors plus what [`LinkTls::load`] compares and reports.
struct CaFile {
    roots: RootCertStore,
    /// Raw subject names (DER, with the SEQUENCE header) of its certificates.
    subjects: Vec<Vec<u8>>,
    /// Raw SubjectPublicKeyInfo of its certificates.
    keys: Vec<Vec<u8>>,
    /// Earliest notAfter, Unix seconds.
    not_after: i64,
}

impl CaFile {
    fn read(what: &'static str, path: &Path) -> Result<CaFile, TlsError> {
        let certs = read_certificates(what, path)?;
        let mut roots = RootCertStore::empty();
        let mut subjects = Vec::with_capacity(certs.len());
        let mut keys = Vec::with_capacity(certs.len());
        let mut not_after = i64::MAX;
        for cert in certs {
            let parsed = parse_certificate(&cert).map_err(|source| TlsError::BadCertificate {
                what,
                path: path.to_owned(),
                source,
            })?;
            subjects.push(parsed.subject().as_raw().to_vec());
            keys.push(parsed.public_key().raw.to_vec());
            not_after = not_after.min(parsed.validity().not_after.timestamp());
            roots.add(cert).map_err(|source| TlsError::BadCa {
                what,
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        }
        Ok(CaFile {
            roots,
            subjects,
            keys,
            not_after,
        })
    }

    /// Same key = same CA, whatever its certificate (a re-issued CA certificate keeps it).
    fn shares_key_with(&self, other: &CaFile) -> bool {
        self.keys.iter().any(|key| other.keys.contains(key))
    }

    fn has_subject(&self, subject: &[u8]) -> bool {
        self.subjects.iter().any(|s| s == subject)
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// All certificates of a PEM file; at least one.
fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let bytes = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(pem_error(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file("private key", path)?;
    warn_if_readable_by_others(path);
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| TlsError::Pem {
        what: "private key",
        path: path.to_owned(),
        source,
    })
}

/// The package installs secrets `root:passerelle 0640` (the service reads them through
/// its group, and cannot rewrite them): only a key others may read is a mistake.
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o007 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", metadata.permissions().mode() & 0o777),
            "private key is readable by others; chmod 640 (root:passerelle) or 600 it"
        );
    }
}

/// The CRLs of one PEM file.
struct CrlFile {
    crls: Vec<CertificateRevocationListDer<'static>>,
    /// Raw issuer names (DER, with the SEQUENCE header), one per CRL.
    issuers: Vec<Vec<u8>>,
    info: CrlInfo,
}

/// Reads the CRLs of a PEM file (at least one). `probe_roots` (any non-empty root store)
/// lets webpki parse them now, so a CRL it refuses is reported with its file name rather
/// than at the final verifier build.
fn read_crls(path: &Path, probe_roots: &RootCertStore) -> Result<CrlFile, TlsError> {
    let pem_error = |source| TlsError::Pem {
        what: "CRL",
        path: path.to_owned(),
        source,
    };
    let bytes = read_file("CRL", path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if crls.is_empty() {
        return Err(pem_error(rustls::pki_types::pem::Error::NoItemsFound));
    }
    let mut issuers = Vec::with_capacity(crls.len());
    let mut next_update: Option<i64> = None;
    for crl in &crls {
        let parsed = match x509_parser::parse_x509_crl(crl) {
            Ok((_, parsed)) => parsed,
            Err(x509_parser::nom::Err::Error(source) | x509_parser::nom::Err::Failure(source)) => {
                return Err(TlsError::CrlParse {
                    path: path.to_owned(),
                    source,
                });
            }
            Err(x509_parser::nom::Err::Incomplete(_)) => {
                return Err(TlsError::CrlParse {
                    path: path.to_owned(),
                    source: X509Error::InvalidCertificate,
                });
            }
        };
        issuers.push(parsed.issuer().as_raw().to_vec());
        if let Some(next) = parsed.next_update() {
            let next = next.timestamp();
            next_update = Some(next_update.map_or(next, |n| n.min(next)));
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(probe_roots.clone()), provider())
        .with_crls(crls.iter().cloned())
        .build()
        .map_err(|source| TlsError::BadCrl {
            path: path.to_owned(),
            source,
        })?;
    Ok(CrlFile {
        crls,
        issuers,
        info: CrlInfo {
            path: path.to_owned(),
            next_update,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use jiff::{SignedDuration, Timestamp};
    use quinn::{ConnectionError, Endpoint, TransportErrorCode};
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};
    use rustls::pki_types::ServerName;

    use super::*;
    use crate::pki::{self, CaPem, SitePem, Validity};

    /// Every test finishes well within this, or fails.
    const LIMIT: Duration = Duration::from_secs(20);

    // TLS alert numbers (RFC 8446 §6), as QUIC carries them: CRYPTO_ERROR 0x100 + alert.
    const ALERT_BAD_CERTIFICATE: u8 = 42;
    const ALERT_CERTIFICATE_REVOKED: u8 = 44;
    const ALERT_UNKNOWN_CA: u8 = 48;
    const ALERT_CERTIFICATE_REQUIRED: u8 = 116;
    const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;

    const CSU: &str = "csu.metz.example";
    const SNCF: &str = "sncf.metz.example";
    const CCOR: &str = "ccor.metz.example";

    async fn bounded<F: Future>(future: F) -> F::Output {
        tokio::time::timeout(LIMIT, future)
            .await
            .expect("test exceeded its time bound")
    }

    fn id(s: &str) -> SiteId {
        s.parse().unwrap()
    }

    fn year() -> Validity {
        Validity::days_from(Timestamp::now(), 365).unwrap()
    }

    fn unix(ts: Timestamp) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(ts.as_second().try_into().unwrap()))
    }

    struct Ca {
        pem: CaPem,
        path: PathBuf,
    }

    /// Certificates and keys on disk, as `LinkTls::load` reads them.
    struct Fixture {
        dir: tempfile::TempDir,
        files: AtomicUsize,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
                files: AtomicUsize::new(0),
            }
        }

        fn write(&self, stem: &str, ext: &str, contents: &str) -> PathBuf {
            let n = self.files.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.path().join(format!("{stem}-{n}.{ext}"));
            std::fs::write(&path, contents).unwrap();
            path
        }

        fn ca(&self, name: &str) -> Ca {
            let pem = pki::generate_ca(name, Validity::days_from(Timestamp::now(), 3650).unwrap())
                .unwrap();
            let path = self.write(name, "pem", &pem.cert_pem);
            Ca { pem, path }
        }

        /// Settings for a site whose certificate is `issued` by `ca`.
        fn settings_for(&self, ca: &Ca, issued: &SitePem) -> TlsSettings {
            TlsSettings {
                cert: self.write("site", "pem", &issued.cert_pem),
                key: self.write("site", "key", &issued.key_pem),
                ca: ca.path.clone(),
                crl: Vec::new(),
            }
        }

        /// Settings for `site` with a certificate from `ca`.
        fn settings(&self, ca: &Ca, site: &str) -> TlsSettings {
            let issued = pki::issue_pem(&ca.pem, &id(site), year()).unwrap();
            self.settings_for(ca, &issued)
        }

        fn crl(&self, ca: &Ca, serials: &[pki::Serial], validity: Validity) -> PathBuf {
            self.write(
                "revoked",
                "crl",
                &pki::revoke(&ca.pem, serials, validity).unwrap(),
            )
        }
    }

    fn partner(site: &str, ca: &Ca) -> PartnerTrust {
        PartnerTrust {
            id: id(site),
            ca: ca.path.clone(),
            allow_any_ca: false,
        }
    }

    fn any_ca(mut partner: PartnerTrust) -> PartnerTrust {
        partner.allow_any_ca = true;
        partner
    }

    /// The CSU side of most tests: partners SNCF (its CA) and CCOR (its CA).
    struct Metz {
        fx: Fixture,
        csu: Ca,
        sncf: Ca,
        ccor: Ca,
    }

    impl Metz {
        fn new() -> Metz {
            let fx = Fixture::new();
            Metz {
                csu: fx.ca("csu"),
                sncf: fx.ca("sncf"),
                ccor: fx.ca("ccor"),
                fx,
            }
        }

        fn csu_partners(&self) -> Vec<PartnerTrust> {
            vec![partner(SNCF, &self.sncf), partner(CCOR, &self.ccor)]
        }

        fn csu_tls(&self, partners: &[PartnerTrust]) -> LinkTls {
            LinkTls::load(&id(CSU), &self.fx.settings(&self.csu, CSU), partners).unwrap()
        }

        /// A dialling site `site` holding `settings`, trusting the CSU through its CA.
        fn dialler(&self, site: &str, settings: &TlsSettings) -> LinkTls {
            LinkTls::load(&id(site), settings, &[partner(CSU, &self.csu)]).unwrap()
        }
    }

    struct Handshake {
        server: Result<quinn::Connection, ConnectionError>,
        client: Result<quinn::Connection, ConnectionError>,
        // Kept so that neither endpoint shuts down while a test looks at its connection.
        _endpoints: (Endpoint, Endpoint),
    }

    fn localhost() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 0).into()
    }

    /// One QUIC handshake on loopback: a server endpoint with `server`'s config, and a
    /// client dialling it with `client` for `server_name`.
    async fn handshake(
        server: &LinkTls,
        client: Arc<dyn quinn::crypto::ClientConfig>,
        server_name: &str,
    ) -> Handshake {
        let server_endpoint = Endpoint::server(
            quinn::ServerConfig::with_crypto(server.server_config()),
            localhost(),
        )
        .unwrap();
        let address = server_endpoint.local_addr().unwrap();
        let client_endpoint = Endpoint::client(localhost()).unwrap();
        let connecting = client_endpoint
            .connect_with(quinn::ClientConfig::new(client), address, server_name)
            .unwrap();
        let accept = async {
            server_endpoint
                .accept()
                .await
                .expect("the server endpoint sees the connection")
                .await
        };
        let (server, client) = tokio::join!(accept, connecting);
        Handshake {
            server,
            client,
            _endpoints: (server_endpoint, client_endpoint),
        }
    }

    /// `dialler` dials the CSU (`server`) as its partner.
    async fn dial_csu(server: &LinkTls, dialler: &LinkTls) -> Handshake {
        handshake(server, dialler.client_config(&id(CSU)).unwrap(), CSU).await
    }

    /// The QUIC transport error code that ended a connection attempt, on either side.
    fn transport_code(result: &Result<quinn::Connection, ConnectionError>) -> TransportErrorCode {
        match result {
            Err(ConnectionError::TransportError(error)) => error.code,
            Err(ConnectionError::ConnectionClosed(close)) => close.error_code,
            other => panic!("expected a TLS failure, got {other:?}"),
        }
    }

    fn assert_alert(result: &Result<quinn::Connection, ConnectionError>, alert: u8) {
        assert_eq!(transport_code(result), TransportErrorCode::crypto(alert));
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[tokio::test]
    async fn partner_with_its_ca_connects_and_both_sides_identify_each_other() {
        bounded(async {
            let metz = Metz::new();
            let csu = metz.csu_tls(&metz.csu_partners());
            let sncf_settings = metz.fx.settings(&metz.sncf, SNCF);
            let sncf = metz.dialler(SNCF, &sncf_settings);

            let hs = dial_csu(&csu, &sncf).await;
            let at_csu = hs.server.expect("CSU accepts SNCF");
            let at_sncf = hs.client.expect("SNCF reaches CSU");

            let peer = identify_connection(&at_csu, csu.peer_trust(), Direction::Inbound, now())
                .expect("CSU identifies SNCF");
            assert_eq!(peer.site, id(SNCF));
            let sncf_leaf =
                CertificateDer::from_pem_slice(&std::fs::read(&sncf_settings.cert).unwrap())
                    .unwrap();
            assert_eq!(peer.certificate, CertInfo::of(&sncf_leaf).unwrap());
            assert_eq!(peer.certificate.sha256.len(), 64);
            assert_eq!(&peer.certificate, sncf.own_certificate());

            let peer = identify_connection(&at_sncf, sncf.peer_trust(), Direction::Outbound, now())
                .expect("SNCF identifies CSU");
            assert_eq!(peer.site, id(CSU));

            assert_eq!(negotiated_alpn(&at_csu).as_deref(), Some(ALPN));
            assert_eq!(negotiated_alpn(&at_sncf).as_deref(), Some(ALPN));
            assert_eq!(ALPN, b"passerelle/1");
        })
        .await;
    }

    #[tokio::test]
    async fn certificate_from_an_unconfigured_ca_is_refused_at_the_handshake() {
        bounded(async {
            let metz = Metz::new();
            let csu = metz.csu_tls(&metz.csu_partners());
            let rogue = metz.fx.ca("rogue");
            // Names a real partner, but no partner's CA issued it.
            let sncf = metz.dialler(SNCF, &metz.fx.settings(&rogue, SNCF));

            let hs = dial_csu(&csu, &sncf).await;
            assert_alert(&hs.server, ALERT_UNKNOWN_CA);
            if let Ok(client) = hs.client {
                // The client may finish its side first; the server's alert then closes it.
                let error = client.closed().await;
                assert!(
                    matches!(&error, ConnectionError::ConnectionClosed(c)
                        if c.error_code == TransportErrorCode::crypto(ALERT_UNKNOWN_CA)),
                    "{error:?}"
                );
            }
        })
        .await;
    }

    #[tokio::test]
    async fn client_without_a_certificate_is_refused() {
        bounded(async {
            let metz = Metz::new();
            let csu = metz.csu_tls(&metz.csu_partners());
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(metz.csu.pem.cert_pem.as_bytes()).unwrap())
                .unwrap();
            let mut anonymous = rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            anonymous.alpn_protocols = vec![ALPN.to_vec()];
            let anonymous = Arc::new(QuicClientConfig::try_from(anonymous).unwrap());

            let hs = handshake(&csu, anonymous, CSU).await;
            assert_alert(&hs.server, ALERT_CERTIFICATE_REQUIRED);
        })
        .await;
    }

    #[tokio::test]
    async fn right_ca_but_no_partner_name_is_refused_by_identify_peer_with_a_close_code() {
        bounded(async {
            let metz = Metz::new();
            let csu = metz.csu_tls(&metz.csu_partners());
            // SNCF's CA, but a name the CSU has no partner for.
            let stranger = "depot.sncf.example";
            let other = metz.dialler(stranger, &metz.fx.settings(&metz.sncf, stranger));

            let hs = dial_csu(&csu, &other).await;
            let at_csu = hs.server.expect("the handshake accepts any partner CA");
            let refusal = identify_connection(&at_csu, csu.peer_trust(), Direction::Inbound, now())
                .expect_err("no partner is named");
            assert!(
                matches!(&refusal, PeerRefusal::UnknownPeer { names } if names == &[stranger]),
                "{refusal:?}"
            );
            assert_eq!(refusal.close_code(), CloseCode::UnknownPeer);

            // What the link module does with it, and what the peer sees.
            at_csu.close(refusal.close_code().var_int(), refusal.reason().as_bytes());
            let seen = hs.client.expect("client side established").closed().await;
            match seen {
                ConnectionError::ApplicationClosed(close) => {
                    assert_eq!(close.error_code, CloseCode::UnknownPeer.var_int());
                    assert_eq!(&close.reason[..], b"unknown_peer");
                    assert_eq!(
                        CloseCode::from_code(close.error_code.into_inner()),
                        Some(CloseCode::UnknownPeer)
                    );
                }
                other => panic!("expected an application close, got {other:?}"),
            }
        })
        .await;
    }

    #[tokio::test]
    async fn partner_name_from_another_partners_ca_is_refused_unless_allow_any_ca() {
        bounded(async {
            let metz = Metz::new();
            // Claims to be the CCOR, but SNCF's CA issued it.
            let forged = metz.fx.settings(&metz.sncf, CCOR);
            let forger = metz.dialler(CCOR, &forged);

            let strict = metz.csu_tls(&metz.csu_partners());
            let hs = dial_csu(&strict, &forger).await;
            let at_csu = hs.server.expect("the handshake accepts any partner CA");
            let refusal =
                identify_connection(&at_csu, strict.peer_trust(), Direction::Inbound, now())
                    .expect_err("SNCF's CA may not speak for the CCOR");
            assert!(
                matches!(&refusal, PeerRefusal::WrongCa { partner } if partner == &id(CCOR)),
                "{refusal:?}"
            );
            assert_eq!(refusal.reason(), "wrong_ca");

            let lenient =
                metz.csu_tls(&[partner(SNCF, &metz.sncf), any_ca(partner(CCOR, &metz.ccor))]);
            let hs = dial_csu(&lenient, &forger).await;
            let at_csu = hs.server.expect("handshake");
            let peer =
                identify_connection(&at_csu, lenient.peer_trust(), Direction::Inbound, now())
                    .expect("allow_any_ca on the CCOR accepts any partner CA for it");
            assert_eq!(peer.site, id(CCOR));
        })
        .await;
    }

    #[tokio::test]
    async fn client_refuses_a_server_not_issued_by_the_partners_ca_or_not_named_for_it() {
        bounded(async {
            let metz = Metz::new();
            let sncf = metz.dialler(SNCF, &metz.fx.settings(&metz.sncf, SNCF));

            // A "CSU" whose certificate SNCF's CA issued: SNCF trusts only the CSU's CA
            // for the CSU.
            let fake = LinkTls::load(
                &id(CSU),
                &metz.fx.settings(&metz.sncf, CSU),
                &[partner(SNCF, &metz.sncf)],
            )
            .unwrap();
            let hs = dial_csu(&fake, &sncf).await;
            assert_alert(&hs.client, ALERT_UNKNOWN_CA);

            // The CCOR's gateway answering where SNCF expects the CSU: right CA, wrong name.
            let ccor_settings = metz.fx.settings(&metz.csu, CCOR);
            let ccor =
                LinkTls::load(&id(CCOR), &ccor_settings, &[partner(SNCF, &metz.sncf)]).unwrap();
            let hs = dial_csu(&ccor, &sncf).await;
            assert_alert(&hs.client, ALERT_BAD_CERTIFICATE);
        })
        .await;
    }

    #[tokio::test]
    async fn wrong_or_missing_alpn_is_refused() {
        bounded(async {
            let metz = Metz::new();
            let csu = metz.csu_tls(&metz.csu_partners());
            let sncf = metz.dialler(SNCF, &metz.fx.settings(&metz.sncf, SNCF));

            for alpn in [vec![b"passerelle/2".to_vec()], vec![b"h3".to_vec()], vec![]] {
                let mut config = (*sncf.rustls_client_config(&id(CSU)).unwrap()).clone();
                config.alpn_protocols = alpn.clone();
                let config = Arc::new(QuicClientConfig::try_from(config).unwrap());
                let hs = handshake(&csu, config, CSU).await;
                assert_alert(&hs.server, ALERT_NO_APPLICATION_PROTOCOL);
            }
        })
        .await;
    }

    #[tokio::test]
    async fn revoked_certificate_is_refused_at_the_handshake_and_by_identify_peer() {
        bounded(async {
            let metz = Metz::new();
            let issued = pki::issue_pem(&metz.sncf.pem, &id(SNCF), year()).unwrap();
            let sncf_settings = metz.fx.settings_for(&metz.sncf, &issued);
            let sncf = metz.dialler(SNCF, &sncf_settings);
            let crl = metz.fx.crl(
                &metz.sncf,
                std::slice::from_ref(&issued.serial),
                Validity::days_from(Timestamp::now(), 7).unwrap(),
            );
            let mut settings = metz.fx.settings(&metz.csu, CSU);
            settings.crl = vec![crl.clone()];
            let csu = LinkTls::load(&id(CSU), &settings, &metz.csu_partners()).unwrap();
            assert_eq!(csu.crls().len(), 1);
            assert_eq!(csu.crls()[0].path, crl);

            let hs = dial_csu(&csu, &sncf).await;
            assert_alert(&hs.server, ALERT_CERTIFICATE_REVOKED);

            // The re-check of a live link after a reload that brought the CRL.
            let leaf = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
            let refusal = identify_peer(&[leaf], csu.peer_trust(), Direction::Inbound, now())
                .expect_err("revoked");
            assert!(
                matches!(refusal, PeerRefusal::Revoked { .. }),
                "{refusal:?}"
            );

            // Another SNCF certificate, not listed, still connects.
            let fresh = metz.dialler(SNCF, &metz.fx.settings(&metz.sncf, SNCF));
            let hs = dial_csu(&csu, &fresh).await;
            let at_csu = hs.server.expect("unrevoked certificate accepted");
            identify_connection(&at_csu, csu.peer_trust(), Direction::Inbound, now()).unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn no_0rtt_and_no_resumption_on_a_second_connection() {
        bounded(async {
            let metz = Metz::new();
            let csu = metz.csu_tls(&metz.csu_partners());
            let sncf = metz.dialler(SNCF, &metz.fx.settings(&metz.sncf, SNCF));
            let server_endpoint = Endpoint::server(
                quinn::ServerConfig::with_crypto(csu.server_config()),
                localhost(),
            )
            .unwrap();
            let address = server_endpoint.local_addr().unwrap();
            let client_endpoint = Endpoint::client(localhost()).unwrap();
            let config = quinn::ClientConfig::new(sncf.client_config(&id(CSU)).unwrap());
            let accept = async {
                loop {
                    let Some(incoming) = server_endpoint.accept().await else {
                        return;
                    };
                    if let Ok(connection) = incoming.await {
                        // Echo one stream, then hold the connection until the client is done.
                        if let Ok((mut send, mut recv)) = connection.accept_bi().await {
                            let data = recv.read_to_end(16).await.unwrap_or_default();
                            let _ = send.write_all(&data).await;
                            let _ = send.finish();
                        }
                        let _ = connection.closed().await;
                    }
                }
            };
            let dial = async {
                let first = client_endpoint
                    .connect_with(config.clone(), address, CSU)
                    .unwrap()
                    .await
                    .expect("first connection");
                // One round trip after the handshake: a server that sends session tickets
                // sends them on handshake completion, before this answer.
                let (mut send, mut recv) = first.open_bi().await.unwrap();
                send.write_all(b"ping").await.unwrap();
                send.finish().unwrap();
                assert_eq!(recv.read_to_end(16).await.unwrap(), b"ping");
                let second = client_endpoint
                    .connect_with(config.clone(), address, CSU)
                    .unwrap();
                assert!(
                    second.into_0rtt().is_err(),
                    "a second connection must not be able to send 0-RTT data"
                );
                first.close(0u32.into(), b"");
            };
            tokio::select! {
                () = accept => panic!("server endpoint closed"),
                () = dial => {}
            }
        })
        .await;
    }

    /// A plain (non-QUIC) TLS handshake in memory between two rustls configs.
    fn handshake_in_memory(
        client: Arc<rustls::ClientConfig>,
        server: Arc<rustls::ServerConfig>,
        server_name: &str,
    ) -> (rustls::ClientConnection, rustls::ServerConnection) {
        let mut client = rustls::ClientConnection::new(
            client,
            ServerName::try_from(server_name.to_owned()).unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(server).unwrap();
        let mut buffer = Vec::new();
        // A TLS 1.3 handshake with client auth takes 2 flights each way; extra rounds
        // deliver anything sent after it (session tickets).
        for _ in 0..6 {
            buffer.clear();
            while client.wants_write() {
                client.write_tls(&mut buffer).unwrap();
            }
            let mut input = &buffer[..];
            while !input.is_empty() {
                server.read_tls(&mut input).unwrap();
            }
            server.process_new_packets().unwrap();
            buffer.clear();
            while server.wants_write() {
                server.write_tls(&mut buffer).unwrap();
            }
            let mut input = &buffer[..];
            while !input.is_empty() {
                client.read_tls(&mut input).unwrap();
            }
            client.process_new_packets().unwrap();
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        (client, server)
    }

    #[test]
    fn configs_negotiate_tls13_with_alpn_and_send_no_session_tickets() {
        let metz = Metz::new();
        let csu = metz.csu_tls(&metz.csu_partners());
        let sncf = metz.dialler(SNCF, &metz.fx.settings(&metz.sncf, SNCF));
        let client_config = sncf.rustls_client_config(&id(CSU)).unwrap();
        let server_config = csu.rustls_server_config();

        let (client, server) =
            handshake_in_memory(client_config.clone(), server_config.clone(), CSU);
        assert_eq!(
            client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(
            server.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(client.alpn_protocol(), Some(ALPN));
        assert_eq!(client.tls13_tickets_received(), 0, "no session tickets");

        // The ticket count above can see tickets: the same server with tickets on sends them.
        let mut ticketing = (*server_config).clone();
        ticketing.send_tls13_tickets = 2;
        ticketing.session_storage = rustls::server::ServerSessionMemoryCache::new(16);
        let (client, _) = handshake_in_memory(client_config.clone(), Arc::new(ticketing), CSU);
        assert!(client.tls13_tickets_received() > 0);

        assert_eq!(server_config.max_early_data_size, 0);
        assert_eq!(server_config.send_tls13_tickets, 0);
        assert!(!server_config.session_storage.can_cache());
        assert!(!client_config.enable_early_data);
        assert_eq!(server_config.alpn_protocols, vec![ALPN.to_vec()]);
        assert_eq!(client_config.alpn_protocols, vec![ALPN.to_vec()]);
    }

    #[test]
    fn identify_peer_refusals() {
        let metz = Metz::new();
        let csu = metz.csu_tls(&metz.csu_partners());
        let trust = csu.peer_trust();
        let sign = |params: &CertificateParams| {
            let issued = pki::issue_with_params(&metz.sncf.pem, params).unwrap();
            vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()]
        };
        let params = |sans: &[SanType], usages: &[ExtendedKeyUsagePurpose]| {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, SNCF);
            params.subject_alt_names = sans.to_vec();
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = usages.to_vec();
            let validity = year();
            params.not_before =
                x509_parser::time::ASN1Time::from_timestamp(validity.not_before().as_second())
                    .unwrap()
                    .to_datetime();
            params.not_after =
                x509_parser::time::ASN1Time::from_timestamp(validity.not_after().as_second())
                    .unwrap()
                    .to_datetime();
            params
        };
        let dns = |name: &str| SanType::DnsName(name.try_into().unwrap());
        let both = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];

        let refused = |certs: &[CertificateDer<'_>], direction, at| {
            identify_peer(certs, trust, direction, at).expect_err("must be refused")
        };

        assert!(matches!(
            refused(&[], Direction::Inbound, now()),
            PeerRefusal::NoCertificate
        ));
        assert!(matches!(
            refused(
                &[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])],
                Direction::Inbound,
                now()
            ),
            PeerRefusal::BadCertificate { .. }
        ));
        // The CN names the partner, but only subjectAltNames count.
        let uri_only = sign(&params(
            &[SanType::URI(
                "spiffe://metz.example/sncf".try_into().unwrap(),
            )],
            &both,
        ));
        assert!(matches!(
            refused(&uri_only, Direction::Inbound, now()),
            PeerRefusal::NoDnsName
        ));
        let no_san = sign(&params(&[], &both));
        assert!(matches!(
            refused(&no_san, Direction::Inbound, now()),
            PeerRefusal::NoDnsName
        ));
        let wildcard = sign(&params(&[dns("*.metz.example")], &both));
        assert!(matches!(
            refused(&wildcard, Direction::Inbound, now()),
            PeerRefusal::UnknownPeer { .. }
        ));
        let two = sign(&params(&[dns(SNCF), dns(CCOR)], &both));
        match refused(&two, Direction::Inbound, now()) {
            PeerRefusal::AmbiguousPeer { partners } => {
                assert_eq!(partners, vec![id(SNCF), id(CCOR)]);
            }
            other => panic!("{other:?}"),
        }
        let many: Vec<SanType> = (0..50).map(|i| dns(&format!("n{i}.example"))).collect();
        match refused(&sign(&params(&many, &both)), Direction::Inbound, now()) {
            PeerRefusal::UnknownPeer { names } => assert_eq!(names.len(), REFUSAL_MAX_NAMES),
            other => panic!("{other:?}"),
        }

        // Usage follows the direction.
        let server_only = sign(&params(
            &[dns(SNCF)],
            &[ExtendedKeyUsagePurpose::ServerAuth],
        ));
        assert!(matches!(
            refused(&server_only, Direction::Inbound, now()),
            PeerRefusal::WrongUsage { .. }
        ));
        identify_peer(&server_only, trust, Direction::Outbound, now())
            .expect("serverAuth is enough for a peer we dialled");

        // Names compare case-insensitively.
        let upper = sign(&params(&[dns("SNCF.Metz.Example")], &both));
        assert_eq!(
            identify_peer(&upper, trust, Direction::Inbound, now())
                .unwrap()
                .site,
            id(SNCF)
        );

        // Time: the re-check at expiry.
        let good = sign(&params(&[dns(SNCF)], &both));
        identify_peer(&good, trust, Direction::Inbound, now()).unwrap();
        let later = unix(Timestamp::now() + SignedDuration::from_hours(24 * 400));
        let refusal = refused(&good, Direction::Inbound, later);
        assert!(matches!(&refusal, PeerRefusal::Expired { partner } if partner == &id(SNCF)));
        assert_eq!(refusal.partner(), Some(&id(SNCF)));
        let earlier = unix(Timestamp::now() - SignedDuration::from_hours(24 * 2));
        assert!(matches!(
            refused(&good, Direction::Inbound, earlier),
            PeerRefusal::NotYetValid { .. }
        ));
    }

    #[test]
    fn a_stale_crl_fails_closed_for_its_issuer_only() {
        let metz = Metz::new();
        let crl = metz.fx.crl(
            &metz.sncf,
            &[],
            Validity::days_from(Timestamp::now(), 7).unwrap(),
        );
        let mut settings = metz.fx.settings(&metz.csu, CSU);
        settings.crl = vec![crl];
        let csu = LinkTls::load(&id(CSU), &settings, &metz.csu_partners()).unwrap();
        let leaf = |ca: &Ca, site: &str| {
            let issued = pki::issue_pem(&ca.pem, &id(site), year()).unwrap();
            vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()]
        };
        let sncf = leaf(&metz.sncf, SNCF);
        let ccor = leaf(&metz.ccor, CCOR);
        identify_peer(&sncf, csu.peer_trust(), Direction::Inbound, now()).unwrap();

        let in_ten_days = unix(Timestamp::now() + SignedDuration::from_hours(24 * 10));
        let refusal = identify_peer(&sncf, csu.peer_trust(), Direction::Inbound, in_ten_days)
            .expect_err("SNCF's CRL is past its nextUpdate");
        assert!(
            matches!(refusal, PeerRefusal::RevocationUnknown { .. }),
            "{refusal:?}"
        );
        identify_peer(&ccor, csu.peer_trust(), Direction::Inbound, in_ten_days)
            .expect("the CCOR's CA has no CRL configured: not revocation-checked");
    }

    #[test]
    fn load_reports_the_bad_file_or_setting() {
        let metz = Metz::new();
        let fx = &metz.fx;
        let good = fx.settings(&metz.csu, CSU);
        let partners = metz.csu_partners();
        let load = |settings: &TlsSettings, partners: &[PartnerTrust]| {
            LinkTls::load(&id(CSU), settings, partners).expect_err("must fail")
        };

        let missing = fx.dir.path().join("nowhere.pem");
        let mut settings = good.clone();
        settings.cert = missing.clone();
        assert!(matches!(
            load(&settings, &partners),
            TlsError::Read { what: "certificate", path, .. } if path == missing
        ));
        let error = load(&settings, &partners).to_string();
        assert!(error.contains("nowhere.pem"), "{error}");

        let mut settings = good.clone();
        settings.key = fx.write("garbage", "key", "not a key\n");
        assert!(matches!(
            load(&settings, &partners),
            TlsError::Pem { what: "private key", path, .. } if path == settings.key
        ));

        let mut settings = good.clone();
        settings.key = fx.settings(&metz.csu, CSU).key;
        assert!(matches!(
            load(&settings, &partners),
            TlsError::KeyMismatch { .. }
        ));

        let mut bad_partner = partners.clone();
        bad_partner[1].ca = fx.write("empty", "pem", "");
        assert!(matches!(
            load(&good, &bad_partner),
            TlsError::Pem { what: "partner CA", path, .. } if path == bad_partner[1].ca
        ));

        // Our certificate: not for our site, from another CA, expired.
        assert!(matches!(
            load(&fx.settings(&metz.csu, CCOR), &partners),
            TlsError::OwnCertificate { .. }
        ));
        let mut settings = fx.settings(&metz.sncf, CSU);
        settings.ca = metz.csu.path.clone();
        assert!(matches!(
            load(&settings, &partners),
            TlsError::OwnCertificate { .. }
        ));
        let expired = pki::issue_pem(
            &metz.csu.pem,
            &id(CSU),
            Validity::new(
                Timestamp::now() - SignedDuration::from_hours(48),
                Timestamp::now() - SignedDuration::from_hours(24),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            load(&fx.settings_for(&metz.csu, &expired), &partners),
            TlsError::OwnCertificate { .. }
        ));

        // Partners.
        assert!(matches!(load(&good, &[]), TlsError::NoPartners));
        assert!(matches!(
            load(
                &good,
                &[partner(SNCF, &metz.sncf), partner(SNCF, &metz.ccor)]
            ),
            TlsError::DuplicatePartner { .. }
        ));
        // The same CA (even from another file) for two partners needs allow_any_ca on both.
        let copy = Ca {
            pem: metz.sncf.pem.clone(),
            path: fx.write("sncf-copy", "pem", &metz.sncf.pem.cert_pem),
        };
        assert!(matches!(
            load(&good, &[partner(SNCF, &metz.sncf), partner(CCOR, &copy)]),
            TlsError::SharedCa { .. }
        ));
        assert!(matches!(
            load(
                &good,
                &[any_ca(partner(SNCF, &metz.sncf)), partner(CCOR, &copy)]
            ),
            TlsError::SharedCa { .. }
        ));
        LinkTls::load(
            &id(CSU),
            &good,
            &[
                any_ca(partner(SNCF, &metz.sncf)),
                any_ca(partner(CCOR, &copy)),
            ],
        )
        .expect("a shared CA with allow_any_ca on both");

        // CRLs.
        let rogue = fx.ca("rogue");
        let mut settings = good.clone();
        settings.crl = vec![fx.crl(&rogue, &[], year())];
        assert!(matches!(
            load(&settings, &partners),
            TlsError::CrlIssuerUnknown { path } if path == settings.crl[0]
        ));
        let mut settings = good.clone();
        settings.crl = vec![fx.write("not-a-crl", "crl", &metz.csu.pem.cert_pem)];
        assert!(matches!(
            load(&settings, &partners),
            TlsError::Pem { what: "CRL", .. }
        ));
    }

    #[test]
    fn load_reports_expiries_for_metrics() {
        let metz = Metz::new();
        let csu = metz.csu_tls(&metz.csu_partners());
        let labels: Vec<_> = csu.expiries().iter().map(|e| e.cert.as_str()).collect();
        assert_eq!(
            labels,
            [
                "site",
                "ca",
                "partner_ca:ccor.metz.example",
                "partner_ca:sncf.metz.example"
            ]
        );
        let site = &csu.expiries()[0];
        assert_eq!(site.not_after, csu.own_certificate().not_after);
        let expected = year().not_after().as_second();
        assert!((site.not_after - expected).abs() < 60, "{site:?}");
        assert_eq!(csu.site(), &id(CSU));
        let partners: Vec<_> = csu.peer_trust().partners().cloned().collect();
        assert_eq!(partners, vec![id(CCOR), id(SNCF)]);
        assert!(csu.client_config(&id(SNCF)).is_some());
        assert!(csu.client_config(&id("police.interieur.example")).is_none());
        assert!(!format!("{csu:?}").contains("PRIVATE"));
    }

    #[test]
    fn close_codes_are_distinct_stable_and_snake_case() {
        let mut codes = std::collections::BTreeSet::new();
        let mut reasons = std::collections::BTreeSet::new();
        for code in CloseCode::ALL {
            assert!((0x0100..=0x01ff).contains(&code.code()), "{code:?}");
            assert!(codes.insert(code.code()), "duplicate {code:?}");
            assert!(reasons.insert(code.reason()), "duplicate {}", code.reason());
            assert!(
                code.reason()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                code.reason()
            );
            assert_eq!(CloseCode::from_code(code.code().into()), Some(code));
        }
        assert_eq!(CloseCode::from_code(0), None);
        // Published values: changing one breaks peers and dashboards.
        assert_eq!(CloseCode::UnknownPeer.code(), 0x0104);
        assert_eq!(CloseCode::WrongCa.code(), 0x0106);
        assert_eq!(CloseCode::Revoked.code(), 0x0107);
        assert_eq!(CloseCode::Expired.code(), 0x0108);
        assert_eq!(
            PeerRefusal::NoDnsName.close_code().reason(),
            PeerRefusal::NoDnsName.reason()
        );
    }

    #[test]
    fn install_crypto_provider_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(CryptoProvider::get_default().is_some());
    }
}
