//! Development certificates: a small CA, site certificates and CRLs, made with rcgen.
//!
//! Used by `passerelle pki init|issue`, by `passerelle demo` and by tests. A production
//! site gets its certificate from its organisation's PKI; this module only has to produce
//! certificates with the same profile (DESIGN.md, "Identity and transport security"):
//!
//! - the CA: ECDSA P-256 (verified by rustls + ring + webpki), `cA = true` with path length
//!   0 (it issues site certificates directly), key usages `keyCertSign` and `cRLSign`;
//! - a site certificate: ECDSA P-256, the site id as its **only** subjectAltName (a DNS
//!   name; a [`SiteId`] cannot hold a wildcard, so none is ever issued), CN = the site id
//!   too, extended key usages serverAuth **and** clientAuth (every gateway both dials and
//!   accepts), key usage digitalSignature, `cA = false`, a random 128-bit serial, chained
//!   to the CA by issuer name and authority key identifier.
//!
//! Files: [`init`] writes `<name>-ca.pem` and `<name>-ca.key`; [`issue`] writes
//! `<site>.pem` and `<site>.key`. Keys are PKCS#8 PEM, created with mode 0600. `<site>.pem`
//! holds the **leaf alone**: it is the chain the gateway sends, and peers hold the CA as a
//! trust anchor, so sending the CA too would only add bytes to a handshake that QUIC caps
//! at three times the client's bytes before address validation (RFC 9000 §8.1). No file is
//! ever overwritten.
//!
//! [`generate_ca`], [`issue_pem`] and [`revoke`] are the in-memory variants, returning PEM
//! text, for tests and the demo.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::ParsedExtension;
use x509_parser::time::ASN1Time;
use x509_parser::x509::X509Name;

use crate::ids::SiteId;

/// Longest CA name accepted by [`init`] and [`generate_ca`].
pub const CA_NAME_MAX_LEN: usize = 64;

/// How far before "now" [`Validity::days_from`] starts a certificate, so that a peer whose
/// clock is slightly behind ours does not see it as not yet valid.
pub const CLOCK_SKEW_ALLOWANCE: SignedDuration = SignedDuration::from_hours(1);

/// Why a development certificate, key or CRL could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A CA name that is empty, too long, or not `[A-Za-z0-9][A-Za-z0-9._-]*` (it becomes
    /// a file name).
    #[error(
        "bad CA name {name:?}: expected 1 to {CA_NAME_MAX_LEN} characters of \
         [A-Za-z0-9._-], starting with a letter or digit"
    )]
    BadCaName {
        /// The refused name.
        name: String,
    },
    /// A validity period that ends before it starts, or that cannot be represented.
    #[error("bad validity: not_before {not_before} must be before not_after {not_after}")]
    BadValidity {
        /// Requested start.
        not_before: Timestamp,
        /// Requested end.
        not_after: Timestamp,
    },
    /// A validity period of a number of days that overflows the calendar.
    #[error("validity of {days} days from {from} is out of range")]
    ValidityOutOfRange {
        /// Start of the period.
        from: Timestamp,
        /// Requested length in days.
        days: u32,
    },
    /// A time that X.509 cannot encode.
    #[error("{time} cannot be encoded in a certificate")]
    TimeOutOfRange {
        /// The refused time.
        time: Timestamp,
    },
    /// A site certificate would outlive its CA, and so stop verifying before its own end.
    #[error("certificate would end at {not_after}, after its CA ({ca_not_after})")]
    OutlivesCa {
        /// Requested end of the site certificate.
        not_after: Timestamp,
        /// End of the CA certificate.
        ca_not_after: Timestamp,
    },
    /// A certificate (the CA's, or one given to [`Serial::of_certificate_pem`]) is not PEM
    /// or holds no certificate.
    #[error("not a PEM certificate: {source}")]
    NotPem {
        /// The PEM decoding error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate (usually the CA's) cannot be parsed as X.509.
    #[error("certificate cannot be parsed: {source}")]
    BadCertificate {
        /// The parser's error.
        #[source]
        source: X509Error,
    },
    /// The CA certificate is not a CA (no `basicConstraints cA = true`).
    #[error("the given CA certificate is not a CA certificate (basicConstraints cA is not set)")]
    NotACa,
    /// The CA's subject uses a form this module cannot reproduce byte for byte as an
    /// issuer name (multi-valued RDNs, repeated attribute types, unusual string types).
    #[error("the CA's subject name cannot be reproduced as an issuer name")]
    UnsupportedCaSubject,
    /// The CA key is not the key of the CA certificate.
    #[error("the CA key does not match the CA certificate")]
    CaKeyMismatch,
    /// The CA cannot sign CRLs (`cRLSign` is missing from its key usage).
    #[error("the CA's key usage does not allow signing CRLs")]
    CaCannotSignCrl,
    /// A serial number that is not 1 to 20 bytes of hexadecimal.
    #[error("bad serial number {text:?}: expected 1 to 20 bytes of hexadecimal")]
    BadSerial {
        /// The refused text.
        text: String,
    },
    /// rcgen refused to build a key, certificate or CRL.
    #[error("certificate generation failed: {source}")]
    Generate {
        /// rcgen's error.
        #[from]
        source: rcgen::Error,
    },
    /// A file to write already exists: this module never overwrites.
    #[error("{path} already exists; refusing to overwrite it")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading an input file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// When a certificate or CRL is valid: `[not_before, not_after]`, `not_before < not_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    not_before: Timestamp,
    not_after: Timestamp,
}

