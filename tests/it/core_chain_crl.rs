//! Chains through an intermediate CA, and CRLs (issue 2): a CRL revokes exactly what it
//! lists, applies to its own issuer's clients only (no nginx-style all-or-nothing), fails
//! closed once past nextUpdate, and `require_crl` makes a missing CRL a refusal.
use crate::common::*;

/// Writes a config with `client_auth_extra` into the PKI folder and starts the proxy.
fn start(pki: &Pki, up: &Upstream, client_auth_extra: &str) -> Proxy {
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, config_with(&up.url(), "", client_auth_extra, "")).unwrap();
    Proxy::start(&path)
}

/// The truststore holds both roots.
fn trust_both(pki: &Pki, other: &Ca) {
    std::fs::write(
        pki.path("truststore.pem"),
        format!("{}{}", pki.root.pem(), other.pem()),
    )
    .unwrap();
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

/// An accepted request: 200, the pets, and one more upstream hit.
fn assert_accepted(proxy: &Proxy, up: &Upstream, root: &Ca, cert: ClientCert) {
    let before = up.hits();
    let got = block_request(proxy.addr, root, &ClientOpts::with(cert), get("/pets"))
        .expect("client should be accepted");
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), mtls_shield::demo::PETS);
    assert_eq!(up.hits(), before + 1);
}

#[test]
fn chain_through_intermediate_is_accepted_when_client_sends_it() {
    let pki = Pki::new();
    let up = Upstream::start();
    let inter = pki.root.intermediate("Test Issuing CA");
    let leaf = inter.issue(Leaf::client("via-intermediate"));
    // The truststore holds only the root (Pki::new writes exactly that).
    let proxy = start(&pki, &up, "");
    let before = up.hits();
    let got = block_request(
        proxy.addr,
        &pki.root,
        &ClientOpts::with(ClientCert::with_chain(&leaf, &[&inter])),
        get("/headers"),
    )
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(up.hits(), before + 1);
    let xfcc = &got.echoed()["x-forwarded-client-cert"];
    assert_eq!(xfcc.len(), 1);
    assert!(
        xfcc[0].contains("Subject=\"CN=via-intermediate,O=mtls-shield tests\""),
        "{xfcc:?}"
    );
}

#[test]
fn chain_through_intermediate_without_the_intermediate_is_unknown_ca() {
    let pki = Pki::new();
    let up = Upstream::start();
    let inter = pki.root.intermediate("Test Issuing CA");
    let leaf = inter.issue(Leaf::client("via-intermediate"));
    let proxy = start(&pki, &up, "");
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&leaf)),
        "unknown_ca",
    );
}

#[test]
fn crl_revokes_one_client_and_not_its_sibling() {
    let pki = Pki::new();
    let up = Upstream::start();
    let sibling = pki.root.issue(Leaf::client("sibling"));
    std::fs::write(
        pki.path("crl.pem"),
        pki.root.crl(&[pki.client.serial], 1, -1, 7),
    )
    .unwrap();
    let proxy = start(&pki, &up, "crls = [\"crl.pem\"]");
    let line = assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&pki.client)),
        "revoked",
    );
    assert!(line.contains("CN=my-client"), "{line}");
    assert_accepted(&proxy, &up, &pki.root, ClientCert::leaf(&sibling));
}

#[test]
fn der_crl_loads_and_revokes() {
    let pki = Pki::new();
    let up = Upstream::start();
    let sibling = pki.root.issue(Leaf::client("sibling"));
    let der = pem_to_der(&pki.root.crl(&[pki.client.serial], 1, -1, 7));
    assert_eq!(der[0], 0x30, "a DER SEQUENCE");
    std::fs::write(pki.path("crl.der"), der).unwrap();
    let proxy = start(&pki, &up, "crls = [\"crl.der\"]");
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&pki.client)),
        "revoked",
    );
    assert_accepted(&proxy, &up, &pki.root, ClientCert::leaf(&sibling));
}

#[test]
fn intermediate_crl_revokes_a_client_of_the_intermediate() {
    let pki = Pki::new();
    let up = Upstream::start();
    let inter = pki.root.intermediate("Test Issuing CA");
    let bad = inter.issue(Leaf::client("bad"));
    let good = inter.issue(Leaf::client("good"));
    std::fs::write(pki.path("inter.crl"), inter.crl(&[bad.serial], 1, -1, 7)).unwrap();
    let proxy = start(&pki, &up, "crls = [\"inter.crl\"]");
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::with_chain(&bad, &[&inter])),
        "revoked",
    );
    assert_accepted(
        &proxy,
        &up,
        &pki.root,
        ClientCert::with_chain(&good, &[&inter]),
    );
}

#[test]
fn crl_past_next_update_rejects_its_issuers_clients() {
    let pki = Pki::new();
    let up = Upstream::start();
    // Revokes nothing, but went stale yesterday: fail closed.
    std::fs::write(pki.path("crl.pem"), pki.root.crl(&[], 1, -10, -1)).unwrap();
    let proxy = start(&pki, &up, "crls = [\"crl.pem\"]");
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&pki.client)),
        "revocation_unknown",
    );
}

/// The nginx/HAProxy trap: there, configuring one CA's CRL makes every client of every
/// other CA fail. Here a CRL only speaks for its own issuer.
#[test]
fn client_of_another_trusted_ca_without_crl_is_accepted() {
    let pki = Pki::new();
    let up = Upstream::start();
    let other = Ca::root("Other Trusted Root");
    trust_both(&pki, &other);
    let partner = other.issue(Leaf::client("partner"));
    std::fs::write(
        pki.path("crl.pem"),
        pki.root.crl(&[pki.client.serial], 1, -1, 7),
    )
    .unwrap();
    let proxy = start(&pki, &up, "crls = [\"crl.pem\"]");
    assert_accepted(&proxy, &up, &pki.root, ClientCert::leaf(&partner));
    // And the CRL is in force for its own issuer.
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&pki.client)),
        "revoked",
    );
}

#[test]
fn require_crl_refuses_a_client_whose_issuer_has_no_crl() {
    let pki = Pki::new();
    let up = Upstream::start();
    let other = Ca::root("Other Trusted Root");
    trust_both(&pki, &other);
    let partner = other.issue(Leaf::client("partner"));
    std::fs::write(pki.path("crl.pem"), pki.root.crl(&[], 1, -1, 7)).unwrap();
    let proxy = start(&pki, &up, "crls = [\"crl.pem\"]\nrequire_crl = true");
    let line = assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&partner)),
        "revocation_unknown",
    );
    assert!(line.contains("CN=partner"), "{line}");
    // A client whose issuer does have a CRL (that does not list it) still gets in.
    assert_accepted(&proxy, &up, &pki.root, ClientCert::leaf(&pki.client));
}
