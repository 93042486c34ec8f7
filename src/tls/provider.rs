//! The crypto provider: one constructor for the whole program.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider for every TLS operation, the one constructor in the program (the
/// listener, the upstream client, CRL and key checks all take theirs from here).
///
/// aws-lc-rs, chosen by measurement: its assembly RSA and P-256 code makes a full mTLS
/// handshake cheaper than ring's (`cargo bench --bench handshake` compares both in one run;
/// the figures are in docs/measurements.md). It is also rustls's default, so it gets the most
/// testing. Its default suites are TLS 1.3 plus TLS 1.2 ECDHE with AEAD only: no CBC, no
/// static-RSA key exchange, no compression.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README says ML-DSA client certificates verify: the provider's signature algorithms,
    /// which both path building and the CertificateVerify check use, must list ML-DSA-44, -65
    /// and -87 (OIDs 2.16.840.1.101.3.4.3.17 to .19).
    #[test]
    fn the_provider_verifies_ml_dsa_signatures() {
        let algs = provider().signature_verification_algorithms;
        for last in [0x11u8, 0x12, 0x13] {
            let oid = [
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, last,
            ];
            assert!(
                algs.all
                    .iter()
                    .any(|a| a.signature_alg_id().as_ref() == oid),
                "ML-DSA OID ending {last:#x} is not among the provider's algorithms"
            );
        }
    }
}
