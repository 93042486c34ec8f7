//! `mtls-shield check` (issue 4): validates a config exactly as `run` would, without binding
//! a port, prints what it would serve and trust, warns like API Gateway's truststore
//! warnings, and exits 1 with one line per error. `--format json` is the same report.
use crate::common::*;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Runs `mtls-shield check --config <config> [--format json]`: (exit code, stdout, stderr).
fn check(config: &Path, json: bool) -> (i32, String, String) {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("check"),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    if json {
        args.extend([OsStr::new("--format"), OsStr::new("json")]);
    }
    let out = shield_cmd(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_json(config: &Path) -> (i32, Value) {
    let (code, out, err) = check(config, true);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v)
}

const UPSTREAM: &str = "http://127.0.0.1:9";

fn write(pki: &Pki, client_auth_extra: &str, tables: &str) -> PathBuf {
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, config_with(UPSTREAM, "", client_auth_extra, tables)).unwrap();
    path
}

fn lines(s: &str, prefix: &str) -> Vec<String> {
    s.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn good_config_is_reported_in_full_and_exits_0_without_binding() {
    let pki = Pki::new();
    std::fs::write(pki.path("root.crl"), pki.root.crl(&[4242], 5, -1, 7)).unwrap();
    // Hold the listener address: `run` could not bind it, `check` must not try.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let text = config_with(
        UPSTREAM,
        "",
        "crls = [\"root.crl\"]\n[client_auth.allow]\ncommon_names = [\"my-client\", \"partner\"]",
        "",
    )
    .replacen(
        "address = \"127.0.0.1:0\"",
        &format!("address = \"{addr}\""),
        1,
    );
    let config = pki.path("mtls-shield.toml");
    std::fs::write(&config, text).unwrap();

    let (code, out, err) = check(&config, false);
    assert_eq!(code, 0, "{out}{err}");
    let dir = pki.dir.path().display().to_string();
    let expected_prefix = format!(
        "config: {dir}/mtls-shield.toml
listener: {addr} (session resumption off, handshake timeout 5s, idle timeout 1m, shutdown timeout 30s)
server certificate: {dir}/server.pem
  subject: CN=localhost,O=mtls-shield tests
  issuer: CN=Test Root CA,O=mtls-shield tests
  SANs: DNS:localhost, IP:127.0.0.1
  expires: "
    );
    assert!(out.starts_with(&expected_prefix), "{out}");
    let expires = &lines(&out, "  expires: ")[0];
    assert!(
        expires.ends_with("(364 days left)") || expires.ends_with("(365 days left)"),
        "{expires}"
    );
    assert_eq!(
        lines(&out, "truststore: "),
        [format!("truststore: {dir}/truststore.pem (1 anchor)")]
    );
    let anchor = &lines(&out, "  - CN=Test Root CA")[0];
    assert!(
        anchor.starts_with("  - CN=Test Root CA,O=mtls-shield tests: CA, expires "),
        "{anchor}"
    );
    let crl = &lines(&out, &format!("  - {dir}/root.crl: "))[0];
    assert!(
        crl.starts_with(&format!(
            "  - {dir}/root.crl: issuer CN=Test Root CA,O=mtls-shield tests, number 5, next update "
        )) && crl.ends_with(", 1 revoked"),
        "{crl}"
    );
    assert!(
        out.contains(
            "allow-list: a certificate matching any of\n  common_names: my-client, partner\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "upstream: {UPSTREAM} (connect timeout 2s, response timeout 5s)\n"
        )),
        "{out}"
    );
    assert!(lines(&out, "warning:").is_empty(), "{out}");
    assert!(lines(&out, "error:").is_empty(), "{out}");
    assert!(out.ends_with("result: valid (0 warnings)\n"), "{out}");
    drop(held);
}

#[test]
fn good_config_as_json_has_the_same_report() {
    let pki = Pki::new();
    std::fs::write(pki.path("root.crl"), pki.root.crl(&[4242, 4243], 9, -1, 7)).unwrap();
    let config = write(&pki, "crls = [\"root.crl\"]", "");
    let (code, v) = check_json(&config);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["valid"], true);
    assert_eq!(v["errors"], serde_json::json!([]));
    assert_eq!(v["warnings"], serde_json::json!([]));
    assert_eq!(v["listener"]["address"], "127.0.0.1:0");
    assert_eq!(v["listener"]["handshake_timeout"], "5s");
    let s = &v["server_certificate"];
    assert_eq!(s["subject"], "CN=localhost,O=mtls-shield tests");
    assert_eq!(
        s["sans"],
        serde_json::json!(["DNS:localhost", "IP:127.0.0.1"])
    );
    assert_eq!(s["is_ca"], false);
    assert_eq!(s["fingerprint"], pki.server.fingerprint());
    let days = s["days_left"].as_i64().unwrap();
    assert!(days == 364 || days == 365, "{days}");
    assert_eq!(v["anchors"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["anchors"][0]["subject"],
        "CN=Test Root CA,O=mtls-shield tests"
    );
    assert_eq!(v["anchors"][0]["is_ca"], true);
    assert_eq!(
        v["crls"][0]["issuer"],
        "CN=Test Root CA,O=mtls-shield tests"
    );
    assert_eq!(v["crls"][0]["number"], "9");
    assert_eq!(v["crls"][0]["revoked"], 2);
    assert_eq!(
        v["crls"][0]["path"],
        pki.path("root.crl").display().to_string()
    );
    assert!(
        v["crls"][0]["next_update"].as_i64().unwrap()
            > v["crls"][0]["this_update"].as_i64().unwrap()
    );
    assert_eq!(v["allow"]["common_names"], serde_json::json!([]));
    assert_eq!(v["upstream"]["url"], UPSTREAM);
}

