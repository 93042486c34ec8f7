//! What an accepted client's requests look like upstream, and how they travel (issue 2):
//! the XFCC header (exact), stripping of spoofed identity headers, X-Forwarded-*, Host,
//! hop-by-hop removal, h2 via ALPN, keep-alive, streaming of large bodies both ways, and
//! the proxy's own 502/504 answers.
use crate::common::*;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};

fn setup() -> (Pki, Upstream, Proxy) {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = Proxy::start(&pki.write_config(&up.url(), ""));
    (pki, up, proxy)
}

fn client_opts(pki: &Pki) -> ClientOpts {
    ClientOpts::with(ClientCert::leaf(&pki.client))
}

/// curl with the standard client certificate; asserts success and returns the body.
fn curl_ok(pki: &Pki, extra: &[&str], url: &str) -> Vec<u8> {
    let (code, stdout, stderr) = curl_pki(pki, Some(("client.pem", "client.key")), extra, url);
    assert_eq!(code, 0, "curl failed: {stderr}");
    stdout
}

fn echoed(body: &[u8]) -> BTreeMap<String, Vec<String>> {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "not a /headers echo ({e}): {}",
            String::from_utf8_lossy(body)
        )
    })
}

fn one<'a>(h: &'a BTreeMap<String, Vec<String>>, name: &str) -> &'a str {
    let v = h
        .get(name)
        .unwrap_or_else(|| panic!("upstream did not get {name}: {h:?}"));
    assert_eq!(v.len(), 1, "{name} should appear once: {v:?}");
    &v[0]
}

#[test]
fn xfcc_carries_hash_subject_uri_and_dns_exactly() {
    let (pki, up, proxy) = setup();
    let api = pki.root.issue(
        Leaf::client("api-client")
            .uri("spiffe://example.org/ns/prod/sa/api")
            .dns("api.example.com"),
    );
    let got = block_request(
        proxy.addr,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&api)),
        get("/headers"),
    )
    .unwrap();
    assert_eq!(got.status, 200);
    let h = got.echoed();
    assert_eq!(
        one(&h, "x-forwarded-client-cert"),
        format!(
            "Hash={};Subject=\"CN=api-client,O=mtls-shield tests\";URI=spiffe://example.org/ns/prod/sa/api;DNS=api.example.com",
            api.fingerprint()
        )
    );
    assert_eq!(up.hits(), 1);
}

#[test]
fn xfcc_of_the_standard_client_shows_cn_my_client() {
    let (pki, _up, proxy) = setup();
    let h = echoed(&curl_ok(&pki, &[], &url(&proxy, "/headers")));
    assert_eq!(
        one(&h, "x-forwarded-client-cert"),
        format!(
            "Hash={};Subject=\"CN=my-client,O=mtls-shield tests\"",
            pki.client.fingerprint()
        )
    );
}

#[test]
fn spoofed_identity_headers_are_stripped_in_every_spelling() {
    let (pki, _up, proxy) = setup();
    let spoofed = [
        "X-Forwarded-Client-Cert: Hash=0000;Subject=\"CN=admin\"",
        "x_forwarded_client_cert: Hash=1111",
        "X-Amzn-Mtls-Clientcert-Subject: CN=admin",
        "X-Amzn-Mtls-Clientcert-Leaf: -----BEGIN%20CERTIFICATE-----",
        "x_amzn_mtls_clientcert_serial_number: 01",
        "X-Amzn-Mtls-Clientcert: whatever",
        "Client-Cert: :AAAA:",
        "client_cert: :BBBB:",
        "Client-Cert-Chain: :CCCC:",
        "client_cert_chain: :DDDD:",
        // Control: an ordinary underscore header does reach the upstream, so the absence
        // of the ones above is the proxy's doing, not curl's or hyper's.
        "x_custom_underscore: passes",
    ];
    let mut args = Vec::new();
    for s in spoofed {
        args.push("-H");
        args.push(s);
    }
    let h = echoed(&curl_ok(&pki, &args, &url(&proxy, "/headers")));
    // Exactly one XFCC value, the proxy's.
    assert_eq!(
        one(&h, "x-forwarded-client-cert"),
        format!(
            "Hash={};Subject=\"CN=my-client,O=mtls-shield tests\"",
            pki.client.fingerprint()
        )
    );
    let leaked: Vec<&String> = h
        .keys()
        .filter(|k| {
            let k = k.replace('_', "-");
            k != "x-forwarded-client-cert"
                && (k.starts_with("x-forwarded-client-cert")
                    || k.starts_with("x-amzn-mtls-clientcert")
                    || k == "client-cert"
                    || k == "client-cert-chain")
        })
        .collect();
    assert!(leaked.is_empty(), "spoofed headers reached upstream: {h:?}");
    assert!(!h.contains_key("x_forwarded_client_cert"), "{h:?}");
    assert_eq!(one(&h, "x_custom_underscore"), "passes");
}

