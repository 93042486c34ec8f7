//! OCSP for client certificates (issue 20, part 4), against `openssl ocsp` as the responder:
//! the status is known before any HTTP byte, an answer that turns to revoked reaches the
//! connections already open, and an answer nobody stands behind is never believed.
use crate::common::*;

use std::path::PathBuf;

/// A CA, a client whose certificate names the responder in its AIA, and a responder signing
/// with a delegated certificate that carries id-kp-OCSPSigning (as AWS Private CA's does).
struct Setup {
    pki: Pki,
    up: Upstream,
    client: Issued,
    responder: OcspResponder,
}

fn delegated(ca: &Ca, eku: bool) -> (String, String) {
    let ekus = if eku {
        vec![rcgen::ExtendedKeyUsagePurpose::OcspSigning]
    } else {
        vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]
    };
    let signer = ca.issue(Leaf::client("OCSP responder").eku(ekus));
    (signer.cert_pem, signer.key_pem)
}

/// The responder is started before the client is issued, so the AIA can name its port.
fn setup(signer: impl Fn(&Ca) -> (String, String)) -> Setup {
    let pki = Pki::new();
    let up = Upstream::start();
    // A placeholder client first: the responder must know the real one, made below.
    let port_probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = port_probe.local_addr().unwrap().port();
    drop(port_probe);
    let url = format!("http://127.0.0.1:{port}/");
    let client = pki
        .root
        .issue(Leaf::client("ocsp-client").ocsp_url(&url).pca_serial());
    client.write(pki.dir.path(), "ocsp-client");
    let (cert, key) = signer(&pki.root);
    let responder =
        OcspResponder::start_on(port, &pki.root, (&cert, &key), &[&client.serial_number]);
    Setup {
        pki,
        up,
        client,
        responder,
    }
}

fn write_config(s: &Setup, client_auth: &str) -> PathBuf {
    let path = s.pki.path("mtls-shield.toml");
    std::fs::write(&path, config_with(&s.up.url(), "", client_auth, "")).unwrap();
    path
}

fn curl_client(s: &Setup, proxy: &Proxy) -> (i32, Vec<u8>, String) {
    curl_pki(
        &s.pki,
        Some(("ocsp-client.pem", "ocsp-client.key")),
        &[],
        &url(proxy, "/pets"),
    )
}

fn metric(result: &str) -> String {
    format!("mtls_shield_ocsp_requests_total{{result=\"{result}\"}}")
}

#[test]
fn a_client_the_responder_calls_good_is_served() {
    let s = setup(|ca| delegated(ca, true));
    let proxy = Proxy::start(&write_config(&s, "ocsp = \"always\""));
    let (code, body, err) = curl_client(&s, &proxy);
    assert_eq!(code, 0, "{err}");
    assert_eq!(String::from_utf8_lossy(&body), mtls_shield::demo::PETS);
    assert_eq!(proxy.metric(&metric("good")), 1.0);
    // A second connection uses the cached answer: no second request.
    assert_eq!(curl_client(&s, &proxy).0, 0);
    assert_eq!(proxy.metric(&metric("good")), 1.0);
    assert_eq!(proxy.metric("mtls_shield_ocsp_cache_entries"), 1.0);
}

#[test]
fn a_client_the_responder_calls_revoked_gets_no_http_byte() {
    let mut s = setup(|ca| delegated(ca, true));
    s.responder.revoke(&s.client.serial_number);
    let proxy = Proxy::start(&write_config(&s, "ocsp = \"always\""));
    let (code, body, _) = curl_client(&s, &proxy);
    assert_ne!(code, 0);
    assert!(body.is_empty(), "{}", String::from_utf8_lossy(&body));
    let line = proxy.wait_log(&["handshake rejected", "reason=\"revoked\"", "OCSP"]);
    assert!(line.contains(&s.responder.url()), "{line}");
    assert_eq!(s.up.hits(), 0);
    assert_eq!(proxy.metric(&metric("revoked")), 1.0);
}

#[test]
fn a_revocation_at_the_responder_closes_the_open_connection() {
    let mut s = setup(|ca| delegated(ca, true));
    let other = s.pki.root.issue(Leaf::client("no-ocsp-url"));
    let proxy = Proxy::start(&write_config(
        &s,
        "ocsp = \"always\"\nocsp_refresh = \"1s\"",
    ));
    let mut open = KeepAlive::open(proxy.addr, &s.pki.root, &s.client);
    let mut kept = KeepAlive::open(proxy.addr, &s.pki.root, &other);
    assert_eq!(open.get("/pets").unwrap().0, 200);
    s.responder.revoke(&s.client.serial_number);
    assert!(
        open.wait_closed(DEADLINE),
        "the connection of the revoked client stayed open"
    );
    proxy.wait_log(&["open connection no longer trusted", "reason=\"revoked\""]);
    assert_eq!(
        kept.get("/pets").unwrap().0,
        200,
        "another client is untouched"
    );
}