/// Checks one warning in both formats: exit 0, exactly that warning, naming `file`, with
/// `fragment` in its message.
fn assert_single_warning(config: &Path, code: &str, file: &Path, fragment: &str) {
    let (exit, out, err) = check(config, false);
    assert_eq!(exit, 0, "warnings do not fail the check: {out}{err}");
    let warnings = lines(&out, "warning: ");
    assert_eq!(warnings.len(), 1, "{out}");
    let prefix = format!("warning: {code}: {}: ", file.display());
    assert!(warnings[0].starts_with(&prefix), "{}", warnings[0]);
    assert!(warnings[0].contains(fragment), "{}", warnings[0]);
    assert!(out.ends_with("result: valid (1 warning)\n"), "{out}");

    let (exit, v) = check_json(config);
    assert_eq!(exit, 0);
    assert_eq!(v["valid"], true);
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{v}");
    assert_eq!(w[0]["code"], code);
    assert_eq!(w[0]["file"], file.display().to_string());
    assert!(w[0]["message"].as_str().unwrap().contains(fragment), "{v}");
}

#[test]
fn server_certificate_expiring_within_30_days_is_a_warning() {
    let pki = Pki::new();
    pki.root
        .issue(Leaf::server().valid_days(-1, 10))
        .write(pki.dir.path(), "server");
    let config = write(&pki, "", "");
    assert_single_warning(
        &config,
        "server_certificate_expiring",
        &pki.path("server.pem"),
        "server certificate CN=localhost,O=mtls-shield tests expires on ",
    );
    let (_, out, _) = check(&config, false);
    assert!(out.contains("days left, under 30): renew it"), "{out}");
}

#[test]
fn expired_server_certificate_is_a_warning() {
    let pki = Pki::new();
    pki.root
        .issue(Leaf::server().valid_days(-30, -2))
        .write(pki.dir.path(), "server");
    let config = write(&pki, "", "");
    assert_single_warning(
        &config,
        "server_certificate_expired",
        &pki.path("server.pem"),
        "clients that verify it (CloudFront does) will refuse the handshake",
    );
    let (_, v) = check_json(&config);
    assert!(v["server_certificate"]["days_left"].as_i64().unwrap() < 0);
}

/// A self-signed CA that expires in `days`.
fn short_lived_ca(days: i64) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Short Lived CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    p.self_signed(&key).unwrap().pem()
}

#[test]
fn trust_anchor_expiring_within_30_days_is_a_warning() {
    let pki = Pki::new();
    std::fs::write(
        pki.path("truststore.pem"),
        format!("{}{}", pki.root.pem(), short_lived_ca(5)),
    )
    .unwrap();
    let config = write(&pki, "", "");
    assert_single_warning(
        &config,
        "anchor_expiring",
        &pki.path("truststore.pem"),
        "trust anchor CN=Short Lived CA expires on ",
    );
}

#[test]
fn truststore_entry_that_is_not_a_ca_is_a_warning() {
    let pki = Pki::new();
    std::fs::write(
        pki.path("truststore.pem"),
        format!("{}{}", pki.root.pem(), pki.client.cert_pem),
    )
    .unwrap();
    let config = write(&pki, "", "");
    assert_single_warning(
        &config,
        "anchor_not_ca",
        &pki.path("truststore.pem"),
        "truststore entry CN=my-client,O=mtls-shield tests is not a CA certificate",
    );
    let (_, out, _) = check(&config, false);
    assert!(
        out.contains("  - CN=my-client,O=mtls-shield tests: NOT a CA, expires "),
        "{out}"
    );
}

#[test]
fn stale_crl_is_a_warning() {
    let pki = Pki::new();
    std::fs::write(pki.path("root.crl"), pki.root.crl(&[], 3, -10, -1)).unwrap();
    let config = write(&pki, "crls = [\"root.crl\"]", "");
    assert_single_warning(
        &config,
        "crl_stale",
        &pki.path("root.crl"),
        "CRL of CN=Test Root CA,O=mtls-shield tests (number 3) is stale",
    );
}

