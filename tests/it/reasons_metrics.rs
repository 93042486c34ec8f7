//! Rejection reasons and metrics (issue 3). Every refusal that can be produced on loopback is
//! seen twice, and must agree: once in `/metrics` (`mtls_shield_handshakes_total` counts it
//! under exactly one reason) and once in the connection-log line (peer, reason, TLS version,
//! and, when a certificate was presented, its subject, issuer, serial and fingerprint, which
//! are checked against what `openssl x509` says about the presented file). The other metrics
//! are driven and read back too.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use crate::common::*;

fn rejected(reason: &str) -> String {
    format!(r#"mtls_shield_handshakes_total{{result="rejected",reason="{reason}"}}"#)
}

/// Sum of every `result="rejected"` series.
fn total_rejected(proxy: &Proxy) -> f64 {
    let (_, body) = proxy.admin_get("/metrics");
    body.lines()
        .filter(|l| l.starts_with(r#"mtls_shield_handshakes_total{result="rejected""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What OpenSSL says about a certificate file: the fields the connection log must carry.
struct Presented {
    subject: String,
    issuer: String,
    serial: String,
    fingerprint: String,
}

fn presented(pem: &Path) -> Presented {
    let fp = openssl_x509(pem, &["-fingerprint", "-sha256"]);
    Presented {
        subject: after_eq(
            &openssl_x509(pem, &["-subject", "-nameopt", "RFC2253"]),
            "subject",
        )
        .to_owned(),
        issuer: after_eq(
            &openssl_x509(pem, &["-issuer", "-nameopt", "RFC2253"]),
            "issuer",
        )
        .to_owned(),
        serial: after_eq(&openssl_x509(pem, &["-serial"]), "serial").to_owned(),
        fingerprint: after_eq(&fp, "sha256 Fingerprint")
            .replace(':', "")
            .to_ascii_lowercase(),
    }
}

/// Waits until the refusal is counted under `reason` (and under no other reason), then checks
/// the connection-log line. Returns the line.
fn assert_rejection(
    proxy: &Proxy,
    reason: &str,
    tls_version: &str,
    cert: Option<&Presented>,
) -> String {
    let series = rejected(reason);
    wait_until(&format!("{series} = 1"), DEADLINE, || {
        proxy.metric(&series) == 1.0
    });
    assert_eq!(
        total_rejected(proxy),
        1.0,
        "the refusal must be counted once, under one reason"
    );
    let line = proxy.wait_log(&["handshake rejected", &format!("reason=\"{reason}\"")]);
    let f = |k: &str| field(&line, k).unwrap_or_else(|| panic!("no {k} in {line}"));
    assert!(f("peer").starts_with("127.0.0.1:"), "{line}");
    assert_eq!(f("tls_version"), tls_version, "{line}");
    match cert {
        Some(c) => {
            assert_eq!(f("subject"), c.subject, "{line}");
            assert_eq!(f("issuer"), c.issuer, "{line}");
            assert_eq!(f("serial"), c.serial, "{line}");
            assert_eq!(f("fingerprint"), c.fingerprint, "{line}");
        }
        None => {
            for k in ["subject", "issuer", "serial", "fingerprint"] {
                assert_eq!(f(k), "-", "{k} in {line}");
            }
        }
    }
    line
}

fn start(pki: &Pki, up: &Upstream, client_auth_extra: &str, tables: &str) -> Proxy {
    let p = pki.path("mtls-shield.toml");
    std::fs::write(&p, config_with(&up.url(), "", client_auth_extra, tables)).unwrap();
    Proxy::start(&p)
}

fn start_text(pki: &Pki, text: &str) -> Proxy {
    let p = pki.path("mtls-shield.toml");
    std::fs::write(&p, text).unwrap();
    Proxy::start(&p)
}

/// A refused Rust-client attempt: no application byte, the upstream untouched.
fn attempt_refused(pki: &Pki, proxy: &Proxy, up: &Upstream, opts: &ClientOpts) {
    let a = block_attempt(proxy.addr, &pki.root, opts);
    assert!(a.received.is_empty(), "{a:?}");
    assert!(a.handshake.is_err() || a.read_error.is_some(), "{a:?}");
    assert_eq!(up.hits(), 0);
}

/// Writes `issued` as `<name>.pem/.key`, presents it (refused), and returns what OpenSSL says of it.
fn refuse_issued(
    pki: &Pki,
    proxy: &Proxy,
    up: &Upstream,
    issued: &Issued,
    name: &str,
) -> Presented {
    issued.write(pki.dir.path(), name);
    attempt_refused(pki, proxy, up, &ClientOpts::with(ClientCert::leaf(issued)));
    presented(&pki.path(&format!("{name}.pem")))
}

#[test]
fn every_closed_label_set_is_exported_at_zero_before_traffic() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let (_, body) = proxy.admin_get("/metrics");
    let mut want: Vec<String> = mtls_shield::tls::Reason::ALL
        .iter()
        .map(|r| format!("{} 0", rejected(r.as_str())))
        .collect();
    want.push(r#"mtls_shield_handshakes_total{result="accepted",reason="none"} 0"#.into());
    for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
        want.push(format!(
            r#"mtls_shield_requests_total{{code_class="{class}"}} 0"#
        ));
    }
    for kind in ["connect", "timeout", "other"] {
        want.push(format!(
            r#"mtls_shield_upstream_errors_total{{kind="{kind}"}} 0"#
        ));
    }
    for line in want {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    // The issue's list, spelled out: a renamed code is a breaking change for alerts.
    for code in [
        "no_certificate",
        "unknown_ca",
        "expired",
        "not_yet_valid",
        "revoked",
        "revocation_unknown",
        "bad_purpose",
        "bad_signature",
        "bad_encoding",
        "not_allowed",
        "handshake_timeout",
        "not_tls",
        "protocol_version",
        "other",
    ] {
        assert!(body.contains(&rejected(code)), "{code}");
    }
}

#[test]
fn accepted_handshake_is_counted_as_accepted_none() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    get_as_client(&proxy, &pki, "/pets");
    let series = r#"mtls_shield_handshakes_total{result="accepted",reason="none"}"#;
    wait_until("accepted counted", DEADLINE, || proxy.metric(series) == 1.0);
    assert_eq!(total_rejected(&proxy), 0.0);
}

#[test]
fn no_certificate_via_curl_is_counted_and_logged() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let (code, stdout, _) = curl_pki(&pki, None, &[], &url(&proxy, "/pets"));
    assert_ne!(code, 0);
    assert!(stdout.is_empty());
    assert_rejection(&proxy, "no_certificate", "TLSv1.3", None);
    assert_eq!(up.hits(), 0);
}

#[test]
fn no_certificate_over_tls12_logs_tls12() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let mut opts = ClientOpts::anonymous();
    opts.tls12_only = true;
    attempt_refused(&pki, &proxy, &up, &opts);
    assert_rejection(&proxy, "no_certificate", "TLSv1.2", None);
}

#[test]
fn unknown_ca_is_counted_and_logged_with_the_presented_certificate() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let other = Ca::root("Other Root CA");
    let cert = refuse_issued(
        &pki,
        &proxy,
        &up,
        &other.issue(Leaf::client("my-client")),
        "c",
    );
    assert_eq!(cert.issuer, "CN=Other Root CA,O=mtls-shield tests");
    assert_rejection(&proxy, "unknown_ca", "TLSv1.3", Some(&cert));
}

