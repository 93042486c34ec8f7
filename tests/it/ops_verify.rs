//! `mtls-shield verify` (issue 4): would this client certificate be accepted, now or at
//! `--at`? Exit 0 accepted, 2 refused with the handshake's reason code, 1 on error. It runs
//! the live verifier (`ShieldVerifier::check`), so its verdict is the handshake's verdict.
use crate::common::*;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Runs `mtls-shield verify --config <config> <args>`: (exit code, stdout, stderr).
fn verify(config: &Path, args: &[&OsStr]) -> (i32, String, String) {
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("verify"),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    all.extend_from_slice(args);
    let out = shield_cmd(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(pki: &Pki, client_auth_extra: &str) -> PathBuf {
    let path = pki.path("mtls-shield.toml");
    std::fs::write(
        &path,
        config_with("http://127.0.0.1:9", "", client_auth_extra, ""),
    )
    .unwrap();
    path
}

/// The serial as `verify` prints it: upper-case hex, whole bytes.
fn serial_hex(serial: u64) -> String {
    let h = format!("{serial:X}");
    if h.len() % 2 == 1 {
        format!("0{h}")
    } else {
        h
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Asserts a refusal: exit 2 and `result: refused: <reason>`, with the identity printed.
fn assert_refused_as(out: (i32, String, String), reason: &str, subject: &str) -> String {
    let (code, stdout, stderr) = out;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("\nresult: refused: {reason}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("  subject: {subject}\n")),
        "{stdout}"
    );
    assert!(stdout.contains("  reason: "), "{stdout}");
    assert!(stdout.contains("  detail: "), "{stdout}");
    stdout
}

#[test]
fn accepted_certificate_exits_0_and_prints_its_identity() {
    let pki = Pki::new();
    let config = write_config(&pki, "");
    let leaf = pki.root.issue(
        Leaf::client("svc-a")
            .dns("svc-a.example.com")
            .uri("spiffe://example.com/svc-a"),
    );
    let (cert, _) = leaf.write(pki.dir.path(), "svc-a");
    let (code, out, err) = verify(&config, &[cert.as_os_str()]);
    assert_eq!(code, 0, "{out}{err}");
    let expected = format!(
        "certificate: {}
  subject: CN=svc-a,O=mtls-shield tests
  issuer: CN=Test Root CA,O=mtls-shield tests
  serial: {}
  sha256 fingerprint: {}
  SANs: DNS:svc-a.example.com, URI:spiffe://example.com/svc-a
  valid: ",
        cert.display(),
        serial_hex(leaf.serial),
        leaf.fingerprint()
    );
    assert!(out.starts_with(&expected), "{out}");
    assert!(
        out.contains("\n  chain: 0 intermediates presented\n"),
        "{out}"
    );
    assert!(out.ends_with("\nresult: accepted\n"), "{out}");
}

#[test]
fn revoked_certificate_exits_2_revoked() {
    let pki = Pki::new();
    std::fs::write(
        pki.path("root.crl"),
        pki.root.crl(&[pki.client.serial], 2, -1, 7),
    )
    .unwrap();
    let config = write_config(&pki, "crls = [\"root.crl\"]");
    let out = assert_refused_as(
        verify(&config, &[pki.path("client.pem").as_os_str()]),
        "revoked",
        "CN=my-client,O=mtls-shield tests",
    );
    assert!(
        out.contains("  reason: a CRL in client_auth.crls lists this certificate\n"),
        "{out}"
    );
}

#[test]
fn expired_certificate_exits_2_expired() {
    let pki = Pki::new();
    let config = write_config(&pki, "");
    let (cert, _) = pki
        .root
        .issue(Leaf::client("old").valid_days(-30, -1))
        .write(pki.dir.path(), "old");
    assert_refused_as(
        verify(&config, &[cert.as_os_str()]),
        "expired",
        "CN=old,O=mtls-shield tests",
    );
}

#[test]
fn certificate_outside_the_allow_list_exits_2_not_allowed() {
    let pki = Pki::new();
    let config = write_config(
        &pki,
        "[client_auth.allow]\ncommon_names = [\"someone-else\"]",
    );
    let out = assert_refused_as(
        verify(&config, &[pki.path("client.pem").as_os_str()]),
        "not_allowed",
        "CN=my-client,O=mtls-shield tests",
    );
    assert!(
        out.contains("matches no entry of [client_auth.allow]"),
        "{out}"
    );
}

#[test]
fn certificate_from_an_unknown_ca_exits_2_unknown_ca() {
    let pki = Pki::new();
    let config = write_config(&pki, "");
    let stranger = Ca::root("Stranger CA");
    let (cert, _) = stranger
        .issue(Leaf::client("stranger"))
        .write(pki.dir.path(), "stranger");
    assert_refused_as(
        verify(&config, &[cert.as_os_str()]),
        "unknown_ca",
        "CN=stranger,O=mtls-shield tests",
    );
}

#[test]
fn at_a_time_after_expiry_exits_2_expired() {
    let pki = Pki::new();
    let config = write_config(&pki, "");
    let cert = pki.path("client.pem");
    let later = rfc3339(time::OffsetDateTime::now_utc() + time::Duration::days(400));
    let out = assert_refused_as(
        verify(
            &config,
            &[cert.as_os_str(), OsStr::new("--at"), OsStr::new(&later)],
        ),
        "expired",
        "CN=my-client,O=mtls-shield tests",
    );
    // The same certificate is accepted now.
    assert_eq!(verify(&config, &[cert.as_os_str()]).0, 0);
    assert!(out.contains("\nchecked at: "), "{out}");
}

#[test]
fn at_a_time_before_expiry_accepts_a_now_expired_certificate() {
    let pki = Pki::new();
    let config = write_config(&pki, "");
    let (cert, _) = pki
        .root
        .issue(Leaf::client("yesterday").valid_days(-30, -1))
        .write(pki.dir.path(), "yesterday");
    // "It worked last week": it did.
    let when = time::OffsetDateTime::now_utc() - time::Duration::days(7);
    let when = when.replace_nanosecond(0).unwrap();
    let at = rfc3339(when);
    let (code, out, err) = verify(
        &config,
        &[cert.as_os_str(), OsStr::new("--at"), OsStr::new(&at)],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("\nresult: accepted\n"), "{out}");
    assert!(
        out.contains(&format!("\nchecked at: {}\n", at.replace("+00:00", "Z"))),
        "{out}"
    );
    // An offset is honoured: the same instant written in +02:00.
    let plus2 = rfc3339(when.to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap()));
    let (code, out2, _) = verify(
        &config,
        &[cert.as_os_str(), OsStr::new("--at"), OsStr::new(&plus2)],
    );
    assert_eq!(code, 0);
    assert_eq!(out, out2);
}

#[test]
fn chain_with_an_intermediate_is_accepted_and_without_it_unknown_ca() {
    let pki = Pki::new();
    let config = write_config(&pki, "");
    let inter = pki.root.intermediate("Issuing CA");
    let (leaf, _) = inter
        .issue(Leaf::client("via-intermediate"))
        .write(pki.dir.path(), "leaf");
    let chain = pki.path("chain.pem");
    std::fs::write(&chain, inter.pem()).unwrap();

    let (code, out, err) = verify(
        &config,
        &[leaf.as_os_str(), OsStr::new("--chain"), chain.as_os_str()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("\n  issuer: CN=Issuing CA,O=mtls-shield tests\n"),
        "{out}"
    );
    assert!(
        out.contains("\n  chain: 1 intermediate presented\n"),
        "{out}"
    );
    assert!(out.ends_with("\nresult: accepted\n"), "{out}");

    // A fullchain file (leaf then intermediate) works the same.
    let full = pki.path("fullchain.pem");
    std::fs::write(
        &full,
        format!("{}{}", std::fs::read_to_string(&leaf).unwrap(), inter.pem()),
    )
    .unwrap();
    assert_eq!(verify(&config, &[full.as_os_str()]).0, 0);

    assert_refused_as(
        verify(&config, &[leaf.as_os_str()]),
        "unknown_ca",
        "CN=via-intermediate,O=mtls-shield tests",
    );
}

#[test]
fn errors_exit_1_with_one_line() {
    let pki = Pki::new();
    let config = write_config(&pki, "");
    let missing = pki.path("missing.pem");
    let (code, out, err) = verify(&config, &[missing.as_os_str()]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [format!(
            "mtls-shield: error: {}: cannot read client certificate: No such file or directory (os error 2); check the path and the file's permissions",
            missing.display()
        )]
    );

    let (code, _, err) = verify(
        &config,
        &[
            pki.path("client.pem").as_os_str(),
            OsStr::new("--at"),
            OsStr::new("yesterday"),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("--at \"yesterday\": expected an RFC 3339 time"),
        "{err}"
    );

    // A broken config is an error, not a refusal.
    std::fs::write(pki.path("truststore.pem"), "nothing\n").unwrap();
    let (code, _, err) = verify(&config, &[pki.path("client.pem").as_os_str()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&pki.path("truststore.pem").display().to_string()),
        "{err}"
    );

    // A usage error must not exit 2, which means "refused".
    let (code, _, err) = verify(&config, &[OsStr::new("--no-such-flag")]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn verdicts_match_the_live_handshake() {
    let pki = Pki::new();
    let up = Upstream::start();
    let revoked = pki.root.issue(Leaf::client("revoked"));
    let expired = pki.root.issue(Leaf::client("expired").valid_days(-30, -1));
    let unlisted = pki.root.issue(Leaf::client("unlisted"));
    let stranger = Ca::root("Stranger CA").issue(Leaf::client("stranger"));
    std::fs::write(
        pki.path("root.crl"),
        pki.root.crl(&[revoked.serial], 1, -1, 7),
    )
    .unwrap();
    let path = pki.path("mtls-shield.toml");
    std::fs::write(
        &path,
        config_with(
            &up.url(),
            "",
            "crls = [\"root.crl\"]\n[client_auth.allow]\ncommon_names = [\"my-client\", \"revoked\", \"expired\", \"stranger\"]",
            "",
        ),
    )
    .unwrap();
    let proxy = Proxy::start(&path);
    let cases = [
        (&pki.client, "my-client", None),
        (&revoked, "revoked", Some("revoked")),
        (&expired, "expired", Some("expired")),
        (&unlisted, "unlisted", Some("not_allowed")),
        (&stranger, "stranger", Some("unknown_ca")),
    ];
    for (cert, name, reason) in cases {
        let (file, _) = cert.write(pki.dir.path(), name);
        let (code, out, err) = verify(&path, &[file.as_os_str()]);
        let opts = ClientOpts::with(ClientCert::leaf(cert));
        match reason {
            None => {
                assert_eq!(code, 0, "{name}: {out}{err}");
                let got = block_request(proxy.addr, &pki.root, &opts, get("/pets")).unwrap();
                assert_eq!(got.status, 200, "{name}");
            }
            Some(reason) => {
                assert_eq!(code, 2, "{name}: {out}{err}");
                assert!(
                    out.contains(&format!("result: refused: {reason}\n")),
                    "{name}: {out}"
                );
                let line = assert_refused(&proxy, &up, &pki.root, &opts, reason);
                assert!(line.contains(&format!("subject=\"CN={name},")), "{line}");
            }
        }
    }
}
