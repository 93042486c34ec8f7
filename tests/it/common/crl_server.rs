//! A CRL server for the fetch tests: http or https, with the conditional-request and
//! failure behaviours real servers have.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

/// How a [`CrlServer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlMode {
    /// Serves its files, with ETag and 304 for a matching If-None-Match.
    Serve,
    /// Answers 503 to everything.
    Unavailable,
}

/// Requests a [`CrlServer`] saw: (path, the If-None-Match it carried).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A CRL server of the test's own: serves files that the test changes, on loopback.
pub struct CrlServer {
    pub addr: SocketAddr,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    mode: Arc<Mutex<CrlMode>>,
    /// Requests seen: (path, If-None-Match sent).
    seen: Seen,
    /// When set, the server answers like Python's `http.server`: this `Last-Modified` (one-second
    /// granularity), no ETag, and 304 when `If-Modified-Since` is not older.
    last_modified: Arc<Mutex<Option<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl CrlServer {
    pub fn start() -> CrlServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let mode = Arc::new(Mutex::new(CrlMode::Serve));
        let seen: Seen = Arc::default();
        let last_modified: Arc<Mutex<Option<String>>> = Arc::default();
        let (f, m, s, lm) = (
            files.clone(),
            mode.clone(),
            seen.clone(),
            last_modified.clone(),
        );
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (f, m, s, lm) = (f.clone(), m.clone(), s.clone(), lm.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (f, m, s, lm) = (f.clone(), m.clone(), s.clone(), lm.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let inm = req
                                .headers()
                                .get("if-none-match")
                                .map(|v| v.to_str().unwrap_or("").to_owned());
                            s.lock().unwrap().push((path.clone(), inm.clone()));
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            if *m.lock().unwrap() == CrlMode::Unavailable {
                                *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                                return Ok::<_, std::convert::Infallible>(resp);
                            }
                            let Some(body) = f.lock().unwrap().get(&path).cloned() else {
                                *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
                                return Ok(resp);
                            };
                            if let Some(lm) = lm.lock().unwrap().clone() {
                                let ims = req
                                    .headers()
                                    .get("if-modified-since")
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| httpdate::parse_http_date(v).ok());
                                let modified = httpdate::parse_http_date(&lm).unwrap();
                                if ims.is_some_and(|ims| modified <= ims) {
                                    *resp.status_mut() = hyper::StatusCode::NOT_MODIFIED;
                                } else {
                                    *resp.body_mut() = Full::new(Bytes::from(body));
                                }
                                let now = httpdate::fmt_http_date(std::time::SystemTime::now());
                                resp.headers_mut()
                                    .insert("last-modified", lm.parse().unwrap());
                                resp.headers_mut().insert("date", now.parse().unwrap());
                                return Ok(resp);
                            }
                            let etag = format!(
                                "\"{}\"",
                                hex::encode(aws_lc_rs::digest::digest(
                                    &aws_lc_rs::digest::SHA256,
                                    &body
                                ))
                            );
                            if inm.as_deref() == Some(etag.as_str()) {
                                *resp.status_mut() = hyper::StatusCode::NOT_MODIFIED;
                            } else {
                                *resp.body_mut() = Full::new(Bytes::from(body));
                            }
                            resp.headers_mut().insert("etag", etag.parse().unwrap());
                            Ok(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        CrlServer {
            addr,
            files,
            mode,
            seen,
            last_modified,
            _rt: rt,
        }
    }

    /// Answers from now on like a server that dates files to the second and sends no ETag:
    /// `Last-Modified: <last_modified>` on every answer, 304 when `If-Modified-Since` is not
    /// older than it.
    pub fn last_modified_only(&self, last_modified: std::time::SystemTime) {
        *self.last_modified.lock().unwrap() = Some(httpdate::fmt_http_date(last_modified));
    }

    /// Serves `body` at `path` from now on.
    pub fn put(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.files.lock().unwrap().insert(path.into(), body.into());
    }

    pub fn set_mode(&self, mode: CrlMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests for `path` so far.
    pub fn requests(&self, path: &str) -> Vec<Option<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, inm)| inm.clone())
            .collect()
    }
}

// ---- An OCSP responder of the test's own: `openssl ocsp` over an index file it re-reads ----