#[test]
fn forwarded_for_is_appended_proto_is_https_and_host_is_kept() {
    let (pki, _up, proxy) = setup();
    let h = echoed(&curl_ok(
        &pki,
        &[
            "-H",
            "X-Forwarded-For: 203.0.113.7",
            "-H",
            "X-Forwarded-Proto: http",
        ],
        &url(&proxy, "/headers"),
    ));
    assert_eq!(one(&h, "x-forwarded-for"), "203.0.113.7, 127.0.0.1");
    assert_eq!(one(&h, "x-forwarded-proto"), "https");
    assert_eq!(
        one(&h, "host"),
        format!("localhost:{}", proxy.addr.port()),
        "Host is the client's, not the upstream's"
    );
}

#[test]
fn forwarded_for_is_set_when_the_client_sent_none() {
    let (pki, _up, proxy) = setup();
    let h = echoed(&curl_ok(&pki, &[], &url(&proxy, "/headers")));
    assert_eq!(one(&h, "x-forwarded-for"), "127.0.0.1");
}

#[test]
fn hop_by_hop_and_connection_named_headers_are_removed() {
    let (pki, _up, proxy) = setup();
    let req = hyper::Request::get("/headers")
        .header("host", "localhost")
        .header("connection", "keep-alive, X-Secret-Hop")
        .header("x-secret-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "gzip")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = block_request(proxy.addr, &pki.root, &client_opts(&pki), req).unwrap();
    assert_eq!(got.status, 200);
    let h = got.echoed();
    for gone in [
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached upstream: {h:?}");
    }
    // The upstream's own connection management may add `connection: keep-alive`, but
    // never a value naming the client's hop-by-hop header.
    if let Some(c) = h.get("connection") {
        assert!(
            !c.iter()
                .any(|v| v.to_ascii_lowercase().contains("x-secret")),
            "{c:?}"
        );
    }
    assert_eq!(one(&h, "x-end-to-end"), "kept");
}

#[test]
fn h2_is_negotiated_by_alpn_and_serves() {
    let (pki, up, proxy) = setup();
    let mut opts = client_opts(&pki);
    opts.h2 = true;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tls = tls_connect(proxy.addr, &pki.root, &opts).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        for path in ["/pets", "/headers"] {
            let req = hyper::Request::get(format!("https://localhost{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.version(), hyper::Version::HTTP_2);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            if path == "/pets" {
                assert_eq!(body, mtls_shield::demo::PETS.as_bytes());
            } else {
                let h = echoed(&body);
                // h2's :authority becomes the upstream's Host.
                assert_eq!(one(&h, "host"), "localhost");
                assert!(one(&h, "x-forwarded-client-cert").starts_with("Hash="));
            }
        }
    });
    assert_eq!(up.hits(), 2);
}

#[test]
fn curl_http2_gets_the_pets_over_h2() {
    let (pki, _up, proxy) = setup();
    let out = curl_ok(
        &pki,
        &["--http2", "-w", "\n%{http_version}"],
        &url(&proxy, "/pets"),
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{}\n2", mtls_shield::demo::PETS)
    );
}

#[test]
fn http11_keep_alive_serves_several_requests_on_one_connection() {
    let (pki, up, proxy) = setup();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tls = tls_connect(proxy.addr, &pki.root, &client_opts(&pki))
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        for _ in 0..3 {
            sender.ready().await.expect("connection kept alive");
            let resp = sender.send_request(get("/pets")).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.version(), hyper::Version::HTTP_11);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, mtls_shield::demo::PETS.as_bytes());
        }
    });
    assert_eq!(up.hits(), 3);
    // One handshake served all three requests.
    assert_eq!(
        proxy.metric("mtls_shield_handshakes_total{result=\"accepted\""),
        1.0
    );
}

#[test]
fn curl_reuses_one_connection_for_several_requests() {
    let (pki, up, proxy) = setup();
    let u = url(&proxy, "/pets");
    let out = curl_ok(
        &pki,
        &["--http1.1", "-w", " connects=%{num_connects}\n", &u, &u],
        &u,
    );
    let text = String::from_utf8(out).unwrap();
    let pets = mtls_shield::demo::PETS;
    assert_eq!(
        text,
        format!("{pets} connects=1\n{pets} connects=0\n{pets} connects=0\n")
    );
    assert_eq!(up.hits(), 3);
}

// ---- Streaming: big bodies pass through without being buffered ----

const BIG: u64 = 256 * 1024 * 1024;
/// A multiple of the pattern period (251), so every chunk of the pattern is the same bytes.
const CHUNK: usize = 251 * 256;

fn pattern_chunk() -> Bytes {
    Bytes::from((0..CHUNK as u64).map(pattern).collect::<Vec<u8>>())
}

