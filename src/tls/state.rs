//! Builds the rustls server configuration (and an inventory of what it trusts) from a
//! [`Config`]. A `TlsState` is immutable: reload builds a new one and swaps it in whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerSessionMemoryCache,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::prelude::*;

use super::allow::AllowList;
use super::load::{self, LoadError};
use super::verified_cache::VerifiedChains;
use super::verifier::ShieldVerifier;
use crate::config::Config;
use crate::identity::{rfc2253, sha256};

/// The crypto provider for every TLS operation.
///
/// aws-lc-rs, chosen by measurement (`cargo bench --bench handshake`, which interleaves both
/// providers in one run): server CPU per full mTLS handshake with a P-256 server key and an
/// RSA-2048 client under an RSA-4096 root (the CloudFront recipe) was 141 µs with aws-lc-rs vs
/// 159 µs with ring on TLS 1.3 (ring 1.12x), and 132 µs vs 160 µs on TLS 1.2 (ring 1.22x), on
/// the 2-core development machine. Its assembly RSA and P-256 code is the difference. It is
/// also rustls's default, so it gets the most testing. Its default suites are TLS 1.3 plus
/// TLS 1.2 ECDHE with AEAD only: no CBC, no static-RSA key exchange, no compression.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Sessions kept per trust state when `listener.session_resumption = true`.
const SESSION_CACHE_SIZE: usize = 4096;

/// One immutable TLS state: the server config handed to new handshakes, and what it trusts.
#[derive(Debug)]
pub struct TlsState {
    /// Used by each new handshake.
    pub server_config: Arc<ServerConfig>,
    /// The same verifier the server config uses, for re-checks and `verify`.
    pub verifier: Arc<ShieldVerifier>,
    /// What was loaded, for metrics, reload logs and `check`.
    pub inventory: Inventory,
}

/// A certificate's facts for reports and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// Subject DN, RFC 2253.
    pub subject: String,
    /// Issuer DN, RFC 2253.
    pub issuer: String,
    /// SAN DNS names and IPs.
    pub sans: Vec<String>,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint: String,
}

/// A CRL's facts for reports and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CrlInfo {
    /// The file it came from.
    pub path: PathBuf,
    /// Issuer DN, RFC 2253.
    pub issuer: String,
    /// cRLNumber, decimal.
    pub number: Option<String>,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: Option<i64>,
    /// Revoked entries.
    pub revoked: usize,
}