impl Validity {
    /// A validity period; fails unless `not_before < not_after`. Both are truncated to
    /// whole seconds, the precision of X.509 times.
    pub fn new(not_before: Timestamp, not_after: Timestamp) -> Result<Validity, PkiError> {
        let whole = |ts: Timestamp| Timestamp::from_second(ts.as_second()).unwrap_or(ts);
        let (not_before, not_after) = (whole(not_before), whole(not_after));
        if not_before >= not_after {
            return Err(PkiError::BadValidity {
                not_before,
                not_after,
            });
        }
        Ok(Validity {
            not_before,
            not_after,
        })
    }

    /// `days` days from `now`, starting [`CLOCK_SKEW_ALLOWANCE`] early.
    pub fn days_from(now: Timestamp, days: u32) -> Result<Validity, PkiError> {
        let out_of_range = || PkiError::ValidityOutOfRange { from: now, days };
        let not_before = now
            .checked_sub(CLOCK_SKEW_ALLOWANCE)
            .map_err(|_| out_of_range())?;
        let not_after = now
            .checked_add(SignedDuration::from_hours(i64::from(days) * 24))
            .map_err(|_| out_of_range())?;
        Validity::new(not_before, not_after)
    }

    /// Start of the period.
    pub fn not_before(&self) -> Timestamp {
        self.not_before
    }

    /// End of the period.
    pub fn not_after(&self) -> Timestamp {
        self.not_after
    }
}

/// A certificate serial number (1 to 20 bytes, RFC 5280 §4.1.2.2), written in lower-case
/// hexadecimal; parsing also accepts `:` separators and upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// The serial's big-endian bytes, as encoded in the certificate.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The serial number of the first certificate in `cert_pem`.
    pub fn of_certificate_pem(cert_pem: &str) -> Result<Serial, PkiError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|source| PkiError::NotPem { source })?;
        let cert = parse_certificate(&der)?;
        Ok(Serial(cert.raw_serial().to_vec()))
    }

    fn random() -> Serial {
        let mut bytes: [u8; 16] = rand::random();
        // Positive and with a non-zero first byte, so the DER INTEGER is exactly these
        // 16 bytes and the serial reads back the same from the certificate.
        bytes[0] = (bytes[0] & 0x7f) | 0x40;
        Serial(bytes.to_vec())
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Serial {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Serial, PkiError> {
        let bad = || PkiError::BadSerial { text: s.to_owned() };
        let digits: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
        if digits.is_empty() || !digits.len().is_multiple_of(2) || digits.len() > 40 {
            return Err(bad());
        }
        let mut bytes = Vec::with_capacity(digits.len() / 2);
        for pair in digits.chunks_exact(2) {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            bytes.push(u8::from_str_radix(text, 16).map_err(|_| bad())?);
        }
        Ok(Serial(bytes))
    }
}

/// A CA certificate and its private key, as PEM text.
#[derive(Clone)]
pub struct CaPem {
    /// The CA certificate (`CERTIFICATE` PEM).
    pub cert_pem: String,
    /// The CA private key (PKCS#8 `PRIVATE KEY` PEM). Secret.
    pub key_pem: String,
}

impl fmt::Debug for CaPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// A site certificate and its private key, as PEM text.
#[derive(Clone)]
pub struct SitePem {
    /// The site certificate alone (`CERTIFICATE` PEM); see the module doc for why the CA
    /// is not appended.
    pub cert_pem: String,
    /// The site private key (PKCS#8 `PRIVATE KEY` PEM). Secret.
    pub key_pem: String,
    /// The certificate's serial number, for [`revoke`].
    pub serial: Serial,
}

impl fmt::Debug for SitePem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SitePem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .field("serial", &self.serial)
            .finish()
    }
}

