//! Partitioned CRLs, as AWS Private CA publishes them: one issuer, several CRLs, each with a
//! critical issuingDistributionPoint naming its partition, and client certificates with
//! 16-byte serials whose cRLDistributionPoints name the partition that covers them. Every
//! partition is in force at once, whatever the order of the files or URLs.
use crate::common::*;

const P1: &str = "http://pca.example/crl/part-1.crl";
const P2: &str = "http://pca.example/crl/part-2.crl";

/// A client of `pki.root` in the partition `url`, written as `<name>.pem/.key`.
fn client_in(pki: &Pki, name: &str, url: &str) -> Issued {
    let c = pki.root.issue(Leaf::client(name).crl_dp(url).pca_serial());
    c.write(pki.dir.path(), name);
    c
}

fn curl_as(pki: &Pki, proxy: &Proxy, name: &str) -> (i32, Vec<u8>, String) {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    curl_pki(pki, Some((&cert, &key)), &[], &url(proxy, "/pets"))
}

fn assert_revoked(pki: &Pki, proxy: &Proxy, up: &Upstream, name: &str) {
    let hits = up.hits();
    let (code, body, _) = curl_as(pki, proxy, name);
    assert_ne!(
        code,
        0,
        "{name} was served: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(body.is_empty(), "{name} received HTTP bytes");
    proxy.wait_log(&[
        "handshake rejected",
        "reason=\"revoked\"",
        &format!("CN={name}"),
    ]);
    assert_eq!(up.hits(), hits, "the upstream saw {name}");
}

fn assert_served(pki: &Pki, proxy: &Proxy, name: &str) {
    let (code, body, err) = curl_as(pki, proxy, name);
    assert_eq!(code, 0, "{name} was refused: {err}");
    assert_eq!(String::from_utf8_lossy(&body), mtls_shield::demo::PETS);
}

#[test]
fn each_partition_revokes_its_own_clients_whatever_the_file_order() {
    let pki = Pki::new();
    let up = Upstream::start();
    let revoked_1 = client_in(&pki, "revoked-one", P1);
    let revoked_2 = client_in(&pki, "revoked-two", P2);
    client_in(&pki, "good-two", P2);
    std::fs::write(
        pki.path("part-1.crl"),
        pki.root.partition_crl(&[&revoked_1], 8, P1),
    )
    .unwrap();
    std::fs::write(
        pki.path("part-2.crl"),
        pki.root.partition_crl(&[&revoked_2], 3, P2),
    )
    .unwrap();
    for order in [
        r#"["part-1.crl", "part-2.crl"]"#,
        r#"["part-2.crl", "part-1.crl"]"#,
    ] {
        let config = pki.path("mtls-shield.toml");
        std::fs::write(
            &config,
            config_with(&up.url(), "", &format!("crls = {order}"), ""),
        )
        .unwrap();
        let proxy = Proxy::start(&config);
        assert_revoked(&pki, &proxy, &up, "revoked-one");
        assert_revoked(&pki, &proxy, &up, "revoked-two");
        assert_served(&pki, &proxy, "good-two");
    }
}

#[test]
fn fetched_partitions_are_all_in_force() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    let revoked_2 = client_in(&pki, "fetched-revoked", P2);
    client_in(&pki, "fetched-good", P1);
    crl.put("/part-1.crl", pki.root.partition_crl(&[], 11, P1));
    crl.put("/part-2.crl", pki.root.partition_crl(&[&revoked_2], 4, P2));
    let client_auth = format!(
        "crl_urls = [\"{}\", \"{}\"]\nrequire_crl = true",
        crl.url("/part-1.crl"),
        crl.url("/part-2.crl")
    );
    let config = pki.path("mtls-shield.toml");
    std::fs::write(&config, config_with(&up.url(), "", &client_auth, "")).unwrap();
    let proxy = Proxy::start(&config);
    wait_until("/readyz to answer 200", DEADLINE, || {
        proxy.admin_get("/readyz").0 == 200
    });
    assert_revoked(&pki, &proxy, &up, "fetched-revoked");
    assert_served(&pki, &proxy, "fetched-good");
}

#[test]
fn a_client_whose_partition_has_no_crl_is_refused_under_require_crl() {
    let pki = Pki::new();
    let up = Upstream::start();
    client_in(&pki, "in-loaded", P1);
    client_in(&pki, "in-missing", P2);
    std::fs::write(pki.path("part-1.crl"), pki.root.partition_crl(&[], 2, P1)).unwrap();
    let config = pki.path("mtls-shield.toml");
    let client_auth = "crls = [\"part-1.crl\"]\nrequire_crl = true";
    std::fs::write(&config, config_with(&up.url(), "", client_auth, "")).unwrap();
    let proxy = Proxy::start(&config);
    assert_served(&pki, &proxy, "in-loaded");
    let (code, body, _) = curl_as(&pki, &proxy, "in-missing");
    assert_ne!(code, 0);
    assert!(body.is_empty());
    let line = proxy.wait_log(&[
        "handshake rejected",
        "reason=\"revocation_unknown\"",
        "CN=in-missing",
    ]);
    assert!(line.contains(P2), "the detail names the partition: {line}");
}

#[test]
fn check_lists_partitions_by_scope_and_supersedes_only_within_one() {
    let pki = Pki::new();
    let up = Upstream::start();
    std::fs::write(pki.path("part-1.crl"), pki.root.partition_crl(&[], 5, P1)).unwrap();
    std::fs::write(
        pki.path("part-1-old.crl"),
        pki.root.partition_crl(&[], 4, P1),
    )
    .unwrap();
    std::fs::write(pki.path("part-2.crl"), pki.root.partition_crl(&[], 1, P2)).unwrap();
    let config = pki.path("mtls-shield.toml");
    let client_auth = r#"crls = ["part-1-old.crl", "part-2.crl", "part-1.crl"]"#;
    std::fs::write(&config, config_with(&up.url(), "", client_auth, "")).unwrap();
    let out = shield_cmd(&["check".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("scope partition {P1}")), "{text}");
    assert!(text.contains(&format!("scope partition {P2}")), "{text}");
    let superseded: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("crl_superseded"))
        .collect();
    assert_eq!(superseded.len(), 1, "{text}");
    assert!(superseded[0].contains("part-1-old.crl"), "{text}");
}
