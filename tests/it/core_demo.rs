//! `mtls-shield demo` and `mtls-shield gen-certs` (issue 2), run as a user would.
use crate::common::*;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// Kills the demo when the test ends, pass or fail.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a printed command line exactly as a user pasting it into a shell would.
fn sh(cmd: &str) -> (i32, Vec<u8>, String) {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("run sh");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_prints_two_curl_commands_that_work_as_promised() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtls-shield"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _demo = Demo(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("demo did not finish its banner:\n{printed:#?}"));
        let done = line.starts_with("Press Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    // The two ready-to-paste commands are the indented lines that start with `curl`.
    let commands: Vec<&str> = printed
        .iter()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert_eq!(commands.len(), 2, "{printed:#?}");
    let (good, bad) = (commands[0], commands[1]);
    assert!(good.contains("--cert") && good.contains("--key"), "{good}");
    assert!(!bad.contains("--cert"), "{bad}");

    let (code, body, stderr) = sh(good);
    assert_eq!(code, 0, "{good}\n{stderr}");
    let body = String::from_utf8(body).unwrap();
    assert_eq!(body, mtls_shield::demo::PETS);
    for pet in [
        "\"dog\",\"price\":249.99",
        "\"cat\",\"price\":124.99",
        "\"fish\",\"price\":0.99",
    ] {
        assert!(body.contains(pet), "{body}");
    }

    let (code, body, stderr) = sh(bad);
    assert_ne!(code, 0, "{bad} should fail: {stderr}");
    assert!(body.is_empty(), "{:?}", String::from_utf8_lossy(&body));

    // The demo wrote its PKI and config where it was told to.
    for f in ["ca.pem", "client.pem", "client.key", "mtls-shield.toml"] {
        assert!(dir.path().join(f).is_file(), "demo did not write {f}");
    }
}

const GEN_FILES: [&str; 7] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
    "truststore.pem",
];

fn gen_certs(out: &Path, force: bool) -> std::process::Output {
    let mut args: Vec<&OsStr> = vec!["gen-certs".as_ref(), "--out".as_ref(), out.as_os_str()];
    if force {
        args.push("--force".as_ref());
    }
    shield_cmd(&args)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn gen_certs_writes_seven_files_with_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("new/certs");
    let out = gen_certs(&out_dir, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = GEN_FILES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
    for f in GEN_FILES {
        let p = out_dir.join(f);
        assert!(listed.contains(&p.display().to_string()), "{listed}");
        let want = if f.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&p), want, "{f}");
    }
    assert_eq!(
        std::fs::read(out_dir.join("ca.pem")).unwrap(),
        std::fs::read(out_dir.join("truststore.pem")).unwrap()
    );
}

#[test]
fn gen_certs_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    assert!(gen_certs(dir.path(), false).status.success());
    let before = std::fs::read(dir.path().join("ca.key")).unwrap();
    let out = gen_certs(dir.path(), false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);

    let out = gen_certs(dir.path(), true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);
}

#[test]
fn gen_certs_force_makes_existing_key_files_private() {
    let dir = tempfile::tempdir().unwrap();
    // A key file left world-readable by something else.
    std::fs::write(dir.path().join("client.key"), "old").unwrap();
    std::fs::set_permissions(
        dir.path().join("client.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert!(gen_certs(dir.path(), true).status.success());
    assert_eq!(mode(&dir.path().join("client.key")), 0o600);
}

#[test]
fn gen_certs_pki_serves_a_curl_client() {
    let dir = tempfile::tempdir().unwrap();
    assert!(gen_certs(dir.path(), false).status.success());
    let up = Upstream::start();
    let cfg = dir.path().join("mtls-shield.toml");
    std::fs::write(&cfg, config_with(&up.url(), "", "", "")).unwrap();
    let proxy = Proxy::start(&cfg);
    let p = |f: &str| dir.path().join(f).display().to_string();
    let (code, body, stderr) = curl(&[
        "--cacert",
        &p("ca.pem"),
        "--cert",
        &p("client.pem"),
        "--key",
        &p("client.key"),
        &url(&proxy, "/pets"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(String::from_utf8(body).unwrap(), mtls_shield::demo::PETS);
}
