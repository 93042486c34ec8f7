//! Facts read from certificates and CRLs, shared by every layer that reports on them:
//! [`CertInfo`], [`CrlInfo`] and [`Inventory`] for `check`, metrics and reload logs; RFC 2253
//! names; SHA-256; and the few DER shapes (a signed structure, a public key) that the
//! signature checks in `tls` need.
//!
//! This module is at the bottom of the crate: it imports no other module of it.

use std::fmt::Write as _;
use std::path::PathBuf;

use rustls_pki_types::CertificateDer;
use x509_parser::der_parser::asn1_rs::{Any, Class, FromDer as _, Tag, ToDer};
use x509_parser::num_bigint::BigUint;
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;

/// A certificate's facts for reports and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct CertInfo {
    /// Subject DN, RFC 2253.
    pub(crate) subject: String,
    /// Issuer DN, RFC 2253.
    pub(crate) issuer: String,
    /// SAN DNS names and IPs.
    pub(crate) sans: Vec<String>,
    /// notBefore, Unix seconds.
    pub(crate) not_before: i64,
    /// notAfter, Unix seconds.
    pub(crate) not_after: i64,
    /// basicConstraints CA:TRUE.
    pub(crate) is_ca: bool,
    /// The keyUsage extension is present and lacks keyCertSign: this key may not issue
    /// certificates (RFC 5280 §4.2.1.3).
    pub(crate) key_cert_sign_forbidden: bool,
    /// The keyUsage extension is present and lacks cRLSign: this key may not sign CRLs.
    pub(crate) crl_sign_forbidden: bool,
    /// SHA-256 of the DER, lower-case hex.
    pub(crate) fingerprint: String,
}

/// How a CRL's signature was checked when it was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CrlSignature {
    /// Verified with the key of the truststore CA it names.
    Verified,
    /// Its issuer is not in the truststore (an intermediate CA's CRL): the signature is checked
    /// at each handshake against the intermediate the client presents.
    IssuerNotInTruststore,
    /// Fetched from a distribution point and verified with the key of the intermediate CA
    /// (of a chain that verified) that named it.
    VerifiedWithIntermediate,
}

/// A CRL's facts for reports and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct CrlInfo {
    /// The file (or, for a fetched CRL, the URL) it came from.
    pub(crate) path: PathBuf,
    /// Issuer DN, RFC 2253.
    pub(crate) issuer: String,
    /// cRLNumber, decimal.
    pub(crate) number: Option<String>,
    /// thisUpdate, Unix seconds.
    pub(crate) this_update: i64,
    /// nextUpdate, Unix seconds.
    pub(crate) next_update: Option<i64>,
    /// Revoked entries.
    pub(crate) revoked: usize,
    /// How its signature was checked at load.
    pub(crate) signature: CrlSignature,
    /// The partition it covers (its issuingDistributionPoint), or `None`: all of the
    /// issuer's certificates.
    pub(crate) scope: Option<CrlScope>,
    /// False when a newer CRL of the same issuer and the same scope (higher cRLNumber, then
    /// later thisUpdate) was loaded too: only the newest CRL of each (issuer, scope) is used,
    /// and CRLs of different scopes are all in force at once.
    pub(crate) in_use: bool,
}

/// The scope of a CRL that carries an issuingDistributionPoint (RFC 5280 §5.2.5): one
/// partition of its issuer's certificates, as AWS Private CA and other large CAs publish them.
/// Only the forms rustls-webpki honours reach here (a fullName with URIs, optionally limited
/// to end-entity or CA certificates); every other form is refused when the CRL is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub(crate) struct CrlScope {
    /// The distribution point's fullName URIs: a certificate is in the partition when its
    /// cRLDistributionPoints names one of them.
    pub(crate) uris: Vec<String>,
    /// onlyContainsUserCerts: the partition holds end-entity certificates only.
    pub(crate) only_user_certs: bool,
    /// onlyContainsCACerts: the partition holds CA certificates only.
    pub(crate) only_ca_certs: bool,
}

impl std::fmt::Display for CrlScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "partition {}", self.uris.join(" "))?;
        if self.only_user_certs {
            f.write_str(" (end-entity certificates only)")?;
        }
        if self.only_ca_certs {
            f.write_str(" (CA certificates only)")?;
        }
        Ok(())
    }
}