/// A port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn a_responder_that_is_down_refuses_the_client_as_revocation_unknown() {
    let s = setup(|ca| delegated(ca, true));
    let config = format!(
        "ocsp = \"always\"\nocsp_timeout = \"2s\"\nocsp_responder = \"http://127.0.0.1:{}/\"",
        closed_port()
    );
    let proxy = Proxy::start(&write_config(&s, &config));
    let (code, body, _) = curl_client(&s, &proxy);
    assert_ne!(code, 0);
    assert!(body.is_empty());
    proxy.wait_log(&[
        "handshake rejected",
        "reason=\"revocation_unknown\"",
        "no usable OCSP answer",
    ]);
    assert_eq!(proxy.metric(&metric("error")), 1.0);
    assert_eq!(s.up.hits(), 0);
}

#[test]
fn a_responder_that_is_down_lets_the_client_in_with_soft_fail_and_counts_it() {
    let s = setup(|ca| delegated(ca, true));
    let config = format!(
        "ocsp = \"always\"\nocsp_soft_fail = true\nocsp_responder = \"http://127.0.0.1:{}/\"",
        closed_port()
    );
    let proxy = Proxy::start(&write_config(&s, &config));
    let (code, _, err) = curl_client(&s, &proxy);
    assert_eq!(code, 0, "{err}");
    assert_eq!(proxy.metric(&metric("soft_fail")), 1.0);
    proxy.wait_log(&["no usable OCSP answer; accepted because client_auth.ocsp_soft_fail is on"]);
}

#[test]
fn an_answer_signed_by_another_ca_is_not_believed() {
    let forger = Ca::root("Forger CA");
    let s = setup(|_| delegated(&forger, true));
    let proxy = Proxy::start(&write_config(&s, "ocsp = \"always\""));
    assert_ne!(curl_client(&s, &proxy).0, 0);
    proxy.wait_log(&[
        "handshake rejected",
        "reason=\"revocation_unknown\"",
        "not trusted",
    ]);
    assert_eq!(s.up.hits(), 0);
}

#[test]
fn a_delegated_responder_without_ocsp_signing_is_not_believed() {
    let s = setup(|ca| delegated(ca, false));
    let proxy = Proxy::start(&write_config(&s, "ocsp = \"always\""));
    assert_ne!(curl_client(&s, &proxy).0, 0);
    proxy.wait_log(&[
        "handshake rejected",
        "reason=\"revocation_unknown\"",
        "lacks id-kp-OCSPSigning",
    ]);
}

#[test]
fn the_ca_itself_may_sign_the_answers() {
    let s = setup(|ca| (ca.pem(), ca.key.serialize_pem()));
    let proxy = Proxy::start(&write_config(&s, "ocsp = \"always\""));
    assert_eq!(curl_client(&s, &proxy).0, 0);
    assert_eq!(proxy.metric(&metric("good")), 1.0);
}

#[test]
fn with_if_no_crl_a_client_covered_by_a_crl_is_not_asked_about() {
    let s = setup(|ca| delegated(ca, true));
    std::fs::write(s.pki.path("root.crl"), s.pki.root.crl(&[], 1, -1, 7)).unwrap();
    let proxy = Proxy::start(&write_config(
        &s,
        "crls = [\"root.crl\"]\nocsp = \"if_no_crl\"",
    ));
    assert_eq!(curl_client(&s, &proxy).0, 0);
    assert_eq!(proxy.metric(&metric("good")), 0.0);
}

#[test]
fn verify_gives_the_responders_answer() {
    let mut s = setup(|ca| delegated(ca, true));
    let config = write_config(&s, "ocsp = \"always\"");
    let cert = s.pki.path("ocsp-client.pem");
    let args = |c: &PathBuf| {
        shield_cmd(&[
            "verify".as_ref(),
            "--config".as_ref(),
            c.as_os_str(),
            cert.as_os_str(),
        ])
    };
    let good = args(&config);
    let text = String::from_utf8_lossy(&good.stdout);
    let err = String::from_utf8_lossy(&good.stderr);
    assert_eq!(good.status.code(), Some(0), "{text}{err}");
    assert!(
        text.contains("OCSP http://127.0.0.1:") && text.contains("Good"),
        "{text}"
    );
    s.responder.revoke(&s.client.serial_number);
    let revoked = args(&config);
    let text = String::from_utf8_lossy(&revoked.stdout);
    assert_eq!(revoked.status.code(), Some(2), "{text}");
    assert!(text.contains("result: refused: revoked"), "{text}");
}

#[test]
fn turning_ocsp_on_by_reload_applies_to_the_next_connection() {
    let mut s = setup(|ca| delegated(ca, true));
    s.responder.revoke(&s.client.serial_number);
    let config = write_config(&s, "");
    let proxy = Proxy::start(&config);
    assert_eq!(curl_client(&s, &proxy).0, 0, "OCSP is off: served");
    write_config(&s, "ocsp = \"always\"");
    proxy.signal("HUP");
    wait_until("one successful reload", DEADLINE, || {
        proxy.metric("mtls_shield_reloads_total{result=\"success\"}") >= 1.0
    });
    assert_ne!(curl_client(&s, &proxy).0, 0, "OCSP is on: refused");
    proxy.wait_log(&["handshake rejected", "reason=\"revoked\""]);
}

