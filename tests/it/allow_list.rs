//! The identity allow-list (issue 3): each kind accepts one client and refuses its sibling
//! from the same CA, inside the handshake (an empty reply, `not_allowed`, the upstream never
//! contacted), and malformed entries are config errors that name the entry.
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

const NOT_ALLOWED: &str = r#"mtls_shield_handshakes_total{result="rejected",reason="not_allowed"}"#;

fn start_with_allow(pki: &Pki, up: &Upstream, allow: &str) -> Proxy {
    Proxy::start(&pki.write_config(&up.url(), &format!("[client_auth.allow]\n{allow}\n")))
}

/// The client gets the upstream's answer.
fn assert_accepted(pki: &Pki, proxy: &Proxy, up: &Upstream, client: &Issued) {
    let before = up.hits();
    let got = block_request(
        proxy.addr,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(client)),
        get("/pets"),
    )
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), mtls_shield::demo::PETS);
    assert_eq!(up.hits(), before + 1);
}

/// curl with `sibling` gets an empty reply (non-zero exit, no stdout), the proxy counts and
/// logs `not_allowed` with the sibling's fingerprint, and the upstream sees nothing.
fn assert_not_allowed(pki: &Pki, proxy: &Proxy, up: &Upstream, sibling: &Issued) {
    let before = proxy.metric(NOT_ALLOWED);
    sibling.write(pki.dir.path(), "sibling");
    let (code, stdout, stderr) = curl_pki(
        pki,
        Some(("sibling.pem", "sibling.key")),
        &[],
        &url(proxy, "/pets"),
    );
    assert_ne!(code, 0, "curl should fail: {stderr}");
    assert!(
        stdout.is_empty(),
        "refused client got bytes: {:?}",
        String::from_utf8_lossy(&stdout)
    );
    let fp = sibling.fingerprint();
    let line = proxy.wait_log(&["reason=\"not_allowed\"", &format!("fingerprint={fp}")]);
    assert!(line.contains("handshake rejected"), "{line}");
    wait_until("not_allowed counted", DEADLINE, || {
        proxy.metric(NOT_ALLOWED) == before + 1.0
    });
    assert_eq!(
        up.hits(),
        0,
        "the upstream must never see a refused identity"
    );
}

#[test]
fn common_names_accepts_the_listed_cn_and_refuses_a_sibling() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start_with_allow(&pki, &up, r#"common_names = ["my-client"]"#);
    let sibling = pki.root.issue(Leaf::client("other-client"));
    assert_not_allowed(&pki, &proxy, &up, &sibling);
    assert_accepted(&pki, &proxy, &up, &pki.client);
}

#[test]
fn organizational_units_accepts_the_listed_ou_and_refuses_a_sibling() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start_with_allow(&pki, &up, r#"organizational_units = ["batch"]"#);
    let batch = pki.root.issue(Leaf::client("worker").ou("batch"));
    let web = pki.root.issue(Leaf::client("worker").ou("web"));
    assert_not_allowed(&pki, &proxy, &up, &web);
    assert_accepted(&pki, &proxy, &up, &batch);
}

#[test]
fn dns_names_match_case_insensitively_and_refuse_a_sibling() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start_with_allow(&pki, &up, r#"dns_names = ["API.Example.com"]"#);
    let api = pki
        .root
        .issue(Leaf::client("worker").dns("api.example.com"));
    let web = pki
        .root
        .issue(Leaf::client("worker").dns("web.example.com"));
    assert_not_allowed(&pki, &proxy, &up, &web);
    assert_accepted(&pki, &proxy, &up, &api);
}

#[test]
fn uris_exact_entry_matches_only_that_uri() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start_with_allow(
        &pki,
        &up,
        r#"uris = ["spiffe://example.org/ns/batch/sa/worker"]"#,
    );
    let worker = pki
        .root
        .issue(Leaf::client("w").uri("spiffe://example.org/ns/batch/sa/worker"));
    // Longer by a suffix: an exact entry is not a prefix.
    let longer = pki
        .root
        .issue(Leaf::client("w").uri("spiffe://example.org/ns/batch/sa/worker2"));
    assert_not_allowed(&pki, &proxy, &up, &longer);
    assert_accepted(&pki, &proxy, &up, &worker);
}

