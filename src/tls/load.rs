//! Reading PEM/DER material from disk. Every error names the file and says what to do.
//!
//! PEM is read with the `PemObject` trait of rustls-pki-types (rustls-pemfile is
//! unmaintained, RUSTSEC-2025-0134).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A file-level error: one line that names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    /// The offending file.
    pub path: PathBuf,
    /// What is wrong and what to do.
    pub message: String,
}

impl LoadError {
    /// Builds an error for `path`.
    pub(crate) fn new(path: &Path, message: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_owned(),
            message: message.to_string(),
        }
    }
}

/// Reads a whole file; `what` names it in the error (`truststore`, `CRL`, …).
pub(crate) fn read(path: &Path, what: &str) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| {
        LoadError::new(
            path,
            format!("cannot read {what}: {e}; check the path and the file's permissions"),
        )
    })
}

/// Reads every certificate of a PEM file, in order. Fails if there is none.
pub(crate) fn certificates(
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    parse_certificates(&read(path, what)?, path, what)
}

/// Every certificate of PEM `bytes` read from `path`, in order. Fails if there is none.
pub(crate) fn parse_certificates(
    bytes: &[u8],
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::new(path, format!("{what} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(LoadError::new(
            path,
            format!("{what} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    parse_private_key(&read(path, "private key")?, path)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of PEM `bytes` read from `path`.
pub(crate) fn parse_private_key(
    bytes: &[u8],
    path: &Path,
) -> Result<PrivateKeyDer<'static>, LoadError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| {
        LoadError::new(
            path,
            format!("no usable private key ({e}); expected a PKCS#8, PKCS#1 or SEC1 PEM key"),
        )
    })
}

/// Reads CRLs: PEM (one or more `X509 CRL` blocks) or a single DER CRL.
pub(crate) fn crls(path: &Path) -> Result<Vec<Vec<u8>>, LoadError> {
    let bytes = read(path, "CRL")?;
    let pem = crl_sections(&bytes)
        .map_err(|e| LoadError::new(path, format!("CRL is not valid PEM: {e}")))?;
    // Not PEM: the file is one DER CRL. Either way `tls::crl::Crl::parse` reads every byte
    // (header and each revoked entry) before anything is used, so a damaged file stops
    // start-up or a reload with its name, and a CRL of a million entries is walked once
    // without building a parse tree of it.
    Ok(if pem.is_empty() { vec![bytes] } else { pem })
}

/// The `X509 CRL` sections of PEM text, each decoded into its own buffer (no second copy of a
/// CRL of tens of megabytes); none when `bytes` is not PEM.
pub(crate) fn crl_sections(bytes: &[u8]) -> Result<Vec<Vec<u8>>, rustls_pki_types::pem::Error> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .filter_map(|section| match section {
            Ok((SectionKind::Crl, der)) => Some(Ok(der)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect()
}

/// Loads the server chain and key and proves that the key belongs to the leaf.
pub(crate) fn server_identity(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, LoadError> {
    let chain = certificates(cert_path, "server certificate")?;
    let key = private_key(key_path)?;
    certified_key(chain, key, cert_path, key_path, provider)
}

/// A chain and its key, already read from `cert_path` and `key_path`, as a signing identity;
/// refuses a key that does not belong to the chain's leaf.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, LoadError> {
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| LoadError::new(key_path, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    // A mismatched pair would otherwise only fail at the first handshake, as a confusing
    // client-side signature error; refuse it here instead.
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            // rustls cannot compare this key type; accept, as it will still be used correctly.
            Ok(Arc::new(certified))
        }
        Err(_) => Err(LoadError::new(
            key_path,
            format!(
                "private key does not match the certificate in {}; check that both files come from the same issuance",
                cert_path.display()
            ),
        )),
    }
}
