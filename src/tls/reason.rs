//! The one place where a refused handshake is classified into a stable reason code.
//! Logs, metrics and `mtls-shield verify` all use these codes, so operators can grep,
//! alert and troubleshoot on the same words everywhere.

use std::fmt;
use std::io;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
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
    /// Anything else: the client aborted, a cipher mismatch, an I/O error.
    Other,
}

impl Reason {
    /// Every reason, in a stable order (for documentation and metrics pre-registration).
    pub const ALL: [Reason; 14] = [
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
            Reason::Other => "other",
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

impl EncodeLabelValue for Reason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn io_wrapped_tls_error_is_classified() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            TlsError::NoCertificatesPresented,
        );
        assert_eq!(Reason::from_io(&e), Reason::NoCertificate);
    }
}
