//! The proxy against certificates it did not make (issue 2): the PKI comes from the
//! `openssl` CLI through `certs/openssl-recipe.sh` (the recipe in certs/README.md), and the
//! client is curl.
use crate::common::*;

use std::path::Path;
use std::process::Command;

/// Runs the recipe into `out` with `args`; panics with its output if it fails.
fn recipe(out: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/openssl-recipe.sh");
    assert!(script.exists(), "{} is missing", script.display());
    let o = Command::new("bash")
        .arg(&script)
        .arg(out)
        .args(args)
        .output()
        .expect("run bash");
    assert!(
        o.status.success(),
        "openssl recipe failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// curl against the proxy with `ca.pem` and, optionally, `<name>.pem`/`<name>.key` from `dir`.
fn curl_dir(dir: &Path, client: Option<&str>, proxy: &Proxy, path: &str) -> (i32, Vec<u8>, String) {
    let ca = dir.join("ca.pem").display().to_string();
    let mut args = vec!["--cacert".to_owned(), ca];
    if let Some(name) = client {
        args.push("--cert".into());
        args.push(dir.join(format!("{name}.pem")).display().to_string());
        args.push("--key".into());
        args.push(dir.join(format!("{name}.key")).display().to_string());
    }
    args.push(url(proxy, path));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

fn start(dir: &Path, up: &Upstream, client_auth_extra: &str) -> Proxy {
    let path = dir.join("mtls-shield.toml");
    std::fs::write(&path, config_with(&up.url(), "", client_auth_extra, "")).unwrap();
    Proxy::start(&path)
}

#[test]
fn openssl_made_client_is_accepted_and_its_revoked_sibling_refused() {
    let dir = tempfile::tempdir().unwrap();
    recipe(dir.path(), &["--with-crl"]);
    for f in [
        "ca.pem",
        "ca.key",
        "truststore.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
        "client2.pem",
        "client2.key",
        "crl.pem",
    ] {
        assert!(dir.path().join(f).is_file(), "recipe did not write {f}");
    }
    let up = Upstream::start();
    let proxy = start(dir.path(), &up, "crls = [\"crl.pem\"]");

    let (code, body, stderr) = curl_dir(dir.path(), Some("client"), &proxy, "/pets");
    assert_eq!(
        code, 0,
        "curl with the openssl-made client failed: {stderr}"
    );
    assert_eq!(String::from_utf8(body).unwrap(), mtls_shield::demo::PETS);

    // The identity the upstream sees is the openssl-made subject.
    let (code, body, stderr) = curl_dir(dir.path(), Some("client"), &proxy, "/headers");
    assert_eq!(code, 0, "{stderr}");
    let h: std::collections::BTreeMap<String, Vec<String>> = serde_json::from_slice(&body).unwrap();
    let xfcc = &h["x-forwarded-client-cert"];
    assert_eq!(xfcc.len(), 1);
    assert!(
        xfcc[0].ends_with(";Subject=\"CN=my-client,O=mtls-shield example\""),
        "{xfcc:?}"
    );
    assert_eq!(up.hits(), 2);

    let (code, body, stderr) = curl_dir(dir.path(), Some("client2"), &proxy, "/pets");
    assert_ne!(code, 0, "revoked client2 should be refused: {stderr}");
    assert!(body.is_empty(), "{:?}", String::from_utf8_lossy(&body));
    let line = proxy.wait_log(&["handshake rejected", "reason=\"revoked\""]);
    assert!(line.contains("CN=my-client-2"), "{line}");

    let (code, body, _) = curl_dir(dir.path(), None, &proxy, "/pets");
    assert_ne!(code, 0);
    assert!(body.is_empty());
    proxy.wait_log(&["handshake rejected", "reason=\"no_certificate\""]);
    assert_eq!(up.hits(), 2);
}

#[test]
fn openssl_made_pki_without_crl_accepts_the_client_over_tls12_and_tls13() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    recipe(dir.path(), &[]);
    for key in ["ca.key", "server.key", "client.key"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key} mode {mode:o}");
    }
    assert!(!dir.path().join("crl.pem").exists());
    let up = Upstream::start();
    let proxy = start(dir.path(), &up, "");
    for version in ["--tlsv1.2", "--tlsv1.3"] {
        let ca = dir.path().join("ca.pem");
        let (code, body, stderr) = curl(&[
            version,
            "--tls-max",
            &version[6..],
            "--cacert",
            ca.to_str().unwrap(),
            "--cert",
            dir.path().join("client.pem").to_str().unwrap(),
            "--key",
            dir.path().join("client.key").to_str().unwrap(),
            &url(&proxy, "/pets"),
        ]);
        assert_eq!(code, 0, "{version}: {stderr}");
        assert_eq!(String::from_utf8(body).unwrap(), mtls_shield::demo::PETS);
    }
    assert_eq!(up.hits(), 2);
}
