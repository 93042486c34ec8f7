//! Start-up errors (issue 2): each bad config stops `mtls-shield run` with a non-zero exit
//! and exactly one stderr line that names the offending file (and key), never a panic.
use crate::common::*;

use std::path::{Path, PathBuf};

/// Runs `mtls-shield run --config <config>`, expects failure, returns its one stderr line.
fn startup_error(config: &Path) -> String {
    let out = shield_cmd(&["run".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "should refuse to start; stderr:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got:\n{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    lines[0].to_owned()
}

/// A config in the PKI folder with `client_auth_extra`/`tables`, and its path.
fn config(pki: &Pki, listener_extra: &str, client_auth_extra: &str, tables: &str) -> PathBuf {
    let path = pki.path("mtls-shield.toml");
    std::fs::write(
        &path,
        config_with(
            "http://127.0.0.1:9",
            listener_extra,
            client_auth_extra,
            tables,
        ),
    )
    .unwrap();
    path
}

fn assert_names(line: &str, path: &Path) {
    let p = path.display().to_string();
    assert!(line.contains(&p), "{line:?} should name {p}");
}

#[test]
fn valid_config_control_starts() {
    // The helpers' base config is good: every failure below is the one change it makes.
    let pki = Pki::new();
    let path = config(&pki, "", "", "");
    let _proxy = Proxy::start(&path);
}

#[test]
fn unknown_top_level_table_is_named_at_the_top_level() {
    let pki = Pki::new();
    let path = config(
        &pki,
        "",
        "",
        "[upstream_pool]\nurl = \"http://127.0.0.1:9\"",
    );
    let line = startup_error(&path);
    assert_names(&line, &path);
    assert!(
        line.contains("at the top level: unknown field `upstream_pool`"),
        "{line}"
    );
}

#[test]
fn missing_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let line = startup_error(&path);
    assert_names(&line, &path);
    assert!(line.contains("cannot read config file"), "{line}");
}

#[test]
fn missing_truststore_file() {
    let pki = Pki::new();
    std::fs::remove_file(pki.path("truststore.pem")).unwrap();
    let line = startup_error(&config(&pki, "", "", ""));
    assert_names(&line, &pki.path("truststore.pem"));
    assert!(line.contains("cannot read truststore"), "{line}");
}

#[test]
fn unreadable_truststore() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let ts = pki.path("truststore.pem");
    std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&ts).is_ok() {
        // Running as root: permissions do not stop reads. A folder in its place is just as
        // unreadable as a file.
        std::fs::remove_file(&ts).unwrap();
        std::fs::create_dir(&ts).unwrap();
    }
    let line = startup_error(&config(&pki, "", "", ""));
    assert_names(&line, &ts);
    assert!(line.contains("cannot read truststore"), "{line}");
}

#[test]
fn truststore_pem_without_a_certificate() {
    let pki = Pki::new();
    // A private key where the CA certificate should be: PEM, but no CERTIFICATE block.
    std::fs::write(pki.path("truststore.pem"), &pki.client.key_pem).unwrap();
    let line = startup_error(&config(&pki, "", "", ""));
    assert_names(&line, &pki.path("truststore.pem"));
    assert!(line.contains("no PEM certificate"), "{line}");
}

#[test]
fn server_certificate_file_without_a_certificate() {
    let pki = Pki::new();
    std::fs::write(pki.path("server.pem"), "not a certificate\n").unwrap();
    let line = startup_error(&config(&pki, "", "", ""));
    assert_names(&line, &pki.path("server.pem"));
    assert!(line.contains("no PEM certificate"), "{line}");
}

#[test]
fn private_key_not_matching_the_certificate() {
    let pki = Pki::new();
    // The client's key next to the server's certificate.
    std::fs::copy(pki.path("client.key"), pki.path("server.key")).unwrap();
    let line = startup_error(&config(&pki, "", "", ""));
    assert_names(&line, &pki.path("server.key"));
    assert!(line.contains("does not match"), "{line}");
    assert_names(&line, &pki.path("server.pem"));
}

#[test]
fn unparseable_crl() {
    let pki = Pki::new();
    std::fs::write(pki.path("bad.crl"), b"\x30\x03garbage that is not a CRL").unwrap();
    let line = startup_error(&config(&pki, "", "crls = [\"bad.crl\"]", ""));
    assert_names(&line, &pki.path("bad.crl"));
    assert!(line.contains("CRL"), "{line}");
}

#[test]
fn missing_crl_file() {
    let pki = Pki::new();
    let line = startup_error(&config(&pki, "", "crls = [\"gone.crl\"]", ""));
    assert_names(&line, &pki.path("gone.crl"));
    assert!(line.contains("cannot read CRL"), "{line}");
}

#[test]
fn unknown_key_is_named() {
    let pki = Pki::new();
    let path = config(&pki, "lisen_backlog = 5", "", "");
    let line = startup_error(&path);
    assert_names(&line, &path);
    assert!(line.contains("lisen_backlog"), "{line}");
}

#[test]
fn unknown_table_key_in_client_auth_is_named() {
    let pki = Pki::new();
    let path = config(&pki, "", "trust_store = \"x.pem\"", "");
    let line = startup_error(&path);
    assert_names(&line, &path);
    assert!(line.contains("trust_store"), "{line}");
}

#[test]
fn malformed_allow_list_fingerprint() {
    let pki = Pki::new();
    let path = config(
        &pki,
        "",
        "",
        "[client_auth.allow]\nfingerprints_sha256 = [\"zz:not:hex\"]",
    );
    let line = startup_error(&path);
    assert_names(&line, &path);
    assert!(
        line.contains("client_auth.allow.fingerprints_sha256"),
        "{line}"
    );
}
