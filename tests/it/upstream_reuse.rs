//! Upstream connection reuse with client-connection affinity (issue 15): a client
//! connection's requests share one upstream connection, a quiet client gives it back to the
//! pool for others, an upstream that closed it is survived, and concurrent h2 streams each
//! get their own answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;
use crate::rawtls::h2_sender;

const AFFINE: &str = "mtls_shield_upstream_connections_total{source=\"affine\"}";
const POOLED: &str = "mtls_shield_upstream_connections_total{source=\"pooled\"}";
const OPENED: &str = "mtls_shield_upstream_connections_total{source=\"opened\"}";

/// The proxy in front of `up`, with the pool's debug lines on.
fn start(pki: &Pki, up_url: &str) -> Proxy {
    let config = pki.config(up_url, "").replace(
        "level = \"info\"",
        "level = \"info,mtls_shield::proxy::serve=debug\"",
    );
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, config).unwrap();
    Proxy::start(&path)
}

#[test]
fn keep_alive_requests_of_one_client_share_one_upstream_connection() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up.url());
    let mut client = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    for _ in 0..5 {
        assert_eq!(client.get("/pets").unwrap().0, 200);
    }
    assert_eq!(up.conns(), 1);
    assert_eq!(proxy.metric(OPENED), 1.0);
    // Each later request found the connection its predecessor used (or, if the client was
    // slower than the quiet window, found it in the pool): never a second connection.
    assert_eq!(proxy.metric(AFFINE) + proxy.metric(POOLED), 4.0);
}

#[test]
fn a_quiet_client_gives_its_upstream_connection_to_the_next_client() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up.url());
    let mut first = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    assert_eq!(first.get("/pets").unwrap().0, 200);
    // The first client stays connected but goes quiet: its watchdog hands the connection
    // back to the pool.
    proxy.wait_log(&["its upstream connections went back to the pool"]);
    let mut second = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    assert_eq!(second.get("/pets").unwrap().0, 200);
    assert_eq!(up.conns(), 1, "the second client opened its own connection");
    assert_eq!(proxy.metric(POOLED), 1.0);
    // And the first client, back from its pause, is served (from the pool or a new one).
    assert_eq!(first.get("/pets").unwrap().0, 200);
}

/// An upstream that answers one request per connection and then closes it, without a
/// `Connection: close` (hyper's client learns it only when the socket closes).
fn closing_upstream(rt: &tokio::runtime::Runtime) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    rt.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Closing right after the answer: the proxy's kept connection is dead by the
                // time the client's next request comes.
            });
        }
    });
    (addr, conns)
}

#[test]
fn a_kept_connection_the_upstream_closed_is_replaced_without_an_error() {
    let pki = Pki::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (addr, conns) = closing_upstream(&rt);
    let proxy = start(&pki, &format!("http://{addr}"));
    let mut client = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    for i in 0..4 {
        assert_eq!(
            client.get("/").unwrap(),
            (200, "ok".to_owned()),
            "request {i}"
        );
    }
    assert_eq!(conns.load(Ordering::SeqCst), 4);
    assert_eq!(
        proxy.metric("mtls_shield_upstream_errors_total{kind=\"other\"}"),
        0.0
    );
}

#[test]
fn concurrent_h2_streams_on_one_connection_each_get_their_own_answer() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start(&pki, &up.url());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let opts = ClientOpts {
        h2: true,
        ..ClientOpts::with(ClientCert::leaf(&pki.client))
    };
    rt.block_on(async {
        let sender = h2_sender(proxy.addr, &pki.root, &opts).await;
        // Three waves of 20 concurrent streams of different sizes: later waves run on the
        // connections the earlier ones kept, some of them still finishing a body.
        for wave in 0..3u64 {
            let mut tasks = Vec::new();
            for i in 0..20u64 {
                let mut sender = sender.clone();
                let n = 1000 * (i + 1) + wave * 7 + if i % 3 == 0 { 300_000 } else { 0 };
                tasks.push(tokio::spawn(async move {
                    let resp = sender
                        .send_request(get(&format!("/bytes/{n}")))
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    let body = http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .unwrap()
                        .to_bytes();
                    assert_eq!(body.len() as u64, n, "stream {i} of wave {wave}");
                    assert!(body
                        .iter()
                        .enumerate()
                        .all(|(j, b)| *b == pattern(j as u64)));
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    });
    // Never more upstream connections than the streams that were in flight at once.
    assert!(up.conns() <= 20, "{} upstream connections", up.conns());
    assert!(proxy.metric(AFFINE) + proxy.metric(POOLED) >= 40.0);
}
