//! The viewer certificate headers an edge forwards, read from a request and decoded into DER.
//!
//! Security: every byte here comes from the network, and in CloudFront's passthrough mode
//! nothing checked it on the way. Decoding is strict and total: a value is an RFC 9440 list
//! of byte sequences (`:BASE64:`) or URL-encoded PEM of certificates and nothing else, a
//! header that appears twice is refused rather than guessed at, and every failure is a
//! [`DecodeError`], never a panic. Nothing decoded here is trusted: the chain goes to the
//! verifier next.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::CertificateDer;

use crate::config::ViewerHeaders;
use crate::x509::sha256;

/// The most certificates a viewer chain may have, leaf included.
pub const MAX_CHAIN: usize = 4;

/// RFC 9440 `Client-Cert` (the leaf).
pub const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
/// RFC 9440 `Client-Cert-Chain` (the intermediates).
pub const CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");
/// CloudFront: the leaf, URL-encoded PEM.
pub const CF_PEM: HeaderName = HeaderName::from_static("cloudfront-viewer-cert-pem");
/// CloudFront: `1` when the viewer presented a certificate, `0` when not.
pub const CF_PRESENT: HeaderName = HeaderName::from_static("cloudfront-viewer-cert-present");
/// CloudFront: the SHA-256 of the leaf, hex.
pub const CF_SHA256: HeaderName = HeaderName::from_static("cloudfront-viewer-cert-sha256");

/// The prefix of every header CloudFront derives from the viewer's certificate.
const CF_PREFIX: &str = "cloudfront-viewer-cert-";

/// True for a header that carries (or describes) a viewer's certificate:
/// `Client-Cert`, `Client-Cert-Chain` and every `CloudFront-Viewer-Cert-*`, in any case and
/// with `_` for `-`. None of them ever reaches the upstream.
pub fn is_viewer_header(name: &HeaderName) -> bool {
    // Header names are lower-case already; only `_` needs folding.
    let folded = |a: &u8, b: &u8| (if *a == b'_' { b'-' } else { *a }) == *b;
    let n = name.as_str().as_bytes();
    let is = |p: &str| n.len() == p.len() && n.iter().zip(p.as_bytes()).all(|(a, b)| folded(a, b));
    is("client-cert")
        || is("client-cert-chain")
        || (n.len() >= CF_PREFIX.len()
            && n.iter()
                .zip(CF_PREFIX.as_bytes())
                .all(|(a, b)| folded(a, b)))
}

/// The viewer headers of one request, as received (cheap copies of the values).
#[derive(Debug, Default, Clone)]
pub struct Presented {
    client_cert: Option<HeaderValue>,
    client_cert_chain: Option<HeaderValue>,
    cf_pem: Option<HeaderValue>,
    cf_present: Option<HeaderValue>,
    cf_sha256: Option<HeaderValue>,
    /// A viewer header that appeared more than once.
    duplicate: Option<&'static str>,
}

/// A decoded viewer chain: the leaf, then what came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The viewer's certificate.
    pub leaf: CertificateDer<'static>,
    /// The certificates sent with it, in order.
    pub intermediates: Vec<CertificateDer<'static>>,
}

/// Why the viewer headers could not be read as a certificate chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a certificate in a form the edge sends, or headers that contradict each other.
    #[error("{0}")]
    BadEncoding(String),
    /// More than [`MAX_CHAIN`] certificates.
    #[error("the viewer chain has {0} certificates; at most {MAX_CHAIN} are accepted")]
    TooLong(usize),
}

fn bad(why: impl Into<String>) -> DecodeError {
    DecodeError::BadEncoding(why.into())
}

/// The one value of `name`, noting a second one.
fn one(
    headers: &HeaderMap,
    name: &HeaderName,
    duplicate: &mut Option<&'static str>,
    label: &'static str,
) -> Option<HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?.clone();
    if all.next().is_some() {
        *duplicate = Some(label);
    }
    Some(first)
}

