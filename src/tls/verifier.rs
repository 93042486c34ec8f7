//! The client-certificate verifier: rustls-webpki path building (chain, expiry, EKU, name and
//! path-length constraints), revocation of every certificate on the path (`revocation`), the
//! checks WebPKI leaves to its caller, and the identity allow-list, with a memo of accepted
//! chains.
//!
//! The live handshake, `mtls-shield verify` and every later re-judgement of an open connection
//! call [`ShieldVerifier::check`], so their answers agree by construction.
//!
//! # What is checked beyond WebPKI, and why here
//!
//! rustls-webpki deliberately ignores keyUsage (browsers do), and the TLS layer checks the
//! client's public key only when the CertificateVerify signature arrives. The shield wants to
//! be at least as strict as OpenSSL wherever RFC 5280 is on its side, and `verify` must give
//! the handshake's answer offline, so [`ShieldVerifier::check`] adds, on the path that WebPKI
//! actually verified (extra certificates the client happened to send play no part):
//!
//! - every CA certificate on the path whose keyUsage extension is present must include
//!   keyCertSign (RFC 5280 §6.1.4(n)); otherwise WebPKI is asked to try another path, and
//!   when none is left the client is refused as `unknown_ca`;
//! - the leaf's keyUsage, when present, must include digitalSignature, since a TLS client
//!   proves possession of its key with a signature (`bad_purpose` otherwise);
//! - the leaf's public key must be one the configured crypto provider can verify a
//!   CertificateVerify signature with (algorithm, key size, curve); otherwise `bad_signature`,
//!   the answer the handshake would give a moment later anyway.
//!
//! The verifier also leaves notes for the connection that is handshaking (through a tokio
//! task-local, because rustls calls verifiers synchronously inside the accept future's poll):
//! the acceptance on success, so the leaf is parsed once per handshake, and the parsed
//! certificate and the refusal's detail on failure, so the rejection log line can name what
//! was presented and why it was refused.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage, VerifiedPath};
use x509_parser::prelude::{FromDer, X509Certificate};

pub use super::accepted::Accepted;
use super::classify::webpki_error;
use super::crl::{Anchor, Crl, DistributionPoint, DistributionPoints};
use super::reason::Reason;
use super::revocation::{OcspPolicy, OnPath, Pending, Refusal, Revocation, Role};
use super::verified_cache::VerifiedChains;
use crate::identity::ClientIdentity;
use crate::policy::AllowList;
use crate::x509::{self as facts, KeyUsageBits};

/// What the verifier learnt during one handshake.
#[derive(Debug, Default)]
pub struct HandshakeNotes {
    /// The acceptance, when the certificate was accepted.
    pub accepted: Option<Arc<Accepted>>,
    /// The parsed leaf, whether it was accepted or not (absent if none was presented, or it
    /// could not be parsed).
    pub identity: Option<Arc<ClientIdentity>>,
    /// Set when the verifier refused the certificate.
    pub rejected: Option<Reason>,
    /// Why, in words, when the verifier refused it.
    pub detail: Option<String>,
    /// The report-only candidate's verdict, when a candidate is configured.
    pub candidate: Option<CandidateVerdict>,
}

/// A verdict without its acceptance: accepted, or refused with a reason and why.
pub type CandidateVerdict = Result<(), (Reason, String)>;

tokio::task_local! {
    static NOTES: RefCell<HandshakeNotes>;
}

/// Runs a handshake future and returns what the verifier noted during it.
pub async fn with_notes<F: Future>(f: F) -> (F::Output, HandshakeNotes) {
    NOTES
        .scope(RefCell::new(HandshakeNotes::default()), async move {
            let out = f.await;
            let notes = NOTES.with(|n| n.take());
            (out, notes)
        })
        .await
}

fn note(outcome: &Result<Arc<Accepted>, Rejection>, candidate: Option<CandidateVerdict>) {
    // Outside a handshake scope (the `verify` command) there is nobody to tell.
    let _ = NOTES.try_with(|n| {
        let mut n = n.borrow_mut();
        *n = match outcome {
            Ok(a) => HandshakeNotes {
                accepted: Some(a.clone()),
                identity: Some(a.identity.clone()),
                rejected: None,
                detail: None,
                candidate,
            },
            Err(r) => HandshakeNotes {
                accepted: None,
                identity: r.identity.clone(),
                rejected: Some(r.reason),
                detail: Some(r.detail.clone()),
                candidate,
            },
        };
    });
}