/// Everything of a CRL but its revoked list, read without walking that list (which, for a
/// CRL of a million entries, would allocate hundreds of megabytes for nothing).
#[derive(Debug, Clone)]
pub(crate) struct CrlHeader {
    /// The issuer Name, whole DER (the form x509-parser's `as_raw` gives for certificates).
    pub(crate) issuer_der: Vec<u8>,
    /// The issuer, RFC 2253.
    pub(crate) issuer: String,
    /// cRLNumber.
    pub(crate) number: Option<BigUint>,
    /// thisUpdate, Unix seconds.
    pub(crate) this_update: i64,
    /// nextUpdate, Unix seconds.
    pub(crate) next_update: Option<i64>,
    /// The issuingDistributionPoint's scope, when the CRL has one.
    pub(crate) scope: Option<CrlScope>,
}

/// Reads a CRL's header: `CertificateList ::= SEQUENCE { tbsCertList, .. }` with
/// `TBSCertList ::= SEQUENCE { version?, signature, issuer, thisUpdate, nextUpdate?,
/// revokedCertificates?, [0] crlExtensions? }`. The revoked list is skipped by its length.
pub(crate) fn crl_header(der: &[u8]) -> Result<CrlHeader, String> {
    let bad = |what: &str| {
        format!("cannot parse CRL ({what}); expected PEM (-----BEGIN X509 CRL-----) or DER")
    };
    let (rest, outer) = Any::from_der(der).map_err(|_| bad("not a DER SEQUENCE"))?;
    if outer.tag() != Tag::Sequence {
        return Err(bad("not a DER SEQUENCE"));
    }
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the DER structure"));
    }
    let (_, tbs) = Any::from_der(outer.data).map_err(|_| bad("no tbsCertList"))?;
    let mut i = tbs.data;
    let (after, first) = Any::from_der(i).map_err(|_| bad("empty tbsCertList"))?;
    if first.tag() == Tag::Integer {
        i = after;
    }
    let (after, _algorithm) = Any::from_der(i).map_err(|_| bad("no signature algorithm"))?;
    let (after_issuer, issuer) = X509Name::from_der(after).map_err(|_| bad("bad issuer"))?;
    let issuer_der = after[..after.len() - after_issuer.len()].to_vec();
    let (mut i, this_update) =
        ASN1Time::from_der(after_issuer).map_err(|_| bad("bad thisUpdate"))?;
    let mut next_update = None;
    let mut scope = None;
    let mut number = None;
    while !i.is_empty() {
        let (after, field) = Any::from_der(i).map_err(|_| bad("bad field after thisUpdate"))?;
        match (field.class(), field.tag()) {
            (Class::Universal, Tag::UtcTime | Tag::GeneralizedTime) if next_update.is_none() => {
                let (_, t) = ASN1Time::from_der(i).map_err(|_| bad("bad nextUpdate"))?;
                next_update = Some(t.timestamp());
            }
            // revokedCertificates: walked by the index builder, not here.
            (Class::Universal, Tag::Sequence) => {}
            (Class::ContextSpecific, Tag(0)) => {
                let (_, exts) = Any::from_der(field.data).map_err(|_| bad("bad crlExtensions"))?;
                let mut e = exts.data;
                while !e.is_empty() {
                    let (rest, ext) =
                        X509Extension::from_der(e).map_err(|_| bad("bad CRL extension"))?;
                    match ext.parsed_extension() {
                        ParsedExtension::CRLNumber(n) => number = Some(n.clone()),
                        ParsedExtension::IssuingDistributionPoint(idp) => {
                            scope = Some(scope_of(idp))
                        }
                        _ => {}
                    }
                    e = rest;
                }
            }
            _ => return Err(bad("unexpected field in tbsCertList")),
        }
        i = after;
    }
    Ok(CrlHeader {
        issuer: rfc2253(&issuer),
        issuer_der,
        number,
        this_update: this_update.timestamp(),
        next_update,
        scope,
    })
}

fn scope_of(idp: &IssuingDistributionPoint<'_>) -> CrlScope {
    let mut uris = Vec::new();
    if let Some(DistributionPointName::FullName(names)) = &idp.distribution_point {
        for n in names {
            if let GeneralName::URI(u) = n {
                uris.push((*u).to_owned());
            }
        }
    }
    CrlScope {
        uris,
        only_user_certs: idp.only_contains_user_certs,
        only_ca_certs: idp.only_contains_ca_certs,
    }
}