#[test]
fn check_reports_the_ocsp_policy() {
    let s = setup(|ca| delegated(ca, true));
    let config = write_config(&s, "ocsp = \"always\"\nocsp_soft_fail = true");
    let out = shield_cmd(&["check".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("OCSP: always at each certificate's AIA OCSP URL, timeout 3s")
            && text.contains("soft fail"),
        "{text}"
    );
}

/// The same refusal seen by `openssl s_client` over TLS 1.2 and 1.3: the handshake itself may
/// complete (the lookup comes after it), but not one HTTP byte comes back.
#[test]
fn openssl_s_client_of_a_revoked_client_receives_no_http_byte() {
    let mut s = setup(|ca| delegated(ca, true));
    s.responder.revoke(&s.client.serial_number);
    let proxy = Proxy::start(&write_config(&s, "ocsp = \"always\""));
    let (cert, key, ca) = (
        s.pki.path("ocsp-client.pem"),
        s.pki.path("ocsp-client.key"),
        s.pki.path("root.pem"),
    );
    for version in ["-tls1_2", "-tls1_3"] {
        let (_, stdout, _) = s_client(
            proxy.addr,
            &[
                version,
                "-cert",
                cert.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
                "-CAfile",
                ca.to_str().unwrap(),
            ],
            b"GET /pets HTTP/1.1\r\nHost: localhost\r\n\r\n",
        );
        assert!(!stdout.contains("HTTP/1.1"), "{version}: {stdout}");
    }
    assert_eq!(s.up.hits(), 0);
    assert_eq!(
        proxy.metric(&metric("revoked")),
        1.0,
        "the second lookup came from the cache"
    );
}

/// A chain root → issuing CA → client, each certificate naming its issuer's responder: the
/// issuing CA revoked at the root's responder refuses its clients, whatever the leaf's answer.
#[test]
fn an_intermediate_revoked_at_its_issuers_responder_refuses_its_clients() {
    let pki = Pki::new();
    let up = Upstream::start();
    let (root_port, int_port) = (closed_port(), closed_port());
    let root_url = format!("http://127.0.0.1:{root_port}/");
    let int_url = format!("http://127.0.0.1:{int_port}/");
    let (issuing, issuing_serial) = pki.root.intermediate_with_ocsp("Issuing CA", &root_url);
    let leaf = issuing.issue(Leaf::client("chained").ocsp_url(&int_url).pca_serial());
    std::fs::write(
        pki.path("chained.pem"),
        format!("{}{}", leaf.cert_pem, issuing.pem()),
    )
    .unwrap();
    std::fs::write(pki.path("chained.key"), &leaf.key_pem).unwrap();
    let root_signer = (pki.root.pem(), pki.root.key.serialize_pem());
    let mut root_responder = OcspResponder::start_on(
        root_port,
        &pki.root,
        (&root_signer.0, &root_signer.1),
        &[&issuing_serial],
    );
    let int_signer = (issuing.pem(), issuing.key.serialize_pem());
    let _int_responder = OcspResponder::start_on(
        int_port,
        &issuing,
        (&int_signer.0, &int_signer.1),
        &[&leaf.serial_number],
    );
    root_responder.revoke(&issuing_serial);
    let config = pki.path("mtls-shield.toml");
    std::fs::write(&config, config_with(&up.url(), "", "ocsp = \"always\"", "")).unwrap();
    let proxy = Proxy::start(&config);
    let (code, body, _) = curl_pki(
        &pki,
        Some(("chained.pem", "chained.key")),
        &[],
        &url(&proxy, "/pets"),
    );
    assert_ne!(code, 0);
    assert!(body.is_empty());
    let line = proxy.wait_log(&["handshake rejected", "reason=\"revoked\""]);
    assert!(
        line.contains("Issuing CA") && line.contains(&root_url),
        "{line}"
    );
    assert_eq!(up.hits(), 0);
}

/// A responder 400 ms away: a relay that holds each connection that long before passing it
/// on to `target`, and counts the connections it got.
fn slow_relay(target: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            seen.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                // Latency of the responder being simulated, not a wait for a condition.
                std::thread::sleep(std::time::Duration::from_millis(400));
                let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (mut c, mut u) = (client, upstream);
                let t = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut u, &mut c);
                let _ = t.join();
            });
        }
    });
    (port, count)
}

/// CloudFront opens many connections at once: with the cache cold, they wait for one lookup
/// instead of each sending the responder its own.
#[test]
fn connections_arriving_together_share_one_lookup() {
    let s = setup(|ca| delegated(ca, true));
    let (relay, lookups) = slow_relay(s.responder.port);
    let config = format!("ocsp = \"always\"\nocsp_responder = \"http://127.0.0.1:{relay}/\"");
    let proxy = Proxy::start(&write_config(&s, &config));
    let codes: Vec<i32> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| scope.spawn(|| curl_client(&s, &proxy).0))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(codes.iter().all(|c| *c == 0), "{codes:?}");
    assert_eq!(
        proxy.metric(&metric("good")),
        1.0,
        "one lookup for 12 connections"
    );
    assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 1);
}
