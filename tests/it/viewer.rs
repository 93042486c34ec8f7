//! Viewer certificates (`[viewer]`): the certificate CloudFront forwards from each end user,
//! verified per request against a viewer PKI made at test time (a root and an issuing CA, with
//! AWS Private CA serials and partitioned CRLs), on the connection of an edge pinned by
//! `[viewer.edges]`. Driven by hyper over rustls (HTTP/1.1 keep-alive and h2), and by
//! `mtls-shield verify --viewer`, which must agree with the request path on every case.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::common::*;

/// The partition URL the viewer CA's leaves name, as AWS Private CA's do.
const PARTITION: &str = "/viewer-ca/crl/part-1.crl";

/// The edge PKI (the shield's, whose `my-client` plays CloudFront), the viewer PKI, and an
/// upstream.
struct World {
    pki: Pki,
    up: Upstream,
    viewer_root: Ca,
    viewer_ca: Ca,
    /// `device-1`, issued by the viewer CA: a good viewer.
    device: Issued,
    /// The partition URL on the CRL server, when one runs.
    crl_url: String,
}

fn world() -> World {
    world_with_crl_url("http://crl.invalid".to_owned())
}

fn world_with_crl_url(crl_base: String) -> World {
    let pki = Pki::new();
    let up = Upstream::start();
    let viewer_root = Ca::root("Viewer Root CA");
    let viewer_ca = viewer_root.intermediate("Viewer Issuing CA");
    let crl_url = format!("{crl_base}{PARTITION}");
    let device = device_of(&viewer_ca, "device-1", &crl_url);
    std::fs::write(pki.path("viewer-ca.pem"), viewer_root.pem()).unwrap();
    std::fs::write(pki.path("viewer-int.pem"), viewer_ca.pem()).unwrap();
    World {
        pki,
        up,
        viewer_root,
        viewer_ca,
        device,
        crl_url,
    }
}

/// A viewer certificate as a device fleet's CA issues it.
fn device_of(ca: &Ca, name: &str, crl_url: &str) -> Issued {
    ca.issue(
        Leaf::client(name)
            .uri(&format!("spiffe://fleet.example/{name}"))
            .pca_serial()
            .crl_dp(crl_url),
    )
}

impl World {
    /// A config with `[viewer]` (the keys of `viewer_keys` added) and `tables` appended.
    fn config(&self, viewer_keys: &str, tables: &str) -> PathBuf {
        self.config_with(viewer_keys, "", tables)
    }

    /// [`World::config`] with keys for `[client_auth]` too.
    fn config_with(&self, viewer_keys: &str, client_auth_keys: &str, tables: &str) -> PathBuf {
        let edge = self.pki.client.fingerprint();
        let path = self.pki.path("mtls-shield.toml");
        let viewer = format!(
            "[viewer]\ntruststore = \"viewer-ca.pem\"\nintermediates = \"viewer-int.pem\"\n{viewer_keys}\n\n[viewer.edges]\nfingerprints_sha256 = [\"{edge}\"]\n\n{tables}"
        );
        std::fs::write(
            &path,
            config_with(&self.up.url(), "", client_auth_keys, &viewer),
        )
        .unwrap();
        path
    }

    fn start(&self, viewer_keys: &str, tables: &str) -> Proxy {
        Proxy::start(&self.config(viewer_keys, tables))
    }
}

