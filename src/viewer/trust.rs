//! The viewer trust of one generation: `[viewer]`'s anchors, CRLs, OCSP and allow-list in a
//! [`ShieldVerifier`] (the handshake's own engine), and the memo of viewers it verified.
//!
//! # Why a memo hit decides what a full check would
//!
//! The memo is keyed by the SHA-256 of the viewer headers as received ([`Presented::digest`]).
//! The decoded chain is a pure function of those bytes (and of `viewer.intermediates`, fixed
//! for the generation), so the key names the chain. A [`ViewerTrust`] belongs to one
//! generation, and every reload, fetched CRL or changed OCSP answer builds a new one with an
//! empty memo, so an entry never outlives the trust it was checked under. Each entry holds
//! only inside its [`Accepted`] window (every certificate's validity, the nextUpdate of each
//! CRL and OCSP answer consulted), and the time is the request's. Only verified viewers are
//! remembered; a refusal is decided afresh every time. The route's `viewer_allow` is not in
//! the memo: the caller matches it on every request.

use std::sync::{Arc, OnceLock};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::headers::{DecodeError, Presented};
use super::reason::ViewerReason;
use crate::config::{ForwardConfig, OcspMode, ViewerConfig, ViewerHeaders, ViewerMode};
use crate::identity::ClientIdentity;
use crate::ledger::Seen;
use crate::policy::{AllowList, Route, ViewerPolicy};
use crate::tls::accepted::Accepted;
use crate::tls::crl::{self, Anchor, Crl};
use crate::tls::load::{self, LoadError};
use crate::tls::ocsp::OcspResolver;
use crate::tls::revocation::OcspPolicy;
use crate::tls::state::{load_anchors, load_crl_file, FetchedCrl, OcspSetup};
use crate::tls::verified_cache::{Holds, VerifiedChains};
use crate::tls::verifier::{ShieldVerifier, Trust};
use crate::tls::Reason;
use crate::x509::{cert_info, CertInfo, CrlInfo, CrlSignature};

