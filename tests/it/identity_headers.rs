//! Identity headers to the upstream (issue 3): each family's exact format, checked against
//! values computed independently of the proxy (OpenSSL for DNs, serials, dates and DER;
//! Python's `urllib.parse.quote` for URL-encoding), and spoofed copies of every family
//! removed in every mode, including case and underscore variants, over curl and the Rust
//! client, HTTP/1.1 and h2.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A client certificate with the fields every family renders: a multi-attribute subject
/// whose O needs RFC 2253 escaping, a serial with its top bit set (a DER sign byte), a DNS
/// and a URI SAN.
fn rich_client(ca: &Ca, dir: &Path, name: &str) -> (Issued, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CountryName, "US");
    dn.push(rcgen::DnType::StateOrProvinceName, "Washington");
    dn.push(rcgen::DnType::LocalityName, "Seattle");
    dn.push(rcgen::DnType::OrganizationName, "Example, Inc.");
    dn.push(rcgen::DnType::OrganizationalUnitName, "batch");
    dn.push(rcgen::DnType::CommonName, "my-client");
    p.distinguished_name = dn;
    p.subject_alt_names = vec![
        rcgen::SanType::DnsName("api.example.com".try_into().unwrap()),
        rcgen::SanType::URI(
            "spiffe://example.org/ns/batch/sa/worker"
                .try_into()
                .unwrap(),
        ),
    ];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&[
        0x9f, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    ]));
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(90);
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let issued = Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
        serial: 0,
        serial_number: rcgen::SerialNumber::from(0u64),
    };
    let (pem, _) = issued.write(dir, name);
    (issued, pem)
}

fn start(pki: &Pki, up: &Upstream, forward: &str) -> Proxy {
    Proxy::start(&pki.write_config(&up.url(), forward))
}

/// GET /headers through the proxy with the Rust client; the upstream's view of the headers.
fn upstream_view(proxy: &Proxy, root: &Ca, cert: ClientCert) -> BTreeMap<String, Vec<String>> {
    let got = block_request(proxy.addr, root, &ClientOpts::with(cert), get("/headers")).unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    got.echoed()
}

/// The one value of header `name` the upstream received.
fn one<'a>(h: &'a BTreeMap<String, Vec<String>>, name: &str) -> &'a str {
    match h.get(name).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{name}: expected exactly one value, got {other:?}"),
    }
}

/// The identity-header names present, lower-case.
fn identity_names(h: &BTreeMap<String, Vec<String>>) -> Vec<&str> {
    h.keys()
        .map(String::as_str)
        .filter(|n| {
            n.contains("client-cert") || n.contains("client_cert") || n.contains("clientcert")
        })
        .collect()
}