/// A refused certificate: the stable reason, the rustls error that drives the TLS alert,
/// the parsed leaf when it could be parsed, and why in words.
#[derive(Debug)]
pub struct Rejection {
    /// Stable reason code.
    pub reason: Reason,
    /// The error handed back to rustls.
    pub error: rustls::Error,
    /// The presented leaf, parsed.
    pub identity: Option<Arc<ClientIdentity>>,
    /// What was wrong, for logs and `verify`.
    pub detail: String,
}

impl Rejection {
    fn new(reason: Reason, error: rustls::Error, identity: Option<Arc<ClientIdentity>>) -> Self {
        let detail = error.to_string();
        Self {
            reason,
            error,
            identity,
            detail,
        }
    }

    fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// What a verifier trusts: anchors, CRLs and the revocation policy.
#[derive(Debug)]
pub(crate) struct Trust {
    /// The truststore, as loaded.
    pub(crate) anchors: Vec<Anchor>,
    /// The CRLs, as chosen by [`crl::choose`] (only those in use are consulted).
    pub(crate) crls: Vec<Crl>,
    /// `client_auth.require_crl`.
    pub(crate) require_crl: bool,
    /// The crypto provider's signature algorithms.
    pub(crate) algs: WebPkiSupportedAlgorithms,
    /// Where to report the CRL distribution points of accepted chains, when that is on.
    pub(crate) distribution_points: Option<DistributionPoints>,
    /// Send the anchors' names in the CertificateRequest.
    pub(crate) advertise_ca_names: bool,
    /// OCSP, when `client_auth.ocsp` is on.
    pub(crate) ocsp: Option<OcspPolicy>,
}

/// A trust anchor whose certificate carries a keyUsage without keyCertSign.
#[derive(Debug)]
struct NonIssuingAnchor {
    anchor: TrustAnchor<'static>,
    subject: String,
    spki_sha256: [u8; 32],
}

/// What the revocation check needs of a trust anchor that issued a path's top certificate.
#[derive(Debug)]
struct AnchorKey {
    /// The SubjectPublicKeyInfo contents, as webpki's [`TrustAnchor`] holds them.
    spki_contents: Vec<u8>,
    /// The whole SubjectPublicKeyInfo DER.
    spki: Vec<u8>,
    usage: KeyUsageBits,
}

/// WebPKI verification, the checks it leaves to the caller, and the allow-list, with a memo
/// of accepted chains.
#[derive(Debug)]
pub struct ShieldVerifier {
    roots: Vec<TrustAnchor<'static>>,
    hints: Vec<DistinguishedName>,
    non_issuing: Vec<NonIssuingAnchor>,
    anchor_keys: Vec<AnchorKey>,
    revocation: Revocation,
    algs: WebPkiSupportedAlgorithms,
    allow: AllowList,
    distribution_points: Option<DistributionPoints>,
    /// The report-only candidate, judged beside this verifier on every handshake.
    report_only: Option<Arc<ShieldVerifier>>,
    /// Chains accepted under this trust state; see [`VerifiedChains`] for why a hit decides
    /// exactly what the full check would.
    accepted: VerifiedChains,
}

/// What the path webpki accepted yields.
#[derive(Default)]
struct PathFacts {
    /// When the acceptance starts and ends (the path's validity, and the CRLs' nextUpdate).
    window: Option<(i64, i64)>,
    /// The OCSP lookups the cache could not answer, and until when the cached ones hold.
    pending: Pending,
    /// The CRL distribution points of the path, when they are fetched.
    points: Vec<DistributionPoint>,
}

/// A truststore certificate that cannot be a trust anchor; `index` counts from 1 in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate #{index}{}: {why}", if *.not_an_anchor { " is not usable as a trust anchor" } else { "" })]
pub(crate) struct AnchorError {
    /// Its place in the truststore, from 1.
    pub(crate) index: usize,
    /// webpki refused it as an anchor (else: x509-parser cannot read it).
    pub(crate) not_an_anchor: bool,
    /// What the parser said.
    pub(crate) why: String,
}

/// Why the client's public key cannot sign a handshake the provider verifies: the detail of a
/// `bad_signature` refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyUnusable {
    /// The SubjectPublicKeyInfo does not parse.
    #[error("the certificate's public key ({0}) cannot be read")]
    Unreadable(String),
    /// No signature scheme the server offers fits the key type (or its curve).
    #[error("the certificate's public key ({0}) is not one the crypto provider (aws-lc-rs) can verify a TLS handshake signature with; use an RSA (2048 to 8192 bits), ECDSA P-256/P-384/P-521 or Ed25519 key")]
    Unsupported(String),
    /// An RSA modulus outside what the provider verifies.
    #[error("the certificate's public key is {0}: the crypto provider (aws-lc-rs) verifies RSA signatures only from keys of {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, so the client's handshake signature would be refused")]
    RsaSize(String),
}