/// The files [`init`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// `<dir>/<name>-ca.pem`.
    pub cert: PathBuf,
    /// `<dir>/<name>-ca.key` (mode 0600).
    pub key: PathBuf,
}

/// The files [`issue`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteFiles {
    /// `<out_dir>/<site>.pem`: the site certificate alone.
    pub cert: PathBuf,
    /// `<out_dir>/<site>.key` (mode 0600).
    pub key: PathBuf,
    /// The certificate's serial number.
    pub serial: Serial,
}

/// Makes a development CA named `name` in memory.
pub fn generate_ca(name: &str, validity: Validity) -> Result<CaPem, PkiError> {
    check_ca_name(name)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "passerelle development PKI");
    params.distinguished_name.push(
        DnType::CommonName,
        format!("{name} passerelle development CA"),
    );
    // Path length 0: this CA issues site certificates directly, never sub-CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(SerialNumber::from_slice(Serial::random().as_bytes()));
    params.not_before = asn1_time(validity.not_before)?.to_datetime();
    params.not_after = asn1_time(validity.not_after)?.to_datetime();
    let cert = params.self_signed(&key)?;
    Ok(CaPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a certificate for `site` signed by `ca`, in memory, with the profile of the
/// module doc.
pub fn issue_pem(ca: &CaPem, site: &SiteId, validity: Validity) -> Result<SitePem, PkiError> {
    let ca = LoadedCa::parse(ca)?;
    if validity.not_after > ca.not_after {
        return Err(PkiError::OutlivesCa {
            not_after: validity.not_after,
            ca_not_after: ca.not_after,
        });
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let serial = Serial::random();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, site.as_str());
    // A SiteId is a valid DNS name without wildcard, so this is the only SAN and never a
    // wildcard.
    params.subject_alt_names = vec![SanType::DnsName(site.as_str().try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
    params.not_before = asn1_time(validity.not_before)?.to_datetime();
    params.not_after = asn1_time(validity.not_after)?.to_datetime();
    let cert = params.signed_by(&key, &ca.issuer)?;

    // webpki chains by exact issuer-name bytes: make sure the rebuilt name matches.
    let leaf = parse_certificate(cert.der())?;
    if leaf.issuer().as_raw() != ca.subject_raw.as_slice() {
        return Err(PkiError::UnsupportedCaSubject);
    }
    Ok(SitePem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        serial,
    })
}

/// A CRL signed by `ca` revoking `serials` (revocation time `validity.not_before`), valid
/// from `validity.not_before` (thisUpdate) to `validity.not_after` (nextUpdate). Returns
/// `X509 CRL` PEM.
///
/// The CRL number is thisUpdate in Unix seconds, so successive CRLs number upwards as
/// RFC 5280 §5.2.3 requires.
pub fn revoke(ca: &CaPem, serials: &[Serial], validity: Validity) -> Result<String, PkiError> {
    let ca = LoadedCa::parse(ca)?;
    if !ca.crl_sign {
        return Err(PkiError::CaCannotSignCrl);
    }
    let this_update = asn1_time(validity.not_before)?.to_datetime();
    let params = CertificateRevocationListParams {
        this_update,
        next_update: asn1_time(validity.not_after)?.to_datetime(),
        // Positive: thisUpdate is after 1970 for any CRL made today; clamp anyway.
        crl_number: SerialNumber::from(validity.not_before.as_second().max(1).unsigned_abs()),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial.as_bytes()),
                revocation_time: this_update,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: ca.key_identifier.clone(),
    };
    Ok(params.signed_by(&ca.issuer)?.pem()?)
}

/// `passerelle pki init`: makes a development CA named `name` and writes
/// `<dir>/<name>-ca.pem` and `<dir>/<name>-ca.key` (mode 0600). Refuses to overwrite.
pub fn init(dir: &Path, name: &str, validity: Validity) -> Result<CaFiles, PkiError> {
    check_ca_name(name)?;
    let files = CaFiles {
        cert: dir.join(format!("{name}-ca.pem")),
        key: dir.join(format!("{name}-ca.key")),
    };
    refuse_existing(&[&files.cert, &files.key])?;
    let ca = generate_ca(name, validity)?;
    write_new(&files.key, ca.key_pem.as_bytes(), 0o600)?;
    write_new(&files.cert, ca.cert_pem.as_bytes(), 0o644)?;
    Ok(files)
}

/// `passerelle pki issue`: issues a certificate for `site` with the CA in `ca_cert` and
/// `ca_key`, writing `<out_dir>/<site>.pem` (the leaf alone) and `<out_dir>/<site>.key`
/// (mode 0600). Refuses to overwrite.
pub fn issue(
    ca_cert: &Path,
    ca_key: &Path,
    site: &SiteId,
    validity: Validity,
    out_dir: &Path,
) -> Result<SiteFiles, PkiError> {
    let ca = CaPem {
        cert_pem: read_to_string(ca_cert)?,
        key_pem: read_to_string(ca_key)?,
    };
    let cert = out_dir.join(format!("{site}.pem", site = site.as_str()));
    let key = out_dir.join(format!("{site}.key", site = site.as_str()));
    refuse_existing(&[&cert, &key])?;
    let issued = issue_pem(&ca, site, validity)?;
    write_new(&key, issued.key_pem.as_bytes(), 0o600)?;
    write_new(&cert, issued.cert_pem.as_bytes(), 0o644)?;
    Ok(SiteFiles {
        cert,
        key,
        serial: issued.serial,
    })
}

/// Test hook: signs arbitrary `params` (a fresh P-256 key) with `ca`, for certificates
/// outside the profile (no DNS name, several names, one usage) that negative tests need.
#[cfg(test)]
pub(crate) fn issue_with_params(
    ca: &CaPem,
    params: &CertificateParams,
) -> Result<SitePem, PkiError> {
    let ca = LoadedCa::parse(ca)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok(SitePem {
        serial: Serial::of_certificate_pem(&cert.pem())?,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A CA read back from PEM, ready to sign.
struct LoadedCa {
    issuer: Issuer<'static, KeyPair>,
    subject_raw: Vec<u8>,
    key_identifier: KeyIdMethod,
    not_after: Timestamp,
    crl_sign: bool,
}

impl LoadedCa {
    /// rcgen can rebuild an issuer from a certificate only with its `x509-parser` feature,
    /// which this crate does not enable; so the issuer is rebuilt here from the parsed
    /// subject, key identifier and key usages.
    fn parse(ca: &CaPem) -> Result<LoadedCa, PkiError> {
        let der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
            .map_err(|source| PkiError::NotPem { source })?;
        let cert = parse_certificate(&der)?;
        if !cert.is_ca() {
            return Err(PkiError::NotACa);
        }
        let key = KeyPair::from_pem(&ca.key_pem)?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(PkiError::CaKeyMismatch);
        }
        let key_usage = cert
            .key_usage()
            .map_err(|source| PkiError::BadCertificate { source })?;
        let crl_sign = key_usage.as_ref().is_some_and(|ku| ku.value.crl_sign());
        let key_cert_sign = key_usage.is_none_or(|ku| ku.value.key_cert_sign());
        if !key_cert_sign {
            return Err(PkiError::NotACa);
        }
        let mut key_usages = vec![KeyUsagePurpose::KeyCertSign];
        if crl_sign {
            key_usages.push(KeyUsagePurpose::CrlSign);
        }
        let key_identifier = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
                }
                _ => None,
            })
            .unwrap_or(KeyIdMethod::Sha256);
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(cert.subject())?;
        params.key_identifier_method = key_identifier.clone();
        params.key_usages = key_usages;
        let not_after =
            Timestamp::from_second(cert.validity().not_after.timestamp()).map_err(|_| {
                PkiError::BadCertificate {
                    source: X509Error::InvalidDate,
                }
            })?;
        Ok(LoadedCa {
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer: Issuer::new(params, key),
            key_identifier,
            not_after,
            crl_sign,
        })
    }
}

