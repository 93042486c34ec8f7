//! TLS session resumption (issue 2): off by default, because a resumed session skips the
//! client-certificate checks; when turned on, it works, but no session from before a change
//! of trust resumes after a reload.
use crate::common::*;

use std::sync::Arc;

use http_body_util::BodyExt;
use rustls::client::ClientSessionMemoryCache;
use rustls::HandshakeKind;

/// A client that can resume: one `ClientConfig` for every connection, because rustls 0.23
/// only resumes a session with the same verifier and client-certificate resolver that made
/// it (so `tls_connect`, which builds a config per call, never resumes).
struct Client {
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    fn new(pki: &Pki, tls12_only: bool) -> Client {
        let mut opts = ClientOpts::with(ClientCert::leaf(&pki.client));
        opts.resumption = Some(Arc::new(ClientSessionMemoryCache::new(32)));
        opts.tls12_only = tls12_only;
        Client {
            config: client_config(&pki.root, &opts),
        }
    }
}

/// Connects, notes how the handshake went, then sends `GET /headers` and reads the whole
/// answer (which also delivers any TLS 1.3 session ticket to the client's store). Returns
/// the handshake kind and the XFCC value the upstream saw.
fn visit(proxy: &Proxy, client: &Client) -> (HandshakeKind, String) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(client.config.clone())
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .unwrap();
            let kind = tls.get_ref().1.handshake_kind().unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            let conn = tokio::spawn(conn);
            let resp = sender.send_request(get("/headers")).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let h: std::collections::BTreeMap<String, Vec<String>> =
                serde_json::from_slice(&body).unwrap();
            let xfcc = h["x-forwarded-client-cert"].clone();
            assert_eq!(xfcc.len(), 1);
            // Close cleanly so the connection ends before the next visit.
            drop(sender);
            let _ = conn.await;
            (kind, xfcc[0].clone())
        })
}

fn start(pki: &Pki, up: &Upstream, listener_extra: &str) -> Proxy {
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, config_with(&up.url(), listener_extra, "", "")).unwrap();
    Proxy::start(&path)
}

#[test]
fn resumption_is_off_by_default_tls13() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "");
    let client = Client::new(&pki, false);
    for _ in 0..3 {
        assert_eq!(visit(&proxy, &client).0, HandshakeKind::Full);
    }
}

#[test]
fn resumption_is_off_by_default_tls12() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "");
    let client = Client::new(&pki, true);
    for _ in 0..3 {
        assert_eq!(visit(&proxy, &client).0, HandshakeKind::Full);
    }
}

#[test]
fn resumption_when_enabled_resumes_and_keeps_the_identity_tls13() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "session_resumption = true");
    let client = Client::new(&pki, false);
    let (first, xfcc1) = visit(&proxy, &client);
    assert_eq!(first, HandshakeKind::Full);
    let (second, xfcc2) = visit(&proxy, &client);
    assert_eq!(second, HandshakeKind::Resumed);
    // The resumed connection still carries the verified identity upstream.
    assert_eq!(xfcc1, xfcc2);
    assert!(xfcc2.starts_with(&format!("Hash={};", pki.client.fingerprint())));
}

#[test]
fn resumption_when_enabled_resumes_tls12() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "session_resumption = true");
    let client = Client::new(&pki, true);
    assert_eq!(visit(&proxy, &client).0, HandshakeKind::Full);
    assert_eq!(visit(&proxy, &client).0, HandshakeKind::Resumed);
}

/// A session issued under the old trust state must not resume under the new one.
fn no_resumption_across_trust_change(tls12_only: bool) {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "session_resumption = true");
    let client = Client::new(&pki, tls12_only);
    assert_eq!(visit(&proxy, &client).0, HandshakeKind::Full);

    // Change trust: the same root plus another one, then SIGHUP.
    let other = Ca::root("Another Root");
    std::fs::write(
        pki.path("truststore.pem"),
        format!("{}{}", pki.root.pem(), other.pem()),
    )
    .unwrap();
    proxy.signal("HUP");
    proxy.wait_log(&["reload complete", "generation=2"]);

    assert_eq!(
        visit(&proxy, &client).0,
        HandshakeKind::Full,
        "a session from before the trust change resumed"
    );
    // The new state hands out its own sessions, which do resume.
    assert_eq!(visit(&proxy, &client).0, HandshakeKind::Resumed);
}

#[test]
fn session_from_before_a_trust_reload_does_not_resume_tls13() {
    no_resumption_across_trust_change(false);
}

#[test]
fn session_from_before_a_trust_reload_does_not_resume_tls12() {
    no_resumption_across_trust_change(true);
}

/// Two `openssl s_client` connections (with `extra` args) sharing a session file; returns
/// the session line of each ("New, ..." or "Reused, ..."), and whether the first connection
/// left a session to offer (with no TLS 1.3 ticket, s_client saves none).
fn s_client_twice(proxy: &Proxy, pki: &Pki, extra: &[&str]) -> ([String; 2], bool) {
    let sess = pki.path("openssl.sess");
    let mut saved = false;
    let (ca, cert, key) = (
        pki.path("root.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let request = b"GET /pets HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut lines = Vec::new();
    for i in 0..2 {
        let mut args = vec![
            "-CAfile",
            ca.to_str().unwrap(),
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
            "-sess_out",
            sess.to_str().unwrap(),
        ];
        args.extend(extra);
        if i == 1 && sess.exists() {
            saved = true;
            args.extend(["-sess_in", sess.to_str().unwrap()]);
        }
        let (_, stdout, stderr) = s_client(proxy.addr, &args, request);
        assert!(
            stdout.contains("HTTP/1.1 200 OK"),
            "s_client was not served:\n{stdout}\n{stderr}"
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("New, ") || l.starts_with("Reused, "))
            .unwrap_or_else(|| panic!("no session line:\n{stdout}"))
            .to_owned();
        lines.push(line);
    }
    ([lines[0].clone(), lines[1].clone()], saved)
}

#[test]
fn openssl_session_is_not_reused_by_default_tls13() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "");
    let ([first, second], saved) = s_client_twice(&proxy, &pki, &["-tls1_3"]);
    assert!(first.starts_with("New, TLSv1.3"), "{first}");
    assert!(second.starts_with("New, TLSv1.3"), "{second}");
    assert!(!saved, "the server sent a TLS 1.3 session ticket");
}

#[test]
fn openssl_session_is_not_reused_by_default_tls12() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "");
    let ([first, second], saved) = s_client_twice(&proxy, &pki, &["-tls1_2"]);
    assert!(first.starts_with("New, TLSv1.2"), "{first}");
    assert!(second.starts_with("New, TLSv1.2"), "{second}");
    // No session ID to cache and no ticket: nothing resumable was handed out.
    assert!(!saved, "the server handed out a resumable TLS 1.2 session");
}

#[test]
fn openssl_session_is_reused_when_enabled() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up, "session_resumption = true");
    let ([first, second], saved) = s_client_twice(&proxy, &pki, &[]);
    assert!(saved);
    assert!(first.starts_with("New, "), "{first}");
    assert!(second.starts_with("Reused, "), "{second}");
}
