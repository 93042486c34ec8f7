//! CRLs fetched by the shield itself (issue 14, part 2), against a CRL server of the test's own
//! on loopback that serves files the test changes.
use crate::common::*;

use std::ffi::OsStr;
use std::path::PathBuf;

const PATH: &str = "/root.crl";

fn fetch_metric(crl: &CrlServer, result: &str) -> String {
    format!(
        "mtls_shield_crl_fetch_total{{url=\"{}\",result=\"{result}\"}}",
        crl.url(PATH)
    )
}

/// A config fetching `crl.url(PATH)` every `refresh`, with more `client_auth` keys.
fn write_config(pki: &Pki, up: &Upstream, crl: &CrlServer, refresh: &str, more: &str) -> PathBuf {
    let path = pki.path("mtls-shield.toml");
    let client_auth = format!(
        "crl_urls = [\"{}\"]\ncrl_refresh = \"{refresh}\"\ncrl_fetch_timeout = \"2s\"\n{more}",
        crl.url(PATH)
    );
    std::fs::write(&path, config_with(&up.url(), "", &client_auth, "")).unwrap();
    path
}

fn wait_ready(proxy: &Proxy) {
    wait_until("/readyz to answer 200", DEADLINE, || {
        proxy.admin_get("/readyz").0 == 200
    });
}

fn pets() -> (u16, String) {
    (200, mtls_shield::demo::PETS.to_owned())
}

/// `cert` is refused at the handshake with `reason`.
fn assert_handshake_refused(proxy: &Proxy, up: &Upstream, pki: &Pki, cert: &Issued, reason: &str) {
    assert_refused(
        proxy,
        up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(cert)),
        reason,
    );
}

#[test]
fn a_revocation_in_a_fetched_crl_reaches_an_open_connection_within_one_refresh() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put(PATH, pki.root.crl(&[], 1, -1, 7));
    let sibling = pki.root.issue(Leaf::client("sibling"));
    let proxy = Proxy::start(&write_config(&pki, &up, &crl, "1s", ""));
    wait_ready(&proxy);
    let mut open = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    let mut kept = KeepAlive::open(proxy.addr, &pki.root, &sibling);
    assert_eq!(open.get("/pets").unwrap(), pets());

    crl.put(PATH, pki.root.crl(&[pki.client.serial], 2, -1, 7));
    assert!(
        open.wait_closed(DEADLINE),
        "the revoked connection stayed open"
    );
    let hits = up.hits();
    assert!(open.get("/pets").is_err());
    assert_eq!(up.hits(), hits);
    proxy.wait_log(&["open connection no longer trusted", "reason=\"revoked\""]);
    assert!(proxy.metric(&fetch_metric(&crl, "updated")) >= 2.0);
    assert_eq!(kept.get("/pets").unwrap(), pets());
    assert_handshake_refused(&proxy, &up, &pki, &pki.client, "revoked");
}

#[test]
fn an_unchanged_crl_is_asked_for_conditionally_and_counted_as_not_modified() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put(PATH, pki.root.crl(&[], 1, -1, 7));
    let proxy = Proxy::start(&write_config(&pki, &up, &crl, "1s", ""));
    wait_until("a 304 to be counted", DEADLINE, || {
        proxy.metric(&fetch_metric(&crl, "not_modified")) >= 1.0
    });
    let requests = crl.requests(PATH);
    assert!(requests[0].is_none(), "the first request is unconditional");
    assert!(
        requests
            .iter()
            .skip(1)
            .all(|inm| inm.as_deref().is_some_and(|v| v.starts_with('"'))),
        "later requests carry If-None-Match: {requests:?}"
    );
    assert_eq!(proxy.metric(&fetch_metric(&crl, "updated")), 1.0);
    let success = format!(
        "mtls_shield_crl_last_success_timestamp_seconds{{url=\"{}\"}}",
        crl.url(PATH)
    );
    assert!(proxy.metric(&success) > 1.7e9, "{}", proxy.metric(&success));
}

