//! Refused handshakes (issue 2): every case gets no HTTP byte, the upstream is never
//! contacted, and the connection log names the peer and a stable reason. Also: clients that
//! do not speak TLS 1.2+ get nothing and do no harm.
use crate::common::*;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};

/// A started proxy over the standard PKI, in front of a counting upstream.
fn setup() -> (Pki, Upstream, Proxy) {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&pki.write_config(&up.url(), ""));
    (pki, up, proxy)
}

/// The proxy still serves an accepted client (it did not crash or wedge).
fn assert_still_serving(pki: &Pki, up: &Upstream, proxy: &Proxy) {
    let before = up.hits();
    let got = block_request(
        proxy.addr,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&pki.client)),
        get("/pets"),
    )
    .expect("accepted client after the refusal");
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), mtls_shield::demo::PETS);
    assert_eq!(up.hits(), before + 1);
}

fn assert_curl_refused(code: i32, stdout: &[u8], stderr: &str) {
    assert_ne!(code, 0, "curl should fail; stderr: {stderr}");
    assert!(
        stdout.is_empty(),
        "no HTTP bytes expected, got {:?}",
        String::from_utf8_lossy(stdout)
    );
}

/// A self-signed end-entity certificate with EKU clientAuth.
fn self_signed_client(cn: &str) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = p.self_signed(&key).unwrap();
    Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
        serial: 0,
        serial_number: rcgen::SerialNumber::from(0u64),
    }
}

#[test]
fn no_certificate_via_openssl_s_client_gets_no_http() {
    let (pki, up, proxy) = setup();
    let ca = pki.path("root.pem");
    let (_code, stdout, stderr) =
        s_client(proxy.addr, &["-CAfile", ca.to_str().unwrap()], RAW_REQUEST);
    assert!(!stdout.contains("HTTP/"), "got HTTP bytes:\n{stdout}");
    // The handshake got far enough for the server to ask for a certificate.
    assert!(
        stdout.contains("Acceptable client certificate CA names"),
        "s_client did not reach the server's CertificateRequest:\n{stdout}\n{stderr}"
    );
    proxy.wait_log(&["handshake rejected", "reason=\"no_certificate\""]);
    assert_eq!(up.hits(), 0);
}

#[test]
fn no_certificate_via_rust_client_is_refused() {
    let (pki, up, proxy) = setup();
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::anonymous(),
        "no_certificate",
    );
}

#[test]
fn certificate_from_another_root_is_unknown_ca_via_curl() {
    let (pki, up, proxy) = setup();
    let other = Ca::root("Other Root CA");
    other
        .issue(Leaf::client("stranger"))
        .write(pki.dir.path(), "stranger");
    let (code, stdout, stderr) = curl_pki(
        &pki,
        Some(("stranger.pem", "stranger.key")),
        &[],
        &url(&proxy, "/pets"),
    );
    assert_curl_refused(code, &stdout, &stderr);
    let line = proxy.wait_log(&["handshake rejected", "reason=\"unknown_ca\""]);
    // The log names what was presented, so an operator can tell whose certificate it was.
    assert!(line.contains("CN=stranger"), "{line}");
    assert!(line.contains("issuer=\"CN=Other Root CA"), "{line}");
    assert_eq!(up.hits(), 0);
    assert_still_serving(&pki, &up, &proxy);
}

#[test]
fn certificate_from_another_root_is_unknown_ca_over_tls12() {
    let (pki, up, proxy) = setup();
    let other = Ca::root("Other Root CA");
    let stranger = other.issue(Leaf::client("stranger"));
    let mut opts = ClientOpts::with(ClientCert::leaf(&stranger));
    opts.tls12_only = true;
    assert_refused(&proxy, &up, &pki.root, &opts, "unknown_ca");
}

#[test]
fn self_signed_client_certificate_is_unknown_ca() {
    let (pki, up, proxy) = setup();
    let me = self_signed_client("my-client");
    let line = assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&me)),
        "unknown_ca",
    );
    assert!(line.contains("subject=\"CN=my-client\""), "{line}");
}

#[test]
fn expired_certificate_is_refused_via_curl() {
    let (pki, up, proxy) = setup();
    pki.root
        .issue(Leaf::client("old").valid_days(-30, -1))
        .write(pki.dir.path(), "old");
    let (code, stdout, stderr) = curl_pki(
        &pki,
        Some(("old.pem", "old.key")),
        &[],
        &url(&proxy, "/pets"),
    );
    assert_curl_refused(code, &stdout, &stderr);
    proxy.wait_log(&["handshake rejected", "reason=\"expired\"", "CN=old"]);
    assert_eq!(up.hits(), 0);
}

