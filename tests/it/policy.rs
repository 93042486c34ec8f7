//! Who may do what (issue 13): the report-only candidate policy, CA-name hiding, the Host/SNI
//! check and the readiness of named upstreams. Routes are in tests/it/routes.rs.
use crate::common::*;

use std::ffi::OsStr;
use std::path::PathBuf;

fn write(pki: &Pki, up: &str, listener: &str, client_auth: &str, tables: &str) -> PathBuf {
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, config_with(up, listener, client_auth, tables)).unwrap();
    path
}

fn pin(certs: &[&Issued]) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|c| format!("\"{}\"", c.fingerprint()))
        .collect();
    format!("fingerprints_sha256 = [{}]", list.join(", "))
}

fn report_metric(enforced: &str, candidate: &str, reason: &str) -> String {
    format!(
        "mtls_shield_report_only_total{{enforced=\"{enforced}\",candidate=\"{candidate}\",reason=\"{reason}\"}}"
    )
}

fn get_as(proxy: &Proxy, pki: &Pki, cert: &Issued) -> Result<Got, String> {
    block_request(
        proxy.addr,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(cert)),
        get("/pets"),
    )
}

/// Enforced: the client's pin. Candidate: `candidate` pins.
fn start_report_only(pki: &Pki, up: &Upstream, candidate: &[&Issued]) -> Proxy {
    let tables = format!(
        "[client_auth.allow]\n{}\n[client_auth.report_only.allow]\n{}\n",
        pin(&[&pki.client]),
        pin(candidate)
    );
    Proxy::start(&write(pki, &up.url(), "", "", &tables))
}

#[test]
fn a_candidate_that_would_refuse_is_counted_and_logged_while_the_client_is_served() {
    let pki = Pki::new();
    let up = Upstream::start();
    let new_cert = pki.root.issue(Leaf::client("new-cloudfront"));
    let proxy = start_report_only(&pki, &up, &[&new_cert]);
    assert_eq!(get_as(&proxy, &pki, &pki.client).unwrap().status, 200);
    assert_eq!(up.hits(), 1, "enforcement is unchanged");
    wait_until("the report-only count", DEADLINE, || {
        proxy.metric(&report_metric("accepted", "rejected", "not_allowed")) == 1.0
    });
    let line = proxy.wait_log(&["report-only policy disagrees"]);
    assert!(
        line.contains("enforced=\"accepted\"")
            && line.contains("candidate=\"rejected\"")
            && line.contains("candidate_reason=\"not_allowed\"")
            && line.contains(&format!("fingerprint={}", pki.client.fingerprint())),
        "{line}"
    );
}

#[test]
fn a_candidate_that_would_accept_is_counted_and_a_refused_client_it_would_let_in_is_logged() {
    let pki = Pki::new();
    let up = Upstream::start();
    let new_cert = pki.root.issue(Leaf::client("new-cloudfront"));
    let proxy = start_report_only(&pki, &up, &[&pki.client, &new_cert]);
    assert_eq!(get_as(&proxy, &pki, &pki.client).unwrap().status, 200);
    wait_until("the agreeing count", DEADLINE, || {
        proxy.metric(&report_metric("accepted", "accepted", "none")) == 1.0
    });
    // The new certificate is still refused by the enforced policy; the candidate would let it
    // in: that is the disagreement an operator promotes the pin on.
    assert!(get_as(&proxy, &pki, &new_cert).is_err());
    assert_eq!(up.hits(), 1);
    wait_until("the disagreeing count", DEADLINE, || {
        proxy.metric(&report_metric("rejected", "accepted", "none")) == 1.0
    });
    let line = proxy.wait_log(&["report-only policy disagrees", "CN=new-cloudfront"]);
    assert!(line.contains("enforced_reason=\"not_allowed\""), "{line}");
    assert!(
        !proxy
            .logs()
            .iter()
            .any(|l| l.contains("report-only policy disagrees") && l.contains("CN=my-client")),
        "agreeing verdicts are not logged"
    );
}