/// RFC 9440 byte sequence.
fn sf(der: &[u8]) -> String {
    format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// URL-encoded PEM, as CloudFront writes `CloudFront-Viewer-Cert-Pem`.
fn url_pem(pem: &str) -> String {
    utf8_percent_encode(pem, NON_ALPHANUMERIC).to_string()
}

/// The passthrough headers in RFC 9440 form: the leaf, and the issuing CA as its chain.
fn rfc9440(viewer: &Issued, ca: &Ca) -> Vec<(&'static str, String)> {
    vec![
        ("client-cert", sf(&viewer.cert_der)),
        ("client-cert-chain", sf(ca.cert.der())),
    ]
}

fn pem_header(viewer: &Issued) -> Vec<(&'static str, String)> {
    vec![
        ("cloudfront-viewer-cert-present", "1".into()),
        ("cloudfront-viewer-cert-pem", url_pem(&viewer.cert_pem)),
    ]
}

fn get_with(path: &str, headers: &[(&str, String)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header("host", "localhost");
    for (n, v) in headers {
        b = b.header(*n, v.as_str());
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// One request from `who` (the edge: `pki.client`) carrying `headers`.
fn send_as(w: &World, proxy: &Proxy, who: &Issued, path: &str, headers: &[(&str, String)]) -> Got {
    block_request(
        proxy.addr,
        &w.pki.root,
        &ClientOpts::with(ClientCert::leaf(who)),
        get_with(path, headers),
    )
    .unwrap_or_else(|e| panic!("GET {path} failed: {e}"))
}

fn send(w: &World, proxy: &Proxy, headers: &[(&str, String)]) -> Got {
    send_as(w, proxy, &w.pki.client, "/headers", headers)
}

fn viewer_metric(result: &str, reason: &str, route: &str) -> String {
    format!("mtls_shield_viewer_requests_total{{result=\"{result}\",reason=\"{reason}\",route=\"{route}\"}}")
}

/// Asserts a 403 that names no identity, counted and logged with `reason`, and that the
/// upstream saw nothing.
fn assert_refused(w: &World, proxy: &Proxy, got: &Got, reason: &str) {
    assert_eq!(got.status, 403, "{}", got.text());
    assert_eq!(got.text(), "403 Forbidden\n");
    assert_eq!(w.up.hits(), 0, "the upstream was contacted");
    wait_until("the refusal to be counted", DEADLINE, || {
        proxy.metric(&viewer_metric("rejected", reason, "none")) >= 1.0
    });
    proxy.wait_log(&[
        "viewer certificate refused",
        &format!("reason=\"{reason}\""),
    ]);
    proxy.wait_log(&["mtls_shield::access", &format!("viewer_reason={reason}")]);
}

/// The XFCC the upstream received, split into its elements.
fn xfcc_elements(got: &Got) -> Vec<String> {
    let echoed = got.echoed();
    let values = echoed
        .get("x-forwarded-client-cert")
        .cloned()
        .unwrap_or_default();
    assert_eq!(values.len(), 1, "{values:?}");
    split_elements(&values[0])
}

/// XFCC elements: split at the commas outside quoted values.
fn split_elements(xfcc: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in xfcc.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

fn assert_viewer_forwarded(w: &World, got: &Got) {
    assert_eq!(got.status, 200, "{}", got.text());
    let xfcc = xfcc_elements(got);
    assert!(
        xfcc[0].starts_with(&format!("Hash={}", w.device.fingerprint())),
        "{xfcc:?}"
    );
    let echoed = got.echoed();
    for raw in [
        "client-cert-chain",
        "cloudfront-viewer-cert-pem",
        "cloudfront-viewer-cert-present",
    ] {
        assert!(
            !echoed.contains_key(raw),
            "{raw} reached the upstream: {echoed:?}"
        );
    }
}

#[test]
fn a_viewer_chain_in_rfc9440_form_is_accepted() {
    let w = world();
    let proxy = w.start("", "");
    let got = send(&w, &proxy, &rfc9440(&w.device, &w.viewer_ca));
    assert_viewer_forwarded(&w, &got);
    assert_eq!(
        proxy.metric(&viewer_metric("accepted", "none", "none")),
        1.0
    );
}

#[test]
fn a_viewer_chain_as_url_encoded_pem_in_client_cert_is_accepted() {
    let w = world();
    let proxy = w.start("", "");
    let headers = vec![
        ("client-cert", url_pem(&w.device.cert_pem)),
        ("client-cert-chain", url_pem(&w.viewer_ca.pem())),
    ];
    assert_viewer_forwarded(&w, &send(&w, &proxy, &headers));
}

#[test]
fn cloudfront_viewer_cert_pem_without_sha256_is_accepted_with_the_configured_intermediates() {
    let w = world();
    let proxy = w.start("", "");
    assert_viewer_forwarded(&w, &send(&w, &proxy, &pem_header(&w.device)));
}

#[test]
fn cloudfront_viewer_cert_pem_with_its_sha256_is_accepted() {
    let w = world();
    let proxy = w.start("", "");
    let mut headers = pem_header(&w.device);
    headers.push(("cloudfront-viewer-cert-sha256", w.device.fingerprint()));
    assert_viewer_forwarded(&w, &send(&w, &proxy, &headers));
}

#[test]
fn the_upstream_gets_the_viewer_xfcc_element_first_and_the_edge_second() {
    let w = world();
    let proxy = w.start("", "");
    let got = send(&w, &proxy, &rfc9440(&w.device, &w.viewer_ca));
    let xfcc = xfcc_elements(&got);
    assert_eq!(xfcc.len(), 2, "{xfcc:?}");
    assert!(
        xfcc[0].contains("URI=spiffe://fleet.example/device-1"),
        "{xfcc:?}"
    );
    assert!(
        xfcc[1].starts_with(&format!("Hash={}", w.pki.client.fingerprint())),
        "{xfcc:?}"
    );
}

#[test]
fn the_alb_and_rfc9440_families_describe_the_viewer() {
    let w = world();
    let proxy = w.start(
        "",
        "[forward]\nclient_cert_headers = [\"alb\", \"rfc9440\"]\n",
    );
    let got = send(&w, &proxy, &rfc9440(&w.device, &w.viewer_ca));
    assert_eq!(got.status, 200, "{}", got.text());
    let echoed = got.echoed();
    let subject = &echoed["x-amzn-mtls-clientcert-subject"][0];
    assert!(subject.contains("CN=device-1"), "{subject}");
    assert_eq!(echoed["client-cert"][0], sf(&w.device.cert_der));
}

#[test]
fn a_viewer_from_an_unknown_ca_is_refused_with_403_and_no_upstream_hit() {
    let w = world();
    let proxy = w.start("", "");
    let stranger_ca = Ca::root("Stranger CA");
    let stranger = device_of(&stranger_ca, "device-x", &w.crl_url);
    let got = send(&w, &proxy, &[("client-cert", sf(&stranger.cert_der))]);
    assert_refused(&w, &proxy, &got, "viewer_unknown_ca");
}

#[test]
fn an_expired_viewer_is_refused() {
    let w = world();
    let proxy = w.start("", "");
    let old = w.viewer_ca.issue(Leaf::client("old").valid_days(-30, -1));
    let got = send(&w, &proxy, &rfc9440(&old, &w.viewer_ca));
    assert_refused(&w, &proxy, &got, "viewer_expired");
}

#[test]
fn a_viewer_revoked_by_a_crl_file_is_refused() {
    let w = world();
    let revoked = device_of(&w.viewer_ca, "device-r", &w.crl_url);
    std::fs::write(
        w.pki.path("viewer.crl"),
        w.viewer_ca.partition_crl(&[&revoked], 2, &w.crl_url),
    )
    .unwrap();
    let proxy = w.start("crls = [\"viewer.crl\"]", "");
    let got = send(&w, &proxy, &rfc9440(&revoked, &w.viewer_ca));
    assert_refused(&w, &proxy, &got, "viewer_revoked");
    let good = send(&w, &proxy, &rfc9440(&w.device, &w.viewer_ca));
    assert_eq!(good.status, 200, "the CRL's other viewers still pass");
}

#[test]
fn a_viewer_outside_viewer_allow_is_refused() {
    let w = world();
    let proxy = w.start(
        "",
        "[viewer.allow]\nuris = [\"spiffe://fleet.example/device-2\"]\n",
    );
    let got = send(&w, &proxy, &rfc9440(&w.device, &w.viewer_ca));
    assert_refused(&w, &proxy, &got, "viewer_not_allowed");
}

#[test]
fn a_viewer_outside_a_routes_viewer_allow_is_refused_there_and_passes_elsewhere() {
    let w = world();
    let routes = "[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\n[routes.viewer_allow]\nuris = [\"spiffe://fleet.example/ops\"]\n";
    let proxy = w.start("", routes);
    let headers = rfc9440(&w.device, &w.viewer_ca);
    let got = send_as(&w, &proxy, &w.pki.client, "/admin/x", &headers);
    assert_eq!(got.status, 403);
    assert_eq!(w.up.hits(), 0);
    wait_until("the route refusal to be counted", DEADLINE, || {
        proxy.metric(&viewer_metric("rejected", "viewer_not_allowed", "admin")) >= 1.0
    });
    assert_eq!(send(&w, &proxy, &headers).status, 200);
}

#[test]
fn a_pem_and_sha256_that_disagree_are_refused_as_bad_encoding() {
    let w = world();
    let proxy = w.start("", "");
    let mut headers = pem_header(&w.device);
    headers.push(("cloudfront-viewer-cert-sha256", w.pki.client.fingerprint()));
    let got = send(&w, &proxy, &headers);
    assert_refused(&w, &proxy, &got, "viewer_bad_encoding");
}

/// Garbage in each header the shield reads, one request each: every one is refused with
/// `viewer_bad_encoding`, none reaches the upstream, and the shield keeps serving.
#[test]
fn garbage_in_each_viewer_header_is_refused_as_bad_encoding() {
    let w = world();
    let proxy = w.start("", "");
    let leaf = sf(&w.device.cert_der);
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![("client-cert", ":not base64!:".into())],
        vec![("client-cert", "plain text".into())],
        vec![("client-cert", sf(b"\x30\x82\xff\xff not a certificate"))],
        vec![(
            "client-cert",
            "%2D%2D%2D%2D%2DBEGIN%20CERTIFICATE%zz".into(),
        )],
        vec![
            ("client-cert", leaf.clone()),
            ("client-cert-chain", "::".into()),
        ],
        vec![("client-cert-chain", sf(w.viewer_ca.cert.der()))],
        vec![("client-cert", leaf.clone()), ("client-cert", leaf.clone())],
        vec![(
            "cloudfront-viewer-cert-pem",
            "-----BEGIN CERTIFICATE-----%0Agarbage".into(),
        )],
        vec![("cloudfront-viewer-cert-present", "yes".into())],
        vec![("cloudfront-viewer-cert-present", "1".into())],
        vec![
            ("cloudfront-viewer-cert-present", "0".into()),
            ("client-cert", leaf.clone()),
        ],
        vec![
            ("cloudfront-viewer-cert-sha256", "zz".into()),
            ("client-cert", leaf),
        ],
    ];
    let n = cases.len() as f64;
    for headers in &cases {
        let got = send(&w, &proxy, headers);
        assert_eq!(got.status, 403, "{headers:?}: {}", got.text());
    }
    assert_eq!(w.up.hits(), 0);
    wait_until("every refusal to be counted", DEADLINE, || {
        proxy.metric(&viewer_metric("rejected", "viewer_bad_encoding", "none")) >= n
    });
    assert_viewer_forwarded(&w, &send(&w, &proxy, &rfc9440(&w.device, &w.viewer_ca)));
}

#[test]
fn a_chain_of_more_than_four_certificates_is_refused_as_too_long() {
    let w = world();
    let proxy = w.start("", "");
    let ca = sf(w.viewer_ca.cert.der());
    let chain = [ca.clone(), ca.clone(), ca.clone(), ca].join(", ");
    let headers = vec![
        ("client-cert", sf(&w.device.cert_der)),
        ("client-cert-chain", chain),
    ];
    let got = send(&w, &proxy, &headers);
    assert_refused(&w, &proxy, &got, "viewer_chain_too_long");
}

#[test]
fn viewer_headers_from_a_connection_that_is_not_an_edge_never_reach_the_upstream() {
    let w = world();
    let proxy = w.start("required = false", "");
    let partner = w.pki.root.issue(Leaf::client("partner"));
    let mut headers = rfc9440(&w.device, &w.viewer_ca);
    headers.extend(pem_header(&w.device));
    let got = send_as(&w, &proxy, &partner, "/headers", &headers);
    assert_eq!(got.status, 200, "{}", got.text());
    let echoed = got.echoed();
    for raw in [
        "client-cert",
        "client-cert-chain",
        "cloudfront-viewer-cert-pem",
        "cloudfront-viewer-cert-present",
    ] {
        assert!(!echoed.contains_key(raw), "{raw} reached the upstream");
    }
    let xfcc = xfcc_elements(&got);
    assert_eq!(
        xfcc.len(),
        1,
        "only the connection's own identity: {xfcc:?}"
    );
    assert!(xfcc[0].starts_with(&format!("Hash={}", partner.fingerprint())));
    assert_eq!(
        proxy.metric("mtls_shield_viewer_headers_removed_total"),
        1.0
    );
}

#[test]
fn a_connection_that_is_not_an_edge_gets_viewer_no_certificate_when_viewers_are_required() {
    let w = world();
    let proxy = w.start("", "");
    let partner = w.pki.root.issue(Leaf::client("partner"));
    let got = send_as(
        &w,
        &proxy,
        &partner,
        "/headers",
        &rfc9440(&w.device, &w.viewer_ca),
    );
    assert_refused(&w, &proxy, &got, "viewer_no_certificate");
}

#[test]
fn an_optional_route_passes_a_request_without_a_viewer_with_the_edge_identity_only() {
    let w = world();
    let proxy = w.start(
        "",
        "[[routes]]\nname = \"public\"\npath_prefix = \"/headers\"\nviewer = \"optional\"\n",
    );
    let got = send(&w, &proxy, &[]);
    assert_eq!(got.status, 200);
    let xfcc = xfcc_elements(&got);
    assert_eq!(xfcc.len(), 1, "{xfcc:?}");
    assert!(xfcc[0].starts_with(&format!("Hash={}", w.pki.client.fingerprint())));
    assert_eq!(
        proxy.metric(&viewer_metric("accepted", "none", "public")),
        1.0
    );
}

#[test]
fn a_returning_viewer_is_verified_once_per_trust_state() {
    let w = world();
    let proxy = w.start("", "");
    let headers = rfc9440(&w.device, &w.viewer_ca);
    for _ in 0..5 {
        assert_eq!(send(&w, &proxy, &headers).status, 200);
    }
    assert_eq!(proxy.metric("mtls_shield_viewer_verifications_total"), 1.0);
}

/// One HTTP/1.1 keep-alive (or h2) connection from the edge, sending requests with headers.
struct EdgeConn {
    rt: tokio::runtime::Runtime,
    h1: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    h2: Option<hyper::client::conn::http2::SendRequest<Full<Bytes>>>,
}

impl EdgeConn {
    fn open(w: &World, proxy: &Proxy, h2: bool) -> EdgeConn {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut opts = ClientOpts::with(ClientCert::leaf(&w.pki.client));
        opts.h2 = h2;
        let (h1, h2s) = rt.block_on(async {
            let tls = tls_connect(proxy.addr, &w.pki.root, &opts).await.unwrap();
            let io = hyper_util::rt::TokioIo::new(tls);
            if h2 {
                let (s, c) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                        .await
                        .unwrap();
                tokio::spawn(c);
                (None, Some(s))
            } else {
                let (s, c) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(c);
                (Some(s), None)
            }
        });
        EdgeConn { rt, h1, h2: h2s }
    }

    /// One request on this connection: its status and body.
    fn send(&mut self, headers: &[(&str, String)]) -> (u16, String) {
        let req = get_with("/headers", headers);
        let h1 = self.h1.as_mut();
        let h2 = self.h2.clone();
        self.rt.block_on(async move {
            let resp = match (h1, h2) {
                (Some(s), _) => {
                    s.ready().await.unwrap();
                    s.send_request(req).await.unwrap()
                }
                (None, Some(mut s)) => s.send_request(req).await.unwrap(),
                (None, None) => unreachable!(),
            };
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    }
}

#[test]
fn a_viewer_revoked_by_a_fetched_crl_is_refused_on_the_next_request_of_the_same_connection() {
    let crl = CrlServer::start();
    let w = world_with_crl_url(crl.url(""));
    let other = device_of(&w.viewer_ca, "device-2", &w.crl_url);
    crl.put(PARTITION, w.viewer_ca.partition_crl(&[], 1, &w.crl_url));
    // require_crl covers the whole path: the root's CRL (a file) covers the issuing CA.
    std::fs::write(
        w.pki.path("viewer-root.crl"),
        w.viewer_root.crl(&[], 1, -1, 7),
    )
    .unwrap();
    let keys = format!(
        "crls = [\"viewer-root.crl\"]\ncrl_urls = [\"{}\"]\nrequire_crl = true",
        w.crl_url
    );
    let proxy = Proxy::start(&w.config_with(&keys, "crl_refresh = \"1s\"", ""));
    wait_until("/readyz to answer 200", DEADLINE, || {
        proxy.admin_get("/readyz").0 == 200
    });
    let mut conn = EdgeConn::open(&w, &proxy, false);
    let device = rfc9440(&w.device, &w.viewer_ca);
    let kept = rfc9440(&other, &w.viewer_ca);
    let first = conn.send(&device);
    assert_eq!(first.0, 200, "{first:?} {:#?}", proxy.logs());
    assert_eq!(conn.send(&kept).0, 200);

    crl.put(
        PARTITION,
        w.viewer_ca.partition_crl(&[&w.device], 2, &w.crl_url),
    );
    wait_until("the revoked viewer to be refused", DEADLINE, || {
        conn.send(&device).0 == 403
    });
    assert_eq!(
        conn.send(&kept).0,
        200,
        "the other viewer on the connection goes on"
    );
    proxy.wait_log(&["viewer certificate refused", "reason=\"viewer_revoked\""]);
}

#[test]
fn many_viewers_interleaved_on_one_h2_connection_each_get_their_own_verdict() {
    let w = world();
    let even: Vec<String> = (0..8)
        .step_by(2)
        .map(|i| format!("\"spiffe://fleet.example/even-{i}\""))
        .collect();
    let proxy = w.start(
        "",
        &format!("[viewer.allow]\nuris = [{}]\n", even.join(", ")),
    );
    let _ = &w.viewer_root;
    let viewers: Vec<Issued> = (0..8)
        .map(|i| {
            let name = if i % 2 == 0 {
                format!("even-{i}")
            } else {
                format!("odd-{i}")
            };
            w.viewer_ca
                .issue(Leaf::client(&name).uri(&format!("spiffe://fleet.example/{name}")))
        })
        .collect();
    let conn = EdgeConn::open(&w, &proxy, true);
    let sender = conn.h2.clone().unwrap();
    let results = conn.rt.block_on(async {
        let mut tasks = Vec::new();
        for round in 0..3 {
            for (i, v) in viewers.iter().enumerate() {
                let mut s = sender.clone();
                let req = get_with("/headers", &rfc9440(v, &w.viewer_ca));
                tasks.push(tokio::spawn(async move {
                    let resp = s.send_request(req).await.unwrap();
                    let status = resp.status().as_u16();
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    (
                        round,
                        i,
                        status,
                        String::from_utf8_lossy(&body).into_owned(),
                    )
                }));
            }
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (round, i, status, body) in results {
        if i % 2 == 0 {
            assert_eq!(status, 200, "round {round} viewer {i}");
            let echoed: std::collections::BTreeMap<String, Vec<String>> =
                serde_json::from_str(&body).unwrap();
            let xfcc = &echoed["x-forwarded-client-cert"][0];
            assert!(
                xfcc.starts_with(&format!("Hash={}", viewers[i].fingerprint())),
                "round {round} viewer {i} got another viewer's identity: {xfcc}"
            );
        } else {
            assert_eq!(status, 403, "round {round} viewer {i}");
        }
    }
}

#[test]
fn a_reload_that_narrows_viewer_allow_applies_to_the_next_request_on_an_open_connection() {
    let w = world();
    let path = w.config("", "");
    let proxy = Proxy::start(&path);
    let mut conn = EdgeConn::open(&w, &proxy, false);
    let device = rfc9440(&w.device, &w.viewer_ca);
    assert_eq!(conn.send(&device).0, 200);
    w.config(
        "",
        "[viewer.allow]\nuris = [\"spiffe://fleet.example/nobody\"]\n",
    );
    proxy.signal("HUP");
    wait_until("the narrowed allow-list to apply", DEADLINE, || {
        conn.send(&device).0 == 403
    });
}

/// `verify --viewer`'s arguments, the same viewer as request headers, and the request path.
type Case<'a> = (Vec<String>, Vec<(&'a str, String)>, &'a str);

/// `verify --viewer`'s result line for a config and input.
fn verify_viewer(config: &Path, args: &[&str]) -> (i32, String) {
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("verify"),
        OsStr::new("--viewer"),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    all.extend(args.iter().map(OsStr::new));
    let out = shield_cmd(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let result = stdout
        .lines()
        .find(|l| l.starts_with("result:"))
        .unwrap_or_else(|| {
            panic!(
                "no result line: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned();
    (out.status.code().unwrap_or(-1), result)
}

#[test]
fn verify_viewer_agrees_with_the_request_path() {
    let w = world();
    let revoked = device_of(&w.viewer_ca, "device-r", &w.crl_url);
    std::fs::write(
        w.pki.path("viewer.crl"),
        w.viewer_ca.partition_crl(&[&revoked], 2, &w.crl_url),
    )
    .unwrap();
    let stranger = Ca::root("Stranger CA").issue(Leaf::client("x"));
    let old = w.viewer_ca.issue(Leaf::client("old").valid_days(-30, -1));
    let other = device_of(&w.viewer_ca, "device-2", &w.crl_url);
    let routes = "[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\n[routes.viewer_allow]\nuris = [\"spiffe://fleet.example/device-2\"]\n";
    let config = w.config("crls = [\"viewer.crl\"]", routes);
    let proxy = Proxy::start(&config);
    let dir = w.pki.dir.path();
    for (name, issued) in [
        ("device", &w.device),
        ("revoked", &revoked),
        ("stranger", &stranger),
        ("old", &old),
        ("other", &other),
    ] {
        issued.write(dir, name);
    }
    let int = w.pki.path("viewer-int.pem");
    let int = int.to_str().unwrap();
    let file = |n: &str| w.pki.path(&format!("{n}.pem")).to_str().unwrap().to_owned();
    let mismatch = format!(
        "CloudFront-Viewer-Cert-Sha256: {}",
        w.pki.client.fingerprint()
    );
    let pem = format!(
        "CloudFront-Viewer-Cert-Pem: {}",
        url_pem(&w.device.cert_pem)
    );
    let cases: Vec<Case> = vec![
        (
            vec![file("device"), "--chain".into(), int.into()],
            rfc9440(&w.device, &w.viewer_ca),
            "/headers",
        ),
        (
            vec![file("revoked"), "--chain".into(), int.into()],
            rfc9440(&revoked, &w.viewer_ca),
            "/headers",
        ),
        (
            vec![file("stranger")],
            vec![("client-cert", sf(&stranger.cert_der))],
            "/headers",
        ),
        (
            vec![file("old"), "--chain".into(), int.into()],
            rfc9440(&old, &w.viewer_ca),
            "/headers",
        ),
        (
            vec![file("device"), "--path".into(), "/admin/x".into()],
            rfc9440(&w.device, &w.viewer_ca),
            "/admin/x",
        ),
        (
            vec![file("other"), "--path".into(), "/admin/x".into()],
            rfc9440(&other, &w.viewer_ca),
            "/admin/x",
        ),
        (
            vec![
                "--header".into(),
                pem.clone(),
                "--header".into(),
                mismatch.clone(),
            ],
            vec![
                ("cloudfront-viewer-cert-pem", url_pem(&w.device.cert_pem)),
                ("cloudfront-viewer-cert-sha256", w.pki.client.fingerprint()),
            ],
            "/headers",
        ),
        (
            vec!["--header".into(), "Client-Cert: :garbage:".into()],
            vec![("client-cert", ":garbage:".into())],
            "/headers",
        ),
    ];
    for (sent, (args, headers, path)) in cases.iter().enumerate() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, result) = verify_viewer(&config, &args);
        // Every earlier request's line has arrived: the next one is this request's.
        wait_until("the earlier access lines", DEADLINE, || {
            access_lines(&proxy).len() >= sent
        });
        let before = sent;
        let got = send_as(&w, &proxy, &w.pki.client, path, headers);
        let on_wire = viewer_reason_after(&proxy, before);
        assert_eq!(got.status == 403, on_wire != "accepted", "{on_wire}");
        let expected_code = if on_wire == "accepted" { 0 } else { 2 };
        assert_eq!(code, expected_code, "{args:?}: {result}");
        assert!(
            result == format!("result: {on_wire}")
                || result == format!("result: refused: {on_wire}"),
            "{args:?}: verify says {result:?}, the request path {on_wire:?}"
        );
    }
}

fn access_lines(proxy: &Proxy) -> Vec<String> {
    proxy
        .logs()
        .into_iter()
        .filter(|l| l.contains("mtls_shield::access"))
        .collect()
}

/// The `viewer_reason` of the first access line after the first `before` ones (`accepted`
/// when it has none).
fn viewer_reason_after(proxy: &Proxy, before: usize) -> String {
    let mut line = None;
    wait_until("the request's access line", DEADLINE, || {
        line = access_lines(proxy).get(before).cloned();
        line.is_some()
    });
    let line = line.unwrap();
    field(&line, "viewer_reason").unwrap_or_else(|| "accepted".to_owned())
}

/// `mtls-shield run`'s one stderr line for a config it refuses.
fn refused_config(config: &Path) -> String {
    let out = shield_cmd(&["run".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.lines().next().unwrap_or_default().to_owned()
}

/// The refusal of a config made of the base and `tables` (no `[viewer.edges]` added).
fn refused_without_viewer_edges(tables: &str) -> String {
    let w = world();
    let path = w.pki.path("mtls-shield.toml");
    std::fs::write(&path, config_with(&w.up.url(), "", "", tables)).unwrap();
    refused_config(&path)
}

#[test]
fn a_viewer_table_without_edges_is_refused_naming_the_key() {
    let line = refused_without_viewer_edges("[viewer]\ntruststore = \"viewer-ca.pem\"\n");
    assert!(
        line.contains("viewer.edges") && line.contains("fingerprints_sha256"),
        "{line}"
    );
}

#[test]
fn a_route_with_viewer_rules_and_no_viewer_table_is_refused_naming_the_key() {
    let line =
        refused_without_viewer_edges("[[routes]]\npath_prefix = \"/d\"\nviewer = \"required\"\n");
    assert!(
        line.contains("routes[0].viewer") && line.contains("[viewer]"),
        "{line}"
    );
}

#[test]
fn an_empty_route_viewer_allow_is_refused() {
    let w = world();
    let path = w.config(
        "",
        "[[routes]]\npath_prefix = \"/d\"\n[routes.viewer_allow]\n",
    );
    let line = refused_config(&path);
    assert!(line.contains("routes[0].viewer_allow"), "{line}");
}

#[test]
fn check_reports_the_viewer_trust_its_edges_and_routes() {
    let w = world();
    let path = w.config("", "[[routes]]\nname = \"devices\"\npath_prefix = \"/devices\"\nviewer = \"required\"\n[routes.viewer_allow]\nuris = [\"spiffe://fleet.example/device-1\"]\n");
    let out = shield_cmd(&["check".as_ref(), "--config".as_ref(), path.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("viewer: headers cloudfront"), "{text}");
    assert!(text.contains("CN=Viewer Root CA"), "{text}");
    assert!(
        text.contains(&format!(
            "edges: fingerprints_sha256: {}",
            w.pki.client.fingerprint()
        )),
        "{text}"
    );
    assert!(
        text.contains("route devices: required, own viewer_allow"),
        "{text}"
    );
}

/// A viewer CA whose leaves name an OCSP responder (a delegated one signs the answers), the
/// responder, and a device that it knows.
struct OcspWorld {
    w: World,
    device: Issued,
    responder: OcspResponder,
}

fn ocsp_world() -> OcspWorld {
    let w = world();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let device = w.viewer_root.issue(
        Leaf::client("device-o")
            .ocsp_url(&format!("http://127.0.0.1:{port}/"))
            .pca_serial(),
    );
    // A delegated responder, as AWS Private CA's OCSP answers are signed: its own
    // certificate with the OCSPSigning EKU, issued by the CA it answers for.
    let responder_cert = w.viewer_root.issue(
        Leaf::client("viewer OCSP responder")
            .eku(vec![rcgen::ExtendedKeyUsagePurpose::OcspSigning]),
    );
    let signer = (responder_cert.cert_pem, responder_cert.key_pem);
    let responder = OcspResponder::start_on(
        port,
        &w.viewer_root,
        (&signer.0, &signer.1),
        &[&device.serial_number],
    );
    OcspWorld {
        w,
        device,
        responder,
    }
}

fn leaf_only(device: &Issued) -> Vec<(&'static str, String)> {
    vec![("client-cert", sf(&device.cert_der))]
}

#[test]
fn a_viewer_the_ocsp_responder_calls_good_passes_and_its_answer_is_reused() {
    let o = ocsp_world();
    let proxy = o.w.start("ocsp = \"always\"", "");
    for _ in 0..3 {
        let got = send(&o.w, &proxy, &leaf_only(&o.device));
        assert_eq!(got.status, 200, "{}", got.text());
    }
    assert_eq!(
        proxy.metric("mtls_shield_ocsp_requests_total{result=\"good\"}"),
        1.0
    );
}

#[test]
fn a_viewer_the_ocsp_responder_calls_revoked_is_refused() {
    let mut o = ocsp_world();
    o.responder.revoke(&o.device.serial_number);
    let proxy = o.w.start("ocsp = \"always\"", "");
    let got = send(&o.w, &proxy, &leaf_only(&o.device));
    assert_refused(&o.w, &proxy, &got, "viewer_revoked");
}

#[test]
fn a_viewer_whose_responder_is_down_is_refused_as_revocation_unknown() {
    let o = ocsp_world();
    drop(o.responder);
    let proxy = o.w.start("ocsp = \"always\"", "");
    let got = send(&o.w, &proxy, &leaf_only(&o.device));
    assert_refused(&o.w, &proxy, &got, "viewer_revocation_unknown");
}

#[test]
fn the_trust_inventory_lists_a_viewer_seen_with_its_requests() {
    let w = world();
    let proxy = w.start("", "");
    for _ in 0..3 {
        assert_eq!(
            send(&w, &proxy, &rfc9440(&w.device, &w.viewer_ca)).status,
            200
        );
    }
    let (status, body) = proxy.admin_get("/trust");
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let viewer = doc["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["domain"] == "viewer")
        .expect("the viewer is in the inventory")
        .clone();
    assert_eq!(viewer["fingerprint_sha256"], w.device.fingerprint());
    assert_eq!(viewer["requests"], 3);
    assert_eq!(viewer["accepted_now"], true);
    let domains: Vec<&str> = doc["trust_domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(domains, ["client_auth", "viewer"]);
}