impl ShieldVerifier {
    /// Builds a verifier. Fails when an anchor is not usable as one.
    pub(crate) fn new(
        trust: Trust,
        allow: AllowList,
        memo_capacity: usize,
    ) -> Result<Self, AnchorError> {
        let mut store = RootCertStore::empty();
        let mut non_issuing = Vec::new();
        let mut anchor_keys = Vec::new();
        for (i, a) in trust.anchors.iter().enumerate() {
            store.add(a.der.clone()).map_err(|e| AnchorError {
                index: i + 1,
                not_an_anchor: true,
                why: e.to_string(),
            })?;
            let (_, parsed) =
                X509Certificate::from_der(a.der.as_ref()).map_err(|e| AnchorError {
                    index: i + 1,
                    not_an_anchor: false,
                    why: e.to_string(),
                })?;
            if let Some(anchor) = store.roots.last() {
                anchor_keys.push(AnchorKey {
                    spki_contents: anchor.subject_public_key_info.as_ref().to_vec(),
                    spki: parsed.public_key().raw.to_vec(),
                    usage: KeyUsageBits::of(&parsed),
                });
            }
            if a.info.key_cert_sign_forbidden {
                let spki_sha256 = facts::sha256(parsed.public_key().raw);
                if let Some(anchor) = store.roots.last() {
                    non_issuing.push(NonIssuingAnchor {
                        anchor: anchor.clone(),
                        subject: a.info.subject.clone(),
                        spki_sha256,
                    });
                }
            }
        }
        Ok(Self {
            // Security: the names tell a client which certificate to present; hiding them
            // (advertise_ca_names = false) also hides which CAs this origin trusts.
            hints: if trust.advertise_ca_names {
                store.subjects()
            } else {
                Vec::new()
            },
            roots: store.roots,
            non_issuing,
            anchor_keys,
            revocation: Revocation::new(&trust.crls, trust.require_crl).with_ocsp(trust.ocsp),
            algs: trust.algs,
            allow,
            distribution_points: trust.distribution_points,
            report_only: None,
            accepted: VerifiedChains::new(memo_capacity),
        })
    }

    /// Adds the report-only candidate that [`ShieldVerifier::judge_candidate`] consults.
    pub(crate) fn with_report_only(mut self, candidate: ShieldVerifier) -> Self {
        self.report_only = Some(Arc::new(candidate));
        self
    }

    /// The report-only candidate's verdict on a chain, when one is configured. It never
    /// changes the enforced verdict.
    pub fn judge_candidate(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Option<CandidateVerdict> {
        let candidate = self.report_only.as_ref()?;
        Some(
            candidate
                .check(end_entity, intermediates, now)
                .map(|_| ())
                .map_err(|r| (r.reason, r.detail)),
        )
    }

    /// Whether an open connection may stay open when its OCSP answer went stale and no fresh
    /// one came (`client_auth.ocsp_soft_fail`).
    pub fn ocsp_soft_fail(&self) -> bool {
        self.revocation.ocsp_soft_fail()
    }

    /// Chains remembered as accepted (for tests and diagnostics).
    pub fn cached_chains(&self) -> usize {
        self.accepted.len()
    }

    /// True when no chain is remembered.
    pub fn accepted_is_empty(&self) -> bool {
        self.accepted.is_empty()
    }

    /// The full decision for a presented chain at time `now`.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Arc<Accepted>, Rejection> {
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let key = self.accepted.key(end_entity, intermediates);
        if let Some(hit) = key.as_ref().and_then(|k| self.accepted.get(k, now_secs)) {
            return Ok(hit);
        }
        let accepted = Arc::new(self.decide(end_entity, intermediates, now)?);
        if let Some(key) = key {
            self.accepted.insert(key, &accepted);
        }
        Ok(accepted)
    }

