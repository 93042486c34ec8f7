//! `listener.max_request_body_bytes`: 413 past the limit, enforced while the body streams
//! (issue 5).

use std::sync::{Arc, Mutex};

use crate::common::*;
use crate::rawtls::*;
use bytes::Bytes;
use http_body_util::BodyExt;

const LIMIT: &str = "max_request_body_bytes = 1000";

/// An upstream that reads the whole body and says how it went; every outcome is recorded so
/// a test can prove the app never saw a complete over-limit body.
fn recording_app() -> (App, Arc<Mutex<Vec<String>>>) {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let o = outcomes.clone();
    let app = App::start(move |req| {
        let o = o.clone();
        async move {
            let outcome = match body_bytes(req).await {
                Ok(b) => format!("complete {}", b.len()),
                Err(_) => "aborted".to_owned(),
            };
            o.lock().unwrap().push(outcome.clone());
            full(200, outcome)
        }
    });
    (app, outcomes)
}

#[test]
fn declared_length_over_limit_gets_413_before_the_body_and_without_the_upstream() {
    let pki = Pki::new();
    let (app, _) = recording_app();
    let proxy = start(&pki, &config(&app.url(), LIMIT, "", ""));
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    // Only the head: the proxy answers without waiting for (or buffering) the body.
    c.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(
        r.text(),
        "413 Content Too Large: request body exceeds the limit\n"
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(app.hits(), 0, "the upstream was contacted");
    assert_eq!(
        proxy.metric("mtls_shield_requests_total{code_class=\"4xx\"}"),
        1.0
    );
}

#[test]
fn expect_100_continue_over_limit_gets_413_and_no_100() {
    let pki = Pki::new();
    let (app, _) = recording_app();
    let proxy = start(&pki, &config(&app.url(), LIMIT, "", ""));
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"PUT /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 413, "first response must be the 413, not 100");
    assert_eq!(app.hits(), 0);
}

#[test]
fn body_at_the_limit_passes_whole() {
    let pki = Pki::new();
    let (app, outcomes) = recording_app();
    let proxy = start(&pki, &config(&app.url(), LIMIT, "", ""));
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    // Chunked, so only streaming enforcement applies: 400 + 600 = exactly 1000.
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend(format!("190\r\n{}\r\n", "a".repeat(400)).as_bytes());
    req.extend(format!("258\r\n{}\r\n0\r\n\r\n", "b".repeat(600)).as_bytes());
    c.send(&req).unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "complete 1000"));
    assert_eq!(*outcomes.lock().unwrap(), vec!["complete 1000"]);
}

#[test]
fn chunked_body_crossing_limit_is_cut_and_gets_413() {
    let pki = Pki::new();
    let (app, outcomes) = recording_app();
    let proxy = start(&pki, &config(&app.url(), LIMIT, "", ""));
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend(format!("258\r\n{}\r\n", "a".repeat(600)).as_bytes());
    req.extend(format!("258\r\n{}\r\n", "b".repeat(600)).as_bytes());
    c.send(&req).unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 413);
    let (_, end) = c.read_to_end();
    assert_eq!(end, End::Closed);
    // The upstream connection was dropped mid-request: depending on timing the app saw
    // nothing at all or a head whose body then broke off, never a complete body.
    wait_until("every upstream request finished", DEADLINE, || {
        outcomes.lock().unwrap().len() == app.hits()
    });
    assert!(outcomes.lock().unwrap().iter().all(|o| o == "aborted"));
    assert_eq!(
        proxy.metric("mtls_shield_upstream_errors_total{kind=\"other\"}"),
        0.0,
        "a client over the limit is not an upstream error"
    );
}

#[test]
fn body_crossing_limit_after_the_response_started_resets_the_connection() {
    let pki = Pki::new();
    let outcomes = Arc::new(Mutex::new(Vec::<String>::new()));
    let o = outcomes.clone();
    // Answers at once with a streaming body, while reading the request body in parallel.
    let app = App::start(move |req| {
        let o = o.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"started")).await.unwrap();
                let outcome = match body_bytes(req).await {
                    Ok(b) => format!("complete {}", b.len()),
                    Err(_) => "aborted".to_owned(),
                };
                o.lock().unwrap().push(outcome.clone());
                let _ = tx.send(Bytes::from(outcome)).await;
            });
            hyper::Response::new(ChannelBody(rx).boxed())
        }
    });
    let proxy = start(&pki, &config(&app.url(), LIMIT, "", ""));
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    let mut req =
        b"POST /stream HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend(format!("258\r\n{}\r\n", "a".repeat(600)).as_bytes());
    c.send(&req).unwrap();
    // Wait until the response is under way.
    let mut seen = Vec::new();
    while find(&seen, b"started").is_none() {
        let (mut bytes, end) = {
            c.set_read_timeout(std::time::Duration::from_millis(200));
            c.read_to_end()
        };
        seen.append(&mut bytes);
        assert_ne!(end, End::Closed, "closed before the response started");
    }
    assert!(seen.starts_with(b"HTTP/1.1 200 OK\r\n"));
    // Now cross the limit.
    c.send(format!("258\r\n{}\r\n", "b".repeat(600)).as_bytes())
        .unwrap();
    c.set_read_timeout(DEADLINE);
    let (rest, end) = c.read_to_end();
    assert_eq!(end, End::Closed, "connection should be cut");
    seen.extend(rest);
    assert!(
        find(&seen, b"\r\n0\r\n\r\n").is_none(),
        "the response must not end cleanly: {:?}",
        String::from_utf8_lossy(&seen)
    );
    wait_until("upstream saw the abort", DEADLINE, || {
        !outcomes.lock().unwrap().is_empty()
    });
    assert_eq!(*outcomes.lock().unwrap(), vec!["aborted"]);
}

#[test]
fn h2_declared_length_over_limit_gets_413() {
    let pki = Pki::new();
    let (app, _) = recording_app();
    let proxy = start(&pki, &config(&app.url(), LIMIT, "", ""));
    let got = block_request(
        proxy.addr,
        &pki.root,
        &good_h2(&pki),
        hyper::Request::post("https://localhost/upload")
            .body(http_body_util::Full::new(Bytes::from(vec![b'x'; 5000])))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(got.status, 413);
    assert!(got.headers.get("connection").is_none());
    assert_eq!(app.hits(), 0);
}

#[test]
fn h2_streamed_body_crossing_limit_gets_413() {
    let pki = Pki::new();
    let (app, outcomes) = recording_app();
    let proxy = start(&pki, &config(&app.url(), LIMIT, "", ""));
    let status = block_on(async {
        let tls = tls_connect(proxy.addr, &pki.root, &good_h2(&pki))
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        // No content-length: DATA frames of 600 bytes until the proxy answers.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..100 {
                if tx.send(Bytes::from(vec![b'z'; 600])).await.is_err() {
                    return;
                }
            }
        });
        let req = hyper::Request::post("https://localhost/upload")
            .body(ChannelBody(rx))
            .unwrap();
        sender.send_request(req).await.unwrap().status()
    });
    assert_eq!(status, 413);
    // The upstream connection was dropped mid-request: depending on timing the app saw
    // nothing at all or a head whose body then broke off, never a complete body.
    wait_until("every upstream request finished", DEADLINE, || {
        outcomes.lock().unwrap().len() == app.hits()
    });
    assert!(outcomes.lock().unwrap().iter().all(|o| o == "aborted"));
}
