//! The one place where a refused handshake is classified into a stable reason code.
//! Logs, metrics and `mtls-shield verify` all use these codes, so operators can grep,
//! alert and troubleshoot on the same words everywhere.

use std::fmt;
use std::io;

use rustls::{CertificateError, Error as TlsError, PeerIncompatible};

/// Why a handshake was refused. The string forms are a stable contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The client sent no certificate.
    NoCertificate,
    /// The chain does not lead to a trust anchor (includes self-signed certificates).
    UnknownCa,
    /// The certificate, or one in its chain, is past notAfter.
    Expired,
    /// The certificate, or one in its chain, is before notBefore.
    NotYetValid,
    /// A configured CRL lists the certificate.
    Revoked,
    /// No usable CRL for the issuer while one is required, or the issuer's CRL is stale.
    RevocationUnknown,
    /// The extended key usage does not include clientAuth.
    BadPurpose,
    /// A signature in the chain, or the handshake signature, does not verify.
    BadSignature,
    /// The certificate could not be parsed.
    BadEncoding,
    /// The certificate verified but matches no allow-list entry.
    NotAllowed,
    /// The TLS handshake did not finish within `listener.handshake_timeout`.
    HandshakeTimeout,
    /// The first bytes were not a TLS handshake record (plain HTTP, a scanner, garbage).
    NotTls,
    /// The client offered no TLS version we accept (only 1.2 and 1.3 are enabled).
    ProtocolVersion,
    /// The connection came from outside `listener.allow_sources`: closed before a byte was
    /// read.
    SourceNotAllowed,
    /// Anything else: the client aborted, a cipher mismatch, an I/O error.
    Other,
}

impl Reason {
    /// Every reason, in a stable order (for documentation and metrics pre-registration).
    pub const ALL: [Reason; 15] = [
        Reason::NoCertificate,
        Reason::UnknownCa,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Revoked,
        Reason::RevocationUnknown,
        Reason::BadPurpose,
        Reason::BadSignature,
        Reason::BadEncoding,
        Reason::NotAllowed,
        Reason::HandshakeTimeout,
        Reason::NotTls,
        Reason::ProtocolVersion,
        Reason::SourceNotAllowed,
        Reason::Other,
    ];

