//! The verified client identity: the leaf certificate parsed once per handshake with
//! x509-parser, and the identity headers for the upstream rendered once per connection.
//!
//! Three header families are supported: Envoy's `x-forwarded-client-cert` (XFCC), AWS ALB's
//! `X-Amzn-Mtls-Clientcert-*`, and RFC 9440's `Client-Cert`/`Client-Cert-Chain`. Every
//! rendered value is a valid HTTP header value whatever bytes the certificate holds: control
//! characters are escaped, so a hostile certificate field can never split or forge a header.

use std::borrow::Cow;
use std::fmt::Write as _;

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::*;

use crate::config::{ForwardConfig, HeaderFamily};
use crate::x509::{attr_string, rfc2253, rfc3339_z, serial_hex, sha256};

/// The identity headers this proxy owns. Inbound copies are always stripped
/// (see [`is_identity_header`]); these are the names it sets.
pub mod names {
    use http::header::HeaderName;
    /// Envoy's XFCC.
    pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
    /// ALB: hex serial number.
    pub const ALB_SERIAL: HeaderName =
        HeaderName::from_static("x-amzn-mtls-clientcert-serial-number");
    /// ALB: issuer DN, RFC 2253.
    pub const ALB_ISSUER: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-issuer");
    /// ALB: subject DN, RFC 2253.
    pub const ALB_SUBJECT: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-subject");
    /// ALB: `NotBefore=…Z;NotAfter=…Z`.
    pub const ALB_VALIDITY: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-validity");
    /// ALB: URL-encoded PEM leaf.
    pub const ALB_LEAF: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-leaf");
    /// RFC 9440 leaf.
    pub const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
    /// RFC 9440 chain.
    pub const CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");
}

/// The leaf certificate's fields that allow-lists, logs and headers use.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// Subject DN, RFC 2253 (most specific RDN first, e.g. `CN=my-client,O=Example`).
    pub subject: String,
    /// Issuer DN, RFC 2253.
    pub issuer: String,
    /// Serial number, upper-case hex without leading zero bytes.
    pub serial_hex: String,
    /// Every subject commonName.
    pub common_names: Vec<String>,
    /// Every subject organizationalUnitName.
    pub organizational_units: Vec<String>,
    /// SAN dNSName entries.
    pub dns_names: Vec<String>,
    /// SAN URI entries.
    pub uris: Vec<String>,
    /// SHA-256 of the leaf DER.
    pub fingerprint: [u8; 32],
    /// SHA-256 of the leaf's SubjectPublicKeyInfo DER.
    pub spki_sha256: [u8; 32],
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The leaf as presented.
    pub leaf: CertificateDer<'static>,
    /// Intermediates as presented, in order.
    pub intermediates: Vec<CertificateDer<'static>>,
}

/// The leaf could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse client certificate: {0}")]
pub struct ParseError(String);