#[test]
fn expired_is_counted_and_logged_with_the_presented_certificate() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let issued = pki
        .root
        .issue(Leaf::client("old-client").valid_days(-30, -1));
    let cert = refuse_issued(&pki, &proxy, &up, &issued, "c");
    assert_rejection(&proxy, "expired", "TLSv1.3", Some(&cert));
}

#[test]
fn not_yet_valid_is_counted_and_logged_with_the_presented_certificate() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let issued = pki
        .root
        .issue(Leaf::client("future-client").valid_days(1, 30));
    let cert = refuse_issued(&pki, &proxy, &up, &issued, "c");
    assert_rejection(&proxy, "not_yet_valid", "TLSv1.3", Some(&cert));
}

#[test]
fn revoked_is_counted_and_logged_with_the_presented_certificate() {
    let pki = Pki::new();
    let up = Upstream::start();
    let victim = pki.root.issue(Leaf::client("revoked-client"));
    std::fs::write(
        pki.path("crl.pem"),
        pki.root.crl(&[victim.serial], 1, -1, 7),
    )
    .unwrap();
    let proxy = start(&pki, &up, r#"crls = ["crl.pem"]"#, "");
    let cert = refuse_issued(&pki, &proxy, &up, &victim, "c");
    assert_rejection(&proxy, "revoked", "TLSv1.3", Some(&cert));
}

/// A CRL past its nextUpdate fails closed for its issuer's clients.
#[test]
fn stale_crl_is_revocation_unknown() {
    let pki = Pki::new();
    let up = Upstream::start();
    std::fs::write(pki.path("crl.pem"), pki.root.crl(&[], 1, -10, -1)).unwrap();
    let proxy = start(&pki, &up, r#"crls = ["crl.pem"]"#, "");
    let cert = refuse_issued(&pki, &proxy, &up, &pki.client, "c");
    assert_rejection(&proxy, "revocation_unknown", "TLSv1.3", Some(&cert));
}

/// `require_crl = true` and a client whose (trusted) issuer has no CRL configured.
#[test]
fn require_crl_without_the_issuers_crl_is_revocation_unknown() {
    let pki = Pki::new();
    let up = Upstream::start();
    let other = Ca::root("Partner CA");
    std::fs::write(
        pki.path("truststore.pem"),
        format!("{}{}", pki.root.pem(), other.pem()),
    )
    .unwrap();
    std::fs::write(pki.path("crl.pem"), pki.root.crl(&[], 1, -1, 7)).unwrap();
    let proxy = start(&pki, &up, "crls = [\"crl.pem\"]\nrequire_crl = true", "");
    let cert = refuse_issued(
        &pki,
        &proxy,
        &up,
        &other.issue(Leaf::client("partner")),
        "c",
    );
    assert_rejection(&proxy, "revocation_unknown", "TLSv1.3", Some(&cert));
}

#[test]
fn server_auth_only_eku_is_bad_purpose() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let issued = pki
        .root
        .issue(Leaf::client("a-server").eku(vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]));
    let cert = refuse_issued(&pki, &proxy, &up, &issued, "c");
    assert_rejection(&proxy, "bad_purpose", "TLSv1.3", Some(&cert));
}

