//! Builds the rustls server configuration (and an inventory of what it trusts) from a
//! [`Config`]. A `TlsState` is immutable: reload builds a new one and swaps it in whole.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerSessionMemoryCache,
};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::crl::{self, Anchor, Crl, DistributionPoints};
use super::load::{self, LoadError};
use super::ocsp::{OcspCache, OcspResolver};
use super::provider::provider;
use super::revocation::OcspPolicy;
use super::verifier::{ShieldVerifier, Trust};
use crate::config::{Config, ReportOnlyConfig};
use crate::policy::Policy;
use crate::x509::{cert_info, CertInfo, CrlInfo, CrlSignature, Inventory};

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
    pub(crate) inventory: Inventory,
    /// The truststore, for checking fetched CRLs before they are used.
    pub(crate) anchors: Vec<Anchor>,
    /// Asks OCSP responders for pending queries, when `client_auth.ocsp` is on.
    pub(crate) ocsp: Option<Arc<dyn OcspResolver>>,
}

/// A CRL that did not come from a file: fetched from a URL, or from the cache of one.
#[derive(Debug, Clone)]
pub(crate) struct FetchedCrl {
    /// The URL it came from.
    pub(crate) url: String,
    /// The CRL, parsed when it arrived (the state shares that parse).
    pub(crate) crl: Crl,
}

/// What a trust state takes besides the config's files.
#[derive(Debug, Default, Clone)]
pub(crate) struct BuildInputs {
    /// CRLs fetched from URLs, already checked when they arrived.
    pub(crate) fetched: Vec<FetchedCrl>,
    /// Where the verifier reports the CRL distribution points of chains that verified, when
    /// `client_auth.crl_from_distribution_points` is on.
    pub(crate) distribution_points: Option<DistributionPoints>,
    /// The OCSP answers and the client that asks responders, when `client_auth.ocsp` is on.
    pub(crate) ocsp: Option<OcspSetup>,
    /// The same for viewer certificates, when `viewer.ocsp` is on (its own soft-fail).
    pub(crate) viewer_ocsp: Option<OcspSetup>,
}

/// What OCSP needs from the running program: the answers shared by every state, and the
/// client that asks responders on the admission path.
#[derive(Debug, Clone)]
pub(crate) struct OcspSetup {
    /// The answers.
    pub(crate) cache: Arc<OcspCache>,
    /// Asks responders, with this generation's timeout and soft-fail policy.
    pub(crate) resolver: Arc<dyn OcspResolver>,
}

/// The OCSP policy of `config` over `setup`.
fn ocsp_policy(config: &Config, setup: Option<&OcspSetup>) -> Option<OcspPolicy> {
    let o = &config.client_auth.ocsp;
    setup.map(|s| OcspPolicy {
        mode: o.mode,
        responder: o.responder.clone(),
        cache: s.cache.clone(),
        soft_fail: o.soft_fail,
    })
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
    pub fn build(config: &Config, policy: &Policy) -> Result<TlsState, LoadError> {
        Self::build_with(config, policy, &BuildInputs::default())
    }

    /// [`TlsState::build`], with fetched CRLs and a distribution-point sink.
    pub(crate) fn build_with(
        config: &Config,
        policy: &Policy,
        inputs: &BuildInputs,
    ) -> Result<TlsState, LoadError> {
        let provider = provider();
        let l = &config.listener;
        let ca = &config.client_auth;
        let server_key = load::server_identity(&l.certificate, &l.private_key, &provider)?;

        let anchors = load_anchors(&ca.truststore)?;
        let algs = provider.signature_verification_algorithms;
        let mut crls = Vec::new();
        for path in &ca.crls {
            crls.extend(load_crl_file(path, &anchors, &algs)?);
        }
        let file_crls = crls.clone();
        for f in &inputs.fetched {
            // Fetched CRLs were checked when they arrived. One that no longer verifies (its
            // CA was re-keyed in the truststore since) is left out rather than failing a
            // reload the operator did not ask for; the fetcher's next CRL replaces it.
            let mut c = f.crl.clone();
            let checked = c.verify_signature(&anchors, &algs).map(|()| c);
            match checked {
                // A viewer CA's CRL is for the viewer trust (`viewer::ViewerTrust`), unless a
                // client_auth CA signed it.
                Ok(c)
                    if is_viewer_url(config, &f.url)
                        && c.info.signature != CrlSignature::Verified => {}
                Ok(c) => crls.push(c),
                Err(_) if is_viewer_url(config, &f.url) => {}
                Err(e) => tracing::warn!(url = %f.url, error = %e, "fetched CRL left out"),
            }
        }
        let crls = crl::choose(crls);
        let crl_infos: Vec<CrlInfo> = crls.iter().map(|c| c.info.clone()).collect();
        let anchor_infos: Vec<CertInfo> = anchors.iter().map(|a| a.info.clone()).collect();

        // Every reload builds a new verifier with an empty memo: an acceptance never outlives
        // the anchors, CRLs and allow-list it was checked under.
        let trust = Trust {
            anchors: anchors.clone(),
            crls,
            require_crl: ca.require_crl,
            algs,
            distribution_points: inputs.distribution_points.clone(),
            advertise_ca_names: ca.advertise_ca_names,
            ocsp: ocsp_policy(config, inputs.ocsp.as_ref()),
        };
        let mut verifier =
            ShieldVerifier::new(trust, policy.allow.clone(), ca.verified_chain_cache)
                .map_err(|m| LoadError::new(&ca.truststore, m))?;
        if let Some(candidate) = &ca.report_only {
            verifier = verifier.with_report_only(report_only_verifier(
                config, policy, candidate, &anchors, &file_crls, inputs,
            )?);
        }
        let verifier = Arc::new(verifier);

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
            // after the handshake (see proxy::admit::recheck_resumed), so an expiry cannot be skipped either.
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
            anchors,
            ocsp: inputs
                .ocsp
                .as_ref()
                .filter(|_| ca.ocsp.mode != crate::config::OcspMode::Off)
                .map(|s| s.resolver.clone()),
        })
    }
}