/// The URIs of a certificate's cRLDistributionPoints as a CRL's scope is matched against
/// them (the rule rustls-webpki applies): fullName URIs of points without cRLIssuer or
/// reasons. `None` when the certificate has no cRLDistributionPoints extension at all.
pub(crate) fn crl_scope_uris(c: &X509Certificate<'_>) -> Option<Vec<String>> {
    let mut found = None;
    for ext in c.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() else {
            continue;
        };
        let uris: &mut Vec<String> = found.get_or_insert_with(Vec::new);
        for p in points
            .iter()
            .filter(|p| p.crl_issuer.is_none() && p.reasons.is_none())
        {
            if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                for n in names {
                    if let GeneralName::URI(u) = n {
                        uris.push((*u).to_owned());
                    }
                }
            }
        }
    }
    found
}

/// Everything one TLS state trusts and serves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Inventory {
    /// The server leaf.
    pub(crate) server: CertInfo,
    /// Truststore entries.
    pub(crate) anchors: Vec<CertInfo>,
    /// Loaded CRLs.
    pub(crate) crls: Vec<CrlInfo>,
}

/// Parses a certificate's reportable facts.
pub(crate) fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, c) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("cannot parse certificate: {e}"))?;
    let mut sans = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                GeneralName::IPAddress(ip) => {
                    if let Some(ip) = ip_of(ip) {
                        sans.push(format!("IP:{ip}"));
                    }
                }
                GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                _ => {}
            }
        }
    }
    let usage = KeyUsageBits::of(&c);
    Ok(CertInfo {
        subject: rfc2253(c.subject()),
        issuer: rfc2253(c.issuer()),
        sans,
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        is_ca: c.is_ca(),
        key_cert_sign_forbidden: !usage.allows_cert_sign(),
        crl_sign_forbidden: !usage.allows_crl_sign(),
        fingerprint: hex::encode(sha256(der.as_ref())),
    })
}

fn ip_of(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// The `http://` and `https://` URLs of a certificate's CRL distribution points. Points with
/// a cRLIssuer (indirect CRLs, which webpki does not support) are left out.
pub(crate) fn crl_distribution_urls(c: &X509Certificate<'_>) -> Vec<String> {
    let mut urls = Vec::new();
    for ext in c.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() else {
            continue;
        };
        for p in points.iter().filter(|p| p.crl_issuer.is_none()) {
            if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                for n in names {
                    if let GeneralName::URI(u) = n {
                        if u.starts_with("http://") || u.starts_with("https://") {
                            urls.push((*u).to_owned());
                        }
                    }
                }
            }
        }
    }
    urls
}

/// The keyUsage extension of a certificate, as far as path checks care. An absent extension
/// allows every use (RFC 5280 §4.2.1.3 leaves it optional, and every verifier treats its
/// absence so); an extension that does not parse allows none (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyUsageBits {
    /// No keyUsage extension.
    Absent,
    /// The extension is present with these bits.
    Present {
        /// digitalSignature (bit 0).
        digital_signature: bool,
        /// keyCertSign (bit 5).
        key_cert_sign: bool,
        /// cRLSign (bit 6).
        crl_sign: bool,
    },
    /// The extension is present but could not be read.
    Unreadable,
}

impl KeyUsageBits {
    /// Reads the keyUsage extension of `c`.
    pub(crate) fn of(c: &X509Certificate<'_>) -> KeyUsageBits {
        match c.key_usage() {
            Ok(None) => KeyUsageBits::Absent,
            Ok(Some(ku)) => KeyUsageBits::Present {
                digital_signature: ku.value.digital_signature(),
                key_cert_sign: ku.value.key_cert_sign(),
                crl_sign: ku.value.crl_sign(),
            },
            Err(_) => KeyUsageBits::Unreadable,
        }
    }

    /// The key may sign certificates.
    pub(crate) fn allows_cert_sign(self) -> bool {
        match self {
            KeyUsageBits::Absent => true,
            KeyUsageBits::Present { key_cert_sign, .. } => key_cert_sign,
            KeyUsageBits::Unreadable => false,
        }
    }

    /// The key may sign CRLs.
    pub(crate) fn allows_crl_sign(self) -> bool {
        match self {
            KeyUsageBits::Absent => true,
            KeyUsageBits::Present { crl_sign, .. } => crl_sign,
            KeyUsageBits::Unreadable => false,
        }
    }