#[test]
fn a_candidate_truststore_is_judged_beside_the_enforced_one() {
    let pki = Pki::new();
    let up = Upstream::start();
    let new_root = Ca::root("Next Root CA");
    std::fs::write(pki.path("next-truststore.pem"), new_root.pem()).unwrap();
    let tables = "[client_auth.report_only]\ntruststore = \"next-truststore.pem\"\n";
    let proxy = Proxy::start(&write(&pki, &up.url(), "", "", tables));
    assert_eq!(get_as(&proxy, &pki, &pki.client).unwrap().status, 200);
    wait_until("the candidate's unknown_ca", DEADLINE, || {
        proxy.metric(&report_metric("accepted", "rejected", "unknown_ca")) == 1.0
    });
}

#[test]
fn verify_report_only_prints_both_verdicts() {
    let pki = Pki::new();
    let up = Upstream::start();
    let new_cert = pki.root.issue(Leaf::client("new-cloudfront"));
    let tables = format!(
        "[client_auth.allow]\n{}\n[client_auth.report_only.allow]\n{}\n",
        pin(&[&pki.client]),
        pin(&[&new_cert])
    );
    let config = write(&pki, &up.url(), "", "", &tables);
    let (cert, _) = pki.client.write(pki.dir.path(), "old");
    let out = shield_cmd(&[
        OsStr::new("verify"),
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--report-only"),
        cert.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the enforced verdict decides: {stdout}"
    );
    assert!(
        stdout.contains("report-only: refused: not_allowed"),
        "{stdout}"
    );
    assert!(stdout.contains("result: accepted"), "{stdout}");
}

#[test]
fn ca_names_are_advertised_by_default() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&write(&pki, &up.url(), "", "", ""));
    let (_, stdout, _) = s_client(proxy.addr, &[], b"");
    assert!(
        stdout.contains("Acceptable client certificate CA names"),
        "{stdout}"
    );
    assert!(stdout.contains("Test Root CA"), "{stdout}");
}

#[test]
fn advertise_ca_names_false_sends_no_ca_names() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&write(
        &pki,
        &up.url(),
        "",
        "advertise_ca_names = false",
        "",
    ));
    let (_, stdout, _) = s_client(proxy.addr, &[], b"");
    assert!(
        stdout.contains("No client certificate CA names sent"),
        "{stdout}"
    );
    // Clients that do not choose by CA name still get in.
    assert_eq!(get_as(&proxy, &pki, &pki.client).unwrap().status, 200);
}

/// curl to 127.0.0.1 with SNI `localhost`, sending `Host: host`.
fn with_host(pki: &Pki, proxy: &Proxy, host: &str) -> (i32, String) {
    let (code, body, stderr) = curl_pki(
        pki,
        Some(("client.pem", "client.key")),
        &[
            "-H",
            &format!("Host: {host}"),
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ],
        &url(proxy, "/pets"),
    );
    assert_eq!(code, 0, "{stderr}");
    let text = String::from_utf8(body).unwrap();
    let (_, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), text)
}

#[test]
fn require_sni_host_match_answers_421_to_another_host() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&write(
        &pki,
        &up.url(),
        "require_sni_host_match = true",
        "",
        "",
    ));
    let (status, body) = with_host(&pki, &proxy, "other.example.com");
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("421 Misdirected Request"), "{body}");
    assert_eq!(
        up.hits(),
        0,
        "a misdirected request never reaches the upstream"
    );
    assert_eq!(with_host(&pki, &proxy, "LOCALHOST:8443").0, 200);
    assert_eq!(up.hits(), 1);
}

#[test]
fn without_require_sni_host_match_another_host_is_forwarded() {
    // The default, because CloudFront sends the origin domain as SNI but the viewer's Host
    // when an origin request policy forwards it.
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&write(&pki, &up.url(), "", "", ""));
    assert_eq!(with_host(&pki, &proxy, "viewer.example.com").0, 200);
    assert_eq!(up.hits(), 1);
}

#[test]
fn readyz_names_an_unreachable_named_upstream() {
    let pki = Pki::new();
    let up = Upstream::start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let tables = format!("[upstreams.admin]\nurl = \"{dead}\"\n");
    let proxy = Proxy::start(&write(&pki, &up.url(), "", "", &tables));
    let (status, body) = proxy.admin_get("/readyz");
    assert_eq!(status, 503);
    assert_eq!(body, "upstream admin unreachable ([upstreams.admin])\n");
}