/// The PEM OpenSSL writes for a certificate file (canonical: 64-column base64, LF).
fn openssl_pem(pem: &Path) -> String {
    let out = Command::new("openssl")
        .arg("x509")
        .arg("-in")
        .arg(pem)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Python's `urllib.parse.quote(text, safe=safe)`.
fn py_quote(text: &str, safe: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.parse; sys.stdout.write(urllib.parse.quote(sys.stdin.read(), safe=sys.argv[1]))",
            safe,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// base64 of the certificate's DER, by `openssl x509 -outform DER | base64`.
fn der_base64(pem: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -outform DER | base64 -w0",
            pem.display()
        ))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn subject(pem: &Path) -> String {
    after_eq(
        &openssl_x509(pem, &["-subject", "-nameopt", "RFC2253"]),
        "subject",
    )
    .to_owned()
}

fn sha256_hex(pem: &Path) -> String {
    after_eq(
        &openssl_x509(pem, &["-fingerprint", "-sha256"]),
        "sha256 Fingerprint",
    )
    .replace(':', "")
    .to_ascii_lowercase()
}

#[test]
fn alb_headers_match_what_alb_sends() {
    let pki = Pki::new();
    let up = Upstream::start();
    let (client, pem) = rich_client(&pki.root, pki.dir.path(), "rich");
    let proxy = start(&pki, &up, "[forward]\nclient_cert_headers = [\"alb\"]");
    let h = upstream_view(&proxy, &pki.root, ClientCert::leaf(&client));

    let serial = after_eq(&openssl_x509(&pem, &["-serial"]), "serial").to_owned();
    assert_eq!(serial, "9F0102030405060708", "OpenSSL's view of the serial");
    assert_eq!(one(&h, "x-amzn-mtls-clientcert-serial-number"), serial);
    let issuer = after_eq(
        &openssl_x509(&pem, &["-issuer", "-nameopt", "RFC2253"]),
        "issuer",
    )
    .to_owned();
    assert_eq!(one(&h, "x-amzn-mtls-clientcert-issuer"), issuer);
    let subject = subject(&pem);
    assert_eq!(
        subject,
        r"CN=my-client,OU=batch,O=Example\, Inc.,L=Seattle,ST=Washington,C=US"
    );
    assert_eq!(one(&h, "x-amzn-mtls-clientcert-subject"), subject);
    let start =
        rfc3339_of_openssl_date(after_eq(&openssl_x509(&pem, &["-startdate"]), "notBefore"));
    let end = rfc3339_of_openssl_date(after_eq(&openssl_x509(&pem, &["-enddate"]), "notAfter"));
    assert_eq!(
        one(&h, "x-amzn-mtls-clientcert-validity"),
        format!("NotBefore={start};NotAfter={end}")
    );
    // ALB: "URL-encoded PEM format of the leaf certificate, with +=/ as safe characters".
    let leaf = one(&h, "x-amzn-mtls-clientcert-leaf");
    assert_eq!(leaf, py_quote(&openssl_pem(&pem), "+=/"));
    assert!(
        leaf.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
        "{leaf}"
    );
    assert!(
        leaf.ends_with("%0A-----END%20CERTIFICATE-----%0A"),
        "{leaf}"
    );
    assert_eq!(
        identity_names(&h),
        [
            "x-amzn-mtls-clientcert-issuer",
            "x-amzn-mtls-clientcert-leaf",
            "x-amzn-mtls-clientcert-serial-number",
            "x-amzn-mtls-clientcert-subject",
            "x-amzn-mtls-clientcert-validity",
        ],
        "only the ALB family is sent"
    );
}

#[test]
fn rfc9440_client_cert_is_the_leaf_der_and_no_chain_without_intermediates() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "[forward]\nclient_cert_headers = [\"rfc9440\"]");
    let h = upstream_view(&proxy, &pki.root, ClientCert::leaf(&pki.client));
    assert_eq!(
        one(&h, "client-cert"),
        format!(":{}:", der_base64(&pki.path("client.pem")))
    );
    assert_eq!(identity_names(&h), ["client-cert"]);
}

/// root → Issuing CA 1 → Issuing CA 2 → leaf; the client sends leaf, CA 2, CA 1. The chain
/// header lists the intermediates only, in that order, as an RFC 8941 list of byte sequences.
#[test]
fn rfc9440_client_cert_chain_lists_the_intermediates() {
    let pki = Pki::new();
    let up = Upstream::start();
    let ca1 = pki.root.intermediate("Issuing CA 1");
    let ca2 = ca1.intermediate("Issuing CA 2");
    std::fs::write(pki.path("ca1.pem"), ca1.pem()).unwrap();
    std::fs::write(pki.path("ca2.pem"), ca2.pem()).unwrap();
    let (leaf, pem) = rich_client(&ca2, pki.dir.path(), "deep");
    let proxy = start(&pki, &up, "[forward]\nclient_cert_headers = [\"rfc9440\"]");
    let h = upstream_view(
        &proxy,
        &pki.root,
        ClientCert::with_chain(&leaf, &[&ca2, &ca1]),
    );
    assert_eq!(one(&h, "client-cert"), format!(":{}:", der_base64(&pem)));
    assert_eq!(
        one(&h, "client-cert-chain"),
        format!(
            ":{}:, :{}:",
            der_base64(&pki.path("ca2.pem")),
            der_base64(&pki.path("ca1.pem"))
        )
    );
}

