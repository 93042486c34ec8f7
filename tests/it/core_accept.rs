//! Accepted clients reach the upstream with the verified identity (issue 2).
use crate::common::*;

#[test]
fn accepted_client_gets_upstream_answer() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&pki.write_config(&up.url(), ""));
    let got = get_as_client(&proxy, &pki, "/pets");
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), mtls_shield::demo::PETS);
    assert_eq!(up.hits(), 1);
}

#[test]
fn client_without_certificate_gets_no_http_bytes_and_upstream_is_not_contacted() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&pki.write_config(&up.url(), ""));
    let (code, stdout, stderr) = curl_pki(&pki, None, &[], &url(&proxy, "/pets"));
    assert_ne!(code, 0, "curl should fail: {stderr}");
    assert!(
        stdout.is_empty(),
        "no HTTP bytes expected, got {:?}",
        String::from_utf8_lossy(&stdout)
    );
    proxy.wait_log(&["handshake rejected", "reason=\"no_certificate\""]);
    assert_eq!(up.hits(), 0);
}