/// Whether `url` is one of `viewer.crl_urls`.
fn is_viewer_url(config: &Config, url: &str) -> bool {
    config
        .viewer
        .as_ref()
        .is_some_and(|v| v.crl_urls.iter().any(|u| u == url))
}

/// The report-only candidate's verifier: the candidate's truststore, CRL files and allow-list
/// where it names them, the enforced ones where it does not (fetched CRLs apply to both).
fn report_only_verifier(
    config: &Config,
    policy: &Policy,
    candidate: &ReportOnlyConfig,
    enforced_anchors: &[Anchor],
    enforced_crls: &[Crl],
    inputs: &BuildInputs,
) -> Result<ShieldVerifier, LoadError> {
    let ca = &config.client_auth;
    let algs = provider().signature_verification_algorithms;
    let anchors = match &candidate.truststore {
        Some(path) => load_anchors(path)?,
        None => enforced_anchors.to_vec(),
    };
    let mut crls = match &candidate.crls {
        Some(paths) => {
            let mut crls = Vec::new();
            for path in paths {
                crls.extend(load_crl_file(path, &anchors, &algs)?);
            }
            crls
        }
        None => enforced_crls.to_vec(),
    };
    for f in &inputs.fetched {
        let mut c = f.crl.clone();
        if c.verify_signature(&anchors, &algs).is_ok() {
            crls.push(c);
        }
    }
    let trust = Trust {
        anchors,
        crls: crl::choose(crls),
        require_crl: ca.require_crl,
        algs,
        distribution_points: None,
        advertise_ca_names: ca.advertise_ca_names,
        ocsp: ocsp_policy(config, inputs.ocsp.as_ref()),
    };
    let allow = policy
        .report_only_allow
        .clone()
        .unwrap_or_else(|| policy.allow.clone());
    let truststore = candidate.truststore.as_deref().unwrap_or(&ca.truststore);
    ShieldVerifier::new(trust, allow, ca.verified_chain_cache)
        .map_err(|m| LoadError::new(truststore, m))
}

/// Reads the truststore: every certificate in it is a trust anchor.
///
/// [`TlsState::build`] and `mtls-shield check` both call this, so `check` refuses exactly
/// the truststores that `run` refuses.
pub(crate) fn load_anchors(path: &Path) -> Result<Vec<Anchor>, LoadError> {
    let ders = load::certificates(path, "truststore")?;
    let mut anchors = Vec::with_capacity(ders.len());
    for (i, der) in ders.into_iter().enumerate() {
        // The same parse rustls makes when it adds an anchor, so a certificate it would not
        // take is refused here with its position in the file.
        webpki::anchor_from_trusted_cert(&der).map_err(|e| {
            LoadError::new(
                path,
                format!(
                    "certificate #{} is not usable as a trust anchor: {e:?}",
                    i + 1
                ),
            )
        })?;
        let info = cert_info(&der).map_err(|m| LoadError::new(path, m))?;
        anchors.push(Anchor { der, info });
    }
    Ok(anchors)
}

/// Reads one CRL file (PEM with one or more CRLs, or one DER CRL), checking each CRL's
/// signature against `anchors` (see [`crl`]).
///
/// Shared by [`TlsState::build`] and `mtls-shield check`, like [`load_anchors`].
pub(crate) fn load_crl_file(
    path: &Path,
    anchors: &[Anchor],
    algs: &WebPkiSupportedAlgorithms,
) -> Result<Vec<Crl>, LoadError> {
    load::crls(path)?
        .into_iter()
        .map(|der| {
            let mut c = Crl::parse(path, der).map_err(|e| LoadError::new(path, e))?;
            c.verify_signature(anchors, algs)
                .map_err(|e| LoadError::new(path, e))?;
            Ok(c)
        })
        .collect()
}