#[test]
fn expired_certificate_is_refused_via_rust_client() {
    let (pki, up, proxy) = setup();
    let old = pki.root.issue(Leaf::client("old").valid_days(-30, -1));
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&old)),
        "expired",
    );
}

#[test]
fn not_yet_valid_certificate_is_refused() {
    let (pki, up, proxy) = setup();
    let early = pki.root.issue(Leaf::client("early").valid_days(2, 30));
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&early)),
        "not_yet_valid",
    );
}

#[test]
fn server_auth_only_eku_is_bad_purpose() {
    let (pki, up, proxy) = setup();
    let web = pki
        .root
        .issue(Leaf::client("web").eku(vec![ExtendedKeyUsagePurpose::ServerAuth]));
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&web)),
        "bad_purpose",
    );
}

#[test]
fn server_auth_only_eku_is_refused_via_curl() {
    let (pki, up, proxy) = setup();
    pki.root
        .issue(Leaf::client("web").eku(vec![ExtendedKeyUsagePurpose::ServerAuth]))
        .write(pki.dir.path(), "web");
    let (code, stdout, stderr) = curl_pki(
        &pki,
        Some(("web.pem", "web.key")),
        &[],
        &url(&proxy, "/pets"),
    );
    assert_curl_refused(code, &stdout, &stderr);
    proxy.wait_log(&["handshake rejected", "reason=\"bad_purpose\""]);
    assert_eq!(up.hits(), 0);
}

#[test]
fn revoked_certificate_is_refused_via_curl() {
    let pki = Pki::new();
    let up = Upstream::start();
    std::fs::write(
        pki.path("crl.pem"),
        pki.root.crl(&[pki.client.serial], 1, -1, 7),
    )
    .unwrap();
    let cfg = config_with(&up.url(), "", "crls = [\"crl.pem\"]", "");
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, cfg).unwrap();
    let proxy = Proxy::start(&path);
    let (code, stdout, stderr) = curl_pki(
        &pki,
        Some(("client.pem", "client.key")),
        &[],
        &url(&proxy, "/pets"),
    );
    assert_curl_refused(code, &stdout, &stderr);
    let line = proxy.wait_log(&["handshake rejected", "reason=\"revoked\""]);
    assert!(line.contains("CN=my-client"), "{line}");
    assert_eq!(up.hits(), 0);
}

/// Flipping the last byte of the leaf's DER changes the ECDSA signature value (the last
/// byte of `s`) without breaking the encoding: the issuer's key no longer verifies it.
#[test]
fn tampered_leaf_signature_is_bad_signature() {
    let (pki, up, proxy) = setup();
    let mut cert = ClientCert::leaf(&pki.client);
    let mut der = cert.chain[0].as_ref().to_vec();
    *der.last_mut().unwrap() ^= 0x01;
    cert.chain[0] = der.into();
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(cert),
        "bad_signature",
    );
}

/// An impostor CA with exactly the trusted root's name: the chain matches the anchor by
/// name, and only the signature check tells them apart.
#[test]
fn leaf_signed_by_impostor_ca_with_same_name_is_bad_signature() {
    let (pki, up, proxy) = setup();
    let impostor = Ca::root(&pki.root.name);
    let fake = impostor.issue(Leaf::client("my-client"));
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&fake)),
        "bad_signature",
    );
}

#[test]
fn plain_http_client_gets_nothing_and_proxy_keeps_serving() {
    let (pki, up, proxy) = setup();
    let (code, stdout, stderr) = curl(&[&format!("http://localhost:{}/pets", proxy.addr.port())]);
    assert_curl_refused(code, &stdout, &stderr);
    proxy.wait_log(&["handshake rejected", "reason=\"not_tls\""]);
    assert_eq!(up.hits(), 0);
    assert_still_serving(&pki, &up, &proxy);
}

#[test]
fn tls11_client_gets_nothing_and_proxy_keeps_serving() {
    let (pki, up, proxy) = setup();
    let client = pki.path("client.pem");
    let key = pki.path("client.key");
    let (code, stdout, stderr) = s_client(
        proxy.addr,
        &[
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-cert",
            client.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
        ],
        RAW_REQUEST,
    );
    assert_ne!(
        code, 0,
        "TLS 1.1 handshake should fail:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("HTTP/"), "got HTTP bytes:\n{stdout}");
    proxy.wait_log(&["handshake rejected", "reason=\"protocol_version\""]);
    assert_eq!(up.hits(), 0);
    assert_still_serving(&pki, &up, &proxy);
}