    fn decide(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Accepted, Rejection> {
        let parsed = X509Certificate::from_der(end_entity.as_ref())
            .ok()
            .map(|(_, c)| c);
        let identity = parsed
            .as_ref()
            .map(|c| Arc::new(ClientIdentity::from_x509(c, end_entity, intermediates)));
        let facts = self
            .verify_path(end_entity, intermediates, parsed.as_ref(), now)
            .map_err(|(reason, error, detail)| {
                let r = Rejection::new(reason, error, identity.clone());
                match detail {
                    Some(detail) => r.with_detail(detail),
                    None => r,
                }
            })?;
        let (Some(leaf), Some(identity), Some((valid_from, valid_until))) =
            (parsed.as_ref(), identity, facts.window)
        else {
            // WebPKI accepted what x509-parser cannot read: fail closed, since the allow-list
            // and the identity headers both need the parsed fields.
            return Err(Rejection::new(
                Reason::BadEncoding,
                CertificateError::BadEncoding.into(),
                None,
            )
            .with_detail("the certificate verified but its fields could not be parsed"));
        };
        self.judge_leaf(leaf, &identity)
            .map_err(|(reason, error, detail)| {
                Rejection::new(reason, error, Some(identity.clone())).with_detail(detail)
            })?;
        // Only now, with the chain accepted: a refused client must not make the shield fetch
        // URLs of its choosing.
        if let Some(sink) = &self.distribution_points {
            for dp in facts.points {
                sink.report(dp);
            }
        }
        Ok(Accepted {
            identity,
            valid_from,
            valid_until: valid_until.min(facts.pending.deadline),
            ocsp_pending: facts.pending.queries,
        })
    }

    /// Has webpki build and verify a path from `end_entity` to an anchor, with the shield's
    /// own checks on each candidate path ([`Self::judge_path`]: the CAs' keyUsage and
    /// revocation). Returns what the accepted path yields, or the refusal with our detail
    /// when webpki's final answer is the refusal we gave it.
    fn verify_path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        leaf: Option<&X509Certificate<'_>>,
        now: UnixTime,
    ) -> Result<PathFacts, (Reason, rustls::Error, Option<String>)> {
        let cert = EndEntityCert::try_from(end_entity).map_err(|e| {
            let (reason, error) = webpki_error(e);
            (reason, error, None)
        })?;
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let facts = RefCell::new(PathFacts::default());
        let path_refusal: RefCell<Option<Refusal>> = RefCell::new(None);
        // webpki calls this for each candidate path that it has fully verified up to an
        // anchor; an error makes it try the next candidate. The leaf's facts are needed for
        // the window, so a leaf x509-parser cannot read fails closed, after WebPKI has had its
        // say (its reason is the more useful one for a damaged certificate).
        let on_path = |path: &VerifiedPath<'_>| -> Result<(), webpki::Error> {
            let leaf = leaf.ok_or(webpki::Error::BadDer)?;
            self.judge_verified_path(path, leaf, now_secs)
                .map(|found| *facts.borrow_mut() = found)
                .map_err(|refusal| {
                    let error = refusal.error.clone();
                    *path_refusal.borrow_mut() = Some(refusal);
                    error
                })
        };
        // Revocation is not webpki's: `judge_path` decides it.
        let verified = cert.verify_for_usage(
            self.algs.all,
            &self.roots,
            intermediates,
            now,
            KeyUsage::client_auth(),
            None,
            Some(&on_path),
        );
        if let Err(e) = verified {
            // The detail is ours when webpki's final answer is the refusal we gave it (webpki
            // keeps the most specific error over every path it tried).
            let detail = path_refusal
                .borrow_mut()
                .take()
                .filter(|r| std::mem::discriminant(&r.error) == std::mem::discriminant(&e))
                .map(|r| r.detail);
            let (reason, error) = webpki_error(e);
            return Err((reason, error, detail));
        }
        Ok(facts.into_inner())
    }

    /// One candidate path webpki verified: the shield's checks on it, and what it yields.
    fn judge_verified_path(
        &self,
        path: &VerifiedPath<'_>,
        leaf: &X509Certificate<'_>,
        now_secs: i64,
    ) -> Result<PathFacts, Refusal> {
        let mut pending = Pending::default();
        let window = self.judge_path(path, leaf, now_secs, &mut pending)?;
        let points = self
            .distribution_points
            .as_ref()
            .map_or_else(Vec::new, |_| distribution_points_of(path, leaf));
        Ok(PathFacts {
            window: Some(window),
            pending,
            points,
        })
    }

    /// The checks on the leaf that WebPKI leaves to its caller, then the allow-list.
    fn judge_leaf(
        &self,
        leaf: &X509Certificate<'_>,
        identity: &ClientIdentity,
    ) -> Result<(), (Reason, rustls::Error, String)> {
        if !KeyUsageBits::of(leaf).allows_digital_signature() {
            return Err((
                Reason::BadPurpose,
                CertificateError::InvalidPurpose.into(),
                "the certificate's keyUsage does not include digitalSignature, which a TLS client needs to prove it holds the key".to_owned(),
            ));
        }
        if let Err(why) = self.leaf_key_usable(leaf) {
            return Err((
                Reason::BadSignature,
                CertificateError::BadSignature.into(),
                why.to_string(),
            ));
        }
        if !self.allow.allows(identity) {
            // ApplicationVerificationFailure makes rustls send the `access_denied` alert:
            // a refused identity looks exactly like any other refusal on the wire.
            return Err((
                Reason::NotAllowed,
                CertificateError::ApplicationVerificationFailure.into(),
                "the chain verifies, but the certificate matches no allow-list entry".to_owned(),
            ));
        }
        Ok(())
    }

    /// The checks on one path WebPKI verified (the CAs' keyUsage, then the revocation of each
    /// certificate), and the window in which the path stays valid.
    fn judge_path(
        &self,
        path: &VerifiedPath<'_>,
        leaf: &X509Certificate<'_>,
        now: i64,
        pending: &mut Pending,
    ) -> Result<(i64, i64), Refusal> {
        let unknown_ca = |detail| Refusal {
            error: webpki::Error::UnknownIssuer,
            detail,
        };
        let ders: Vec<CertificateDer<'_>> =
            path.intermediate_certificates().map(|c| c.der()).collect();
        let mut cas = Vec::with_capacity(ders.len());
        for der in &ders {
            let (_, c) = X509Certificate::from_der(der.as_ref()).map_err(|e| {
                unknown_ca(format!(
                    "an intermediate CA certificate cannot be parsed: {e}"
                ))
            })?;
            // Security: RFC 5280 §6.1.4(n). A CA key whose keyUsage lacks keyCertSign must not
            // issue certificates; WebPKI treats basicConstraints as enough and never looks.
            if !KeyUsageBits::of(&c).allows_cert_sign() {
                return Err(unknown_ca(format!(
                    "intermediate CA {} has a keyUsage extension without keyCertSign, so it may not issue certificates (RFC 5280 §6.1.4(n))",
                    facts::rfc2253(c.subject())
                )));
            }
            cas.push(c);
        }
        // The same rule for the trust anchor, except when the anchor is the client's own
        // self-signed certificate (a pinned certificate in the truststore): then no CA key
        // issued anything.
        let leaf_spki = facts::sha256(leaf.public_key().raw);
        if let Some(a) = self
            .non_issuing
            .iter()
            .find(|a| a.anchor == *path.anchor() && a.spki_sha256 != leaf_spki)
        {
            return Err(unknown_ca(format!(
                "trust anchor {} has a keyUsage extension without keyCertSign, so it may not issue certificates (RFC 5280 §6.1.4(n))",
                a.subject
            )));
        }
        self.judge_revocation(path, leaf, &cas, now, pending)?;
        let mut from = leaf.validity().not_before.timestamp();
        let mut until = leaf.validity().not_after.timestamp().saturating_add(1);
        until = until.min(self.revocation.deadline(leaf.issuer().as_raw()));
        for c in &cas {
            from = from.max(c.validity().not_before.timestamp());
            until = until
                .min(c.validity().not_after.timestamp().saturating_add(1))
                .min(self.revocation.deadline(c.issuer().as_raw()));
        }
        Ok((from, until))
    }

    /// Revocation of the leaf and of each intermediate, each against its issuer on this path
    /// (the anchor itself is trusted as configured, as webpki's `Chain` depth does).
    fn judge_revocation(
        &self,
        path: &VerifiedPath<'_>,
        leaf: &X509Certificate<'_>,
        cas: &[X509Certificate<'_>],
        now: i64,
        pending: &mut Pending,
    ) -> Result<(), Refusal> {
        let anchor_spki = path.anchor().subject_public_key_info.as_ref();
        let anchor = self
            .anchor_keys
            .iter()
            .find(|k| k.spki_contents.as_slice() == anchor_spki)
            .ok_or_else(|| Refusal {
                // Every anchor webpki can pick is one of ours; fail closed if not.
                error: webpki::Error::UnknownIssuer,
                detail: "the path's trust anchor is not in this trust state".to_owned(),
            })?;
        let issuer_of = |i: usize| match cas.get(i) {
            Some(ca) => (ca.public_key().raw, KeyUsageBits::of(ca)),
            None => (anchor.spki.as_slice(), anchor.usage),
        };
        let certs =
            std::iter::once((leaf, Role::EndEntity)).chain(cas.iter().map(|c| (c, Role::Ca)));
        for (i, (cert, role)) in certs.enumerate() {
            let (issuer_spki, issuer_usage) = issuer_of(i);
            let on = OnPath {
                cert,
                role,
                issuer_spki,
                issuer_usage,
            };
            self.revocation.check(&on, now, &self.algs, pending)?;
        }
        Ok(())
    }

    /// Whether the leaf's public key can make a CertificateVerify signature that this server
    /// accepts: some signature scheme it offers must map to an algorithm for this key type
    /// (which pins the curve for EC keys), and RSA keys must be of a size the provider
    /// verifies.
    fn leaf_key_usable(&self, leaf: &X509Certificate<'_>) -> Result<(), KeyUnusable> {
        let spki = leaf.public_key();
        let describe = || facts::describe_key(spki);
        let Some(parts) = facts::spki_parts(spki.raw) else {
            return Err(KeyUnusable::Unreadable(describe()));
        };
        let usable = self.algs.mapping.iter().any(|(_, algs)| {
            algs.iter()
                .any(|a| a.public_key_alg_id().as_ref() == parts.algorithm)
        });
        if !usable {
            return Err(KeyUnusable::Unsupported(describe()));
        }
        if let Some(bits) = facts::rsa_modulus_bits(spki) {
            // The provider's RSA verification algorithms are RSA_PKCS1_2048_8192_* and
            // RSA_PSS_2048_8192_*: they refuse any other modulus size (the lower bound is
            // pinned against the provider by `the_rsa_size_bounds_are_the_providers`).
            if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                return Err(KeyUnusable::RsaSize(describe()));
            }
        }
        Ok(())
    }
}