/// A CA certificate (and its key) configured as the client certificate: a common operator
/// slip, which webpki reports as `CaUsedAsEndEntity`.
#[test]
fn ca_certificate_used_as_client_certificate_is_bad_purpose() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let ca = pki.root.intermediate("Issuing CA");
    std::fs::write(pki.path("ca.pem"), ca.pem()).unwrap();
    attempt_refused(
        &pki,
        &proxy,
        &up,
        &ClientOpts::with(ClientCert {
            chain: vec![ca.cert.der().clone()],
            key: ca.key.serialize_der(),
        }),
    );
    let cert = presented(&pki.path("ca.pem"));
    assert_rejection(&proxy, "bad_purpose", "TLSv1.3", Some(&cert));
}

/// An impostor CA with exactly the trusted root's name: only the signature tells them apart.
#[test]
fn impostor_issuer_with_the_trusted_name_is_bad_signature() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let impostor = Ca::root(&pki.root.name);
    let cert = refuse_issued(
        &pki,
        &proxy,
        &up,
        &impostor.issue(Leaf::client("my-client")),
        "c",
    );
    assert_rejection(&proxy, "bad_signature", "TLSv1.3", Some(&cert));
}

/// Connects presenting `chain` as is, with `key` for CertificateVerify, bypassing the
/// client-side checks of `with_client_auth_cert` (which refuse to load certificates rustls
/// cannot parse). Returns every application byte received.
fn present_raw_chain(
    proxy: &Proxy,
    root: &Ca,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key_der: &[u8],
) -> Vec<u8> {
    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);
    impl rustls::client::ResolvesClientCert for Fixed {
        fn resolve(
            &self,
            _: &[&[u8]],
            _: &[rustls::SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = provider
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::try_from(key_der.to_vec()).unwrap())
        .unwrap();
    let mut cfg = (*client_config(root, &ClientOpts::anonymous())).clone();
    cfg.client_auth_cert_resolver =
        Arc::new(Fixed(Arc::new(rustls::sign::CertifiedKey::new(chain, key))));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
            else {
                return Vec::new();
            };
            let _ = tls.write_all(RAW_REQUEST).await;
            let mut got = Vec::new();
            let _ = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut got)).await;
            got
        })
}