/// Rebuilds an X.509 name for rcgen, for the string types rcgen writes back identically.
fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName, PkiError> {
    use x509_parser::der_parser::asn1_rs::Tag;

    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attributes = rdn.iter();
        let (Some(attribute), None) = (attributes.next(), attributes.next()) else {
            return Err(PkiError::UnsupportedCaSubject);
        };
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or(PkiError::UnsupportedCaSubject)?
            .collect();
        let value = attribute.attr_value();
        let text = std::str::from_utf8(value.data).map_err(|_| PkiError::UnsupportedCaSubject)?;
        let value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            Tag::PrintableString => DnValue::PrintableString(text.try_into()?),
            Tag::Ia5String => DnValue::Ia5String(text.try_into()?),
            _ => return Err(PkiError::UnsupportedCaSubject),
        };
        let ty = DnType::from_oid(&oid);
        if dn.get(&ty).is_some() {
            // rcgen keeps one value per attribute type.
            return Err(PkiError::UnsupportedCaSubject);
        }
        dn.push(ty, value);
    }
    Ok(dn)
}

fn parse_certificate<'a>(der: &'a [u8]) -> Result<X509Certificate<'a>, PkiError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => Ok(cert),
        Err(x509_parser::nom::Err::Error(source) | x509_parser::nom::Err::Failure(source)) => {
            Err(PkiError::BadCertificate { source })
        }
        Err(x509_parser::nom::Err::Incomplete(_)) => Err(PkiError::BadCertificate {
            source: X509Error::InvalidCertificate,
        }),
    }
}

