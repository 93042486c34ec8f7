//! Everything about TLS: reading certificates, keys and CRLs from disk ([`load`]), CRLs
//! checked and chosen at load (`crl`), revocation of a verified path (`revocation`), the
//! client-certificate verifier with the identity
//! allow-list ([`verifier`]) and its memo of accepted chains (`verified_cache`), the
//! stable rejection reasons ([`reason`]) with the one table that classifies every webpki and
//! rustls error into them (`classify`), and the rustls server configuration built from a
//! config ([`state`]).

pub mod accepted;
pub(crate) mod classify;
pub(crate) mod crl;
pub mod load;
pub(crate) mod ocsp;
pub(crate) mod provider;
pub mod reason;
pub(crate) mod revocation;
pub mod state;
pub(crate) mod verified_cache;
pub mod verifier;

pub use provider::provider;
pub use reason::Reason;
pub use state::TlsState;

/// The TLS version chosen by a ServerHello at the start of `record`, read from its cipher
/// suite (TLS 1.3 suites are 0x13xx). Only ever applied to bytes this server wrote.
pub fn version_from_server_hello(record: &[u8]) -> Option<&'static str> {
    // record header (5) + handshake header (4) + legacy_version (2) + random (32)
    if record.len() < 44 || record[0] != 0x16 || record[5] != 0x02 {
        return None;
    }
    let sid_len = record[43] as usize;
    let suite = record.get(44 + sid_len..46 + sid_len)?;
    Some(if suite[0] == 0x13 {
        "TLSv1.3"
    } else {
        "TLSv1.2"
    })
}