/// A certificate with a critical extension nobody understands must be refused (RFC 5280
/// §4.2), and it is an encoding problem of the certificate, not `other`.
#[test]
fn unknown_critical_extension_is_bad_encoding() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "odd-extension");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let mut ext =
        rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![5, 0]);
    ext.set_criticality(true);
    p.custom_extensions = vec![ext];
    let cert = p.signed_by(&key, &pki.root.cert, &pki.root.key).unwrap();
    std::fs::write(pki.path("c.pem"), cert.pem()).unwrap();
    let got = present_raw_chain(
        &proxy,
        &pki.root,
        vec![cert.der().clone()],
        &key.serialize_der(),
    );
    assert!(got.is_empty(), "{got:?}");
    let cert = presented(&pki.path("c.pem"));
    assert_rejection(&proxy, "bad_encoding", "TLSv1.3", Some(&cert));
    assert_eq!(up.hits(), 0);
}

/// Presents bytes that are not a certificate at all (with a real key for CertificateVerify):
/// nothing can be parsed, so the log line has no certificate fields.
#[test]
fn garbage_certificate_is_bad_encoding() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let garbage = rustls::pki_types::CertificateDer::from(b"not a certificate".to_vec());
    let got = present_raw_chain(&proxy, &pki.root, vec![garbage], &pki.client.key_der);
    assert!(got.is_empty(), "{got:?}");
    assert_rejection(&proxy, "bad_encoding", "TLSv1.3", None);
    assert_eq!(up.hits(), 0);
}

#[test]
fn not_allowed_is_counted_and_logged_with_the_presented_certificate() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(
        &pki,
        &up,
        "",
        "[client_auth.allow]\ncommon_names = [\"someone-else\"]",
    );
    let cert = refuse_issued(&pki, &proxy, &up, &pki.client, "c");
    assert_rejection(&proxy, "not_allowed", "TLSv1.3", Some(&cert));
}

fn short_handshake_timeout(pki: &Pki, up: &Upstream) -> Proxy {
    start_text(
        pki,
        &base_config(&up.url(), "").replace(
            "handshake_timeout = \"5s\"",
            "handshake_timeout = \"300ms\"",
        ),
    )
}

/// Reads until the server closes; every byte it sent (an RST counts as closed).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("server did not close the connection within {DEADLINE:?}")
            }
            Err(_) => return got,
        }
    }
}

#[test]
fn silent_tcp_client_is_handshake_timeout() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = short_handshake_timeout(&pki, &up);
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    assert_rejection(&proxy, "handshake_timeout", "-", None);
}

#[test]
fn half_a_client_hello_is_handshake_timeout() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = short_handshake_timeout(&pki, &up);
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    // A record header announcing 512 bytes of handshake, then only the first few.
    s.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    assert_rejection(&proxy, "handshake_timeout", "-", None);
}

#[test]
fn plain_http_is_not_tls_and_gets_no_byte() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(b"GET /pets HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    assert_rejection(&proxy, "not_tls", "-", None);
    assert_eq!(up.hits(), 0);
}

/// A TLS 1.1 ClientHello (record version 3.1, client_version 3.2, no supported_versions)
/// with a signature_algorithms extension, so rustls reaches its version check.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // two suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let sigalgs = [0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04];
    body.extend_from_slice(&(sigalgs.len() as u16).to_be_bytes());
    body.extend_from_slice(&sigalgs);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[test]
fn tls11_client_hello_is_protocol_version_with_that_alert() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(&tls11_client_hello()).unwrap();
    let got = read_until_closed(&mut s);
    // Exactly one alert record, fatal (2) protocol_version (70), and nothing else.
    assert_eq!(got.len(), 7, "{got:02x?}");
    assert_eq!((got[0], got[5], got[6]), (0x15, 2, 70), "{got:02x?}");
    assert_rejection(&proxy, "protocol_version", "-", None);
}