/// rcgen takes `time::OffsetDateTime`; x509-parser's `ASN1Time` (same `time` version)
/// converts from Unix seconds (`.to_datetime()`), which spares a direct `time` dependency.
fn asn1_time(ts: Timestamp) -> Result<ASN1Time, PkiError> {
    ASN1Time::from_timestamp(ts.as_second()).map_err(|_| PkiError::TimeOutOfRange { time: ts })
}

fn check_ca_name(name: &str) -> Result<(), PkiError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= CA_NAME_MAX_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadCaName {
            name: name.to_owned(),
        })
    }
}

fn read_to_string(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

fn refuse_existing(paths: &[&PathBuf]) -> Result<(), PkiError> {
    for path in paths {
        if path.try_exists().unwrap_or(true) {
            return Err(PkiError::Exists {
                path: (*path).clone(),
            });
        }
    }
    Ok(())
}

/// Creates `path` with `mode` (before the umask, which can only remove bits) and writes
/// `contents`; fails if it exists, so a key is never clobbered nor briefly world-readable.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let write_error = |source: io::Error| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            PkiError::Exists {
                path: path.to_owned(),
            }
        } else {
            PkiError::Write {
                path: path.to_owned(),
                source,
            }
        }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(write_error)?;
    file.write_all(contents).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateRevocationListDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, RootCertStore};
    use x509_parser::extensions::GeneralName;

    use super::*;

    fn site(s: &str) -> SiteId {
        s.parse().unwrap()
    }

    fn year() -> Validity {
        Validity::days_from(Timestamp::now(), 365).unwrap()
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn roots(ca: &CaPem) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(der(&ca.cert_pem)).unwrap();
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Verifies `cert` for `name` as a TLS server, then as a TLS client, under `ca`.
    fn verify(
        ca: &CaPem,
        cert: &str,
        name: &str,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<(), rustls::Error> {
        let leaf = der(cert);
        let now = UnixTime::now();
        let server = WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
            .with_crls(crls.clone())
            .allow_unknown_revocation_status()
            .build()
            .unwrap();
        server.verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            now,
        )?;
        let client = WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
            .with_crls(crls)
            .allow_unknown_revocation_status()
            .build()
            .unwrap();
        client.verify_client_cert(&leaf, &[], now)?;
        Ok(())
    }

    #[test]
    fn site_certificate_has_the_design_profile() {
        let validity = year();
        let ca = generate_ca("metz", validity).unwrap();
        let issued = issue_pem(&ca, &site("csu.metz.example"), validity).unwrap();
        let leaf_der = der(&issued.cert_pem);
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        let ca_der = der(&ca.cert_pem);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();

        let san = leaf.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::DNSName("csu.metz.example")],
            "the site id is the only subjectAltName"
        );
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!eku.any, "no anyExtendedKeyUsage");
        let ku = leaf.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature());
        assert!(!ku.key_cert_sign() && !ku.crl_sign());
        assert!(!leaf.is_ca());
        let cn: Vec<_> = leaf
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["csu.metz.example"]);
        assert_eq!(leaf.issuer().as_raw(), ca_cert.subject().as_raw());
        assert_eq!(leaf.raw_serial(), issued.serial.as_bytes());
        assert_eq!(
            leaf.validity().not_after.timestamp(),
            validity.not_after().as_second()
        );
        assert_eq!(
            leaf.validity().not_before.timestamp(),
            validity.not_before().as_second()
        );
        assert_eq!(
            issued.cert_pem.matches("BEGIN CERTIFICATE").count(),
            1,
            "the leaf alone"
        );
    }

    #[test]
    fn ca_has_the_ca_profile() {
        let ca = generate_ca("metz", year()).unwrap();
        let ca_der = der(&ca.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(ca.key_pem.contains("BEGIN PRIVATE KEY"));
        assert!(
            !format!("{ca:?}").contains("PRIVATE KEY"),
            "Debug redacts the key"
        );
    }

    #[test]
    fn site_certificate_verifies_under_its_ca_only() {
        let ca = generate_ca("metz", year()).unwrap();
        let other = generate_ca("other", year()).unwrap();
        let issued = issue_pem(&ca, &site("csu.metz.example"), year()).unwrap();
        verify(&ca, &issued.cert_pem, "csu.metz.example", vec![]).unwrap();
        assert_eq!(
            verify(&other, &issued.cert_pem, "csu.metz.example", vec![]),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        );
        assert!(matches!(
            verify(&ca, &issued.cert_pem, "ccor.metz.example", vec![]),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForNameContext { .. }
            ))
        ));
    }

    #[test]
    fn issue_reproduces_a_foreign_ca_subject() {
        // A CA not made by `generate_ca`: PrintableString attributes, several of them.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CountryName,
            DnValue::PrintableString("FR".try_into().unwrap()),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Eurométropole de Metz");
        params.distinguished_name.push(
            DnType::CommonName,
            DnValue::PrintableString("CSU Root CA 2026".try_into().unwrap()),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CaPem {
            cert_pem: params.self_signed(&key).unwrap().pem(),
            key_pem: key.serialize_pem(),
        };
        let issued = issue_pem(
            &ca,
            &site("csu.metz.example"),
            Validity::days_from(Timestamp::now(), 30).unwrap(),
        )
        .unwrap();
        verify(&ca, &issued.cert_pem, "csu.metz.example", vec![]).unwrap();
    }

    #[test]
    fn init_and_issue_write_files_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let ca_files = init(dir.path(), "sncf", year()).unwrap();
        assert_eq!(ca_files.cert, dir.path().join("sncf-ca.pem"));
        assert_eq!(ca_files.key, dir.path().join("sncf-ca.key"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca_files.key), 0o600);

        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let id = site("sncf.metz.example");
        let files = issue(&ca_files.cert, &ca_files.key, &id, year(), &out).unwrap();
        assert_eq!(files.cert, out.join("sncf.metz.example.pem"));
        assert_eq!(files.key, out.join("sncf.metz.example.key"));
        assert_eq!(mode(&files.key), 0o600);

        let ca = CaPem {
            cert_pem: std::fs::read_to_string(&ca_files.cert).unwrap(),
            key_pem: std::fs::read_to_string(&ca_files.key).unwrap(),
        };
        let cert_pem = std::fs::read_to_string(&files.cert).unwrap();
        verify(&ca, &cert_pem, "sncf.metz.example", vec![]).unwrap();
        assert_eq!(Serial::of_certificate_pem(&cert_pem).unwrap(), files.serial);

        let key_before = std::fs::read(&ca_files.key).unwrap();
        assert!(matches!(
            init(dir.path(), "sncf", year()),
            Err(PkiError::Exists { path }) if path == ca_files.cert
        ));
        assert_eq!(std::fs::read(&ca_files.key).unwrap(), key_before);
        assert!(matches!(
            issue(&ca_files.cert, &ca_files.key, &id, year(), &out),
            Err(PkiError::Exists { .. })
        ));
        assert!(matches!(
            issue(&dir.path().join("missing.pem"), &ca_files.key, &id, year(), &out),
            Err(PkiError::Read { path, .. }) if path.ends_with("missing.pem")
        ));
    }

    #[test]
    fn revoke_makes_a_crl_that_revokes_only_the_listed_serials() {
        let ca = generate_ca("metz", year()).unwrap();
        let revoked = issue_pem(&ca, &site("ccor.metz.example"), year()).unwrap();
        let kept = issue_pem(&ca, &site("corg.gendarmerie.example"), year()).unwrap();
        let crl_pem = revoke(
            &ca,
            std::slice::from_ref(&revoked.serial),
            Validity::days_from(Timestamp::now(), 7).unwrap(),
        )
        .unwrap();
        let crl = CertificateRevocationListDer::from_pem_slice(crl_pem.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_crl(&crl).unwrap();
        let serials: Vec<_> = parsed
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        assert_eq!(serials, vec![revoked.serial.as_bytes().to_vec()]);

        assert_eq!(
            verify(
                &ca,
                &revoked.cert_pem,
                "ccor.metz.example",
                vec![crl.clone()]
            ),
            Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
        );
        verify(&ca, &kept.cert_pem, "corg.gendarmerie.example", vec![crl]).unwrap();
    }

    #[test]
    fn issue_refuses_bad_inputs() {
        let ca = generate_ca("metz", year()).unwrap();
        let other = generate_ca("other", year()).unwrap();
        let id = site("csu.metz.example");

        let mismatched = CaPem {
            cert_pem: ca.cert_pem.clone(),
            key_pem: other.key_pem.clone(),
        };
        assert!(matches!(
            issue_pem(&mismatched, &id, year()),
            Err(PkiError::CaKeyMismatch)
        ));

        let leaf = issue_pem(&ca, &id, year()).unwrap();
        let leaf_as_ca = CaPem {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
        };
        assert!(matches!(
            issue_pem(&leaf_as_ca, &id, year()),
            Err(PkiError::NotACa)
        ));

        let long = Validity::days_from(Timestamp::now(), 3650).unwrap();
        assert!(matches!(
            issue_pem(&ca, &id, long),
            Err(PkiError::OutlivesCa { .. })
        ));

        let now = Timestamp::now();
        assert!(matches!(
            Validity::new(now, now),
            Err(PkiError::BadValidity { .. })
        ));
        for name in ["", "../x", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(
                matches!(generate_ca(name, year()), Err(PkiError::BadCaName { .. })),
                "{name:?} accepted"
            );
        }
        // The profile forbids wildcards; a site id cannot even hold one.
        assert!("*.metz.example".parse::<SiteId>().is_err());
    }

    #[test]
    fn serial_round_trips_through_text() {
        let serial: Serial = "4A:0b:ff".parse().unwrap();
        assert_eq!(serial.as_bytes(), [0x4a, 0x0b, 0xff]);
        assert_eq!(serial.to_string(), "4a0bff");
        for bad in ["", "abc", "zz", &"00".repeat(21)] {
            assert!(bad.parse::<Serial>().is_err(), "{bad:?} accepted");
        }
    }
}