/// The anchors and the configured intermediates, as CRL signers.
fn crl_signers(
    anchors: &[Anchor],
    intermediates: &[CertificateDer<'static>],
    config: &ViewerConfig,
) -> Result<Vec<Anchor>, LoadError> {
    let mut signers = anchors.to_vec();
    for der in intermediates {
        let path = config
            .intermediates
            .as_deref()
            .unwrap_or(&config.truststore);
        let info = cert_info(der).map_err(|m| LoadError::new(path, m))?;
        signers.push(Anchor {
            der: der.clone(),
            info,
        });
    }
    Ok(signers)
}

/// A viewer whose chain verified under a generation's viewer trust.
#[derive(Debug)]
pub struct Viewer {
    /// The acceptance: the parsed leaf, and until when it holds.
    pub accepted: Arc<Accepted>,
    /// The identity headers that describe the viewer, rendered once per chain.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its entry among the clients seen, found on its first request (then each request
    /// costs an atomic increment, not a lookup).
    pub(crate) seen: OnceLock<Option<Arc<Seen>>>,
}

impl Holds for Viewer {
    fn holds_at(&self, now: i64) -> bool {
        self.accepted.holds_at(now)
    }
}

impl Viewer {
    /// The viewer's parsed certificate.
    pub fn identity(&self) -> &Arc<ClientIdentity> {
        &self.accepted.identity
    }
}

/// A viewer refused: the stable reason, why in words, and its certificate when it parsed.
#[derive(Debug, Clone)]
pub struct ViewerRefusal {
    /// The reason (`viewer_*`).
    pub reason: ViewerReason,
    /// What was wrong, for the log and `verify --viewer`.
    pub detail: String,
    /// The viewer's leaf, when it could be read.
    pub identity: Option<Arc<ClientIdentity>>,
}

impl ViewerRefusal {
    fn decode(e: DecodeError) -> Self {
        let reason = match e {
            DecodeError::TooLong(_) => ViewerReason::ChainTooLong,
            DecodeError::BadEncoding(_) => ViewerReason::Chain(Reason::BadEncoding),
        };
        ViewerRefusal {
            reason,
            detail: e.to_string(),
            identity: None,
        }
    }
}

/// `[viewer]` of one generation.
#[derive(Debug)]
pub struct ViewerTrust {
    verifier: ShieldVerifier,
    /// `viewer.intermediates`, offered to path building after the presented ones.
    intermediates: Vec<CertificateDer<'static>>,
    headers: ViewerHeaders,
    forward: ForwardConfig,
    ocsp: Option<Arc<dyn OcspResolver>>,
    memo: VerifiedChains<Viewer>,
    /// The viewer truststore, for `check`.
    pub(crate) anchors: Vec<Anchor>,
    /// Who may sign a viewer CRL: the anchors and `viewer.intermediates` (CAs such as AWS
    /// Private CA's issuing CA publish their own CRLs). A CRL is checked against these when
    /// it arrives, and again against the issuer on the verified path when it is used.
    pub(crate) crl_signers: Vec<Anchor>,
    /// The CRLs in use, for `check` and metrics.
    pub(crate) crls: Vec<CrlInfo>,
}

impl ViewerTrust {
    /// Loads `[viewer]`'s files and builds its verifier with `allow` (`[viewer.allow]`),
    /// the CRLs fetched from URLs that a viewer CA signed, and `ocsp` when `viewer.ocsp` is
    /// on. Any failure names the file.
    pub(crate) fn build(
        config: &ViewerConfig,
        allow: AllowList,
        forward: &ForwardConfig,
        fetched: &[FetchedCrl],
        ocsp: Option<&OcspSetup>,
    ) -> Result<ViewerTrust, LoadError> {
        let algs = crate::tls::provider().signature_verification_algorithms;
        let anchors = load_anchors(&config.truststore)?;
        let intermediates = match &config.intermediates {
            Some(path) => load::certificates(path, "viewer intermediates")?,
            None => Vec::new(),
        };
        let crl_signers = crl_signers(&anchors, &intermediates, config)?;
        let mut crls: Vec<Crl> = Vec::new();
        for path in &config.crls {
            crls.extend(load_crl_file(path, &crl_signers, &algs)?);
        }
        // The fetcher serves every trust domain; only CRLs a viewer CA signed are used here.
        crls.extend(fetched.iter().filter_map(|f| {
            let mut c = f.crl.clone();
            let ours = c.verify_signature(&crl_signers, &algs).is_ok()
                && c.info.signature == CrlSignature::Verified;
            ours.then_some(c)
        }));
        let crls = crl::choose(crls);
        let crl_infos = crls.iter().map(|c| c.info.clone()).collect();
        let ocsp = ocsp.filter(|_| config.ocsp.mode != OcspMode::Off);
        let trust = Trust {
            anchors: anchors.clone(),
            crls,
            require_crl: config.require_crl,
            algs,
            distribution_points: None,
            advertise_ca_names: false,
            ocsp: ocsp.map(|s| OcspPolicy {
                mode: config.ocsp.mode,
                responder: config.ocsp.responder.clone(),
                cache: s.cache.clone(),
                soft_fail: config.ocsp.soft_fail,
            }),
        };
        // The verifier's own memo is off: this trust keeps one keyed by the headers, which
        // also saves the decode.
        let verifier = ShieldVerifier::new(trust, allow, 0)
            .map_err(|e| LoadError::new(&config.truststore, e))?;
        Ok(ViewerTrust {
            verifier,
            intermediates,
            headers: config.headers,
            forward: forward.clone(),
            ocsp: ocsp.map(|s| s.resolver.clone()),
            memo: VerifiedChains::new(config.verified_chain_cache),
            anchors,
            crl_signers,
            crls: crl_infos,
        })
    }

    /// The viewer headers of a request, as this trust reads them.
    pub fn read(&self, headers: &HeaderMap) -> Presented {
        Presented::read(headers, self.headers)
    }

    /// The viewer anchors' facts, for `check`.
    pub(crate) fn anchor_infos(&self) -> impl Iterator<Item = &CertInfo> {
        self.anchors.iter().map(|a| &a.info)
    }

    /// Viewers remembered now (for tests and diagnostics).
    pub fn remembered(&self) -> usize {
        self.memo.len()
    }

    /// The verdict on a request on `route` (`None`: no route covers it): its viewer headers
    /// judged at `now` (Unix seconds), then what the route needs (`viewer`, `viewer_allow`).
    /// The verified viewer, `None` when the request passes without one, or the refusal. The
    /// request path and `verify --viewer` both call this.
    pub async fn judge_request(
        &self,
        policy: &ViewerPolicy,
        route: Option<&Route>,
        presented: &Presented,
        now: i64,
        verified: impl FnOnce(),
    ) -> Result<Option<Arc<Viewer>>, ViewerRefusal> {
        let mode = policy.mode_for(route);
        if mode == ViewerMode::Ignored {
            return Ok(None);
        }
        match self.judge(presented, now, verified).await? {
            Some(viewer) => match route.and_then(Route::viewer_allow) {
                Some(allow) if !allow.allows(viewer.identity()) => Err(ViewerRefusal {
                    reason: ViewerReason::Chain(Reason::NotAllowed),
                    detail: "the viewer's chain verifies, but the route's viewer_allow matches none of its identities".to_owned(),
                    identity: Some(viewer.identity().clone()),
                }),
                _ => Ok(Some(viewer)),
            },
            None if mode == ViewerMode::Required => Err(ViewerRefusal {
                reason: ViewerReason::Chain(Reason::NoCertificate),
                detail: "no viewer certificate, and the request's route requires one".to_owned(),
                identity: None,
            }),
            None => Ok(None),
        }
    }

    /// The verdict on a request's viewer headers at `now` (Unix seconds): the verified viewer,
    /// `None` when no certificate was presented, or the refusal. `verified` is told of each
    /// full verification (a memo miss), for the metrics.
    pub async fn judge(
        &self,
        presented: &Presented,
        now: i64,
        verified: impl FnOnce(),
    ) -> Result<Option<Arc<Viewer>>, ViewerRefusal> {
        if presented.is_empty() {
            return Ok(None);
        }
        let key = presented.digest();
        if let Some(hit) = self.memo.get(&key, now) {
            return Ok(Some(hit));
        }
        let Some(chain) = presented.decode().map_err(ViewerRefusal::decode)? else {
            return Ok(None);
        };
        verified();
        let viewer = Arc::new(self.verify(&chain.leaf, &chain.intermediates, now).await?);
        self.memo.insert(key, &viewer);
        Ok(Some(viewer))
    }

    /// Whether the chain is accepted at `at` without asking any OCSP responder (for `/trust`):
    /// until when, or `None`.
    pub(crate) fn accepts(
        &self,
        leaf: &CertificateDer<'_>,
        presented: &[CertificateDer<'_>],
        at: UnixTime,
    ) -> Option<i64> {
        let mut intermediates: Vec<CertificateDer<'_>> = presented.to_vec();
        intermediates.extend(self.intermediates.iter().cloned());
        self.verifier
            .check(leaf, &intermediates, at)
            .ok()
            .map(|a| a.valid_until)
    }

    /// The full check of one chain: path, expiry, EKU, keyUsage, revocation (OCSP asked
    /// when its answers are not cached), then `[viewer.allow]`. `verify --viewer` calls it.
    pub async fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        presented: &[CertificateDer<'_>],
        now: i64,
    ) -> Result<Viewer, ViewerRefusal> {
        let mut intermediates: Vec<CertificateDer<'_>> = presented.to_vec();
        intermediates.extend(self.intermediates.iter().cloned());
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now).unwrap_or(0),
        ));
        let accepted =
            self.verifier
                .check(leaf, &intermediates, at)
                .map_err(|r| ViewerRefusal {
                    reason: ViewerReason::Chain(r.reason),
                    detail: r.detail,
                    identity: r.identity,
                })?;
        let accepted = self.resolve_ocsp(accepted).await?;
        let headers = accepted.identity.headers(&self.forward);
        Ok(Viewer {
            accepted,
            headers,
            seen: OnceLock::new(),
        })
    }

    /// Security: as on the handshake path, an OCSP status the cache could not answer is
    /// asked for before the request goes anywhere; the acceptance then holds only until the
    /// answers' nextUpdate.
    async fn resolve_ocsp(&self, accepted: Arc<Accepted>) -> Result<Arc<Accepted>, ViewerRefusal> {
        if accepted.ocsp_pending.is_empty() {
            return Ok(accepted);
        }
        let refuse = |reason, detail: String| ViewerRefusal {
            reason: ViewerReason::Chain(reason),
            detail,
            identity: Some(accepted.identity.clone()),
        };
        let Some(resolver) = &self.ocsp else {
            // Queries exist only when OCSP is on, and then there is a resolver; fail closed
            // if that ever stops being true.
            return Err(refuse(
                Reason::RevocationUnknown,
                "OCSP queries without a resolver".to_owned(),
            ));
        };
        match resolver.resolve(&accepted.ocsp_pending).await {
            Ok(until) => Ok(Arc::new(accepted.answered(until))),
            Err((reason, detail)) => Err(refuse(reason, detail)),
        }
    }
}