    /// The key may make digital signatures (a TLS client's CertificateVerify is one).
    pub(crate) fn allows_digital_signature(self) -> bool {
        match self {
            KeyUsageBits::Absent => true,
            KeyUsageBits::Present {
                digital_signature, ..
            } => digital_signature,
            KeyUsageBits::Unreadable => false,
        }
    }
}

/// The three parts of a signed X.509 structure (a certificate or a CRL).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignedParts<'a> {
    /// The signed bytes: the whole DER of tbsCertificate / tbsCertList, tag included.
    pub(crate) tbs: &'a [u8],
    /// The contents of the signatureAlgorithm SEQUENCE (the form rustls-webpki compares).
    pub(crate) algorithm: &'a [u8],
    /// The signature bits.
    pub(crate) signature: &'a [u8],
}

/// Splits `SEQUENCE { tbs, signatureAlgorithm, signatureValue BIT STRING }`.
pub(crate) fn signed_parts(der: &[u8]) -> Option<SignedParts<'_>> {
    let (rest, outer) = Any::from_der(der).ok()?;
    if !rest.is_empty() || outer.tag() != Tag::Sequence {
        return None;
    }
    let body = outer.data;
    let (after_tbs, tbs) = Any::from_der(body).ok()?;
    if tbs.tag() != Tag::Sequence {
        return None;
    }
    let tbs_raw = &body[..body.len() - after_tbs.len()];
    let (after_alg, alg) = Any::from_der(after_tbs).ok()?;
    let (end, sig) = Any::from_der(after_alg).ok()?;
    if alg.tag() != Tag::Sequence || sig.tag() != Tag::BitString || !end.is_empty() {
        return None;
    }
    // A signature is a whole number of bytes: the BIT STRING's unused-bits octet must be 0.
    let (unused, signature) = sig.data.split_first()?;
    (*unused == 0).then_some(SignedParts {
        tbs: tbs_raw,
        algorithm: alg.data,
        signature,
    })
}

/// A SubjectPublicKeyInfo, split the way signature checks use it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpkiParts<'a> {
    /// The contents of the algorithm SEQUENCE (the form rustls-webpki compares).
    pub(crate) algorithm: &'a [u8],
    /// The subjectPublicKey bits.
    pub(crate) key: &'a [u8],
}

/// Splits a whole SubjectPublicKeyInfo DER.
pub(crate) fn spki_parts(der: &[u8]) -> Option<SpkiParts<'_>> {
    let (rest, outer) = Any::from_der(der).ok()?;
    if !rest.is_empty() || outer.tag() != Tag::Sequence {
        return None;
    }
    let (after_alg, alg) = Any::from_der(outer.data).ok()?;
    let (end, key) = Any::from_der(after_alg).ok()?;
    if alg.tag() != Tag::Sequence || key.tag() != Tag::BitString || !end.is_empty() {
        return None;
    }
    let (unused, key) = key.data.split_first()?;
    (*unused == 0).then_some(SpkiParts {
        algorithm: alg.data,
        key,
    })
}

/// A public key in words, for refusal details: `RSA 1024-bit`, `EC P-256`, `Ed25519`.
pub(crate) fn describe_key(spki: &SubjectPublicKeyInfo<'_>) -> String {
    let oid = spki.algorithm.algorithm.to_id_string();
    match oid.as_str() {
        "1.2.840.113549.1.1.1" => match rsa_modulus_bits(spki) {
            Some(bits) => format!("RSA {bits}-bit"),
            None => "RSA (unreadable modulus)".to_owned(),
        },
        "1.2.840.113549.1.1.10" => match rsa_modulus_bits(spki) {
            Some(bits) => format!("RSASSA-PSS {bits}-bit"),
            None => "RSASSA-PSS".to_owned(),
        },
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "EC P-256".to_owned(),
                Some("1.3.132.0.34") => "EC P-384".to_owned(),
                Some("1.3.132.0.35") => "EC P-521".to_owned(),
                Some("1.3.132.0.10") => "EC secp256k1".to_owned(),
                Some(other) => format!("EC on curve {other}"),
                None => "EC with no named curve".to_owned(),
            }
        }
        "1.3.101.112" => "Ed25519".to_owned(),
        "1.3.101.113" => "Ed448".to_owned(),
        "1.2.840.10040.4.1" => "DSA".to_owned(),
        other => format!("public key algorithm {other}"),
    }
}