/// Clients built on OpenSSL (curl among them) append their root to the chain they send; a
/// trust anchor is not an intermediate, so it is left out of Client-Cert-Chain.
#[test]
fn rfc9440_client_cert_chain_leaves_out_a_root_the_client_sends() {
    let pki = Pki::new();
    let up = Upstream::start();
    let ca = pki.root.intermediate("Issuing CA");
    std::fs::write(pki.path("ca.pem"), ca.pem()).unwrap();
    let (leaf, _) = rich_client(&ca, pki.dir.path(), "leaf");
    let proxy = start(&pki, &up, "[forward]\nclient_cert_headers = [\"rfc9440\"]");
    let h = upstream_view(
        &proxy,
        &pki.root,
        ClientCert::with_chain(&leaf, &[&ca, &pki.root]),
    );
    assert_eq!(
        one(&h, "client-cert-chain"),
        format!(":{}:", der_base64(&pki.path("ca.pem")))
    );
    // curl sends leaf + root (OpenSSL builds the chain from --cacert): no chain header.
    let (code, stdout, stderr) = curl_pki(
        &pki,
        Some(("client.pem", "client.key")),
        &[],
        &url(&proxy, "/headers"),
    );
    assert_eq!(code, 0, "{stderr}");
    let h: BTreeMap<String, Vec<String>> = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(identity_names(&h), ["client-cert"]);
}

#[test]
fn xfcc_default_has_hash_subject_uri_and_dns() {
    let pki = Pki::new();
    let up = Upstream::start();
    let (client, pem) = rich_client(&pki.root, pki.dir.path(), "rich");
    let proxy = start(&pki, &up, "");
    let h = upstream_view(&proxy, &pki.root, ClientCert::leaf(&client));
    assert_eq!(
        one(&h, "x-forwarded-client-cert"),
        format!(
            r#"Hash={};Subject="{}";URI=spiffe://example.org/ns/batch/sa/worker;DNS=api.example.com"#,
            sha256_hex(&pem),
            subject(&pem)
        )
    );
    assert_eq!(identity_names(&h), ["x-forwarded-client-cert"]);
}

/// All three families at once, and `xfcc_include_cert`: XFCC gains Envoy's
/// `Cert="<URL-encoded PEM>"` (Envoy encodes `+`, `/` and `=` too, unlike ALB).
#[test]
fn all_three_families_with_xfcc_cert() {
    let pki = Pki::new();
    let up = Upstream::start();
    let (client, pem) = rich_client(&pki.root, pki.dir.path(), "rich");
    let proxy = start(
        &pki,
        &up,
        "[forward]\nclient_cert_headers = [\"xfcc\", \"alb\", \"rfc9440\"]\nxfcc_include_cert = true",
    );
    let h = upstream_view(&proxy, &pki.root, ClientCert::leaf(&client));
    let pem_text = openssl_pem(&pem);
    assert_eq!(
        one(&h, "x-forwarded-client-cert"),
        format!(
            r#"Hash={};Cert="{}";Subject="{}";URI=spiffe://example.org/ns/batch/sa/worker;DNS=api.example.com"#,
            sha256_hex(&pem),
            py_quote(&pem_text, ""),
            subject(&pem)
        )
    );
    assert_eq!(
        one(&h, "x-amzn-mtls-clientcert-leaf"),
        py_quote(&pem_text, "+=/")
    );
    assert_eq!(one(&h, "client-cert"), format!(":{}:", der_base64(&pem)));
    assert_eq!(identity_names(&h).len(), 7, "{:?}", identity_names(&h));
}

/// With intermediates, `xfcc_include_cert` also sends Envoy's `Chain`: the leaf and the
/// intermediates, each URL-encoded PEM, concatenated.
#[test]
fn xfcc_include_cert_adds_the_chain_when_intermediates_are_presented() {
    let pki = Pki::new();
    let up = Upstream::start();
    let ca = pki.root.intermediate("Issuing CA");
    std::fs::write(pki.path("ca.pem"), ca.pem()).unwrap();
    let (leaf, pem) = rich_client(&ca, pki.dir.path(), "leaf");
    let proxy = start(&pki, &up, "[forward]\nxfcc_include_cert = true");
    let h = upstream_view(&proxy, &pki.root, ClientCert::with_chain(&leaf, &[&ca]));
    let leaf_enc = py_quote(&openssl_pem(&pem), "");
    let ca_enc = py_quote(&openssl_pem(&pki.path("ca.pem")), "");
    assert_eq!(
        one(&h, "x-forwarded-client-cert"),
        format!(
            r#"Hash={};Cert="{leaf_enc}";Chain="{leaf_enc}{ca_enc}";Subject="{}";URI=spiffe://example.org/ns/batch/sa/worker;DNS=api.example.com"#,
            sha256_hex(&pem),
            subject(&pem)
        )
    );
}