impl ClientIdentity {
    /// Parses the leaf of a presented chain.
    pub fn parse(
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Self, ParseError> {
        let (_, cert) =
            X509Certificate::from_der(leaf.as_ref()).map_err(|e| ParseError(e.to_string()))?;
        Ok(Self::from_x509(&cert, leaf, intermediates))
    }

    /// The identity of a leaf that is already parsed (`cert` is `leaf` parsed).
    pub fn from_x509(
        cert: &X509Certificate<'_>,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Self {
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    _ => {}
                }
            }
        }
        let subject = cert.subject();
        // attr_string also reads BMPString/T61String values, so a CN in one of those legacy
        // encodings can still be matched by the allow-list (an undecodable one never matches:
        // fail closed).
        let common_names = subject.iter_common_name().filter_map(attr_string).collect();
        let organizational_units = subject
            .iter_organizational_unit()
            .filter_map(attr_string)
            .collect();
        Self {
            subject: rfc2253(subject),
            issuer: rfc2253(cert.issuer()),
            serial_hex: serial_hex(cert.raw_serial()),
            common_names,
            organizational_units,
            dns_names,
            uris,
            fingerprint: sha256(leaf.as_ref()),
            spki_sha256: sha256(cert.public_key().raw),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            leaf: leaf.clone().into_owned(),
            intermediates: intermediates
                .iter()
                .map(|c| c.clone().into_owned())
                .collect(),
        }
    }

    /// Lower-case hex SHA-256 of the leaf (XFCC `Hash=` and the logs use this form).
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    /// The first commonName, or `-`, capped for logs (see [`capped_for_log`]).
    pub fn cn_for_log(&self) -> Cow<'_, str> {
        capped_for_log(self.common_names.first().map(String::as_str).unwrap_or("-"))
    }

    /// Renders the configured identity headers. Called once per connection.
    pub fn headers(&self, forward: &ForwardConfig) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(6);
        for family in &forward.client_cert_headers {
            match family {
                HeaderFamily::Xfcc => out.push((
                    names::XFCC,
                    header_value(&self.xfcc(forward.xfcc_include_cert)),
                )),
                HeaderFamily::Alb => {
                    out.push((names::ALB_SERIAL, header_value(&self.serial_hex)));
                    out.push((names::ALB_ISSUER, header_value(&self.issuer)));
                    out.push((names::ALB_SUBJECT, header_value(&self.subject)));
                    out.push((
                        names::ALB_VALIDITY,
                        header_value(&format!(
                            "NotBefore={};NotAfter={}",
                            rfc3339_z(self.not_before),
                            rfc3339_z(self.not_after)
                        )),
                    ));
                    out.push((
                        names::ALB_LEAF,
                        header_value(&alb_url_encoded_pem(&self.leaf)),
                    ));
                }
                HeaderFamily::Rfc9440 => {
                    out.push((names::CLIENT_CERT, header_value(&sf_binary(&self.leaf))));
                    // The intermediates only: many clients (every OpenSSL-based one, curl
                    // included) append their root to the chain they send, and a root is a
                    // trust anchor, not part of the chain RFC 9440 §2.3 asks for. Without
                    // intermediates the header is omitted, as the RFC says.
                    let chain: Vec<String> = self
                        .intermediates
                        .iter()
                        .filter(|c| !is_self_issued(c))
                        .map(|c| sf_binary(c))
                        .collect();
                    if !chain.is_empty() {
                        out.push((names::CLIENT_CERT_CHAIN, header_value(&chain.join(", "))));
                    }
                }
            }
        }
        out
    }

    /// Envoy's XFCC element for this client: `Hash=…;[Cert="…";Chain="…";]Subject="…";URI=…;DNS=…`.
    pub fn xfcc(&self, include_cert: bool) -> String {
        let mut s = String::with_capacity(160);
        s.push_str("Hash=");
        s.push_str(&self.fingerprint_hex());
        if include_cert {
            s.push_str(";Cert=\"");
            s.push_str(&url_encoded_pem(&self.leaf));
            s.push('"');
            if !self.intermediates.is_empty() {
                s.push_str(";Chain=\"");
                s.push_str(&url_encoded_pem(&self.leaf));
                for c in &self.intermediates {
                    s.push_str(&url_encoded_pem(c));
                }
                s.push('"');
            }
        }
        // Envoy always quotes Subject; other values only when they hold `,`, `;` or `=`.
        s.push_str(";Subject=\"");
        push_xfcc_subject(&mut s, &self.subject);
        s.push('"');
        for uri in &self.uris {
            s.push_str(";URI=");
            push_xfcc_value(&mut s, uri);
        }
        for dns in &self.dns_names {
            s.push_str(";DNS=");
            push_xfcc_value(&mut s, dns);
        }
        s
    }
}

/// The longest certificate-derived value (subject, issuer, CN, SANs) written into one log field.
pub const LOG_FIELD_MAX: usize = 512;

/// A certificate-derived value for a log line, cut to [`LOG_FIELD_MAX`] bytes (at a character
/// boundary) with a marker that says how much was left out.
///
/// Security: certificate fields are chosen by whoever made the certificate, and a refused
/// client can present a 10 KiB CN on every handshake. Capping keeps each connection-log line
/// small; identity headers keep the exact value, because the upstream needs it, and the
/// certificate's own size bounds them.
pub fn capped_for_log(s: &str) -> Cow<'_, str> {
    if s.len() <= LOG_FIELD_MAX {
        return Cow::Borrowed(s);
    }
    let mut end = LOG_FIELD_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…[{} more bytes]", &s[..end], s.len() - end))
}

