//! The viewer-header decoder (`[viewer]`) fed arbitrary header values, in both header modes:
//! it must never panic, a decoded chain is one to four certificates that each parse as X.509
//! DER, and the memo key (the digest) depends only on the values.
#![no_main]

use arbitrary::Arbitrary;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mtls_shield::config::ViewerHeaders;
use mtls_shield::viewer::headers::MAX_CHAIN;
use mtls_shield::viewer::Presented;

#[derive(Debug, Arbitrary)]
struct Input {
    /// (which header, its value); a header may come twice.
    headers: Vec<(u8, Vec<u8>)>,
}

const NAMES: [&str; 5] = [
    "client-cert",
    "client-cert-chain",
    "cloudfront-viewer-cert-pem",
    "cloudfront-viewer-cert-present",
    "cloudfront-viewer-cert-sha256",
];

fuzz_target!(|input: Input| {
    let mut map = HeaderMap::new();
    for (which, value) in input.headers.iter().take(8) {
        let name = HeaderName::from_static(NAMES[usize::from(*which) % NAMES.len()]);
        if let Ok(v) = HeaderValue::from_bytes(&value[..value.len().min(16 * 1024)]) {
            map.append(name, v);
        }
    }
    for mode in [ViewerHeaders::Cloudfront, ViewerHeaders::Rfc9440] {
        let p = Presented::read(&map, mode);
        assert_eq!(p.digest(), Presented::read(&map, mode).digest());
        if let Ok(Some(chain)) = p.decode() {
            assert!(chain.intermediates.len() < MAX_CHAIN);
            for c in std::iter::once(&chain.leaf).chain(&chain.intermediates) {
                assert!(x509_parser::parse_x509_certificate(c.as_ref()).is_ok());
            }
        }
    }
});
