//! The memo of accepted chains (`client_auth.verified_chain_cache`), through the real binary.
//! A remembered chain skips only the re-verification of its signatures: every handshake still
//! has to prove possession of the certificate's private key. (A reload empties the memo: see
//! `crl_added_by_reload_refuses_the_next_handshake_but_not_an_open_connection` in
//! `ops_reload.rs`, whose client is remembered before the CRL arrives.)
use crate::common::*;

/// Warms the memo with the good client, then presents the same certificate signed for with
/// another key: the proxy must refuse it, with no HTTP byte and no upstream request.
fn remembered_certificate_without_its_key(tls12_only: bool) {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&pki.write_config(&up.url(), ""));
    assert_eq!(get_as_client(&proxy, &pki, "/pets").status, 200);

    let impostor = pki.root.issue(Leaf::client("impostor"));
    let mut opts = ClientOpts::with(ClientCert {
        chain: vec![pki.client.cert_der.clone()],
        key: impostor.key_der.clone(),
    });
    opts.tls12_only = tls12_only;
    let line = assert_refused(&proxy, &up, &pki.root, &opts, "bad_signature");
    assert!(line.contains("my-client"), "{line}");
    // The real owner is still accepted afterwards.
    assert_eq!(get_as_client(&proxy, &pki, "/pets").status, 200);
}

#[test]
fn remembered_certificate_without_its_key_is_refused_tls13() {
    remembered_certificate_without_its_key(false);
}

#[test]
fn remembered_certificate_without_its_key_is_refused_tls12() {
    remembered_certificate_without_its_key(true);
}