/// True for any header, in any case or with `_` for `-`, that claims a client identity: XFCC,
/// ALB's `x-amzn-mtls-clientcert*`, RFC 9440's `client-cert`/`client-cert-chain`, and
/// CloudFront's `cloudfront-viewer-cert-*` (a viewer's certificate as CloudFront forwards it:
/// only `[viewer]` may read it, on an edge's connection, and it is never passed on unjudged).
///
/// Security: these are stripped from every inbound request whatever `forward` mode is set, so
/// an upstream never mistakes a client-written header for one this proxy verified. The
/// underscore variants matter because some app servers (and CGI-style gateways) fold `_` and
/// `-` together.
pub fn is_identity_header(name: &HeaderName) -> bool {
    let n = name.as_str().as_bytes();
    eq_folded(n, b"x-forwarded-client-cert")
        || starts_with_folded(n, b"x-amzn-mtls-clientcert")
        || eq_folded(n, b"client-cert")
        || eq_folded(n, b"client-cert-chain")
        || starts_with_folded(n, b"cloudfront-viewer-cert-")
}

fn fold(b: u8) -> u8 {
    match b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

fn eq_folded(name: &[u8], pattern: &[u8]) -> bool {
    name.len() == pattern.len() && starts_with_folded(name, pattern)
}

fn starts_with_folded(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && name.iter().zip(prefix).all(|(a, b)| fold(*a) == *b)
}

/// Makes any string a valid header value: bytes below 0x20 (except none) and DEL become
/// `\XX`. UTF-8 above 0x7f is allowed by `HeaderValue::from_bytes` (obs-text).
fn header_value(s: &str) -> HeaderValue {
    let escaped;
    let bytes = if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        escaped = escape_controls(s);
        escaped.as_bytes()
    } else {
        s.as_bytes()
    };
    // Every byte is now 0x20..=0x7e or >= 0x80, which from_bytes accepts; the fallback only
    // exists so that a future change cannot turn this into a panic.
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if (c as u32) < 0x20 || c as u32 == 0x7f {
            let _ = write!(out, "\\{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// The RFC 2253 subject inside XFCC's double quotes, byte-for-byte what Envoy sends for every
/// DN without a `"` or `\` in an attribute value (commas, `+` and the like stay `\,`, `\+`).
///
/// Security: a certificate's subject is attacker-influenced text placed inside a quoted value
/// that the upstream parses. XFCC parsers disagree on escapes: some read `\x` as a quoted-pair
/// (RFC 9110), some only unescape `\"`. Either kind could be made to end the quoted value
/// early, and read a forged `;URI=…` after it, if the value held a `"` or a backslash just
/// before the closing quote. So the two RFC 2253 escapes that could produce those, `\"` and
/// `\\`, are written in RFC 2253's equivalent hex form, `\22` and `\5C` (RFC 2253 §2.4):
/// the DN means the same, and the quoted value holds no `"` and never ends in a backslash.
fn push_xfcc_subject(out: &mut String, dn: &str) {
    let mut chars = dn.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('"') => out.push_str("\\22"),
                Some('\\') | None => out.push_str("\\5C"),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
            },
            // rfc2253() always escapes it; kept for any future caller.
            '"' => out.push_str("\\22"),
            c => out.push(c),
        }
    }
}

/// A URI or DNS SAN in XFCC. Envoy's rule: a value holding `,`, `;` or `=` is double-quoted.
/// Inside quotes, `"` and `\` are percent-encoded (they are not valid in a URI or a host
/// name, so `%22`/`%5C` is the same URI), which keeps the quoted value unambiguous for every
/// XFCC parser (see [`push_xfcc_subject`]).
fn push_xfcc_value(out: &mut String, v: &str) {
    if v.contains([',', ';', '=', '"', '\\']) {
        out.push('"');
        for c in v.chars() {
            match c {
                '"' => out.push_str("%22"),
                '\\' => out.push_str("%5C"),
                c => out.push(c),
            }
        }
        out.push('"');
    } else {
        out.push_str(v);
    }
}