#[test]
fn uris_trailing_wildcard_matches_the_path_prefix_only() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start_with_allow(&pki, &up, r#"uris = ["spiffe://example.org/ns/batch/*"]"#);
    let inside = pki
        .root
        .issue(Leaf::client("w").uri("spiffe://example.org/ns/batch/sa/worker"));
    // Same characters up to the slash: `/ns/batch/*` must not match `/ns/batch-evil/…`.
    let beside = pki
        .root
        .issue(Leaf::client("w").uri("spiffe://example.org/ns/batch-evil/sa/worker"));
    assert_not_allowed(&pki, &proxy, &up, &beside);
    assert_accepted(&pki, &proxy, &up, &inside);
}

/// `openssl x509 -fingerprint -sha256` prints upper-case hex with colons, the form operators
/// paste; the sibling has the very same name, so only the fingerprint tells them apart.
#[test]
fn fingerprints_sha256_in_openssl_form_pins_one_certificate() {
    let pki = Pki::new();
    let up = Upstream::start();
    let fp = openssl_x509(&pki.path("client.pem"), &["-fingerprint", "-sha256"]);
    let fp = after_eq(&fp, "sha256 Fingerprint").to_owned();
    assert!(
        fp.contains(':') && fp.chars().any(|c| c.is_ascii_uppercase()),
        "{fp}"
    );
    let proxy = start_with_allow(&pki, &up, &format!(r#"fingerprints_sha256 = ["{fp}"]"#));
    let twin = pki.root.issue(Leaf::client("my-client"));
    assert_not_allowed(&pki, &proxy, &up, &twin);
    assert_accepted(&pki, &proxy, &up, &pki.client);
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo, by the OpenSSL pipeline the README
/// gives: (base64, lower-case hex).
fn spki_pin(pem: &std::path::Path) -> (String, String) {
    let sh = |pipeline: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 {pipeline}",
                pem.display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let b64 = sh("-binary | base64 -w0");
    let hex = sh("-r").split_whitespace().next().unwrap().to_owned();
    (b64, hex)
}

/// A new certificate for the same key (a renewal that keeps the key).
fn renew_keeping_key(ca: &Ca, old: &Issued, cn: &str) -> Issued {
    let key = rcgen::KeyPair::from_pem(&old.key_pem).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.serial_number = Some(rcgen::SerialNumber::from(777_777u64));
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_pem: old.key_pem.clone(),
        key_der: old.key_der.clone(),
        serial: 777_777,
        serial_number: rcgen::SerialNumber::from(777_777u64),
    }
}

#[test]
fn spki_sha256_base64_pin_survives_a_renewal_that_keeps_the_key() {
    let pki = Pki::new();
    let up = Upstream::start();
    let (b64, _) = spki_pin(&pki.path("client.pem"));
    let proxy = start_with_allow(&pki, &up, &format!(r#"spki_sha256 = ["{b64}"]"#));
    let new_key = pki.root.issue(Leaf::client("my-client"));
    assert_not_allowed(&pki, &proxy, &up, &new_key);
    assert_accepted(&pki, &proxy, &up, &pki.client);
    let renewed = renew_keeping_key(&pki.root, &pki.client, "my-client-2027");
    assert_ne!(renewed.fingerprint(), pki.client.fingerprint());
    assert_accepted(&pki, &proxy, &up, &renewed);
}

#[test]
fn spki_sha256_hex_pin_accepts_the_key_and_refuses_a_sibling() {
    let pki = Pki::new();
    let up = Upstream::start();
    let (_, hex) = spki_pin(&pki.path("client.pem"));
    assert_eq!(hex.len(), 64);
    let proxy = start_with_allow(&pki, &up, &format!(r#"spki_sha256 = ["{hex}"]"#));
    let sibling = pki.root.issue(Leaf::client("my-client"));
    assert_not_allowed(&pki, &proxy, &up, &sibling);
    assert_accepted(&pki, &proxy, &up, &pki.client);
}

/// "Allowed when it matches at least one entry of any list": each list alone is enough.
#[test]
fn a_match_in_any_list_is_enough() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start_with_allow(
        &pki,
        &up,
        "common_names = [\"my-client\"]\norganizational_units = [\"batch\"]",
    );
    let by_ou = pki.root.issue(Leaf::client("someone-else").ou("batch"));
    let neither = pki.root.issue(Leaf::client("someone-else").ou("web"));
    assert_not_allowed(&pki, &proxy, &up, &neither);
    assert_accepted(&pki, &proxy, &up, &pki.client);
    assert_accepted(&pki, &proxy, &up, &by_ou);
}

/// A refused identity looks like any other refusal on the wire: the `access_denied` alert,
/// no HTTP byte, and it is a handshake failure, not an HTTP 403.
#[test]
fn refused_identity_gets_the_access_denied_alert_and_no_http() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start_with_allow(&pki, &up, r#"common_names = ["someone-else"]"#);
    let a = block_attempt(
        proxy.addr,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&pki.client)),
    );
    assert!(a.received.is_empty(), "{a:?}");
    let error = a.handshake.err().or(a.read_error).unwrap_or_default();
    assert!(
        error.contains("AccessDenied"),
        "expected access_denied, got {error:?}"
    );
    assert_eq!(up.hits(), 0);
}

/// Runs `mtls-shield run` on a config that must be refused: (exit code, stderr).
fn run_expecting_exit(config: &std::path::Path) -> (i32, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_mtls-shield"))
        .args(["run", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_error(allow: &str) -> (i32, String, PathBuf) {
    let pki = Pki::new();
    let cfg = pki.write_config(
        "http://127.0.0.1:9",
        &format!("[client_auth.allow]\n{allow}\n"),
    );
    let (code, stderr) = run_expecting_exit(&cfg);
    // Keep the folder alive until the process is done with it.
    drop(pki);
    (code, stderr, cfg)
}

fn assert_config_error_names(allow: &str, key: &str) {
    let (code, stderr, cfg) = config_error(allow);
    assert_eq!(code, 1, "must exit with an error, not serve: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line, naming file and key: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: client_auth.allow.{key}:", cfg.display())),
        "{stderr}"
    );
}

#[test]
fn fingerprint_of_the_wrong_length_is_a_config_error_naming_the_entry() {
    let good = "ab".repeat(32);
    assert_config_error_names(
        &format!(r#"fingerprints_sha256 = ["{good}", "AB:CD:EF"]"#),
        "fingerprints_sha256[1]",
    );
}

#[test]
fn fingerprint_that_is_not_hex_is_a_config_error_naming_the_entry() {
    assert_config_error_names(
        &format!(r#"fingerprints_sha256 = ["{}"]"#, "zz".repeat(32)),
        "fingerprints_sha256[0]",
    );
}

#[test]
fn bad_spki_pin_is_a_config_error_naming_the_entry() {
    assert_config_error_names(r#"spki_sha256 = ["sha256//not-a-pin"]"#, "spki_sha256[0]");
}

#[test]
fn misplaced_uri_wildcard_is_a_config_error_naming_the_entry() {
    assert_config_error_names(
        r#"uris = ["spiffe://example.org/ns/*", "spiffe://*.example.org/ns/x"]"#,
        "uris[1]",
    );
    assert_config_error_names(r#"uris = ["spiffe://example.org/*/sa"]"#, "uris[0]");
    assert_config_error_names(r#"uris = ["spiffe://*/ns/*"]"#, "uris[0]");
}

#[test]
fn empty_entry_is_a_config_error_naming_the_entry() {
    assert_config_error_names(r#"common_names = ["my-client", ""]"#, "common_names[1]");
}