/// Everything one TLS state trusts and serves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Inventory {
    /// The server leaf.
    pub server: CertInfo,
    /// Truststore entries.
    pub anchors: Vec<CertInfo>,
    /// Loaded CRLs.
    pub crls: Vec<CrlInfo>,
}

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl TlsState {
    /// Loads every file the config names and builds the server config. Any failure names
    /// the file and leaves nothing half-built.
    pub fn build(config: &Config) -> Result<TlsState, LoadError> {
        let provider = provider();
        let l = &config.listener;
        let ca = &config.client_auth;
        let server_key = load::server_identity(&l.certificate, &l.private_key, &provider)?;

        let (roots, anchor_infos) = load_anchors(&ca.truststore)?;

        let mut crls = Vec::new();
        let mut crl_infos = Vec::new();
        for path in &ca.crls {
            let (ders, infos) = load_crl_file(path)?;
            crls.extend(ders);
            crl_infos.extend(infos);
        }

        let mut builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .with_crls(crls)
                // A CRL past its nextUpdate rejects the clients of its issuer: fail closed.
                .enforce_revocation_expiration();
        if !ca.require_crl {
            // A CRL applies to its own issuer's certificates only. Without this, one CRL in the
            // config would make every client of every other CA fail with "unknown revocation
            // status" (the nginx/HAProxy all-or-nothing trap). Strict mode is opt-in.
            builder = builder.allow_unknown_revocation_status();
        }
        let inner = builder.build().map_err(|e| {
            LoadError::new(
                &ca.truststore,
                format!("cannot build the client verifier: {e}"),
            )
        })?;
        let allow = AllowList::compile(&ca.allow).map_err(|(k, m)| {
            LoadError::new(&config.source, format!("client_auth.allow.{k}: {m}"))
        })?;
        // Every reload builds a new, empty memo: an acceptance never outlives the anchors,
        // CRLs and allow-list it was checked under.
        let crl_deadline = crl_infos.iter().filter_map(|c| c.next_update).min();
        let accepted = VerifiedChains::new(ca.verified_chain_cache, crl_deadline);
        let verifier = Arc::new(ShieldVerifier::new(inner, allow, accepted));

        let mut sc = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| LoadError::new(&config.source, format!("TLS versions: {e}")))?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(Arc::new(FixedCert(server_key.clone())));
        sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if l.session_resumption {
            // Security: each TlsState gets its own session cache and its own ticket keys, and
            // every reload builds a new TlsState. A session or ticket issued under an older
            // trust state (before a CA was removed, a CRL added or the allow-list narrowed)
            // therefore cannot be found or decrypted, and the client falls back to a full
            // handshake with full verification. Resumed sessions are additionally re-checked
            // after the handshake (see proxy::server), so an expiry cannot be skipped either.
            sc.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
            sc.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| {
                LoadError::new(
                    &config.source,
                    format!("cannot create session ticketer: {e}"),
                )
            })?;
        } else {
            // Default: a resumed session skips client-certificate verification, so offer none.
            sc.session_storage = Arc::new(NoServerSessionStorage {});
            sc.send_tls13_tickets = 0;
        }

        let inventory = Inventory {
            server: cert_info(&server_key.cert[0])
                .map_err(|m| LoadError::new(&l.certificate, m))?,
            anchors: anchor_infos,
            crls: crl_infos,
        };
        Ok(TlsState {
            server_config: Arc::new(sc),
            verifier,
            inventory,
        })
    }
}

/// Reads the truststore and makes each certificate in it a trust anchor, with its facts.
///
/// [`TlsState::build`] and `mtls-shield check` both call this, so `check` refuses exactly
/// the truststores that `run` refuses.
pub fn load_anchors(path: &Path) -> Result<(RootCertStore, Vec<CertInfo>), LoadError> {
    let ders = load::certificates(path, "truststore")?;
    let mut roots = RootCertStore::empty();
    let mut infos = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        roots.add(der.clone()).map_err(|e| {
            LoadError::new(
                path,
                format!(
                    "certificate #{} is not usable as a trust anchor: {e}",
                    i + 1
                ),
            )
        })?;
        infos.push(cert_info(der).map_err(|m| LoadError::new(path, m))?);
    }
    Ok((roots, infos))
}

/// Reads one CRL file (PEM with one or more CRLs, or one DER CRL) with the facts of each.
///
/// Shared by [`TlsState::build`] and `mtls-shield check`, like [`load_anchors`].
pub fn load_crl_file(
    path: &Path,
) -> Result<(Vec<CertificateRevocationListDer<'static>>, Vec<CrlInfo>), LoadError> {
    let ders = load::crls(path)?;
    let infos = ders
        .iter()
        .map(|der| crl_info(path, der.as_ref()).map_err(|m| LoadError::new(path, m)))
        .collect::<Result<_, _>>()?;
    Ok((ders, infos))
}

/// Parses a certificate's reportable facts.
pub fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, c) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("cannot parse certificate: {e}"))?;
    let mut sans = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => sans.push(format!(
                        "IP:{}",
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                    )),
                    16 => sans.push(format!(
                        "IP:{}",
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                    )),
                    _ => {}
                },
                GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        subject: rfc2253(c.subject()),
        issuer: rfc2253(c.issuer()),
        sans,
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        is_ca: c.is_ca(),
        fingerprint: hex::encode(sha256(der.as_ref())),
    })
}

fn crl_info(path: &Path, der: &[u8]) -> Result<CrlInfo, String> {
    let crl = load::parse_crl(der)?;
    Ok(CrlInfo {
        path: path.to_owned(),
        issuer: rfc2253(crl.issuer()),
        number: crl.crl_number().map(|n| n.to_string()),
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
        revoked: crl.iter_revoked_certificates().count(),
    })
}