    /// The stable code, e.g. `unknown_ca`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoCertificate => "no_certificate",
            Reason::UnknownCa => "unknown_ca",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Revoked => "revoked",
            Reason::RevocationUnknown => "revocation_unknown",
            Reason::BadPurpose => "bad_purpose",
            Reason::BadSignature => "bad_signature",
            Reason::BadEncoding => "bad_encoding",
            Reason::NotAllowed => "not_allowed",
            Reason::HandshakeTimeout => "handshake_timeout",
            Reason::NotTls => "not_tls",
            Reason::ProtocolVersion => "protocol_version",
            Reason::SourceNotAllowed => "source_not_allowed",
            Reason::Other => "other",
        }
    }

    /// What the refusal means for an operator, and where to look. `verify` prints it; the
    /// README's troubleshooting table says the same.
    pub fn explain(self) -> &'static str {
        match self {
            Reason::NoCertificate => "no client certificate was presented",
            Reason::UnknownCa => "the chain does not lead to a certificate in client_auth.truststore, or breaks a CA's basicConstraints, pathLen or name constraints on the way (if the client sends intermediates, pass them with --chain)",
            Reason::Expired => "the certificate, or one in its chain, is past its notAfter at the checked time",
            Reason::NotYetValid => "the certificate, or one in its chain, is before its notBefore at the checked time",
            Reason::Revoked => "a CRL in client_auth.crls lists this certificate",
            Reason::RevocationUnknown => "no usable CRL for its issuer: the issuer's CRL is past its nextUpdate, or require_crl is on and client_auth.crls has none for it",
            Reason::BadPurpose => "it is not a client certificate: its extended key usage lacks clientAuth, or it is a CA certificate",
            Reason::BadSignature => "a signature in the chain, or the client's handshake signature, does not verify",
            Reason::BadEncoding => "the certificate could not be parsed, is X.509 v1, or has a critical extension this proxy does not understand",
            Reason::NotAllowed => "the chain verifies, but the certificate matches no entry of [client_auth.allow]",
            Reason::HandshakeTimeout => "the client did not finish the TLS handshake within listener.handshake_timeout",
            Reason::NotTls => "the client did not speak TLS (plain HTTP, a scanner, or a PROXY header where none is configured)",
            Reason::ProtocolVersion => "the client offered only TLS versions below 1.2",
            Reason::SourceNotAllowed => "the connection came from an address outside listener.allow_sources (and allow_sources_file); it was closed before any TLS",
            Reason::Other => "see the detail in the log line (client abort, no shared cipher, I/O error)",
        }
    }

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
            // rustls passes the webpki errors it has no variant for through `Other`.
            CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
                Some(e) => Self::from_webpki(e),
                None => Reason::Other,
            },
            _ => Reason::Other,
        }
    }

    /// Classifies a webpki error: those the verifier's path building returns, and those that
    /// rustls forwards as `CertificateError::Other`. Without this, common operator mistakes
    /// would all read `other`: an X.509 v1
    /// certificate (`openssl x509 -req` without extensions), a CA certificate configured as
    /// the client certificate, or a chain that breaks a CA's path-length or name constraints.
    pub fn from_webpki(e: &webpki::Error) -> Reason {
        use webpki::Error as W;
        match e {
            W::BadDer
            | W::BadDerTime
            | W::TrailingData(_)
            | W::UnsupportedCertVersion
            | W::ExtensionValueInvalid
            | W::MalformedExtensions
            | W::UnsupportedCriticalExtension
            | W::InvalidSerialNumber => Reason::BadEncoding,
            // A CA certificate presented as the client's own, or an empty EKU extension: the
            // certificate is not meant for client authentication.
            W::CaUsedAsEndEntity | W::EmptyEkuExtension => Reason::BadPurpose,
            // No *valid* path to a trust anchor: an end-entity certificate used as an issuer,
            // or a CA that was not allowed to issue this chain.
            W::UnknownIssuer
            | W::EndEntityUsedAsCa
            | W::PathLenConstraintViolated
            | W::NameConstraintViolation => Reason::UnknownCa,
            W::InvalidSignatureForPublicKey | W::SignatureAlgorithmMismatch => Reason::BadSignature,
            #[allow(deprecated)]
            W::UnsupportedSignatureAlgorithm
            | W::UnsupportedSignatureAlgorithmContext(_)
            | W::UnsupportedSignatureAlgorithmForPublicKey
            | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => Reason::BadSignature,
            #[allow(deprecated)]
            W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => Reason::BadPurpose,
            // A distrusted key is as good as no anchor at all.
            W::CertDistrusted => Reason::UnknownCa,
            // The CRL that covers the certificate could not be used for it: its signature or
            // its issuer's key usage is wrong, or it uses a feature webpki does not support.
            #[allow(deprecated)]
            W::IssuerNotCrlSigner
            | W::InvalidCrlSignatureForPublicKey
            | W::UnsupportedCrlSignatureAlgorithm
            | W::UnsupportedCrlSignatureAlgorithmContext(_)
            | W::UnsupportedCrlSignatureAlgorithmForPublicKey
            | W::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)
            | W::UnsupportedIndirectCrl
            | W::UnsupportedRevocationReasonsPartitioning
            | W::UnsupportedCrlIssuingDistributionPoint => Reason::RevocationUnknown,
            W::CertExpired { .. } | W::InvalidCertValidity => Reason::Expired,
            W::CertNotValidYet { .. } => Reason::NotYetValid,
            W::CertRevoked => Reason::Revoked,
            W::UnknownRevocationStatus | W::CrlExpired { .. } => Reason::RevocationUnknown,
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

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_explanation() {
        let texts: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.explain()).collect();
        assert_eq!(texts.len(), Reason::ALL.len());
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()));
            assert!(r
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }

    #[test]
    fn allow_list_refusal_is_not_allowed() {
        let e = TlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        assert_eq!(Reason::from_tls(&e), Reason::NotAllowed);
    }

    #[test]
    fn pre_tls12_hello_without_signature_algorithms_is_protocol_version() {
        let e = TlsError::PeerIncompatible(PeerIncompatible::SignatureAlgorithmsExtensionRequired);
        assert_eq!(Reason::from_tls(&e), Reason::ProtocolVersion);
    }

    #[test]
    fn webpki_errors_behind_other_are_classified() {
        let other = |e: webpki::Error| {
            TlsError::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                std::sync::Arc::new(e),
            )))
        };
        for (e, want) in [
            (webpki::Error::CaUsedAsEndEntity, Reason::BadPurpose),
            (webpki::Error::UnsupportedCertVersion, Reason::BadEncoding),
            (
                webpki::Error::UnsupportedCriticalExtension,
                Reason::BadEncoding,
            ),
            (webpki::Error::EndEntityUsedAsCa, Reason::UnknownCa),
            (webpki::Error::PathLenConstraintViolated, Reason::UnknownCa),
            (webpki::Error::MaximumPathDepthExceeded, Reason::Other),
        ] {
            assert_eq!(Reason::from_tls(&other(e.clone())), want, "{e:?}");
        }
    }

    #[test]
    fn io_wrapped_tls_error_is_classified() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            TlsError::NoCertificatesPresented,
        );
        assert_eq!(Reason::from_io(&e), Reason::NoCertificate);
    }
}