/// A subject with a `"` and a `\`: ALB gets OpenSSL's RFC 2253 string unchanged; inside
/// XFCC's quotes the two escapes become their RFC 2253 hex forms (`\22`, `\5C`), so the quoted
/// value holds no `"` that could end it early.
#[test]
fn hostile_subject_stays_inside_the_xfcc_quotes() {
    let pki = Pki::new();
    let up = Upstream::start();
    let cn = r#"x";URI=spiffe://admin;a\"#;
    let client = pki.root.issue(Leaf::client(cn));
    let (pem, _) = client.write(pki.dir.path(), "hostile");
    let proxy = start(
        &pki,
        &up,
        "[forward]\nclient_cert_headers = [\"xfcc\", \"alb\"]",
    );
    let h = upstream_view(&proxy, &pki.root, ClientCert::leaf(&client));
    let subject = subject(&pem);
    assert_eq!(
        subject,
        r#"CN=x\"\;URI=spiffe://admin\;a\\,O=mtls-shield tests"#
    );
    assert_eq!(one(&h, "x-amzn-mtls-clientcert-subject"), subject);
    assert_eq!(
        one(&h, "x-forwarded-client-cert"),
        format!(
            r#"Hash={};Subject="CN=x\22\;URI=spiffe://admin\;a\5C,O=mtls-shield tests""#,
            sha256_hex(&pem)
        )
    );
}

/// Attribute types beyond the usual six, a legacy BMPString value and an OID OpenSSL does
/// not know: the subject header is still exactly OpenSSL's RFC 2253 string.
#[test]
fn unusual_subject_attributes_render_as_openssl_does() {
    let pki = Pki::new();
    let up = Upstream::start();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    let ia5 = |s: &str| rcgen::DnValue::Ia5String(s.try_into().unwrap());
    dn.push(
        rcgen::DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
        ia5("example"),
    );
    dn.push(
        rcgen::DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]),
        "u1",
    );
    dn.push(
        rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]),
        rcgen::DnValue::PrintableString("42".try_into().unwrap()),
    );
    dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 9]), "1 Main St");
    dn.push(
        rcgen::DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 55555, 7]),
        "private",
    );
    dn.push(
        rcgen::DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
        ia5("ops@example.com"),
    );
    dn.push(
        rcgen::DnType::CommonName,
        rcgen::DnValue::BmpString("bmp-client".try_into().unwrap()),
    );
    p.distinguished_name = dn;
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &pki.root.cert, &pki.root.key).unwrap();
    let pem = pki.path("unusual.pem");
    std::fs::write(&pem, cert.pem()).unwrap();
    let proxy = start(&pki, &up, "[forward]\nclient_cert_headers = [\"alb\"]");
    let h = upstream_view(
        &proxy,
        &pki.root,
        ClientCert {
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
        },
    );
    let want = subject(&pem);
    assert!(
        want.starts_with("CN=bmp-client,emailAddress=ops@example.com,1.3.6.1.4.1.55555.7=#"),
        "{want}"
    );
    assert_eq!(one(&h, "x-amzn-mtls-clientcert-subject"), want);
}

// ---- Spoofing ----

/// Identity headers a client might forge: every family, the exact, upper-case and
/// underscore spellings.
const SPOOFED: &[(&str, &str)] = &[
    ("X-Forwarded-Client-Cert", "Hash=spoof;Subject=\"CN=admin\""),
    ("X-FORWARDED-CLIENT-CERT", "Hash=spoof2"),
    ("x_forwarded_client_cert", "Hash=spoof3"),
    ("X-Amzn-Mtls-Clientcert-Subject", "CN=admin-spoof"),
    ("X-AMZN-MTLS-CLIENTCERT-ISSUER", "CN=spoof CA"),
    ("x_amzn_mtls_clientcert_serial_number", "5P00F"),
    ("X_Amzn_Mtls_Clientcert_Leaf", "spoof-leaf"),
    ("x-amzn-mtls-clientcert-validity", "NotBefore=spoof"),
    ("X-Amzn-Mtls-Clientcert", "spoof-passthrough-chain"),
    ("Client-Cert", ":c3Bvb2Y=:"),
    ("CLIENT_CERT", ":c3Bvb2YK:"),
    ("client-cert-chain", ":c3Bvb2Y=:, :c3Bvb2Y=:"),
    ("Client_Cert_Chain", ":c3Bvb2Y=:"),
];