#[test]
fn openssl_tls11_client_is_protocol_version() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let (code, stdout, stderr) = s_client(
        proxy.addr,
        &[
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-cert",
            pki.path("client.pem").to_str().unwrap(),
            "-key",
            pki.path("client.key").to_str().unwrap(),
        ],
        RAW_REQUEST,
    );
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    assert!(!stdout.contains("HTTP/"), "{stdout}");
    assert_rejection(&proxy, "protocol_version", "-", None);
}

/// A client that starts a ClientHello and goes away: counted, as `other`.
#[test]
fn client_leaving_mid_handshake_is_other() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(&tls11_client_hello()[..20]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    assert_rejection(&proxy, "other", "-", None);
}

// ---- The other metrics ----

#[test]
fn connections_active_follows_an_open_connection() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let gauge = "mtls_shield_connections_active";
    assert_eq!(proxy.metric(gauge), 0.0);
    let mut conn = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    assert_eq!(conn.get("/pets").unwrap().0, 200);
    wait_until("one active connection", DEADLINE, || {
        proxy.metric(gauge) == 1.0
    });
    let mut second = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    assert_eq!(second.get("/pets").unwrap().0, 200);
    wait_until("two active connections", DEADLINE, || {
        proxy.metric(gauge) == 2.0
    });
    drop(conn);
    drop(second);
    wait_until("no active connection", DEADLINE, || {
        proxy.metric(gauge) == 0.0
    });
}

#[test]
fn requests_are_counted_by_status_class() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let opts = ClientOpts::with(ClientCert::leaf(&pki.client));
    assert_eq!(
        block_request(proxy.addr, &pki.root, &opts, get("/pets"))
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        block_request(proxy.addr, &pki.root, &opts, get("/pets"))
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        block_request(proxy.addr, &pki.root, &opts, get("/nope"))
            .unwrap()
            .status,
        404
    );
    let class = |c: &str| format!(r#"mtls_shield_requests_total{{code_class="{c}"}}"#);
    wait_until("three requests counted", DEADLINE, || {
        proxy.metric(&class("2xx")) == 2.0 && proxy.metric(&class("4xx")) == 1.0
    });
    assert_eq!(proxy.metric(&class("5xx")), 0.0);
}

