//! Request smuggling: ambiguous HTTP/1.1 framing sent as raw bytes over TLS is refused with
//! 400 or normalised, and the upstream (which records every byte it receives) never sees a
//! request framed differently from what the proxy parsed (issue 5).

use crate::common::*;
use crate::rawtls::*;

/// Echoes what it parsed: method, path, body length and body.
fn echo_app() -> App {
    App::start(|req| async move {
        let line = format!("{} {}", req.method(), req.uri().path());
        let body = body_bytes(req)
            .await
            .unwrap_or_else(|e| format!("<{e}>").into_bytes());
        full(
            200,
            format!(
                "{line} len={} body={}",
                body.len(),
                String::from_utf8_lossy(&body)
            ),
        )
    })
}

/// Sends `raw` on a fresh connection and returns every response until the proxy closes.
fn exchange(proxy: &Proxy, pki: &Pki, raw: &[u8]) -> Vec<RawResponse> {
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(pki));
    c.send(raw).unwrap();
    let mut out = Vec::new();
    loop {
        match c.read_response(false) {
            Ok(r) => out.push(r),
            Err(e) => {
                assert!(
                    e.starts_with("closed before a response head; got \"\""),
                    "after {} responses: {e}",
                    out.len()
                );
                return out;
            }
        }
    }
}

fn setup() -> (Pki, App, Proxy) {
    let pki = Pki::new();
    let app = echo_app();
    let proxy = start(&pki, &config(&app.url(), "", "", ""));
    (pki, app, proxy)
}

fn assert_refused_400(proxy: &Proxy, pki: &Pki, app: &App, raw: &[u8]) {
    let responses = exchange(proxy, pki, raw);
    assert_eq!(
        responses.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![400],
        "for {:?}",
        String::from_utf8_lossy(raw)
    );
    assert_eq!(app.hits(), 0, "reached the upstream: {:?}", app.raw_text());
    assert!(app.raw().is_empty());
}

#[test]
fn content_length_with_transfer_encoding_is_forwarded_as_chunked_only_and_closes() {
    let (pki, app, proxy) = setup();
    // CL.TE classic: a CL-trusting hop would read 4 bytes and see "GET /smuggled" next.
    let raw = b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let responses = exchange(&proxy, &pki, raw);
    // One response (the chunked body was used), then the proxy closes: the bytes after the
    // body are never parsed as a second request.
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].text(), "POST /a len=5 body=hello");
    assert_eq!(app.hits(), 1);
    let seen = app.raw_text().to_ascii_lowercase();
    assert!(!seen.contains("smuggled"), "{seen}");
    assert!(!seen.contains("content-length"), "{seen}");
    assert_eq!(count(seen.as_bytes(), b"transfer-encoding: chunked\r\n"), 1);
    assert!(
        seen.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "{seen:?}"
    );
}

#[test]
fn transfer_encoding_before_content_length_is_forwarded_as_chunked_only() {
    let (pki, app, proxy) = setup();
    let raw = b"POST /b HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let responses = exchange(&proxy, &pki, raw);
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].text(), "POST /b len=3 body=abc");
    let seen = app.raw_text().to_ascii_lowercase();
    assert!(!seen.contains("content-length"), "{seen}");
    assert!(seen.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{seen:?}");
}

#[test]
fn differing_duplicate_content_lengths_are_refused() {
    let (pki, app, proxy) = setup();
    assert_refused_400(
        &proxy,
        &pki,
        &app,
        b"POST /c HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    );
}

#[test]
fn identical_duplicate_content_lengths_reach_the_upstream_as_one() {
    let (pki, app, proxy) = setup();
    let raw = b"POST /d HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let responses = exchange(&proxy, &pki, raw);
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].text(), "POST /d len=5 body=hello");
    let seen = app.raw_text().to_ascii_lowercase();
    assert_eq!(count(seen.as_bytes(), b"content-length"), 1, "{seen}");
    assert!(seen.contains("\r\ncontent-length: 5\r\n"));
    assert!(seen.ends_with("\r\n\r\nhello"));
}

#[test]
fn invalid_content_lengths_are_refused() {
    for bad in [
        "+5",
        "-5",
        "5a",
        "0x5",
        "5, 6",
        "5 5",
        "",
        "99999999999999999999999",
    ] {
        let (pki, app, proxy) = setup();
        let raw =
            format!("POST /e HTTP/1.1\r\nHost: localhost\r\nContent-Length: {bad}\r\n\r\nhello");
        assert_refused_400(&proxy, &pki, &app, raw.as_bytes());
    }
}