#[test]
fn a_crl_server_that_is_down_keeps_the_last_good_crl() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put(PATH, pki.root.crl(&[pki.client.serial], 1, -1, 7));
    let sibling = pki.root.issue(Leaf::client("sibling"));
    let proxy = Proxy::start(&write_config(&pki, &up, &crl, "1s", ""));
    wait_ready(&proxy);
    crl.set_mode(CrlMode::Unavailable);
    wait_until("a failed fetch", DEADLINE, || {
        proxy.metric(&fetch_metric(&crl, "failure")) >= 1.0
    });
    proxy.wait_log(&["CRL fetch failed", "503"]);
    assert_handshake_refused(&proxy, &up, &pki, &pki.client, "revoked");
    assert_eq!(
        block_request(
            proxy.addr,
            &pki.root,
            &ClientOpts::with(ClientCert::leaf(&sibling)),
            get("/pets")
        )
        .unwrap()
        .status,
        200
    );
    assert_eq!(
        proxy.admin_get("/readyz").0,
        200,
        "a CRL in force keeps it ready"
    );
}

#[test]
fn a_fetched_crl_with_a_bad_signature_is_refused_and_the_old_one_stays() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put(PATH, pki.root.crl(&[pki.client.serial], 1, -1, 7));
    let proxy = Proxy::start(&write_config(&pki, &up, &crl, "1s", ""));
    wait_ready(&proxy);
    // Same issuer name, another key: a forged CRL that would un-revoke the client.
    let forger = Ca::root(&pki.root.name);
    crl.put(PATH, forger.crl(&[], 9, -1, 7));
    let line = proxy.wait_log(&["fetched CRL refused", "signed by another key"]);
    assert!(line.contains(&crl.url(PATH)), "{line}");
    assert!(proxy.metric(&fetch_metric(&crl, "failure")) >= 1.0);
    assert_handshake_refused(&proxy, &up, &pki, &pki.client, "revoked");
}

#[test]
fn a_fetched_crl_with_a_lower_number_is_refused_as_a_rollback() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put(PATH, pki.root.crl(&[pki.client.serial], 5, -1, 7));
    let proxy = Proxy::start(&write_config(&pki, &up, &crl, "1s", ""));
    wait_ready(&proxy);
    crl.put(PATH, pki.root.crl(&[], 3, -1, 7));
    proxy.wait_log(&["fetched CRL refused", "rollback"]);
    assert_handshake_refused(&proxy, &up, &pki, &pki.client, "revoked");
}

#[test]
fn a_stale_crl_with_no_fresh_one_fails_closed() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put(
        PATH,
        pki.root.crl_until(&[], 1, -1, time::Duration::seconds(3)),
    );
    let proxy = Proxy::start(&write_config(&pki, &up, &crl, "1h", ""));
    wait_ready(&proxy);
    let mut open = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    assert_eq!(open.get("/pets").unwrap(), pets());
    crl.set_mode(CrlMode::Unavailable);
    // Past nextUpdate, with no fresher CRL: the open connection is closed, new handshakes of
    // that issuer's clients are refused, and readiness says why.
    assert!(
        open.wait_closed(DEADLINE),
        "the connection outlived its CRL"
    );
    proxy.wait_log(&[
        "open connection no longer trusted",
        "reason=\"revocation_unknown\"",
    ]);
    assert_handshake_refused(&proxy, &up, &pki, &pki.client, "revocation_unknown");
    let (status, body) = proxy.admin_get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&crl.url(PATH)), "{body}");
}

#[test]
fn the_cache_dir_serves_a_restart_while_the_crl_server_is_down() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put(PATH, pki.root.crl(&[pki.client.serial], 1, -1, 7));
    let cache = pki.path("crl-cache");
    let config = write_config(
        &pki,
        &up,
        &crl,
        "1h",
        &format!("crl_cache_dir = \"{}\"", cache.display()),
    );
    {
        let proxy = Proxy::start(&config);
        wait_ready(&proxy);
        assert_handshake_refused(&proxy, &up, &pki, &pki.client, "revoked");
    }
    crl.set_mode(CrlMode::Unavailable);
    let proxy = Proxy::start(&config);
    proxy.wait_log(&["CRL read from the cache dir"]);
    wait_ready(&proxy);
    assert_handshake_refused(&proxy, &up, &pki, &pki.client, "revoked");
}

#[test]
fn readyz_stays_503_until_the_first_crl_arrives() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.set_mode(CrlMode::Unavailable);
    let proxy = Proxy::start(&write_config(&pki, &up, &crl, "1s", ""));
    wait_until("a failed fetch", DEADLINE, || {
        proxy.metric(&fetch_metric(&crl, "failure")) >= 1.0
    });
    let (status, body) = proxy.admin_get("/readyz");
    assert_eq!(status, 503);
    assert!(
        body.contains("waiting for a first usable CRL") && body.contains(&crl.url(PATH)),
        "{body}"
    );
    crl.put(PATH, pki.root.crl(&[], 1, -1, 7));
    crl.set_mode(CrlMode::Serve);
    wait_ready(&proxy);
}

