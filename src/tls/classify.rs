//! The one rejection table: every webpki and rustls error a handshake or a verification can end
//! with, mapped to its stable [`Reason`] and to the rustls error the handshake ends with (which
//! decides the TLS alert the client sees).
//!
//! Two directions meet here and must agree: the verifier turns a webpki error into a rustls
//! error for the handshake ([`webpki_error`]), and the accept path reads a failed handshake's
//! rustls error back into a reason ([`Reason::from_io`]). A unit test goes through every
//! webpki variant it can construct and checks that reading back the rustls error gives the
//! same reason, so the log, the metrics and `verify` cannot disagree with the alert.

use std::io;
use std::sync::Arc;

#[cfg(test)]
use rustls::AlertDescription;
use rustls::{
    CertRevocationListError, CertificateError, Error as TlsError, OtherError, PeerIncompatible,
};

use super::reason::Reason;

/// A webpki error's reason, and the rustls error the handshake ends with: the same mapping
/// rustls's own WebPKI verifier makes where it has a variant for the error, so each refusal
/// ends with the alert rustls would have sent; the rest travel as `CertificateError::Other`
/// (alert `certificate_unknown`), from which [`Reason::from_certificate_error`] reads the
/// webpki error back.
pub(crate) fn webpki_error(e: webpki::Error) -> (Reason, TlsError) {
    use webpki::Error as W;
    let other = |e: W| TlsError::from(CertificateError::Other(OtherError(Arc::new(e))));
    match e {
        W::BadDer | W::BadDerTime | W::TrailingData(_) => {
            (Reason::BadEncoding, CertificateError::BadEncoding.into())
        }
        // Damaged, X.509 v1, or with a critical extension webpki does not understand: common
        // with `openssl x509 -req` run without extensions.
        W::UnsupportedCertVersion
        | W::ExtensionValueInvalid
        | W::MalformedExtensions
        | W::UnsupportedCriticalExtension
        | W::InvalidSerialNumber => (Reason::BadEncoding, other(e)),
        // A CA certificate presented as the client's own, or an empty EKU extension: the
        // certificate is not meant for client authentication.
        W::CaUsedAsEndEntity | W::EmptyEkuExtension => (Reason::BadPurpose, other(e)),
        #[allow(deprecated)]
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => {
            (Reason::BadPurpose, CertificateError::InvalidPurpose.into())
        }
        W::UnknownIssuer => (Reason::UnknownCa, CertificateError::UnknownIssuer.into()),
        // No *valid* path to a trust anchor: an end-entity certificate used as an issuer, a
        // CA that was not allowed to issue this chain, or a distrusted key (as good as no
        // anchor at all).
        W::EndEntityUsedAsCa
        | W::PathLenConstraintViolated
        | W::NameConstraintViolation
        | W::CertDistrusted => (Reason::UnknownCa, other(e)),
        W::InvalidSignatureForPublicKey => {
            (Reason::BadSignature, CertificateError::BadSignature.into())
        }
        #[allow(deprecated)]
        W::UnsupportedSignatureAlgorithm | W::UnsupportedSignatureAlgorithmForPublicKey => (
            Reason::BadSignature,
            CertificateError::UnsupportedSignatureAlgorithm.into(),
        ),
        W::SignatureAlgorithmMismatch
        | W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            (Reason::BadSignature, other(e))
        }
        W::CertExpired { time, not_after } => (
            Reason::Expired,
            CertificateError::ExpiredContext { time, not_after }.into(),
        ),
        W::InvalidCertValidity => (Reason::Expired, CertificateError::Expired.into()),
        W::CertNotValidYet { time, not_before } => (
            Reason::NotYetValid,
            CertificateError::NotValidYetContext { time, not_before }.into(),
        ),
        W::CertRevoked => (Reason::Revoked, CertificateError::Revoked.into()),
        // Revocation that cannot be decided fails closed and reads as "we cannot know".
        W::UnknownRevocationStatus => (
            Reason::RevocationUnknown,
            CertificateError::UnknownRevocationStatus.into(),
        ),
        W::CrlExpired { time, next_update } => (
            Reason::RevocationUnknown,
            CertificateError::ExpiredRevocationListContext { time, next_update }.into(),
        ),
        W::IssuerNotCrlSigner => (
            Reason::RevocationUnknown,
            CertRevocationListError::IssuerInvalidForCrl.into(),
        ),
        W::InvalidCrlSignatureForPublicKey => (
            Reason::RevocationUnknown,
            CertRevocationListError::BadSignature.into(),
        ),
        // The CRL that covers the certificate uses a feature webpki does not support.
        #[allow(deprecated)]
        W::UnsupportedCrlSignatureAlgorithm
        | W::UnsupportedCrlSignatureAlgorithmContext(_)
        | W::UnsupportedCrlSignatureAlgorithmForPublicKey
        | W::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)
        | W::UnsupportedIndirectCrl
        | W::UnsupportedRevocationReasonsPartitioning
        | W::UnsupportedCrlIssuingDistributionPoint => (Reason::RevocationUnknown, other(e)),
        // Limits of path building (depth, signature checks, name comparisons) and names
        // webpki cannot read: `other`, with webpki's words in the detail.
        _ => (Reason::Other, other(e)),
    }
}