#[test]
fn request_duration_histogram_observes_the_whole_request() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let got = get_as_client(&proxy, &pki, "/slow/300");
    assert_eq!(got.status, 200);
    let h = "mtls_shield_request_duration_seconds";
    wait_until("one observation", DEADLINE, || {
        proxy.metric(&format!("{h}_count")) == 1.0
    });
    // The upstream took at least 300 ms, so the 250 ms bucket is empty and +Inf has it.
    assert_eq!(proxy.metric(&format!(r#"{h}_bucket{{le="0.25"}}"#)), 0.0);
    assert_eq!(proxy.metric(&format!(r#"{h}_bucket{{le="+Inf"}}"#)), 1.0);
    let sum = proxy.metric(&format!("{h}_sum"));
    assert!((0.3..20.0).contains(&sum), "sum {sum}");
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn upstream_down_counts_a_connect_error_and_a_5xx() {
    let pki = Pki::new();
    let proxy = Proxy::start(&pki.write_config(&format!("http://127.0.0.1:{}", closed_port()), ""));
    let got = get_as_client(&proxy, &pki, "/pets");
    assert_eq!(got.status, 502);
    wait_until("connect error counted", DEADLINE, || {
        proxy.metric(r#"mtls_shield_upstream_errors_total{kind="connect"}"#) == 1.0
            && proxy.metric(r#"mtls_shield_requests_total{code_class="5xx"}"#) == 1.0
    });
    assert_eq!(
        proxy.metric(r#"mtls_shield_upstream_errors_total{kind="timeout"}"#),
        0.0
    );
}

#[test]
fn slow_upstream_counts_a_timeout_error() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start_text(
        &pki,
        &base_config(&up.url(), "")
            .replace("response_timeout = \"5s\"", "response_timeout = \"300ms\""),
    );
    let got = get_as_client(&proxy, &pki, "/slow/5000");
    assert_eq!(got.status, 504);
    wait_until("timeout counted", DEADLINE, || {
        proxy.metric(r#"mtls_shield_upstream_errors_total{kind="timeout"}"#) == 1.0
    });
    assert_eq!(
        proxy.metric(r#"mtls_shield_upstream_errors_total{kind="connect"}"#),
        0.0
    );
}

/// A label value as the exposition format writes it.
fn prom_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn expiry_series(role: &str, pem: &Path) -> (String, f64) {
    let subject = after_eq(
        &openssl_x509(pem, &["-subject", "-nameopt", "RFC2253"]),
        "subject",
    )
    .to_owned();
    let not_after = unix_of_openssl_date(after_eq(&openssl_x509(pem, &["-enddate"]), "notAfter"));
    (
        format!(
            r#"mtls_shield_certificate_expiry_timestamp_seconds{{role="{role}",subject="{}"}}"#,
            prom_escape(&subject)
        ),
        not_after as f64,
    )
}

#[test]
fn certificate_expiry_gauges_carry_each_not_after() {
    let pki = Pki::new();
    let up = Upstream::start();
    // A second anchor whose name needs escaping in a label value.
    let partner = Ca::root(r#"Partner, "Quoted" \ CA"#);
    std::fs::write(pki.path("partner.pem"), partner.pem()).unwrap();
    std::fs::write(
        pki.path("truststore.pem"),
        format!("{}{}", pki.root.pem(), partner.pem()),
    )
    .unwrap();
    let proxy = start(&pki, &up, "", "");
    for (role, file) in [
        ("server", "server.pem"),
        ("trust_anchor", "root.pem"),
        ("trust_anchor", "partner.pem"),
    ] {
        let (series, not_after) = expiry_series(role, &pki.path(file));
        assert_eq!(proxy.metric(&series), not_after, "{series}");
    }
    let (_, body) = proxy.admin_get("/metrics");
    assert!(
        body.contains(r#"subject="CN=Partner\\, \\\"Quoted\\\" \\\\ CA,O=mtls-shield tests"}"#),
        "{body}"
    );
    assert_exposition_is_well_formed(&body);
}

fn openssl_crl(pem: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("crl")
        .arg("-in")
        .arg(pem)
        .arg("-noout")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn crl_next_update_gauge_carries_the_crls_next_update() {
    let pki = Pki::new();
    let up = Upstream::start();
    std::fs::write(pki.path("crl.pem"), pki.root.crl(&[], 1, -1, 7)).unwrap();
    let proxy = start(&pki, &up, r#"crls = ["crl.pem"]"#, "");
    let crl = pki.path("crl.pem");
    let issuer = after_eq(
        &openssl_crl(&crl, &["-issuer", "-nameopt", "RFC2253"]),
        "issuer",
    )
    .to_owned();
    let next = unix_of_openssl_date(after_eq(&openssl_crl(&crl, &["-nextupdate"]), "nextUpdate"));
    let series = format!(
        r#"mtls_shield_crl_next_update_timestamp_seconds{{issuer="{}",scope="all"}}"#,
        prom_escape(&issuer)
    );
    assert_eq!(proxy.metric(&series), next as f64, "{series}");
}

#[test]
fn build_info_carries_the_version() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "", "");
    let (_, body) = proxy.admin_get("/metrics");
    let line = format!(
        r#"mtls_shield_build_info{{version="{}"}} 1"#,
        env!("CARGO_PKG_VERSION")
    );
    assert!(body.lines().any(|l| l == line), "{line} missing in\n{body}");
}

/// Every sample line is `name{label="value",…} number`, with label values using only the
/// escapes the text format allows (`\\`, `\"`, `\n`): what Prometheus needs to accept the
/// scrape at all.
fn assert_exposition_is_well_formed(body: &str) {
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{line}"
        );
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let mut chars = labels
            .strip_suffix('}')
            .unwrap_or_else(|| panic!("{line}"))
            .chars();
        loop {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert!(
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            assert_eq!(chars.next(), Some('"'), "{line}");
            loop {
                match chars.next() {
                    Some('\\') => assert!(
                        matches!(chars.next(), Some('\\' | '"' | 'n')),
                        "bad escape in {line}"
                    ),
                    Some('"') => break,
                    Some(_) => {}
                    None => panic!("unterminated label value in {line}"),
                }
            }
            match chars.next() {
                Some(',') => continue,
                None => break,
                Some(c) => panic!("unexpected {c:?} in {line}"),
            }
        }
    }
}