/// The bit length of an RSA key's modulus.
pub(crate) fn rsa_modulus_bits(spki: &SubjectPublicKeyInfo<'_>) -> Option<usize> {
    match spki.parsed().ok()? {
        PublicKey::RSA(rsa) => {
            let m = rsa.modulus;
            let first = m.iter().position(|b| *b != 0)?;
            let m = &m[first..];
            Some((m.len() - 1) * 8 + (8 - m[0].leading_zeros() as usize))
        }
        _ => None,
    }
}

/// SHA-256 with the same provider rustls uses.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// RFC 2253 string of a DN, as `openssl x509 -noout -subject -nameopt RFC2253` prints it
/// (the format ALB and CloudFront send): RDNs most-specific first, `+` inside multi-valued
/// RDNs, special characters escaped, UTF-8 left as is (like Envoy, OpenSSL's `-esc_msb`
/// off). Attribute types use OpenSSL's short names; any other type is written as a dotted
/// OID with a `#hex` DER value, as RFC 2253 §2.4 requires.
pub(crate) fn rfc2253(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            let short = attribute_short_name(&oid);
            out.push_str(short.unwrap_or(&oid));
            out.push('=');
            match attr_string(atv).filter(|_| short.is_some()) {
                Some(v) => escape_rfc2253_value(&mut out, &v),
                None => {
                    out.push('#');
                    let v = atv.attr_value();
                    match v.to_der_vec() {
                        Ok(der) => out.push_str(&hex::encode_upper(der)),
                        // Cannot happen for a value that was just parsed; the content alone
                        // still identifies it.
                        Err(_) => out.push_str(&hex::encode_upper(v.data)),
                    }
                }
            }
        }
    }
    out
}

/// OpenSSL's short names for the attribute types found in certificate DNs.
fn attribute_short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.3" => "mail",
        "1.2.840.113549.1.9.2" => "unstructuredName",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "1.3.6.1.4.1.311.60.2.1.1" => "jurisdictionL",
        "1.3.6.1.4.1.311.60.2.1.2" => "jurisdictionST",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        _ => return None,
    })
}

/// The text of a DN attribute value in any of the ASN.1 string types certificates use,
/// decoded as OpenSSL does (T61String as Latin-1). `None` for other types or bad encodings.
pub(crate) fn attr_string(atv: &AttributeTypeAndValue<'_>) -> Option<String> {
    let v = atv.attr_value();
    if v.class() != Class::Universal {
        return None;
    }
    let data = v.data;
    match v.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::T61String => Some(data.iter().map(|b| char::from(*b)).collect()),
        Tag::BmpString if data.len() % 2 == 0 => char::decode_utf16(
            data.chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        Tag::UniversalString if data.len() % 4 == 0 => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

fn escape_rfc2253_value(out: &mut String, v: &str) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// A certificate serial number as upper-case hex, without the DER sign byte.
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let trimmed = match raw.iter().position(|b| *b != 0) {
        Some(i) => &raw[i..],
        None => &raw[raw.len().saturating_sub(1)..],
    };
    hex::encode_upper(trimmed)
}

/// `2024-09-20T01:50:17Z`
pub(crate) fn rfc3339_z(unix: i64) -> String {
    match ::time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_drops_sign_byte() {
        assert_eq!(serial_hex(&[0x00, 0x9f, 0x01]), "9F01");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn rfc2253_escapes_specials() {
        let mut s = String::new();
        escape_rfc2253_value(&mut s, " a,b+c#");
        assert_eq!(s, "\\ a\\,b\\+c#");
    }

    #[test]
    fn signed_parts_of_a_certificate_split_at_the_right_places() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().as_ref();
        let parts = signed_parts(der).unwrap();
        let (_, parsed) = X509Certificate::from_der(der).unwrap();
        assert_eq!(parts.tbs, parsed.tbs_certificate.as_ref());
        assert_eq!(parts.signature, parsed.signature_value.data.as_ref());
        // ecdsa-with-SHA256, the contents of the AlgorithmIdentifier SEQUENCE.
        assert_eq!(
            parts.algorithm,
            rustls_pki_types::alg_id::ECDSA_SHA256.as_ref()
        );
        let spki = spki_parts(parsed.public_key().raw).unwrap();
        assert_eq!(
            spki.algorithm,
            rustls_pki_types::alg_id::ECDSA_P256.as_ref()
        );
        assert_eq!(describe_key(parsed.public_key()), "EC P-256");
        assert!(signed_parts(&der[..der.len() - 1]).is_none());
    }
}