#[test]
fn check_fetches_each_crl_url_once_and_reports_it() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put(PATH, pki.root.crl(&[pki.client.serial], 4, -1, 7));
    let config = write_config(&pki, &up, &crl, "1h", "");
    let out = shield_cmd(&["check".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("CRL URL {}:", crl.url(PATH))))
        .unwrap_or_else(|| panic!("no CRL URL line:\n{stdout}"));
    assert!(
        line.contains("number 4") && line.contains("1 revoked"),
        "{line}"
    );
    assert_eq!(crl.requests(PATH).len(), 1);

    crl.set_mode(CrlMode::Unavailable);
    let out = shield_cmd(&["check".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "an unreachable URL is a warning: {stdout}"
    );
    assert!(stdout.contains("warning: crl_url_unusable"), "{stdout}");
}

#[test]
fn verify_uses_the_crls_the_running_state_would_use() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put(PATH, pki.root.crl(&[pki.client.serial], 4, -1, 7));
    let config = write_config(&pki, &up, &crl, "1h", "");
    let (cert, _) = pki.client.write(pki.dir.path(), "revoked-client");
    let out = shield_cmd(&[
        OsStr::new("verify"),
        OsStr::new("--config"),
        config.as_os_str(),
        cert.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("result: refused: revoked"), "{stdout}");
}

#[test]
fn a_distribution_point_crl_reaches_the_connections_of_its_clients() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    let client = pki
        .root
        .issue(Leaf::client("dp-client").crl_dp(&crl.url(PATH)));
    // First a CRL that revokes nobody, so the first request cannot race the fetch.
    crl.put(PATH, pki.root.crl(&[], 1, -1, 7));
    let path = pki.path("mtls-shield.toml");
    std::fs::write(
        &path,
        config_with(
            &up.url(),
            "",
            "crl_from_distribution_points = true\ncrl_refresh = \"1s\"",
            "",
        ),
    )
    .unwrap();
    let proxy = Proxy::start(&path);
    // The first connection is accepted: the CRL is fetched after the chain verified, never on
    // the handshake path. When it arrives, it applies to the connection already open.
    let mut open = KeepAlive::open(proxy.addr, &pki.root, &client);
    assert_eq!(open.get("/pets").unwrap(), pets());
    crl.put(PATH, pki.root.crl(&[client.serial], 2, -1, 7));
    assert!(
        open.wait_closed(DEADLINE),
        "the distribution point's CRL never applied"
    );
    proxy.wait_log(&["open connection no longer trusted", "reason=\"revoked\""]);
    assert_handshake_refused(&proxy, &up, &pki, &client, "revoked");
}

/// A CA that republishes within the second its CRL was fetched, behind a server whose only
/// validator is a one-second `Last-Modified` (Python's `http.server`): the revocation must
/// still arrive. With `If-Modified-Since` sent from that weak validator, every later answer
/// would be a 304 and the client would be served for ever.
#[test]
fn a_crl_republished_within_the_same_second_is_still_fetched() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    // The same Last-Modified for both CRLs: the second one was written in the same second.
    crl.last_modified_only(std::time::SystemTime::now());
    crl.put(PATH, pki.root.crl(&[], 1, -1, 7));
    let proxy = Proxy::start(&write_config(&pki, &up, &crl, "1s", ""));
    wait_ready(&proxy);
    let mut open = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    assert_eq!(open.get("/pets").unwrap(), pets());

    crl.put(PATH, pki.root.crl(&[pki.client.serial], 2, -1, 7));
    assert!(
        open.wait_closed(DEADLINE),
        "the revocation never arrived: the CRL was never fetched again"
    );
    assert_handshake_refused(&proxy, &up, &pki, &pki.client, "revoked");
    // No 304 was ever asked for, so none is counted; refetches of the same bytes are
    // `unchanged`, not `not_modified`.
    assert_eq!(proxy.metric(&fetch_metric(&crl, "not_modified")), 0.0);
    wait_until("an unchanged refetch to be counted", DEADLINE, || {
        proxy.metric(&fetch_metric(&crl, "unchanged")) >= 1.0
    });
}