impl Presented {
    /// Reads the viewer headers `mode` consults from a request.
    pub fn read(headers: &HeaderMap, mode: ViewerHeaders) -> Presented {
        let mut d = None;
        let mut p = Presented {
            client_cert: one(headers, &CLIENT_CERT, &mut d, "Client-Cert"),
            client_cert_chain: one(headers, &CLIENT_CERT_CHAIN, &mut d, "Client-Cert-Chain"),
            ..Presented::default()
        };
        if mode == ViewerHeaders::Cloudfront {
            p.cf_pem = one(headers, &CF_PEM, &mut d, "CloudFront-Viewer-Cert-Pem");
            p.cf_present = one(
                headers,
                &CF_PRESENT,
                &mut d,
                "CloudFront-Viewer-Cert-Present",
            );
            p.cf_sha256 = one(headers, &CF_SHA256, &mut d, "CloudFront-Viewer-Cert-Sha256");
        }
        p.duplicate = d;
        p
    }

    /// True when the request carries none of the headers.
    pub fn is_empty(&self) -> bool {
        self.values().all(|(_, v)| v.is_none())
    }

    fn values(&self) -> impl Iterator<Item = (u8, Option<&HeaderValue>)> {
        [
            (1, self.client_cert.as_ref()),
            (2, self.client_cert_chain.as_ref()),
            (3, self.cf_pem.as_ref()),
            (4, self.cf_present.as_ref()),
            (5, self.cf_sha256.as_ref()),
        ]
        .into_iter()
    }

