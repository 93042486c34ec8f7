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
