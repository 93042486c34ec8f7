//! Trust you can see: `GET /trust` (the JSON document), the trust page `GET /` (rendered in
//! headless Chromium), the bearer token of the admin listener, and `mtls-shield status`,
//! against the real binary with a PKI made at test time.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::*;

/// The base config with `admin_extra` keys in `[admin]`, `client_auth_extra` in
/// `[client_auth]`, and `tables` appended.
fn config(
    pki: &Pki,
    up: &Upstream,
    admin_extra: &str,
    client_auth_extra: &str,
    tables: &str,
) -> PathBuf {
    let text = config_with(&up.url(), "", client_auth_extra, tables).replace(
        "[admin]\naddress = \"127.0.0.1:0\"",
        &format!("[admin]\naddress = \"127.0.0.1:0\"\n{admin_extra}"),
    );
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One request to the admin listener, with a bearer token when given: (status, body).
fn admin(proxy: &Proxy, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(proxy.admin.unwrap()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `GET /pets` as the client `cert`, which must be answered.
fn get_as(proxy: &Proxy, pki: &Pki, cert: &Issued) -> Got {
    block_request(
        proxy.addr,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(cert)),
        get("/pets"),
    )
    .unwrap()
}

fn trust(proxy: &Proxy) -> Value {
    let (status, body) = admin(proxy, "/trust", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn client_named<'a>(doc: &'a Value, cn: &str) -> Option<&'a Value> {
    doc["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["subject"].as_str().unwrap().contains(&format!("CN={cn}")))
}

#[test]
fn trust_lists_accepted_and_refused_clients_with_the_last_refusals() {
    let pki = Pki::new();
    let up = Upstream::start();
    let stranger = pki.root.issue(Leaf::client("stranger"));
    stranger.write(pki.dir.path(), "stranger");
    let proxy = Proxy::start(&config(
        &pki,
        &up,
        "",
        "",
        "[client_auth.allow]\ncommon_names = [\"my-client\"]\n",
    ));
    assert_eq!(get_as_client(&proxy, &pki, "/pets").status, 200);
    assert_eq!(get_as_client(&proxy, &pki, "/pets").status, 200);
    let (code, _, _) = curl_pki(
        &pki,
        Some(("stranger.pem", "stranger.key")),
        &[],
        &url(&proxy, "/pets"),
    );
    assert_ne!(code, 0);
    proxy.wait_log(&["handshake rejected", "not_allowed"]);
    let doc = trust(&proxy);
    let good = client_named(&doc, "my-client").expect("the accepted client is listed");
    assert_eq!(good["domain"], "client_auth");
    assert_eq!(good["connections"], 2);
    assert_eq!(good["requests"], 2);
    assert_eq!(good["accepted_now"], true);
    assert_eq!(good["fingerprint_sha256"], pki.client.fingerprint());
    assert!(good["last_refusal"].is_null());
    let bad = client_named(&doc, "stranger").expect("the refused client is listed");
    assert_eq!(bad["last_refusal"], "not_allowed");
    assert_eq!(bad["accepted_now"], false);
    let refusal = doc["refusals"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(refusal["reason"], "not_allowed");
    assert_eq!(refusal["fingerprint_sha256"], stranger.fingerprint());
    assert!(refusal["subject"].as_str().unwrap().contains("CN=stranger"));
    assert!(refusal["explain"]
        .as_str()
        .unwrap()
        .contains("matches no entry of [client_auth.allow]"));
}

#[test]
fn trust_shows_the_generation_and_the_reloads_after_a_sighup() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&config(&pki, &up, "", "", ""));
    assert_eq!(trust(&proxy)["generation"]["id"], 1);
    proxy.signal("HUP");
    proxy.wait_log(&["reload complete"]);
    let doc = trust(&proxy);
    assert_eq!(doc["generation"]["id"], 2);
    assert_eq!(doc["generation"]["cause"], "SIGHUP");
    let reloads = doc["reloads"].as_array().unwrap();
    assert_eq!(reloads.len(), 2);
    assert_eq!(reloads[0]["cause"], "start");
    assert_eq!(reloads[1]["outcome"], "ok");
    let anchor = &doc["trust_domains"][0]["anchors"][0];
    assert!(anchor["subject"].as_str().unwrap().contains("Test Root CA"));
    assert_eq!(anchor["spki_sha256"].as_str().unwrap().len(), 64);
    assert!(doc["server_certificates"][0]["days_left"].as_i64().unwrap() > 300);
}

#[test]
fn trust_shows_a_fetched_crl_and_its_url() {
    let pki = Pki::new();
    let up = Upstream::start();
    let crl = CrlServer::start();
    crl.put("/ca.crl", pki.root.crl(&[], 7, -1, 7));
    let keys = format!(
        "crl_urls = [\"{}\"]\ncrl_refresh = \"1s\"",
        crl.url("/ca.crl")
    );
    let proxy = Proxy::start(&config(&pki, &up, "", &keys, ""));
    wait_until("the URL to have answered", DEADLINE, || {
        trust(&proxy)["trust_domains"][0]["crl_urls"][0]["last_success"].is_string()
    });
    let doc = trust(&proxy);
    let url = &doc["trust_domains"][0]["crl_urls"][0];
    assert_eq!(url["url"], crl.url("/ca.crl"));
    assert!(url["next_fetch"].is_string());
    let crls = doc["trust_domains"][0]["crls"].as_array().unwrap();
    let fetched = crls
        .iter()
        .find(|c| c["source"] == crl.url("/ca.crl"))
        .expect("the fetched CRL");
    assert_eq!(fetched["number"], "7");
    assert_eq!(fetched["in_use"], true);
}

#[test]
fn the_inventory_keeps_at_most_inventory_max_certificates_oldest_out_first() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&config(&pki, &up, "inventory_max = 2", "", ""));
    for cn in ["first", "second", "third"] {
        let c = pki.root.issue(Leaf::client(cn));
        let got = get_as(&proxy, &pki, &c);
        assert_eq!(got.status, 200);
    }
    let doc = trust(&proxy);
    let names: Vec<&str> = doc["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(client_named(&doc, "first").is_none(), "{names:?}");
    assert!(client_named(&doc, "third").is_some(), "{names:?}");
    assert_eq!(proxy.metric("mtls_shield_clients_seen"), 2.0);
}

/// A client whose CN is markup and a quote.
const HOSTILE: &str = "<script>alert(1)</script>\"'&";

#[test]
fn a_hostile_subject_is_escaped_in_json_and_in_html() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&config(&pki, &up, "", "", ""));
    let c = pki.root.issue(Leaf::client(HOSTILE));
    get_as(&proxy, &pki, &c);
    let doc = trust(&proxy);
    let subjects: Vec<&str> = doc["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    // RFC 2253 escapes `<`, `>` and `"` with a backslash; the JSON keeps that text as it is.
    assert!(
        subjects
            .iter()
            .any(|s| s.contains(r#"CN=\<script\>alert(1)\</script\>\"'&"#)),
        "the JSON keeps the subject as text: {subjects:?}"
    );
    let (status, page) = admin(&proxy, "/", None);
    assert_eq!(status, 200);
    assert!(!page.contains("<script\\>"), "markup reached the page");
    assert!(
        !page.contains("'&,"),
        "a quote or ampersand reached the page unescaped"
    );
    assert!(
        page.contains(r"CN=\&lt;script\&gt;alert(1)\&lt;/script\&gt;\&quot;&#39;&amp;"),
        "{page}"
    );
}

/// A shield whose admin listener wants `token`: the PKI (with `admin.token`), the upstream,
/// the proxy.
fn guarded(token: &str) -> (Pki, Upstream, Proxy) {
    let pki = Pki::new();
    let up = Upstream::start();
    std::fs::write(pki.path("admin.token"), format!("{token}\n")).unwrap();
    let path = config(&pki, &up, "bearer_token_file = \"admin.token\"", "", "");
    let proxy = Proxy::start(&path);
    (pki, up, proxy)
}

#[test]
fn with_a_bearer_token_trust_page_and_metrics_need_it_and_probes_do_not() {
    let (_pki, _up, proxy) = guarded("s3cret-token");
    for path in ["/trust", "/", "/metrics"] {
        assert_eq!(admin(&proxy, path, None).0, 401, "{path} without a token");
        assert_eq!(
            admin(&proxy, path, Some("wrong")).0,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            admin(&proxy, path, Some("s3cret-token")).0,
            200,
            "{path} with the token"
        );
    }
    assert_eq!(admin(&proxy, "/healthz", None).0, 200);
    assert_eq!(admin(&proxy, "/readyz", None).0, 200);
}

#[test]
fn an_empty_bearer_token_file_is_refused_at_start() {
    let pki = Pki::new();
    let up = Upstream::start();
    std::fs::write(pki.path("admin.token"), "\n").unwrap();
    let path = config(&pki, &up, "bearer_token_file = \"admin.token\"", "", "");
    let err = Proxy::try_start(&path).err().expect("must not start");
    assert!(
        err.contains("admin.token") && err.contains("empty"),
        "{err}"
    );
}

fn status(proxy: &Proxy, extra: &[&str]) -> (i32, String) {
    let admin = proxy.admin.unwrap().to_string();
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["status".as_ref(), "--admin".as_ref(), admin.as_ref()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let out = shield_cmd(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn status_exits_0_when_nothing_needs_attention() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&config(&pki, &up, "", "", ""));
    get_as_client(&proxy, &pki, "/pets");
    let (code, out) = status(&proxy, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("generation 1 loaded"), "{out}");
    assert!(out.contains("clients seen: 1"), "{out}");
    assert!(!out.contains("ATTENTION"), "{out}");
}

#[test]
fn status_exits_2_naming_a_client_certificate_that_expires_within_a_week() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&config(&pki, &up, "", "", ""));
    let short = pki
        .root
        .issue(Leaf::client("short-lived").valid_days(-1, 3));
    get_as(&proxy, &pki, &short);
    let (code, out) = status(&proxy, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("ATTENTION: client_auth certificate CN=short-lived"),
        "{out}"
    );
    assert_eq!(
        proxy.metric("mtls_shield_clients_expiring{within=\"7d\"}"),
        1.0
    );
}

#[test]
fn status_exits_1_when_the_admin_listener_cannot_be_reached() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let admin = format!("127.0.0.1:{port}");
    let out = shield_cmd(&["status".as_ref(), "--admin".as_ref(), admin.as_ref()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin listener"));
}

#[test]
fn status_with_a_token_file_reads_a_guarded_admin_listener() {
    let (pki, _up, proxy) = guarded("s3cret-token");
    let (code, out) = status(&proxy, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--token-file"), "{out}");
    let token = pki.path("admin.token");
    let (code, out) = status(&proxy, &["--token-file", token.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

/// Headless Chromium with the flags this machine needs (no sandbox as root, no background
/// networking: the network is closed), a fresh profile.
fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium is installed (.ci/run installs it)")
}

#[test]
fn the_trust_page_renders_in_a_real_browser_with_its_rows_and_warnings() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&config(
        &pki,
        &up,
        "",
        "",
        "[client_auth.allow]\ncommon_names = [\"my-client\", \"short-lived\"]\n",
    ));
    get_as_client(&proxy, &pki, "/pets");
    let short = pki
        .root
        .issue(Leaf::client("short-lived").valid_days(-1, 3));
    get_as(&proxy, &pki, &short);
    let stranger = pki.root.issue(Leaf::client("stranger"));
    stranger.write(pki.dir.path(), "stranger");
    curl_pki(
        &pki,
        Some(("stranger.pem", "stranger.key")),
        &[],
        &url(&proxy, "/pets"),
    );
    proxy.wait_log(&["handshake rejected", "not_allowed"]);
    let page = format!("http://{}/", proxy.admin.unwrap());
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path(), &["--dump-dom", &page]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The rows and warnings, as the browser built the DOM.
    assert!(dom.contains("id=\"health\""), "{dom}");
    assert!(dom.contains(">ready<"), "{dom}");
    assert!(
        dom.contains("ATTENTION: client_auth certificate CN=short-lived"),
        "{dom}"
    );
    assert!(
        dom.contains("expires in 3 days") || dom.contains("expires in 2 days"),
        "{dom}"
    );
    assert!(dom.contains("CN=my-client"), "{dom}");
    assert!(dom.contains("not_allowed"), "{dom}");
    assert!(
        dom.contains(
            "the chain verifies, but the certificate matches no entry of [client_auth.allow]"
        ),
        "{dom}"
    );
    assert!(dom.contains("Test Root CA"), "{dom}");
    // A screenshot for a person to look at, kept under target/.
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/trust-page.png");
    let out = chromium(
        profile.path(),
        &[
            "--window-size=1400,1600",
            &format!("--screenshot={}", shot.display()),
            &page,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}

#[test]
fn a_new_bearer_token_applies_after_a_reload() {
    let pki = Pki::new();
    let up = Upstream::start();
    std::fs::write(pki.path("admin.token"), "first-token\n").unwrap();
    let proxy = Proxy::start(&config(
        &pki,
        &up,
        "bearer_token_file = \"admin.token\"",
        "",
        "",
    ));
    assert_eq!(admin(&proxy, "/trust", Some("first-token")).0, 200);
    std::fs::write(pki.path("admin.token"), "second-token\n").unwrap();
    proxy.signal("HUP");
    proxy.wait_log(&["reload complete"]);
    assert_eq!(admin(&proxy, "/trust", Some("first-token")).0, 401);
    assert_eq!(admin(&proxy, "/trust", Some("second-token")).0, 200);
}
