//! The identity-header builder (XFCC, ALB, RFC 9440) fed arbitrary certificate fields: it
//! must never panic, and every header value must be valid and single-line, so no field of a
//! client certificate can inject or split a header.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mtls_shield::config::{ForwardConfig, HeaderFamily};
use mtls_shield::identity::ClientIdentity;
use rustls_pki_types::CertificateDer;

#[derive(Debug, Arbitrary)]
struct Fields {
    subject: String,
    issuer: String,
    serial_hex: String,
    common_names: Vec<String>,
    organizational_units: Vec<String>,
    dns_names: Vec<String>,
    uris: Vec<String>,
    fingerprint: [u8; 32],
    spki_sha256: [u8; 32],
    not_before: i64,
    not_after: i64,
    leaf: Vec<u8>,
    intermediates: Vec<Vec<u8>>,
    include_cert: bool,
}

fuzz_target!(|f: Fields| {
    let id = ClientIdentity {
        subject: f.subject,
        issuer: f.issuer,
        serial_hex: f.serial_hex,
        common_names: f.common_names,
        organizational_units: f.organizational_units,
        dns_names: f.dns_names,
        uris: f.uris,
        fingerprint: f.fingerprint,
        spki_sha256: f.spki_sha256,
        not_before: f.not_before,
        not_after: f.not_after,
        leaf: CertificateDer::from(f.leaf),
        intermediates: f
            .intermediates
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
    };
    let forward = ForwardConfig {
        client_cert_headers: vec![HeaderFamily::Xfcc, HeaderFamily::Alb, HeaderFamily::Rfc9440],
        xfcc_include_cert: f.include_cert,
    };
    for (name, value) in id.headers(&forward) {
        let bytes = value.as_bytes();
        // No control character at all: CR/LF would split the header, NUL and the rest are
        // refused by many HTTP stacks.
        assert!(
            !bytes.iter().any(|b| *b < 0x20 || *b == 0x7f),
            "{name}: control byte in {bytes:?}"
        );
        // What hyper will write is what we built.
        assert_eq!(
            http::HeaderValue::from_bytes(bytes).ok().as_ref(),
            Some(&value)
        );
        // The "cannot happen" fallback of the builder did not fire.
        assert_ne!(bytes, b"invalid", "{name}");
        if name == "x-forwarded-client-cert" {
            // Quotes pair up once escapes are skipped, so a parser can find every field.
            let mut quotes = 0;
            let mut escaped = false;
            for b in bytes {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => quotes += 1,
                    _ => {}
                }
            }
            assert_eq!(
                quotes % 2,
                0,
                "unbalanced quotes in {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
});
