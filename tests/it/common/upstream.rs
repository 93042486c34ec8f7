//! The upstream: a counting HTTP server the proxy forwards to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

/// The test upstream: counts requests and answers by path.
/// - `/pets`: the PetStore JSON
/// - `/headers`: request headers as a JSON object of arrays
/// - `/bytes/N`: N bytes of a repeating pattern
/// - `/upload`: reads the body, answers `<len> <sha256-hex>`
/// - `/slow/MS`: waits MS milliseconds, then 200
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
    pub rt: tokio::runtime::Runtime,
}

impl Upstream {
    pub fn start() -> Upstream {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let h = hits.clone();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        upstream_answer(req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            hits,
            conns,
            rt,
        }
    }

    /// Connections the upstream has accepted so far.
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A byte pattern for big bodies: byte i is `(i % 251) as u8`.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn upstream_answer(
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let full = |s: String| Full::new(Bytes::from(s)).boxed();
    let resp = if path == "/pets" {
        Response::new(full(mtls_shield::demo::PETS.to_owned()))
    } else if path == "/headers" {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in req.headers() {
            map.entry(k.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        Response::new(full(serde_json::to_string(&map).unwrap()))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let n: u64 = n.parse().unwrap_or(0);
        let stream = futures_stream(n);
        Response::new(stream)
    } else if path == "/upload" {
        let mut body = req.into_body();
        let mut len = 0u64;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(d) = frame.data_ref() {
                len += d.len() as u64;
                ctx.update(d);
            }
        }
        Response::new(full(format!("{len} {}", hex::encode(ctx.finish()))))
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        Response::new(full("slow done".into()))
    } else {
        let mut r = Response::new(full("not found".into()));
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        r
    };
    Ok(resp)
}

/// A streaming body of `n` pattern bytes in 64 KiB frames, never held whole.
fn futures_stream(n: u64) -> BoxBody {
    struct Pattern {
        sent: u64,
        total: u64,
    }
    impl hyper::body::Body for Pattern {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            if self.sent >= self.total {
                return std::task::Poll::Ready(None);
            }
            let len = (self.total - self.sent).min(64 * 1024);
            let start = self.sent;
            let chunk: Vec<u8> = (start..start + len).map(pattern).collect();
            self.sent += len;
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(chunk)))))
        }
        fn size_hint(&self) -> hyper::body::SizeHint {
            hyper::body::SizeHint::with_exact(self.total - self.sent)
        }
    }
    Pattern { sent: 0, total: n }.boxed()
}
