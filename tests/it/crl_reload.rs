//! Every `client_auth.crl_*` key takes effect on reload (issue 20, part 3): a URL added by a
//! reload is fetched at once and its revocations reach open connections; a URL removed stops
//! counting. Before, the fetcher was built once at start-up and a reload changed nothing.
use crate::common::*;

use std::path::PathBuf;

const PATH: &str = "/added.crl";
const SUCCESS: &str = "mtls_shield_reloads_total{result=\"success\"}";

fn write_config(pki: &Pki, up: &Upstream, client_auth: &str) -> PathBuf {
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, config_with(&up.url(), "", client_auth, "")).unwrap();
    path
}

fn urls(crl: &CrlServer) -> String {
    format!(
        "crl_urls = [\"{}\"]\ncrl_refresh = \"1s\"\ncrl_fetch_timeout = \"2s\"",
        crl.url(PATH)
    )
}

fn pets() -> (u16, String) {
    (200, mtls_shield::demo::PETS.to_owned())
}

#[test]
fn a_crl_url_added_by_reload_is_fetched_and_closes_the_revoked_open_connection() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put(PATH, pki.root.crl(&[pki.client.serial], 3, -1, 7));
    let sibling = pki.root.issue(Leaf::client("sibling"));
    let proxy = Proxy::start(&write_config(&pki, &up, ""));
    let mut open = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    let mut kept = KeepAlive::open(proxy.addr, &pki.root, &sibling);
    assert_eq!(open.get("/pets").unwrap(), pets());

    write_config(&pki, &up, &urls(&crl));
    proxy.signal("HUP");
    wait_until("one successful reload", DEADLINE, || {
        proxy.metric(SUCCESS) >= 1.0
    });
    proxy.wait_log(&["CRL URL added by reload", PATH]);
    assert!(
        open.wait_closed(DEADLINE),
        "the revoked connection stayed open"
    );
    assert!(!crl.requests(PATH).is_empty());
    assert_eq!(kept.get("/pets").unwrap(), pets());
    assert_refused(
        &proxy,
        &up,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&pki.client)),
        "revoked",
    );
    assert_eq!(
        proxy.admin_get("/readyz").0,
        200,
        "a URL added by reload does not gate readiness"
    );
}

#[test]
fn a_url_added_by_reload_that_never_answers_leaves_readiness_as_it_was() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.set_mode(CrlMode::Unavailable);
    let proxy = Proxy::start(&write_config(&pki, &up, ""));
    assert_eq!(proxy.admin_get("/readyz").0, 200);
    write_config(&pki, &up, &urls(&crl));
    proxy.signal("HUP");
    proxy.wait_log(&["CRL fetch failed", PATH]);
    let waiting = format!(
        "mtls_shield_crl_last_success_timestamp_seconds{{url=\"{}\"}}",
        crl.url(PATH)
    );
    assert_eq!(
        proxy.metric(&waiting),
        0.0,
        "the metric shows it never delivered"
    );
    assert_eq!(proxy.admin_get("/readyz").0, 200);
}

#[test]
fn a_crl_url_removed_by_reload_no_longer_revokes_and_is_no_longer_fetched() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put(PATH, pki.root.crl(&[pki.client.serial], 3, -1, 7));
    let proxy = Proxy::start(&write_config(&pki, &up, &urls(&crl)));
    wait_until("/readyz to answer 200", DEADLINE, || {
        proxy.admin_get("/readyz").0 == 200
    });
    let opts = ClientOpts::with(ClientCert::leaf(&pki.client));
    assert_refused(&proxy, &up, &pki.root, &opts, "revoked");

    write_config(&pki, &up, "");
    proxy.signal("HUP");
    wait_until("one successful reload", DEADLINE, || {
        proxy.metric(SUCCESS) >= 1.0
    });
    proxy.wait_log(&["CRL URL removed by reload", PATH]);
    let got = block_request(proxy.addr, &pki.root, &opts, get("/pets")).unwrap();
    assert_eq!(got.status, 200);
    // Its series is gone with it, and no fetch of it is counted any more.
    let series = format!("mtls_shield_crl_fetch_total{{url=\"{}\"", crl.url(PATH));
    assert!(
        !proxy.admin_get("/metrics").1.contains(&series),
        "the removed URL still has fetch series"
    );
}