#[test]
fn transfer_encoding_not_ending_in_chunked_is_refused() {
    for te in [
        "gzip",
        "chunked, gzip",
        "identity",
        "xchunked",
        "chunked\u{0b}",
    ] {
        let (pki, app, proxy) = setup();
        let raw = format!(
            "POST /f HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        assert_refused_400(&proxy, &pki, &app, raw.as_bytes());
    }
}

#[test]
fn transfer_encoding_on_http_1_0_is_refused() {
    let (pki, app, proxy) = setup();
    assert_refused_400(
        &proxy,
        &pki,
        &app,
        b"POST /g HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn obs_fold_is_refused() {
    let (pki, app, proxy) = setup();
    assert_refused_400(
        &proxy,
        &pki,
        &app,
        b"GET /h HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\n\r\n",
    );
}

#[test]
fn obs_fold_hiding_transfer_encoding_is_refused() {
    let (pki, app, proxy) = setup();
    assert_refused_400(
        &proxy,
        &pki,
        &app,
        b"POST /i HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nX-Pad: a\r\n Transfer-Encoding: chunked\r\n\r\nhello",
    );
}

#[test]
fn whitespace_before_colon_is_refused() {
    let (pki, app, proxy) = setup();
    assert_refused_400(
        &proxy,
        &pki,
        &app,
        b"POST /j HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello",
    );
}

#[test]
fn bare_cr_is_refused() {
    let (pki, app, proxy) = setup();
    assert_refused_400(
        &proxy,
        &pki,
        &app,
        b"GET /k HTTP/1.1\r\nHost: localhost\r\nX-A: a\rContent-Length: 5\r\n\r\nhello",
    );
}

#[test]
fn nul_in_header_value_is_refused() {
    let (pki, app, proxy) = setup();
    assert_refused_400(
        &proxy,
        &pki,
        &app,
        b"GET /l HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n",
    );
}

#[test]
fn bare_lf_line_endings_are_normalised_to_crlf() {
    let (pki, app, proxy) = setup();
    let raw = b"POST /m HTTP/1.1\nHost: localhost\nContent-Length: 5\nConnection: close\n\nhello";
    let responses = exchange(&proxy, &pki, raw);
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].text(), "POST /m len=5 body=hello");
    let seen = app.raw();
    // Every LF the upstream received is part of a CRLF.
    let lfs = count(&seen, b"\n");
    assert_eq!(
        lfs,
        count(&seen, b"\r\n"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    assert!(seen.ends_with(b"\r\n\r\nhello"));
}

#[test]
fn invalid_chunk_size_never_reaches_the_upstream_as_a_complete_request() {
    let (pki, app, proxy) = setup();
    let raw = b"POST /n HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let responses = exchange(&proxy, &pki, raw);
    assert_eq!(
        responses.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![400]
    );
    // The upstream saw at most the head, then its connection broke before any body.
    wait_until("upstream finished", DEADLINE, || {
        app.active.load(std::sync::atomic::Ordering::SeqCst) == 0
    });
    let seen = app.raw_text();
    assert!(!seen.contains("hello"), "{seen:?}");
    assert_eq!(
        proxy.metric("mtls_shield_upstream_errors_total{kind=\"other\"}"),
        0.0,
        "a malformed client body is not an upstream error"
    );
}

#[test]
fn pipelined_requests_after_a_clean_one_are_each_framed_alone() {
    let (pki, app, proxy) = setup();
    let raw = b"POST /o1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabcGET /o2 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let responses = exchange(&proxy, &pki, raw);
    assert_eq!(
        responses.iter().map(|r| r.text()).collect::<Vec<_>>(),
        vec!["POST /o1 len=3 body=abc", "GET /o2 len=0 body="]
    );
    assert_eq!(app.hits(), 2);
}

#[test]
fn get_with_a_chunked_body_reaches_the_upstream_with_that_body() {
    let (pki, app, proxy) = setup();
    // hyper's client would frame a GET whose body length is unknown as bodyless; the proxy
    // states the chunked framing it parsed, so the upstream sees the same message.
    let raw = b"GET /p HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nbody\r\n0\r\n\r\n";
    let responses = exchange(&proxy, &pki, raw);
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].text(), "GET /p len=4 body=body");
    let seen = app.raw_text().to_ascii_lowercase();
    assert!(
        seen.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{seen}"
    );
    assert!(seen.ends_with("\r\n\r\n4\r\nbody\r\n0\r\n\r\n"), "{seen:?}");
}

#[test]
fn connect_is_refused_with_405_without_the_upstream() {
    let (pki, app, proxy) = setup();
    let responses = exchange(
        &proxy,
        &pki,
        b"CONNECT app.internal:443 HTTP/1.1\r\nHost: app.internal:443\r\n\r\n",
    );
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].status, 405);
    assert_eq!(
        responses[0].text(),
        "405 Method Not Allowed: CONNECT is not supported by this reverse proxy\n"
    );
    assert_eq!(app.hits(), 0);
}