    /// SHA-256 over the values as received, each tagged and length-prefixed, so two
    /// different sets of headers never share a digest. The memo of verified viewers is keyed
    /// by it: a returning viewer costs this hash and a lookup, not a decode.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (tag, v) in self.values() {
            if let Some(v) = v {
                h.update(&[tag]);
                h.update(&(v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(h.finish().as_ref());
        out
    }

    /// The chain the headers carry; `Ok(None)` when the viewer presented no certificate.
    pub fn decode(&self) -> Result<Option<Chain>, DecodeError> {
        if let Some(name) = self.duplicate {
            return Err(bad(format!("{name} appears more than once")));
        }
        let present = match &self.cf_present {
            None => None,
            Some(v) => match v.as_bytes() {
                b"1" => Some(true),
                b"0" => Some(false),
                _ => return Err(bad("CloudFront-Viewer-Cert-Present is neither 1 nor 0")),
            },
        };
        let passthrough = self.passthrough()?;
        let pem_leaf = match &self.cf_pem {
            Some(v) => Some(single_pem(v.as_bytes())?),
            None => None,
        };
        let chain = match (passthrough, pem_leaf) {
            (Some(c), Some(leaf)) if c.leaf != leaf => {
                return Err(bad(
                    "Client-Cert and CloudFront-Viewer-Cert-Pem carry different certificates",
                ))
            }
            (Some(c), _) => Some(c),
            (None, Some(leaf)) => Some(Chain {
                leaf,
                intermediates: Vec::new(),
            }),
            (None, None) => None,
        };
        match (&chain, present) {
            (Some(_), Some(false)) => {
                return Err(bad("CloudFront-Viewer-Cert-Present is 0 but a certificate header is present"))
            }
            (None, Some(true)) => {
                return Err(bad("CloudFront-Viewer-Cert-Present is 1 but no certificate arrived; add CloudFront-Viewer-Cert-Pem to the origin request policy"))
            }
            _ => {}
        }
        if let (Some(c), Some(v)) = (&chain, &self.cf_sha256) {
            let want = parse_hex32(v.as_bytes())
                .ok_or_else(|| bad("CloudFront-Viewer-Cert-Sha256 is not 64 hex digits"))?;
            if sha256(c.leaf.as_ref()) != want {
                return Err(bad(
                    "CloudFront-Viewer-Cert-Sha256 does not match the certificate",
                ));
            }
        }
        Ok(chain)
    }

    /// `Client-Cert` and `Client-Cert-Chain`, when `Client-Cert` is there.
    fn passthrough(&self) -> Result<Option<Chain>, DecodeError> {
        let Some(leaf) = &self.client_cert else {
            if self.client_cert_chain.is_some() {
                return Err(bad("Client-Cert-Chain without Client-Cert"));
            }
            return Ok(None);
        };
        let mut leaves = certificates(leaf.as_bytes(), "Client-Cert")?;
        if leaves.len() != 1 {
            return Err(bad(format!(
                "Client-Cert holds {} certificates; it carries the leaf only",
                leaves.len()
            )));
        }
        let intermediates = match &self.client_cert_chain {
            Some(v) => certificates(v.as_bytes(), "Client-Cert-Chain")?,
            None => Vec::new(),
        };
        if 1 + intermediates.len() > MAX_CHAIN {
            return Err(DecodeError::TooLong(1 + intermediates.len()));
        }
        Ok(leaves.pop().map(|leaf| Chain {
            leaf,
            intermediates,
        }))
    }
}

/// RFC 8941 byte sequences: standard base64, padding optional (§4.2.7).
const SF_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The certificates of one header value, in whichever form it has: an RFC 9440 list of byte
/// sequences, or URL-encoded PEM.
fn certificates(value: &[u8], header: &str) -> Result<Vec<CertificateDer<'static>>, DecodeError> {
    let value = value.trim_ascii();
    if value.first() == Some(&b':') {
        sf_list(value, header)
    } else if value.starts_with(b"-----BEGIN")
        || value.starts_with(b"%2D")
        || value.starts_with(b"%2d")
    {
        pem_list(&percent_decode_strict(value, header)?, header)
    } else {
        Err(bad(format!(
            "{header} is neither an RFC 9440 byte sequence (:BASE64:) nor URL-encoded PEM"
        )))
    }
}

/// An RFC 8941 list of byte sequences, each a DER certificate.
fn sf_list(value: &[u8], header: &str) -> Result<Vec<CertificateDer<'static>>, DecodeError> {
    let mut out = Vec::new();
    for item in value.split(|b| *b == b',') {
        if out.len() == MAX_CHAIN {
            return Err(DecodeError::TooLong(value.split(|b| *b == b',').count()));
        }
        let item = item.trim_ascii();
        let inner = item
            .strip_prefix(b":")
            .and_then(|i| i.strip_suffix(b":"))
            .filter(|i| !i.contains(&b':'))
            .ok_or_else(|| {
                bad(format!(
                    "{header}: an element is not a byte sequence (:BASE64:)"
                ))
            })?;
        let der = SF_BASE64
            .decode(inner)
            .map_err(|e| bad(format!("{header}: invalid base64 ({e})")))?;
        out.push(certificate(der, header)?);
    }
    Ok(out)
}

/// URL-encoded PEM: every section must be a certificate.
fn pem_list(text: &[u8], header: &str) -> Result<Vec<CertificateDer<'static>>, DecodeError> {
    let mut out = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(text) {
        let (kind, der) = section.map_err(|e| bad(format!("{header}: invalid PEM ({e})")))?;
        if kind != SectionKind::Certificate {
            return Err(bad(format!(
                "{header}: a PEM section is {kind:?}, not a certificate"
            )));
        }
        if out.len() == MAX_CHAIN {
            return Err(DecodeError::TooLong(out.len() + 1));
        }
        out.push(certificate(der, header)?);
    }
    if out.is_empty() {
        return Err(bad(format!("{header}: no PEM certificate")));
    }
    Ok(out)
}

/// DER that is one X.509 certificate and nothing after it. Path building would skip an
/// intermediate it cannot read; a forwarded header holding one is refused instead, so what
/// the edge sent is never half-used.
fn certificate(der: Vec<u8>, header: &str) -> Result<CertificateDer<'static>, DecodeError> {
    match x509_parser::parse_x509_certificate(&der) {
        Ok((&[], _)) => Ok(CertificateDer::from(der)),
        _ => Err(bad(format!(
            "{header}: an element is not a DER X.509 certificate"
        ))),
    }
}