/// The alert a handshake that fails with `e` in the verifier sends, as rustls chooses it
/// (`send_cert_verify_error_alert`); the tests hold the table to it.
#[cfg(test)]
pub(crate) fn alert(e: &TlsError) -> AlertDescription {
    match e {
        TlsError::InvalidCertificate(c) => c.clone().into(),
        TlsError::PeerMisbehaved(_) => AlertDescription::IllegalParameter,
        _ => AlertDescription::HandshakeFailure,
    }
}

impl Reason {
    /// Classifies a rustls error raised while verifying or handshaking.
    pub fn from_tls(e: &TlsError) -> Reason {
        match e {
            TlsError::NoCertificatesPresented => Reason::NoCertificate,
            TlsError::InvalidCertificate(c) => Self::from_certificate_error(c),
            // A CRL the verifier could not use for this chain: revocation status unknown.
            TlsError::InvalidCertRevocationList(_) => Reason::RevocationUnknown,
            TlsError::PeerIncompatible(p) => match p {
                PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::ServerDoesNotSupportTls12Or13 => Reason::ProtocolVersion,
                // signature_algorithms first appeared in TLS 1.2, so a TLS 1.0/1.1 ClientHello
                // never has it, and rustls checks for it before it looks at the version.
                // Without this arm a TLS 1.1 client would be logged as `other`.
                PeerIncompatible::SignatureAlgorithmsExtensionRequired => Reason::ProtocolVersion,
                _ => Reason::Other,
            },
            // The client's CertificateVerify signature did not check out.
            TlsError::DecryptError => Reason::BadSignature,
            _ => Reason::Other,
        }
    }