#[test]
fn crl_whose_issuer_is_not_in_the_truststore_is_a_warning() {
    let pki = Pki::new();
    let other = Ca::root("Unrelated CA");
    std::fs::write(pki.path("other.crl"), other.crl(&[], 1, -1, 7)).unwrap();
    let config = write(&pki, "crls = [\"other.crl\"]", "");
    assert_single_warning(
        &config,
        "crl_issuer_not_in_truststore",
        &pki.path("other.crl"),
        "CRL issuer CN=Unrelated CA,O=mtls-shield tests is not a certificate in the truststore",
    );
}

/// Asserts exit 1, the given error lines (in order) and nothing else as errors, in text and
/// JSON.
fn assert_errors(config: &Path, expected: &[String]) {
    let (code, out, err) = check(config, false);
    assert_eq!(code, 1, "{out}{err}");
    let errors: Vec<String> = lines(&out, "error: ")
        .into_iter()
        .map(|l| l["error: ".len()..].to_owned())
        .collect();
    assert_eq!(errors.len(), expected.len(), "{out}");
    for (got, want) in errors.iter().zip(expected) {
        assert!(
            got.starts_with(want.as_str()),
            "{got:?} should start with {want:?}"
        );
    }
    let n = expected.len();
    assert!(
        out.lines().last().unwrap().starts_with(&format!(
            "result: invalid ({n} error{}",
            if n == 1 { "" } else { "s" }
        )),
        "{out}"
    );
    let (code, v) = check_json(config);
    assert_eq!(code, 1);
    assert_eq!(v["valid"], false);
    let json_errors: Vec<String> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(json_errors, errors);
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let pki = Pki::new();
    let path = pki.path("mtls-shield.toml");
    let text = config_with(UPSTREAM, "", "", "").replace(
        "truststore = \"truststore.pem\"",
        "truststore = \"missing.pem\"",
    );
    std::fs::write(&path, text).unwrap();
    assert_errors(
        &path,
        &[format!(
            "{}: cannot read truststore: No such file or directory",
            pki.path("missing.pem").display()
        )],
    );
    // `run` refuses the same config.
    assert!(Proxy::try_start(&path).is_err());
}

#[test]
fn bad_pem_is_an_error_naming_the_file() {
    let pki = Pki::new();
    std::fs::write(pki.path("server.pem"), "hello, I am not a certificate\n").unwrap();
    let config = write(&pki, "", "");
    assert_errors(
        &config,
        &[format!(
            "{}: server certificate holds no PEM certificate",
            pki.path("server.pem").display()
        )],
    );
}

#[test]
fn server_key_not_matching_its_certificate_is_an_error_like_run() {
    let pki = Pki::new();
    let other = pki.root.issue(Leaf::server());
    std::fs::write(pki.path("server.key"), &other.key_pem).unwrap();
    let config = write(&pki, "", "");
    assert_errors(
        &config,
        &[format!(
            "{}: private key does not match the certificate in {}",
            pki.path("server.key").display(),
            pki.path("server.pem").display()
        )],
    );
    // The certificate itself is fine and still reported.
    let (_, out, _) = check(&config, false);
    assert!(
        out.contains("  subject: CN=localhost,O=mtls-shield tests\n"),
        "{out}"
    );
    // `run` refuses it too: that is why this is an error and not a warning.
    let logs = Proxy::try_start(&config).err().expect("run must refuse it");
    assert!(logs.contains("private key does not match"), "{logs}");
}

#[test]
fn every_broken_file_gets_its_own_error_line() {
    let pki = Pki::new();
    std::fs::write(pki.path("server.pem"), "not pem\n").unwrap();
    std::fs::write(pki.path("server.key"), "not a key either\n").unwrap();
    std::fs::write(
        pki.path("bad.crl"),
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let path = pki.path("mtls-shield.toml");
    let text = config_with(UPSTREAM, "", "crls = [\"bad.crl\"]", "").replace(
        "truststore = \"truststore.pem\"",
        "truststore = \"missing.pem\"",
    );
    std::fs::write(&path, text).unwrap();
    assert_errors(
        &path,
        &[
            format!(
                "{}: server certificate holds no PEM certificate",
                pki.path("server.pem").display()
            ),
            format!(
                "{}: no usable private key",
                pki.path("server.key").display()
            ),
            format!(
                "{}: cannot read truststore",
                pki.path("missing.pem").display()
            ),
            format!("{}: cannot parse CRL", pki.path("bad.crl").display()),
        ],
    );
}

#[test]
fn config_that_does_not_parse_is_one_error_line() {
    let pki = Pki::new();
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, "[listener]\naddress = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    assert_errors(&path, &[format!("{}: ", path.display())]);
    let (_, out, _) = check(&path, false);
    assert_eq!(lines(&out, "error: ").len(), 1);
    assert!(out.contains("bogus"), "the unknown key is named: {out}");
}

#[test]
fn missing_config_file_is_an_error() {
    let pki = Pki::new();
    let path = pki.path("nope.toml");
    assert_errors(
        &path,
        &[format!("{}: cannot read config file", path.display())],
    );
}
