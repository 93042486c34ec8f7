//! TLS posture: every accepted handshake is counted by what it negotiated
//! (`mtls_shield_tls_handshakes_total{version,suite,group}`), and the hybrid post-quantum
//! group X25519MLKEM768 is negotiated whenever the client prefers it. rustls's server takes
//! the client's group order; nothing else pins that, so these tests do, with a rustls client
//! whose groups are set by the test.
use std::sync::Arc;

use rustls::crypto::SupportedKxGroup;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::NamedGroup;

use crate::common::*;

/// A rustls client with the PKI's client certificate that offers `groups`, in that order.
fn client_offering(pki: &Pki, groups: Vec<&'static dyn SupportedKxGroup>) -> rustls::ClientConfig {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = groups;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root.cert.der().clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![pki.client.cert_der.clone()],
            PrivateKeyDer::try_from(pki.client.key_der.clone()).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg
}

/// Handshakes with `cfg`, sends one request, and returns the group the connection negotiated.
fn negotiated_group(proxy: &Proxy, cfg: rustls::ClientConfig) -> NamedGroup {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let group = tls
                .get_ref()
                .1
                .negotiated_key_exchange_group()
                .unwrap()
                .name();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let resp = sender.send_request(get("/pets")).await.unwrap();
            assert_eq!(resp.status(), 200);
            group
        })
}

fn handshakes(group: &str) -> String {
    format!("mtls_shield_tls_handshakes_total{{version=\"TLSv1_3\",suite=\"TLS13_AES_256_GCM_SHA384\",group=\"{group}\"}}")
}

#[test]
fn a_client_that_prefers_x25519mlkem768_negotiates_the_hybrid_and_it_is_counted() {
    use rustls::crypto::aws_lc_rs::kx_group::{X25519, X25519MLKEM768};
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&pki.write_config(&up.url(), ""));
    let group = negotiated_group(&proxy, client_offering(&pki, vec![X25519MLKEM768, X25519]));
    assert_eq!(group, NamedGroup::X25519MLKEM768);
    assert_eq!(proxy.metric(&handshakes("X25519MLKEM768")), 1.0);
}

#[test]
fn a_client_that_prefers_x25519_gets_x25519_the_server_follows_the_client() {
    use rustls::crypto::aws_lc_rs::kx_group::{X25519, X25519MLKEM768};
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&pki.write_config(&up.url(), ""));
    let group = negotiated_group(&proxy, client_offering(&pki, vec![X25519, X25519MLKEM768]));
    assert_eq!(group, NamedGroup::X25519);
    assert_eq!(proxy.metric(&handshakes("X25519")), 1.0);
    assert_eq!(proxy.metric(&handshakes("X25519MLKEM768")), 0.0);
}

#[test]
fn a_tls12_handshake_is_counted_with_its_suite_and_group() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&pki.write_config(&up.url(), ""));
    let (code, _, err) = curl_pki(
        &pki,
        Some(("client.pem", "client.key")),
        &["--tls-max", "1.2", "--curves", "P-256"],
        &url(&proxy, "/pets"),
    );
    assert_eq!(code, 0, "{err}");
    // The suite is whichever ECDHE-ECDSA AEAD the client lists first; the group is the curve
    // curl was told to use.
    wait_until("the TLS 1.2 handshake to be counted", DEADLINE, || {
        let (_, body) = proxy.admin_get("/metrics");
        body.lines().any(|l| {
            l.starts_with("mtls_shield_tls_handshakes_total{version=\"TLSv1_2\",suite=\"TLS_ECDHE_ECDSA_WITH_")
                && l.contains("group=\"secp256r1\"")
                && l.ends_with(" 1")
        })
    });
}