    /// Classifies a certificate error from the verifier.
    pub fn from_certificate_error(c: &CertificateError) -> Reason {
        match c {
            CertificateError::BadEncoding | CertificateError::UnhandledCriticalExtension => {
                Reason::BadEncoding
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Reason::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Reason::NotYetValid
            }
            CertificateError::Revoked => Reason::Revoked,
            CertificateError::UnknownIssuer => Reason::UnknownCa,
            // A stale CRL (past nextUpdate) fails closed and reads as "we cannot know".
            CertificateError::UnknownRevocationStatus
            | CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => Reason::RevocationUnknown,
            #[allow(deprecated)]
            CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithm
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                Reason::BadSignature
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Reason::BadPurpose
            }
            // The allow-list refusal; rustls turns it into the `access_denied` alert.
            CertificateError::ApplicationVerificationFailure => Reason::NotAllowed,
            // The webpki errors rustls has no variant for travel in `Other`.
            CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
                Some(e) => webpki_error(e.clone()).0,
                None => Reason::Other,
            },
            _ => Reason::Other,
        }
    }

    /// Classifies the error that tokio-rustls returns from a failed accept.
    pub fn from_io(e: &io::Error) -> Reason {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<TlsError>())
        {
            Some(tls) => Self::from_tls(tls),
            None if e.kind() == io::ErrorKind::TimedOut => Reason::HandshakeTimeout,
            None => Reason::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::UnixTime;
    use webpki::Error as W;

    /// Every webpki error this crate's version lets us construct, with the reason and alert
    /// it must give.
    #[allow(deprecated)]
    fn table() -> Vec<(W, Reason, AlertDescription)> {
        use AlertDescription as A;
        let t = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1));
        vec![
            (W::BadDer, Reason::BadEncoding, A::BadCertificate),
            (W::BadDerTime, Reason::BadEncoding, A::BadCertificate),
            (
                W::TrailingData(webpki::DerTypeId::Certificate),
                Reason::BadEncoding,
                A::BadCertificate,
            ),
            (
                W::UnsupportedCertVersion,
                Reason::BadEncoding,
                A::CertificateUnknown,
            ),
            (
                W::ExtensionValueInvalid,
                Reason::BadEncoding,
                A::CertificateUnknown,
            ),
            (
                W::MalformedExtensions,
                Reason::BadEncoding,
                A::CertificateUnknown,
            ),
            (
                W::UnsupportedCriticalExtension,
                Reason::BadEncoding,
                A::CertificateUnknown,
            ),
            (
                W::InvalidSerialNumber,
                Reason::BadEncoding,
                A::CertificateUnknown,
            ),
            (
                W::CaUsedAsEndEntity,
                Reason::BadPurpose,
                A::CertificateUnknown,
            ),
            (
                W::EmptyEkuExtension,
                Reason::BadPurpose,
                A::CertificateUnknown,
            ),
            (
                W::RequiredEkuNotFound,
                Reason::BadPurpose,
                A::UnsupportedCertificate,
            ),
            (W::UnknownIssuer, Reason::UnknownCa, A::UnknownCA),
            (
                W::EndEntityUsedAsCa,
                Reason::UnknownCa,
                A::CertificateUnknown,
            ),
            (
                W::PathLenConstraintViolated,
                Reason::UnknownCa,
                A::CertificateUnknown,
            ),
            (
                W::NameConstraintViolation,
                Reason::UnknownCa,
                A::CertificateUnknown,
            ),
            (W::CertDistrusted, Reason::UnknownCa, A::CertificateUnknown),
            (
                W::InvalidSignatureForPublicKey,
                Reason::BadSignature,
                A::DecryptError,
            ),
            (
                W::UnsupportedSignatureAlgorithm,
                Reason::BadSignature,
                A::DecryptError,
            ),
            (
                W::UnsupportedSignatureAlgorithmForPublicKey,
                Reason::BadSignature,
                A::DecryptError,
            ),
            (
                W::SignatureAlgorithmMismatch,
                Reason::BadSignature,
                A::CertificateUnknown,
            ),
            (
                W::CertExpired {
                    time: t,
                    not_after: t,
                },
                Reason::Expired,
                A::CertificateExpired,
            ),
            (
                W::InvalidCertValidity,
                Reason::Expired,
                A::CertificateExpired,
            ),
            (
                W::CertNotValidYet {
                    time: t,
                    not_before: t,
                },
                Reason::NotYetValid,
                A::CertificateExpired,
            ),
            (W::CertRevoked, Reason::Revoked, A::CertificateRevoked),
            (
                W::UnknownRevocationStatus,
                Reason::RevocationUnknown,
                A::UnknownCA,
            ),
            (
                W::CrlExpired {
                    time: t,
                    next_update: t,
                },
                Reason::RevocationUnknown,
                A::UnknownCA,
            ),
            (
                W::IssuerNotCrlSigner,
                Reason::RevocationUnknown,
                A::HandshakeFailure,
            ),
            (
                W::InvalidCrlSignatureForPublicKey,
                Reason::RevocationUnknown,
                A::HandshakeFailure,
            ),
            (
                W::UnsupportedCrlSignatureAlgorithm,
                Reason::RevocationUnknown,
                A::CertificateUnknown,
            ),
            (
                W::UnsupportedCrlSignatureAlgorithmForPublicKey,
                Reason::RevocationUnknown,
                A::CertificateUnknown,
            ),
            (
                W::UnsupportedIndirectCrl,
                Reason::RevocationUnknown,
                A::CertificateUnknown,
            ),
            (
                W::UnsupportedRevocationReasonsPartitioning,
                Reason::RevocationUnknown,
                A::CertificateUnknown,
            ),
            (
                W::UnsupportedCrlIssuingDistributionPoint,
                Reason::RevocationUnknown,
                A::CertificateUnknown,
            ),
            (
                W::MaximumPathDepthExceeded,
                Reason::Other,
                A::CertificateUnknown,
            ),
            (
                W::MaximumPathBuildCallsExceeded,
                Reason::Other,
                A::CertificateUnknown,
            ),
            (
                W::MaximumSignatureChecksExceeded,
                Reason::Other,
                A::CertificateUnknown,
            ),
            (
                W::MaximumNameConstraintComparisonsExceeded,
                Reason::Other,
                A::CertificateUnknown,
            ),
            (
                W::MalformedDnsIdentifier,
                Reason::Other,
                A::CertificateUnknown,
            ),
            (
                W::MalformedNameConstraint,
                Reason::Other,
                A::CertificateUnknown,
            ),
            (
                W::InvalidNetworkMaskConstraint,
                Reason::Other,
                A::CertificateUnknown,
            ),
            (W::UnsupportedNameType, Reason::Other, A::CertificateUnknown),
            (W::InvalidCrlNumber, Reason::Other, A::CertificateUnknown),
            (
                W::UnsupportedCrlVersion,
                Reason::Other,
                A::CertificateUnknown,
            ),
            (W::UnsupportedDeltaCrl, Reason::Other, A::CertificateUnknown),
            (
                W::UnsupportedRevocationReason,
                Reason::Other,
                A::CertificateUnknown,
            ),
        ]
    }

    #[test]
    fn every_webpki_error_gets_its_reason_and_alert() {
        for (e, reason, want_alert) in table() {
            let (got, error) = webpki_error(e.clone());
            assert_eq!(got, reason, "{e:?}");
            assert_eq!(alert(&error), want_alert, "{e:?}");
        }
    }

    #[test]
    fn the_handshake_error_reads_back_as_the_same_reason() {
        // What the accept path reads from a failed handshake must be what the verifier
        // decided, or the log would name another reason than the one refused.
        for (e, _, _) in table() {
            let (reason, error) = webpki_error(e.clone());
            assert_eq!(Reason::from_tls(&error), reason, "{e:?}");
            let wrapped = io::Error::new(io::ErrorKind::InvalidData, error);
            assert_eq!(Reason::from_io(&wrapped), reason, "{e:?}");
        }
    }

    #[test]
    fn allow_list_refusal_is_not_allowed_with_access_denied() {
        let e = TlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        assert_eq!(Reason::from_tls(&e), Reason::NotAllowed);
        assert_eq!(alert(&e), AlertDescription::AccessDenied);
    }

    #[test]
    fn pre_tls12_hello_without_signature_algorithms_is_protocol_version() {
        let e = TlsError::PeerIncompatible(PeerIncompatible::SignatureAlgorithmsExtensionRequired);
        assert_eq!(Reason::from_tls(&e), Reason::ProtocolVersion);
    }

    #[test]
    fn errors_rustls_raises_itself_are_classified() {
        assert_eq!(
            Reason::from_tls(&TlsError::NoCertificatesPresented),
            Reason::NoCertificate
        );
        assert_eq!(
            Reason::from_tls(&TlsError::DecryptError),
            Reason::BadSignature
        );
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "deadline");
        assert_eq!(Reason::from_io(&timeout), Reason::HandshakeTimeout);
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(Reason::from_io(&reset), Reason::Other);
    }
}