/// The upstream's view must hold exactly `expected` identity headers, each once, with none
/// of the forged values, whatever the client sent.
fn assert_not_spoofed(h: &BTreeMap<String, Vec<String>>, expected: &[&str], via: &str) {
    for (name, values) in h {
        for v in values {
            assert!(
                !v.contains("spoof") && !v.contains("c3Bvb2") && !v.contains("admin"),
                "{via}: forged value reached the upstream: {name}: {v}"
            );
        }
    }
    assert!(
        !h.keys().any(|k| k.contains('_')),
        "{via}: underscore variant reached the upstream: {:?}",
        h.keys()
    );
    assert_eq!(identity_names(h), expected, "{via}");
    for name in expected {
        one(h, name);
    }
}

/// Sends the forged headers with curl (HTTP/1.1 and h2) and with the Rust client (HTTP/1.1
/// and h2), and checks what the upstream saw each time.
fn check_spoofing(forward: &str, expected: &[&str]) {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, forward);
    for http in ["--http1.1", "--http2"] {
        let mut args = vec![http.to_owned()];
        for (k, v) in SPOOFED {
            args.push("-H".into());
            args.push(format!("{k}: {v}"));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = curl_pki(
            &pki,
            Some(("client.pem", "client.key")),
            &refs,
            &url(&proxy, "/headers"),
        );
        assert_eq!(code, 0, "{stderr}");
        let h: BTreeMap<String, Vec<String>> = serde_json::from_slice(&stdout).unwrap();
        assert_not_spoofed(&h, expected, &format!("curl {http}"));
    }
    for h2 in [false, true] {
        let mut req = hyper::Request::get("/headers").header("host", "localhost");
        for (k, v) in SPOOFED {
            req = req.header(*k, *v);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let mut opts = ClientOpts::with(ClientCert::leaf(&pki.client));
        opts.h2 = h2;
        let got = block_request(proxy.addr, &pki.root, &opts, req).unwrap();
        assert_eq!(got.status, 200);
        assert_not_spoofed(&got.echoed(), expected, &format!("rust client h2={h2}"));
    }
}

#[test]
fn spoofed_identity_headers_are_removed_in_xfcc_mode() {
    check_spoofing("", &["x-forwarded-client-cert"]);
}

#[test]
fn spoofed_identity_headers_are_removed_in_alb_mode() {
    check_spoofing(
        "[forward]\nclient_cert_headers = [\"alb\"]",
        &[
            "x-amzn-mtls-clientcert-issuer",
            "x-amzn-mtls-clientcert-leaf",
            "x-amzn-mtls-clientcert-serial-number",
            "x-amzn-mtls-clientcert-subject",
            "x-amzn-mtls-clientcert-validity",
        ],
    );
}

#[test]
fn spoofed_identity_headers_are_removed_in_rfc9440_mode() {
    check_spoofing(
        "[forward]\nclient_cert_headers = [\"rfc9440\"]",
        &["client-cert"],
    );
}

#[test]
fn spoofed_identity_headers_are_removed_with_all_families_and_cert() {
    check_spoofing(
        "[forward]\nclient_cert_headers = [\"xfcc\", \"alb\", \"rfc9440\"]\nxfcc_include_cert = true",
        &[
            "client-cert",
            "x-amzn-mtls-clientcert-issuer",
            "x-amzn-mtls-clientcert-leaf",
            "x-amzn-mtls-clientcert-serial-number",
            "x-amzn-mtls-clientcert-subject",
            "x-amzn-mtls-clientcert-validity",
            "x-forwarded-client-cert",
        ],
    );
}