/// SHA-256 (hex) of the first `n` pattern bytes.
fn pattern_sha256(n: u64) -> String {
    let chunk = pattern_chunk();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut left = n;
    while left > 0 {
        let take = left.min(CHUNK as u64) as usize;
        ctx.update(&chunk[..take]);
        left -= take as u64;
    }
    hex::encode(ctx.finish())
}

/// A request body generated on the fly: `total` pattern bytes, never held whole.
struct Generator {
    chunk: Bytes,
    left: u64,
}

impl Body for Generator {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let take = self.left.min(CHUNK as u64) as usize;
        self.left -= take as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..take)))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Samples the proxy's VmRSS until dropped; `peak()` is the largest value seen, in KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(vm_rss_kib(pid)));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(vm_rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Peak proxy RSS allowed while moving [`BIG`] bytes: a quarter of the transfer. Measured
/// peaks are far lower (see the test output); buffering the body would exceed this.
const RSS_LIMIT_KIB: u64 = BIG / 1024 / 4;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn large_upload_streams_through_intact_without_growing_memory() {
    let (pki, up, proxy) = setup();
    let expected = pattern_sha256(BIG);
    let before = vm_rss_kib(proxy.child.id());
    let sampler = RssSampler::start(proxy.child.id());
    let answer = runtime().block_on(async {
        let tls = tls_connect(proxy.addr, &pki.root, &client_opts(&pki))
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::post("/upload")
            .header("host", "localhost")
            .body(Generator {
                chunk: pattern_chunk(),
                left: BIG,
            })
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    });
    let peak = sampler.finish();
    eprintln!("upload of {BIG} bytes: proxy VmRSS {before} KiB before, peak {peak} KiB");
    assert_eq!(answer, format!("{BIG} {expected}"));
    assert_eq!(up.hits(), 1);
    assert!(
        peak < RSS_LIMIT_KIB,
        "proxy RSS peaked at {peak} KiB while uploading {BIG} bytes: not streaming"
    );
}

#[test]
fn large_download_streams_through_intact_without_growing_memory() {
    let (pki, up, proxy) = setup();
    let expected = pattern_sha256(BIG);
    let before = vm_rss_kib(proxy.child.id());
    let sampler = RssSampler::start(proxy.child.id());
    let (len, sha) = runtime().block_on(async {
        let tls = tls_connect(proxy.addr, &pki.root, &client_opts(&pki))
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let resp = sender
            .send_request(get(&format!("/bytes/{BIG}")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut len = 0u64;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        while let Some(frame) = body.frame().await {
            if let Some(d) = frame.unwrap().data_ref() {
                len += d.len() as u64;
                ctx.update(d);
            }
        }
        (len, hex::encode(ctx.finish()))
    });
    let peak = sampler.finish();
    eprintln!("download of {BIG} bytes: proxy VmRSS {before} KiB before, peak {peak} KiB");
    assert_eq!(len, BIG);
    assert_eq!(sha, expected);
    assert_eq!(up.hits(), 1);
    assert!(
        peak < RSS_LIMIT_KIB,
        "proxy RSS peaked at {peak} KiB while downloading {BIG} bytes: not streaming"
    );
}

// ---- The proxy's own answers when the upstream fails ----

#[test]
fn upstream_down_gets_502_with_a_short_text_body() {
    let pki = Pki::new();
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = Proxy::start(&pki.write_config(&dead, ""));
    for _ in 0..2 {
        let got = block_request(proxy.addr, &pki.root, &client_opts(&pki), get("/pets")).unwrap();
        assert_eq!(got.status, 502);
        assert_eq!(got.text(), "502 Bad Gateway: upstream unavailable\n");
        assert_eq!(
            got.headers["content-type"], "text/plain; charset=utf-8",
            "{:?}",
            got.headers
        );
    }
    // Still alive and healthy.
    assert_eq!(proxy.admin_get("/healthz").0, 200);
    proxy.wait_log(&["upstream request failed", "status=502"]);
}

#[test]
fn upstream_slower_than_response_timeout_gets_504() {
    let pki = Pki::new();
    let up = Upstream::start();
    let cfg = config_with(&up.url(), "", "", "")
        .replace("response_timeout = \"5s\"", "response_timeout = \"300ms\"");
    assert!(cfg.contains("response_timeout = \"300ms\""));
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, cfg).unwrap();
    let proxy = Proxy::start(&path);
    let started = std::time::Instant::now();
    let got = block_request(proxy.addr, &pki.root, &client_opts(&pki), get("/slow/5000")).unwrap();
    assert_eq!(got.status, 504);
    assert_eq!(
        got.text(),
        "504 Gateway Timeout: upstream did not answer in time\n"
    );
    assert_eq!(got.headers["content-type"], "text/plain; charset=utf-8");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "504 should come at the response timeout, not when the upstream answers"
    );
    // A fast request on the same proxy still works.
    let ok = block_request(proxy.addr, &pki.root, &client_opts(&pki), get("/pets")).unwrap();
    assert_eq!(ok.status, 200);
}