/// The CRL distribution points of the certificates on a verified path, each with the
/// certificate of the CA that signs that CRL (`None` for the trust anchor).
fn distribution_points_of(
    path: &VerifiedPath<'_>,
    leaf: &X509Certificate<'_>,
) -> Vec<DistributionPoint> {
    let intermediates: Vec<CertificateDer<'static>> = path
        .intermediate_certificates()
        .map(|c| c.der().into_owned())
        .collect();
    let mut out = Vec::new();
    let mut add = |urls: Vec<String>, issuer: Option<&CertificateDer<'static>>| {
        for url in urls {
            out.push(DistributionPoint {
                url,
                issuer: issuer.cloned(),
            });
        }
    };
    add(facts::crl_distribution_urls(leaf), intermediates.first());
    for (i, der) in intermediates.iter().enumerate() {
        if let Ok((_, c)) = X509Certificate::from_der(der.as_ref()) {
            add(facts::crl_distribution_urls(&c), intermediates.get(i + 1));
        }
    }
    out
}

/// The smallest RSA modulus the provider verifies signatures from.
const RSA_MIN_BITS: usize = 2048;
/// The largest RSA modulus the provider verifies signatures from.
const RSA_MAX_BITS: usize = 8192;

impl ClientCertVerifier for ShieldVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Fail closed: a client without a certificate never completes a handshake.
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let outcome = self.check(end_entity, intermediates, now);
        note(
            &outcome,
            self.judge_candidate(end_entity, intermediates, now),
        );
        outcome
            .map(|_| ClientCertVerified::assertion())
            .map_err(|r| r.error)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    //! The keyUsage rules, on chains rcgen builds. Each refusal has a sibling that differs
    //! only in the bit under test and is accepted, so a test fails if the rule is dropped
    //! (the refusal would pass) or over-applied (the sibling would be refused).
    use super::*;
    use crate::config::AllowConfig;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose as Ku,
    };

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca_params(cn: &str, usages: &[Ku]) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = usages.to_vec();
        p
    }

    fn root(cn: &str, usages: &[Ku]) -> Ca {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params(cn, usages).self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn intermediate(cn: &str, usages: &[Ku], issuer: &Ca) -> Ca {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params(cn, usages)
            .signed_by(&key, &issuer.cert, &issuer.key)
            .unwrap();
        Ca { cert, key }
    }

    fn leaf(cn: &str, usages: &[Ku], issuer: &Ca) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = usages.to_vec();
        p.signed_by(&key, &issuer.cert, &issuer.key)
            .unwrap()
            .der()
            .clone()
    }

    const CA: [Ku; 2] = [Ku::KeyCertSign, Ku::CrlSign];
    const CLIENT: [Ku; 1] = [Ku::DigitalSignature];

    /// A verifier trusting `anchors`, with no CRL, no allow-list and no memo, so every call
    /// is a full check.
    fn verifier(anchors: &[&CertificateDer<'static>]) -> ShieldVerifier {
        let trust = Trust {
            anchors: anchors
                .iter()
                .map(|der| Anchor {
                    der: (*der).clone(),
                    info: crate::x509::cert_info(der).unwrap(),
                })
                .collect(),
            crls: Vec::new(),
            require_crl: false,
            algs: crate::tls::provider().signature_verification_algorithms,
            distribution_points: None,
            advertise_ca_names: true,
            ocsp: None,
        };
        let allow = AllowList::compile(&AllowConfig::default()).unwrap();
        ShieldVerifier::new(trust, allow, 0).unwrap()
    }

    fn check(
        v: &ShieldVerifier,
        leaf: &CertificateDer<'static>,
        chain: &[CertificateDer<'static>],
    ) -> Result<Arc<Accepted>, Rejection> {
        v.check(leaf, chain, UnixTime::now())
    }

    #[test]
    fn an_intermediate_without_key_cert_sign_cannot_issue_clients() {
        let r = root("Root", &CA);
        let bad = intermediate("No-Sign Issuing CA", &[Ku::DigitalSignature], &r);
        let client = leaf("c", &CLIENT, &bad);
        let refusal = check(
            &verifier(&[r.cert.der()]),
            &client,
            &[bad.cert.der().clone()],
        )
        .expect_err("a CA without keyCertSign issued it");
        assert_eq!(refusal.reason, Reason::UnknownCa);
        assert!(
            refusal.detail.contains("keyCertSign") && refusal.detail.contains("No-Sign Issuing CA"),
            "{}",
            refusal.detail
        );
    }

    #[test]
    fn an_intermediate_with_key_cert_sign_issues_clients() {
        let r = root("Root", &CA);
        let good = intermediate("Issuing CA", &CA, &r);
        let client = leaf("c", &CLIENT, &good);
        check(
            &verifier(&[r.cert.der()]),
            &client,
            &[good.cert.der().clone()],
        )
        .unwrap();
    }

    #[test]
    fn an_intermediate_without_key_usage_issues_clients() {
        let r = root("Root", &CA);
        let plain = intermediate("Issuing CA", &[], &r);
        let client = leaf("c", &CLIENT, &plain);
        check(
            &verifier(&[r.cert.der()]),
            &client,
            &[plain.cert.der().clone()],
        )
        .unwrap();
    }

    #[test]
    fn a_non_issuing_ca_sent_but_not_on_the_path_is_ignored() {
        let r = root("Root", &CA);
        let good = intermediate("Issuing CA", &CA, &r);
        let stray = intermediate("Stray CA", &[Ku::DigitalSignature], &r);
        let client = leaf("c", &CLIENT, &good);
        let chain = [stray.cert.der().clone(), good.cert.der().clone()];
        check(&verifier(&[r.cert.der()]), &client, &chain).unwrap();
    }

    #[test]
    fn path_building_goes_on_past_a_non_issuing_copy_of_the_issuer() {
        // Two certificates for one issuing CA (same name, same key), one of them without
        // keyCertSign and presented first: the path through the other one is valid.
        let r = root("Root", &CA);
        let key = KeyPair::generate().unwrap();
        let good = ca_params("Issuing CA", &CA)
            .signed_by(&key, &r.cert, &r.key)
            .unwrap();
        let bad = ca_params("Issuing CA", &[Ku::DigitalSignature])
            .signed_by(&key, &r.cert, &r.key)
            .unwrap();
        let issuer = Ca { cert: good, key };
        let client = leaf("c", &CLIENT, &issuer);
        let v = verifier(&[r.cert.der()]);
        check(&v, &client, &[bad.der().clone(), issuer.cert.der().clone()]).unwrap();
        assert_eq!(
            check(&v, &client, &[bad.der().clone()]).unwrap_err().reason,
            Reason::UnknownCa
        );
    }

    #[test]
    fn a_trust_anchor_without_key_cert_sign_cannot_issue_clients() {
        let r = root("Root", &[Ku::DigitalSignature, Ku::CrlSign]);
        let client = leaf("c", &CLIENT, &r);
        let refusal = check(&verifier(&[r.cert.der()]), &client, &[]).unwrap_err();
        assert_eq!(refusal.reason, Reason::UnknownCa);
        assert!(
            refusal.detail.contains("trust anchor"),
            "{}",
            refusal.detail
        );
    }

    #[test]
    fn a_self_signed_client_pinned_in_the_truststore_is_accepted() {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "pinned");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = CLIENT.to_vec();
        let pinned = p.self_signed(&key).unwrap().der().clone();
        check(&verifier(&[&pinned]), &pinned, &[]).unwrap();
    }

    #[test]
    fn a_client_whose_key_usage_lacks_digital_signature_is_refused() {
        let r = root("Root", &CA);
        let client = leaf("c", &[Ku::KeyEncipherment], &r);
        let refusal = check(&verifier(&[r.cert.der()]), &client, &[]).unwrap_err();
        assert_eq!(refusal.reason, Reason::BadPurpose);
        assert!(
            refusal.detail.contains("digitalSignature"),
            "{}",
            refusal.detail
        );
    }

    #[test]
    fn a_client_with_digital_signature_or_no_key_usage_is_accepted() {
        let r = root("Root", &CA);
        let v = verifier(&[r.cert.der()]);
        check(
            &v,
            &leaf("c", &[Ku::DigitalSignature, Ku::KeyEncipherment], &r),
            &[],
        )
        .unwrap();
        check(&v, &leaf("c", &[], &r), &[]).unwrap();
    }

    #[test]
    fn a_refused_chain_is_not_remembered() {
        let r = root("Root", &CA);
        let bad = intermediate("No-Sign", &[Ku::DigitalSignature], &r);
        let client = leaf("c", &CLIENT, &bad);
        let mut v = verifier(&[r.cert.der()]);
        v.accepted = VerifiedChains::new(16);
        assert!(check(&v, &client, &[bad.cert.der().clone()]).is_err());
        assert!(v.accepted_is_empty());
    }

    #[test]
    fn the_window_is_that_of_the_verified_path() {
        let r = root("Root", &CA);
        let good = intermediate("Issuing CA", &CA, &r);
        let client = leaf("c", &CLIENT, &good);
        let a = check(
            &verifier(&[r.cert.der()]),
            &client,
            &[good.cert.der().clone()],
        )
        .unwrap();
        let (_, l) = X509Certificate::from_der(client.as_ref()).unwrap();
        let (_, i) = X509Certificate::from_der(good.cert.der().as_ref()).unwrap();
        let until = l
            .validity()
            .not_after
            .timestamp()
            .min(i.validity().not_after.timestamp())
            + 1;
        assert_eq!(a.valid_until, until);
    }

    /// Signs `msg` with a fresh RSA key of `bits` using the openssl CLI; returns the whole
    /// SubjectPublicKeyInfo DER and the PKCS#1 v1.5 SHA-256 signature.
    fn openssl_rsa_signature(bits: u32, msg: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let o = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl is installed");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        let bits = format!("rsa_keygen_bits:{bits}");
        run(&[
            "genpkey",
            "-quiet",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &bits,
            "-out",
            "k.pem",
        ]);
        run(&[
            "pkey", "-in", "k.pem", "-pubout", "-outform", "DER", "-out", "spki.der",
        ]);
        std::fs::write(dir.path().join("msg"), msg).unwrap();
        run(&["dgst", "-sha256", "-sign", "k.pem", "-out", "sig", "msg"]);
        (
            std::fs::read(dir.path().join("spki.der")).unwrap(),
            std::fs::read(dir.path().join("sig")).unwrap(),
        )
    }

    #[test]
    fn the_rsa_size_bounds_are_the_providers() {
        // What `leaf_key_usable` states must be what the provider does: it refuses a valid
        // RSA-1024 signature and accepts an RSA-2048 one.
        let algs = crate::tls::provider().signature_verification_algorithms;
        let pkcs1_sha256 = algs
            .all
            .iter()
            .find(|a| {
                a.signature_alg_id() == rustls_pki_types::alg_id::RSA_PKCS1_SHA256
                    && a.public_key_alg_id() == rustls_pki_types::alg_id::RSA_ENCRYPTION
            })
            .unwrap();
        for (bits, verifies) in [
            (RSA_MIN_BITS as u32 / 2, false),
            (RSA_MIN_BITS as u32, true),
        ] {
            let (spki, sig) = openssl_rsa_signature(bits, b"CertificateVerify");
            let key = facts::spki_parts(&spki).unwrap().key;
            assert_eq!(
                pkcs1_sha256
                    .verify_signature(key, b"CertificateVerify", &sig)
                    .is_ok(),
                verifies,
                "RSA-{bits}"
            );
        }
    }
}