/// Envoy's URL-encoded PEM (XFCC `Cert`/`Chain`): only RFC 3986 unreserved characters stay;
/// base64's `+`, `/`, `=`, spaces and newlines are encoded (`%2B`, `%2F`, `%3D`, `%20`, `%0A`),
/// exactly the replacements Envoy makes.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// ALB's URL-encoded PEM (`X-Amzn-Mtls-Clientcert-Leaf`): ALB documents it as "URL-encoded
/// PEM, with `+=/` as safe characters", i.e. Python's `quote(pem, safe="+=/")`: only spaces
/// and newlines change. Apps that migrated off ALB may split or compare the raw value, so it
/// is byte-for-byte ALB's.
const ALB_URL_ENCODE: &AsciiSet = &URL_ENCODE.remove(b'+').remove(b'=').remove(b'/');

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    s.push_str("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every 64-byte chunk is valid UTF-8.
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

fn url_encoded_pem(der: &[u8]) -> String {
    utf8_percent_encode(&pem(der), URL_ENCODE).to_string()
}

fn alb_url_encoded_pem(der: &[u8]) -> String {
    utf8_percent_encode(&pem(der), ALB_URL_ENCODE).to_string()
}

/// Subject and issuer are the same name: a root (or a self-issued rollover certificate),
/// never an intermediate between the client's leaf and its trust anchor.
fn is_self_issued(der: &CertificateDer<'_>) -> bool {
    match X509Certificate::from_der(der.as_ref()) {
        Ok((_, c)) => c.subject().as_raw() == c.issuer().as_raw(),
        Err(_) => false,
    }
}

/// RFC 8941 byte sequence: `:base64:`.
fn sf_binary(der: &[u8]) -> String {
    format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(
        dn: &[(rcgen::DnType, &str)],
        sans: Vec<rcgen::SanType>,
    ) -> CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            p.distinguished_name.push(t.clone(), *v);
        }
        p.subject_alt_names = sans;
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn xfcc_has_hash_subject_uri_dns() {
        let der = cert_with(
            &[
                (rcgen::DnType::OrganizationName, "Example"),
                (rcgen::DnType::CommonName, "my-client"),
            ],
            vec![
                rcgen::SanType::URI("spiffe://example.org/ns/a".try_into().unwrap()),
                rcgen::SanType::DnsName("api.example.com".try_into().unwrap()),
            ],
        );
        let id = ClientIdentity::parse(&der, &[]).unwrap();
        let x = id.xfcc(false);
        assert_eq!(
            x,
            format!(
                "Hash={};Subject=\"CN=my-client,O=Example\";URI=spiffe://example.org/ns/a;DNS=api.example.com",
                hex::encode(sha256(&der))
            )
        );
    }

    #[test]
    fn hostile_subject_stays_one_valid_header_value() {
        let der = cert_with(
            &[(
                rcgen::DnType::CommonName,
                "evil\r\nx-forwarded-client-cert: Hash=0\"",
            )],
            vec![],
        );
        let id = ClientIdentity::parse(&der, &[]).unwrap();
        let fwd = ForwardConfig {
            client_cert_headers: vec![HeaderFamily::Xfcc, HeaderFamily::Alb, HeaderFamily::Rfc9440],
            xfcc_include_cert: true,
        };
        for (_, v) in id.headers(&fwd) {
            assert!(!v.as_bytes().iter().any(|b| *b == b'\r' || *b == b'\n'));
        }
        assert!(id.subject.contains("\\0D\\0A"), "{}", id.subject);
    }

    #[test]
    fn identity_header_matching_folds_case_and_underscores() {
        for n in [
            "x-forwarded-client-cert",
            "x_forwarded_client_cert",
            "x-amzn-mtls-clientcert-leaf",
            "x_amzn_mtls_clientcert_subject",
            "x-amzn-mtls-clientcert",
            "client-cert",
            "client_cert_chain",
        ] {
            assert!(
                is_identity_header(&HeaderName::from_bytes(n.as_bytes()).unwrap()),
                "{n}"
            );
        }
        for n in ["client-certificate", "x-forwarded-for", "x-client-cert"] {
            assert!(
                !is_identity_header(&HeaderName::from_bytes(n.as_bytes()).unwrap()),
                "{n}"
            );
        }
    }

    /// Whatever the CN holds, the XFCC Subject stays one quoted value: no `"` inside it and
    /// no backslash before its closing quote, so no parser can read a forged key after it.
    #[test]
    fn xfcc_subject_cannot_end_early() {
        for cn in [
            "x\";URI=spiffe://admin;DNS=a",
            "ends with a backslash\\",
            "a\\\"b",
        ] {
            let der = cert_with(&[(rcgen::DnType::CommonName, cn)], vec![]);
            let id = ClientIdentity::parse(&der, &[]).unwrap();
            let x = id.xfcc(false);
            let value = x
                .split_once(";Subject=\"")
                .and_then(|(_, rest)| rest.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{x}"));
            assert!(!value.contains('"'), "{x}");
            assert!(!value.ends_with('\\'), "{x}");
            // Everything after the opening quote is the one value: no key follows it.
            assert!(
                x.starts_with("Hash=") && x.matches(";Subject=").count() == 1,
                "{x}"
            );
        }
        let der = cert_with(&[(rcgen::DnType::CommonName, "a\"b\\c,d")], vec![]);
        let id = ClientIdentity::parse(&der, &[]).unwrap();
        assert_eq!(id.subject, "CN=a\\\"b\\\\c\\,d");
        assert!(id.xfcc(false).ends_with(";Subject=\"CN=a\\22b\\5Cc\\,d\""));
    }

    #[test]
    fn xfcc_quotes_uri_with_separators() {
        let der = cert_with(
            &[(rcgen::DnType::CommonName, "c")],
            vec![rcgen::SanType::URI(
                "https://example.org/p?a=1;b=2".try_into().unwrap(),
            )],
        );
        let id = ClientIdentity::parse(&der, &[]).unwrap();
        assert!(
            id.xfcc(false)
                .ends_with(";URI=\"https://example.org/p?a=1;b=2\""),
            "{}",
            id.xfcc(false)
        );
    }

    #[test]
    fn alb_leaf_encodes_only_spaces_and_newlines() {
        let der = cert_with(&[(rcgen::DnType::CommonName, "c")], vec![]);
        let pem = pem(&der);
        let alb = alb_url_encoded_pem(&der);
        assert_eq!(alb, pem.replace(' ', "%20").replace('\n', "%0A"));
        let envoy = url_encoded_pem(&der);
        assert_eq!(
            envoy,
            pem.replace(' ', "%20")
                .replace('\n', "%0A")
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        );
    }

    #[test]
    fn log_fields_are_capped_at_a_character_boundary_with_a_marker() {
        assert_eq!(capped_for_log("CN=short"), "CN=short");
        let long = format!("CN={}", "é".repeat(5000));
        let capped = capped_for_log(&long);
        assert!(capped.len() < LOG_FIELD_MAX + 32, "{}", capped.len());
        assert!(
            capped.ends_with(&format!("…[{} more bytes]", long.len() - 511)),
            "{capped}"
        );
    }

    #[test]
    fn rfc2253_reads_legacy_strings_and_dumps_unknown_types() {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(
            rcgen::DnType::CustomDnType(vec![1, 2, 3, 4]),
            rcgen::DnValue::Utf8String("x".into()),
        );
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            rcgen::DnValue::BmpString("Zoë".try_into().unwrap()),
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let der = p.self_signed(&key).unwrap().der().clone();
        let id = ClientIdentity::parse(&der, &[]).unwrap();
        assert_eq!(id.subject, "CN=Zoë,1.2.3.4=#0C0178");
        assert_eq!(id.common_names, vec!["Zoë".to_owned()]);
    }
}