/// `CloudFront-Viewer-Cert-Pem`: exactly one certificate, URL-encoded PEM.
fn single_pem(value: &[u8]) -> Result<CertificateDer<'static>, DecodeError> {
    let header = "CloudFront-Viewer-Cert-Pem";
    let mut certs = pem_list(&percent_decode_strict(value.trim_ascii(), header)?, header)?;
    match (certs.pop(), certs.is_empty()) {
        (Some(leaf), true) => Ok(leaf),
        _ => Err(bad(format!("{header} holds more than one certificate"))),
    }
}

/// Percent-decoding that refuses a `%` not followed by two hex digits (the lenient decoders
/// pass those through, which would let two spellings of one value differ).
fn percent_decode_strict(value: &[u8], header: &str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(format!("{header}: invalid URL escape")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// 64 hex digits (colons between bytes allowed, any case) as 32 bytes.
fn parse_hex32(value: &[u8]) -> Option<[u8; 32]> {
    let digits: Vec<u8> = value
        .trim_ascii()
        .iter()
        .copied()
        .filter(|b| *b != b':')
        .collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&digits, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    /// A self-signed certificate and its PEM.
    fn cert(cn: &str) -> (Vec<u8>, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec![format!("{cn}.example")])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (c.der().to_vec(), c.pem())
    }

    fn sf(der: &[u8]) -> String {
        format!(":{}:", STANDARD.encode(der))
    }

    fn url(pem: &str) -> String {
        percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    fn read(headers: &[(&'static str, &str)], mode: ViewerHeaders) -> Presented {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_static(n),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Presented::read(&map, mode)
    }

    fn decode(headers: &[(&'static str, &str)]) -> Result<Option<Chain>, DecodeError> {
        read(headers, ViewerHeaders::Cloudfront).decode()
    }

    fn is_bad(r: Result<Option<Chain>, DecodeError>) -> bool {
        matches!(r, Err(DecodeError::BadEncoding(_)))
    }

    #[test]
    fn rfc9440_byte_sequences_decode_to_the_leaf_and_chain() {
        let (leaf, _) = cert("leaf");
        let (int, _) = cert("int");
        let chain = format!("{}, {}", sf(&int), sf(&int));
        let c = decode(&[("client-cert", &sf(&leaf)), ("client-cert-chain", &chain)])
            .unwrap()
            .unwrap();
        assert_eq!(c.leaf.as_ref(), leaf.as_slice());
        assert_eq!(c.intermediates.len(), 2);
    }

    #[test]
    fn byte_sequences_without_padding_decode_as_rfc_8941_allows() {
        let (leaf, _) = cert("leaf");
        let unpadded = sf(&leaf).replace('=', "");
        assert!(decode(&[("client-cert", &unpadded)]).unwrap().is_some());
    }

    #[test]
    fn url_encoded_pem_decodes_in_either_header() {
        let (leaf, pem) = cert("leaf");
        let c = decode(&[("client-cert", &url(&pem))]).unwrap().unwrap();
        assert_eq!(c.leaf.as_ref(), leaf.as_slice());
        let c = decode(&[("cloudfront-viewer-cert-pem", &url(&pem))])
            .unwrap()
            .unwrap();
        assert_eq!(c.leaf.as_ref(), leaf.as_slice());
    }

    #[test]
    fn no_headers_or_present_zero_is_no_certificate() {
        assert_eq!(decode(&[]), Ok(None));
        assert_eq!(decode(&[("cloudfront-viewer-cert-present", "0")]), Ok(None));
        assert!(read(&[], ViewerHeaders::Cloudfront).is_empty());
    }

    #[test]
    fn rfc9440_mode_ignores_cloudfronts_own_headers() {
        let (_, pem) = cert("leaf");
        let p = read(
            &[("cloudfront-viewer-cert-pem", &url(&pem))],
            ViewerHeaders::Rfc9440,
        );
        assert!(p.is_empty());
    }

    #[test]
    fn an_invalid_url_escape_is_refused() {
        let (_, pem) = cert("leaf");
        let broken = format!("{}%G1", url(&pem));
        assert!(is_bad(decode(&[("client-cert", &broken)])));
    }

    #[test]
    fn a_header_sent_twice_is_refused() {
        let (leaf, _) = cert("leaf");
        let v = sf(&leaf);
        assert!(is_bad(decode(&[("client-cert", &v), ("client-cert", &v)])));
    }

    #[test]
    fn a_sha256_that_is_not_the_certificates_is_refused_and_its_own_passes() {
        let (leaf, pem) = cert("leaf");
        let pem = url(&pem);
        let own = hex::encode_upper(sha256(&leaf));
        let own_colons: Vec<String> = sha256(&leaf).iter().map(|b| format!("{b:02x}")).collect();
        for good in [own.clone(), own_colons.join(":")] {
            let h = [
                ("cloudfront-viewer-cert-pem", pem.as_str()),
                ("cloudfront-viewer-cert-sha256", good.as_str()),
            ];
            assert!(decode(&h).unwrap().is_some(), "{good}");
        }
        let other = hex::encode(sha256(b"other"));
        let h = [
            ("cloudfront-viewer-cert-pem", pem.as_str()),
            ("cloudfront-viewer-cert-sha256", other.as_str()),
        ];
        assert!(is_bad(decode(&h)));
    }

    #[test]
    fn more_than_four_certificates_are_too_long() {
        let (leaf, _) = cert("leaf");
        let (int, _) = cert("int");
        let chain = vec![sf(&int); 4].join(",");
        let r = decode(&[("client-cert", &sf(&leaf)), ("client-cert-chain", &chain)]);
        assert_eq!(r, Err(DecodeError::TooLong(5)));
    }

    #[test]
    fn a_pem_section_that_is_not_a_certificate_is_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        assert!(is_bad(decode(&[(
            "client-cert",
            &url(&key.serialize_pem())
        )])));
    }

    #[test]
    fn the_digest_tells_different_headers_apart() {
        let (a, _) = cert("a");
        let one = read(&[("client-cert", &sf(&a))], ViewerHeaders::Cloudfront);
        let other = read(&[("client-cert-chain", &sf(&a))], ViewerHeaders::Cloudfront);
        assert_ne!(one.digest(), other.digest());
        assert_eq!(
            one.digest(),
            read(&[("client-cert", &sf(&a))], ViewerHeaders::Cloudfront).digest()
        );
    }

    /// The fuzz target's properties (fuzz/fuzz_targets/viewer_headers.rs) on 20,000 values
    /// made by mutating valid ones: no panic, and a decoded chain is 1 to 4 certificates that
    /// each parse.
    #[test]
    fn mutated_headers_keep_the_invariants_of_the_fuzz_target() {
        let (leaf, pem) = cert("leaf");
        let seeds = [
            sf(&leaf),
            url(&pem),
            format!("{}, {}", sf(&leaf), sf(&leaf)),
        ];
        let names = [
            "client-cert",
            "client-cert-chain",
            "cloudfront-viewer-cert-pem",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..20_000 {
            let mut v = seeds[i % seeds.len()].clone().into_bytes();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % v.len().max(1);
                match next() % 3 {
                    0 => v[at] = (next() % 95 + 32) as u8,
                    1 => {
                        v.remove(at);
                    }
                    _ => v.insert(at, b"%:,-=A"[(next() % 6) as usize]),
                }
                if v.is_empty() {
                    break;
                }
            }
            let Ok(value) = HeaderValue::from_bytes(&v) else {
                continue;
            };
            let mut map = HeaderMap::new();
            map.insert(HeaderName::from_static(names[i % names.len()]), value);
            if let Ok(Some(chain)) = Presented::read(&map, ViewerHeaders::Cloudfront).decode() {
                assert!(chain.intermediates.len() < MAX_CHAIN);
                for c in std::iter::once(&chain.leaf).chain(&chain.intermediates) {
                    assert!(x509_parser::parse_x509_certificate(c.as_ref()).is_ok());
                }
            }
        }
    }
}
