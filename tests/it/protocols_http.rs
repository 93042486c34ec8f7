//! HTTP semantics through the proxy per RFC 9110/9112: `Expect: 100-continue`, trailers in
//! both directions, HEAD, 204 and 304 (issue 5).

use std::sync::{Arc, Mutex};

use crate::common::*;
use crate::rawtls::*;
use bytes::Bytes;
use http_body_util::BodyExt;

/// Routes:
/// - `/echo`: answers `len=<n> body=<body> trailer=<x-checksum trailer or ->`
/// - `/trailers`: chunked body "abc" with trailer `x-resp-sum: 42` (declared in `Trailer`)
/// - `/head`: `content-length: 1234`, body only for GET
/// - `/204`, `/304`
fn app(seen: Arc<Mutex<Vec<String>>>) -> App {
    App::start(move |req| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_owned();
            let mut line = format!("{} {path}", req.method());
            for (k, v) in req.headers() {
                line.push_str(&format!(" {k}={}", v.to_str().unwrap_or("?")));
            }
            seen.lock().unwrap().push(line);
            match path.as_str() {
                "/echo" => {
                    let collected = req.into_body().collect().await.unwrap();
                    let trailer = collected
                        .trailers()
                        .and_then(|t| t.get("x-checksum"))
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_else(|| "-".into());
                    let body = collected.to_bytes();
                    full(
                        200,
                        format!(
                            "len={} body={} trailer={trailer}",
                            body.len(),
                            String::from_utf8_lossy(&body)
                        ),
                    )
                }
                "/trailers" => {
                    let (tx, rx) = tokio::sync::mpsc::channel(2);
                    tokio::spawn(async move {
                        let mut t = hyper::HeaderMap::new();
                        t.insert("x-resp-sum", "42".parse().unwrap());
                        let _ = tx.send(hyper::body::Frame::data(Bytes::from("abc"))).await;
                        let _ = tx.send(hyper::body::Frame::trailers(t)).await;
                    });
                    let mut r = hyper::Response::new(FrameBody(rx).boxed());
                    r.headers_mut()
                        .insert("trailer", "x-resp-sum".parse().unwrap());
                    r
                }
                "/head" => {
                    let mut r = if req.method() == hyper::Method::HEAD {
                        full(200, "")
                    } else {
                        full(200, "x".repeat(1234))
                    };
                    r.headers_mut()
                        .insert("content-length", "1234".parse().unwrap());
                    r
                }
                "/204" => full(204, ""),
                "/304" => {
                    let mut r = full(304, "");
                    r.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
                    r
                }
                _ => full(200, "ok"),
            }
        }
    })
}

struct FrameBody(tokio::sync::mpsc::Receiver<hyper::body::Frame<Bytes>>);

impl hyper::body::Body for FrameBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

fn setup() -> (Pki, App, Proxy, Arc<Mutex<Vec<String>>>) {
    let pki = Pki::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = app(seen.clone());
    let proxy = start(&pki, &config(&app.url(), "", "", ""));
    (pki, app, proxy, seen)
}

#[test]
fn expect_100_continue_gets_one_100_then_the_final_response() {
    let (pki, _app, proxy, _) = setup();
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    // The body is held back until the proxy says 100.
    let interim = c.read_response(false).unwrap();
    assert_eq!(interim.status_line, "HTTP/1.1 100 Continue");
    c.send(b"hello").unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200, "a single 100, then the final response");
    assert_eq!(r.text(), "len=5 body=hello trailer=-");
}

#[test]
fn request_trailers_reach_the_upstream() {
    let (pki, _app, proxy, _) = setup();
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc123\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.text(), "len=5 body=hello trailer=abc123");
}

#[test]
fn response_trailers_reach_an_http1_client_that_accepts_them() {
    let (pki, _app, proxy, seen) = setup();
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"GET /trailers HTTP/1.1\r\nHost: localhost\r\nTE: trailers\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("trailer"), Some("x-resp-sum"));
    assert_eq!(r.text(), "abc");
    assert_eq!(r.trailers, vec![("x-resp-sum".to_owned(), "42".to_owned())]);
    // `TE: trailers` went upstream (the only TE value forwarded).
    assert!(seen.lock().unwrap()[0].contains(" te=trailers"));
}

#[test]
fn response_trailers_reach_an_h2_client() {
    let (pki, _app, proxy, _) = setup();
    let trailers = block_on(async {
        let mut sender = h2_sender(proxy.addr, &pki.root, &good_h2(&pki)).await;
        let req = hyper::Request::get("https://localhost/trailers")
            .header("te", "trailers")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let collected = resp.into_body().collect().await.unwrap();
        collected.trailers().cloned()
    });
    let trailers = trailers.expect("h2 trailers");
    assert_eq!(trailers.get("x-resp-sum").unwrap(), "42");
}

#[test]
fn head_response_keeps_content_length_and_sends_no_body() {
    let (pki, app, proxy, _) = setup();
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(
        b"HEAD /head HTTP/1.1\r\nHost: localhost\r\n\r\nGET /x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    let head = c.read_response(true).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1234"));
    // Had the proxy sent a body after the HEAD response, it would be read as the next
    // response's head here.
    let next = c.read_response(false).unwrap();
    assert_eq!(next.status_line, "HTTP/1.1 200 OK");
    assert_eq!(next.text(), "ok");
    assert_eq!(app.hits(), 2);
}

#[test]
fn no_content_204_has_no_body_and_no_length() {
    let (pki, _app, proxy, _) = setup();
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(
        b"GET /204 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 204);
    assert!(r.header("content-length").is_none(), "{:?}", r.headers);
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(c.read_response(false).unwrap().text(), "ok");
}

#[test]
fn not_modified_304_has_no_body_and_keeps_validators() {
    let (pki, _app, proxy, _) = setup();
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"GET /304 HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: \"v1\"\r\n\r\nGET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(c.read_response(false).unwrap().text(), "ok");
}

#[test]
fn if_none_match_reaches_the_upstream() {
    let (pki, _app, proxy, seen) = setup();
    let got = block_request(
        proxy.addr,
        &pki.root,
        &good(&pki),
        hyper::Request::get("/304")
            .header("host", "localhost")
            .header("if-none-match", "\"v1\"")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(got.status, 304);
    assert!(got.body.is_empty());
    assert!(seen.lock().unwrap()[0].contains(" if-none-match=\"v1\""));
}
