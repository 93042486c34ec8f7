//! The client-certificate verifier: rustls's `WebPkiClientVerifier` (chain, expiry, EKU,
//! CRLs), wrapped with the identity allow-list.
//!
//! Both the live handshake and `mtls-shield verify` call [`ShieldVerifier::check`], so the
//! offline answer is the handshake's answer by construction.
//!
//! The verifier also leaves notes for the connection that is handshaking (through a tokio
//! task-local, because rustls calls verifiers synchronously inside the accept future's poll):
//! the parsed identity on success, so the leaf is parsed once per handshake, and the parsed
//! certificate on failure, so the rejection log line can name what was presented.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::allow::AllowList;
use super::verified_cache::VerifiedChains;
use super::Reason;
use crate::identity::ClientIdentity;

/// What the verifier learnt during one handshake.
#[derive(Debug, Default)]
pub struct HandshakeNotes {
    /// The parsed leaf, whether it was accepted or not (absent if none was presented, or it
    /// could not be parsed).
    pub identity: Option<Arc<ClientIdentity>>,
    /// Set when the verifier refused the certificate.
    pub rejected: Option<Reason>,
}

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

fn note(identity: Option<Arc<ClientIdentity>>, rejected: Option<Reason>) {
    // Outside a handshake scope (the `verify` command) there is nobody to tell.
    let _ = NOTES.try_with(|n| {
        let mut n = n.borrow_mut();
        n.identity = identity;
        n.rejected = rejected;
    });
}

/// A refused certificate: the stable reason, the rustls error that drives the TLS alert,
/// and the parsed leaf when it could be parsed.
#[derive(Debug)]
pub struct Refusal {
    /// Stable reason code.
    pub reason: Reason,
    /// The error handed back to rustls.
    pub error: rustls::Error,
    /// The presented leaf, parsed.
    pub identity: Option<Arc<ClientIdentity>>,
}

/// WebPKI verification plus the allow-list, with a memo of accepted chains.
#[derive(Debug)]
pub struct ShieldVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allow: AllowList,
    /// Chains accepted under this trust state; see [`VerifiedChains`] for why a hit decides
    /// exactly what the full check would.
    accepted: VerifiedChains,
}

impl ShieldVerifier {
    /// Wraps a configured WebPKI verifier.
    pub fn new(
        inner: Arc<dyn ClientCertVerifier>,
        allow: AllowList,
        accepted: VerifiedChains,
    ) -> Self {
        Self {
            inner,
            allow,
            accepted,
        }
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
    ) -> Result<Arc<ClientIdentity>, Refusal> {
        let key = self.accepted.key(end_entity, intermediates);
        if let Some(identity) = key.as_ref().and_then(|k| self.accepted.get(k, now)) {
            return Ok(identity);
        }
        let parsed = ClientIdentity::parse(end_entity, intermediates).map(Arc::new);
        if let Err(error) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            return Err(Refusal {
                reason: Reason::from_tls(&error),
                error,
                identity: parsed.ok(),
            });
        }
        let identity = match parsed {
            Ok(id) => id,
            // WebPKI accepted what x509-parser cannot read: fail closed, since the allow-list
            // and the identity headers both need the parsed fields.
            Err(_) => {
                return Err(Refusal {
                    reason: Reason::BadEncoding,
                    error: rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
                    identity: None,
                })
            }
        };
        if !self.allow.allows(&identity) {
            // ApplicationVerificationFailure makes rustls send the `access_denied` alert:
            // a refused identity looks exactly like any other refusal on the wire.
            return Err(Refusal {
                reason: Reason::NotAllowed,
                error: rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ),
                identity: Some(identity),
            });
        }
        if let Some(key) = key {
            self.accepted.insert(key, &identity);
        }
        Ok(identity)
    }
}

impl ClientCertVerifier for ShieldVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Fail closed: a client without a certificate never completes a handshake.
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.check(end_entity, intermediates, now) {
            Ok(identity) => {
                note(Some(identity), None);
                Ok(ClientCertVerified::assertion())
            }
            Err(r) => {
                note(r.identity, Some(r.reason));
                Err(r.error)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
