//! Timeouts and size limits hold against slow, idle and oversized clients and upstreams
//! (issue 5). Every timeout is configured short; tests wait on the behaviour, not a clock.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::rawtls::*;

fn quick_app() -> App {
    App::start(|req| async move {
        match req.uri().path() {
            "/upload" => {
                let body = body_bytes(req).await.unwrap();
                full(200, format!("got {} bytes", body.len()))
            }
            p if p.starts_with("/sleep/") => {
                let ms: u64 = p["/sleep/".len()..].parse().unwrap();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                full(200, "slept")
            }
            p if p.starts_with("/trickle/") => {
                // /trickle/<chunks>/<gap ms>: headers at once, then 1 KiB chunks.
                let mut it = p["/trickle/".len()..].split('/');
                let chunks: usize = it.next().unwrap().parse().unwrap();
                let gap: u64 = it.next().unwrap().parse().unwrap();
                let mut r =
                    hyper::Response::new(trickle_body(chunks, 1024, Duration::from_millis(gap)));
                r.headers_mut().insert(
                    "content-length",
                    (chunks * 1024).to_string().parse().unwrap(),
                );
                r
            }
            _ => full(200, "ok"),
        }
    })
}

#[test]
fn silent_tcp_peer_is_dropped_at_handshake_timeout_and_counted() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(
        &pki,
        &config(&app.url(), "handshake_timeout = \"300ms\"", "", ""),
    );
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let waited = started.elapsed();
    assert_eq!(n, 0, "a silent peer gets no bytes, only a close");
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the 300ms handshake timeout"
    );
    assert!(
        waited < Duration::from_secs(5),
        "closed only after {waited:?}"
    );
    proxy.wait_log(&["handshake rejected", "reason=\"handshake_timeout\""]);
    wait_until("handshake_timeout counted", DEADLINE, || {
        handshakes(&proxy, "rejected", "handshake_timeout") == 1.0
    });
    assert_eq!(app.hits(), 0);
}

#[test]
fn peer_stalling_mid_client_hello_is_dropped_at_handshake_timeout() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(
        &pki,
        &config(&app.url(), "handshake_timeout = \"300ms\"", "", ""),
    );
    let mut s = std::net::TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    // A TLS record header announcing a 512-byte ClientHello, then nothing more.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    wait_until("handshake_timeout counted", DEADLINE, || {
        handshakes(&proxy, "rejected", "handshake_timeout") == 1.0
    });
}

#[test]
fn trickled_request_head_is_cut_off_at_header_read_timeout() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(
        &pki,
        &config(&app.url(), "header_read_timeout = \"500ms\"", "", ""),
    );
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    let started = Instant::now();
    c.send(b"GET /pets HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    // One header line every 100 ms (the read timeout paces the loop) until the proxy hangs up.
    c.set_read_timeout(Duration::from_millis(100));
    let mut i = 0;
    let end = loop {
        let (bytes, end) = c.read_to_end();
        assert!(
            bytes.is_empty(),
            "no response expected, got {:?}",
            String::from_utf8_lossy(&bytes)
        );
        if end == End::Closed {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
        i += 1;
        if c.send(format!("X-Slow-{i}: x\r\n").as_bytes()).is_err() {
            break started.elapsed();
        }
    };
    assert!(
        end >= Duration::from_millis(450),
        "cut off after {end:?}, before the header timeout"
    );
    proxy.wait_log(&["request header not received in time"]);
    assert_eq!(
        app.hits(),
        0,
        "an incomplete head never reaches the upstream"
    );
}

/// The header clock restarts for every request head: a keep-alive connection whose second
/// head trickles in is cut off like a fresh connection's first, not at the idle timeout.
#[test]
fn trickled_second_request_head_on_a_keep_alive_connection_is_cut_off() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(
        &pki,
        &config(&app.url(), "header_read_timeout = \"500ms\"", "", ""),
    );
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"GET /pets HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let first = c.read_response(false).unwrap();
    assert_eq!(first.status, 200);
    let started = Instant::now();
    c.send(b"GET /pets HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    c.set_read_timeout(Duration::from_millis(100));
    let mut i = 0;
    let end = loop {
        let (bytes, end) = c.read_to_end();
        assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
        if end == End::Closed {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
        i += 1;
        if c.send(format!("X-Slow-{i}: x\r\n").as_bytes()).is_err() {
            break started.elapsed();
        }
    };
    assert!(end >= Duration::from_millis(450), "cut off after {end:?}");
    // Within 1.25 x the timeout of the head's first byte, plus scheduling slack.
    assert!(
        end < Duration::from_millis(1500),
        "cut off only after {end:?}"
    );
    assert_eq!(
        app.hits(),
        1,
        "the incomplete second head never reaches the upstream"
    );
}

#[test]
fn slow_request_body_is_not_cut_off_by_header_read_timeout() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(
        &pki,
        &config(&app.url(), "header_read_timeout = \"300ms\"", "", ""),
    );
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    let started = Instant::now();
    c.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n")
        .unwrap();
    // One body byte every 120 ms: 1.2 s in all, four header timeouts long.
    c.set_read_timeout(Duration::from_millis(120));
    for _ in 0..10 {
        let (bytes, end) = c.read_to_end();
        assert!(bytes.is_empty() && end == End::TimedOut, "cut off mid-body");
        c.send(b"x").unwrap();
    }
    c.set_read_timeout(DEADLINE);
    let r = c.read_response(false).unwrap();
    assert!(started.elapsed() > Duration::from_millis(1000));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "got 10 bytes");
}

#[test]
fn idle_keep_alive_connection_is_closed_at_idle_timeout() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(
        &pki,
        &config(&app.url(), "idle_timeout = \"400ms\"", "", ""),
    );
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    let answered = Instant::now();
    let (bytes, end) = c.read_to_end();
    let idle = answered.elapsed();
    assert_eq!(end, End::Closed, "idle connection was not closed");
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    assert!(
        idle >= Duration::from_millis(350) && idle < Duration::from_secs(5),
        "closed after {idle:?} idle"
    );
}

#[test]
fn request_in_flight_longer_than_idle_timeout_completes() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(
        &pki,
        &config(&app.url(), "idle_timeout = \"300ms\"", "", ""),
    );
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"GET /sleep/1200 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "slept"));
}

#[test]
fn oversized_h1_header_block_gets_431_and_proxy_keeps_serving() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(&pki, &config(&app.url(), "max_header_bytes = 8192", "", ""));
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    // Exactly the buffer limit and still no end of head: hyper answers 431 and, since the
    // rest of that head was never read, closes this connection (HTTP/1.1 cannot resync).
    let mut req = b"GET /pets HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    req.resize(8192, b'a');
    c.send(&req).unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 431, "{}", r.status_line);
    let (_, end) = c.read_to_end();
    assert_eq!(end, End::Closed);
    assert_eq!(app.hits(), 0);

    // A well-formed client, new connection: served.
    let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/x")).unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(app.hits(), 1);
}

#[test]
fn oversized_h1_head_sent_whole_gets_431() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(&pki, &config(&app.url(), "max_header_bytes = 8192", "", ""));
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    let big = "a".repeat(20_000);
    c.send(format!("GET /pets HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(app.hits(), 0);
}

#[test]
fn hypers_own_431_is_counted_and_access_logged() {
    // hyper answers an oversized head by itself, before the service sees a request: the
    // answer must still be in requests_total and in the access log.
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(&pki, &config(&app.url(), "max_header_bytes = 8192", "", ""));
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    let big = "a".repeat(20_000);
    c.send(format!("GET /pets HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 431);
    wait_until("the 431 counted", DEADLINE, || {
        proxy.metric("mtls_shield_requests_total{code_class=\"4xx\"}") == 1.0
    });
    let line = proxy.wait_log(&["mtls_shield::access", "status=431"]);
    assert!(line.contains("method=- path=-"), "{line}");
    assert!(line.contains("client_cn=\"my-client\""), "{line}");
}

#[test]
fn hypers_own_400_for_a_malformed_request_line_is_counted() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(&pki, &config(&app.url(), "", "", ""));
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"GET /a b c HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 400);
    wait_until("the 400 counted", DEADLINE, || {
        proxy.metric("mtls_shield_requests_total{code_class=\"4xx\"}") == 1.0
    });
    proxy.wait_log(&["mtls_shield::access", "status=400"]);
    assert_eq!(app.hits(), 0);
}

#[test]
fn oversized_h2_header_list_gets_431_and_the_same_connection_keeps_serving() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(&pki, &config(&app.url(), "max_header_bytes = 8192", "", ""));
    block_on(async {
        let mut sender = h2_sender(proxy.addr, &pki.root, &good_h2(&pki)).await;
        let big = hyper::Request::get("https://localhost/pets")
            .header("x-big", "a".repeat(10_000))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let r = sender.send_request(big).await.unwrap();
        assert_eq!(r.status(), 431);
        // h2 refuses only that stream; the next request on the same connection is served.
        sender.ready().await.unwrap();
        let ok = hyper::Request::get("https://localhost/x")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let r = sender.send_request(ok).await.unwrap();
        assert_eq!(r.status(), 200);
    });
    assert_eq!(app.hits(), 1);
}

#[test]
fn upstream_connect_timeout_gives_502() {
    let pki = Pki::new();
    // An upstream whose accept queue is full: the kernel drops further SYNs, so a connect
    // neither succeeds nor fails until the proxy's connect timeout.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "accept queue never filled");
    }
    let proxy = start(
        &pki,
        &config(
            &format!("http://{addr}"),
            "",
            "connect_timeout = \"400ms\"\nresponse_timeout = \"10s\"",
            "",
        ),
    );
    let started = Instant::now();
    let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/pets")).unwrap();
    let took = started.elapsed();
    assert_eq!(got.status, 502);
    assert_eq!(got.text(), "502 Bad Gateway: upstream unavailable\n");
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(5),
        "502 after {took:?}"
    );
    assert_eq!(
        proxy.metric("mtls_shield_upstream_errors_total{kind=\"connect\"}"),
        1.0
    );
    drop(listener);
}

#[test]
fn upstream_response_timeout_gives_504() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(
        &pki,
        &config(&app.url(), "", "response_timeout = \"400ms\"", ""),
    );
    let started = Instant::now();
    let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/sleep/5000")).unwrap();
    assert_eq!(got.status, 504);
    assert_eq!(
        got.text(),
        "504 Gateway Timeout: upstream did not answer in time\n"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        proxy.metric("mtls_shield_upstream_errors_total{kind=\"timeout\"}"),
        1.0
    );
}

#[test]
fn streaming_response_body_outlives_response_timeout() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start(
        &pki,
        &config(&app.url(), "", "response_timeout = \"300ms\"", ""),
    );
    let started = Instant::now();
    // Headers at once, then 8 chunks 150 ms apart: about 1.05 s of body.
    let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/trickle/8/150")).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), 8 * 1024);
    assert!(got.body[7 * 1024..].iter().all(|b| *b == b'h'));
    assert_eq!(
        proxy.metric("mtls_shield_upstream_errors_total{kind=\"timeout\"}"),
        0.0
    );
}

/// Starts the shield through `sh -c 'ulimit …; exec shield'`, the way a service manager with a
/// low `nofile` would.
fn start_with_ulimit(pki: &Pki, text: &str, ulimit: &str) -> Proxy {
    let p = pki.path("mtls-shield.toml");
    std::fs::write(&p, text).unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit {ulimit} && exec \"$0\" run --config \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_mtls-shield"))
        .arg(&p)
        .env_remove("RUST_LOG");
    start_proxy_cmd(cmd, &p)
}

/// (soft, hard) "Max open files" of a process, from /proc.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut it = line["Max open files".len()..].split_whitespace();
    (it.next().unwrap().to_owned(), it.next().unwrap().to_owned())
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_limit_at_start_up() {
    let pki = Pki::new();
    let app = quick_app();
    let text = config(&app.url(), "max_connections = 50", "", "");
    let proxy = start_with_ulimit(&pki, &text, "-Sn 256");
    let (soft, hard) = open_file_limits(proxy.child.id());
    assert_ne!(
        hard, "256",
        "the machine's hard limit is 256: nothing to raise"
    );
    assert_eq!(soft, hard);
    let line = proxy.wait_log(&["open-file limit", "raised"]);
    assert!(line.contains("before=256"), "{line}");
    assert!(line.contains(&format!("after={hard}")), "{line}");
    assert!(
        !proxy.logs().iter().any(|l| l.contains("below what")),
        "no warning when the limit fits max_connections"
    );
}

#[test]
fn a_hard_open_file_limit_too_low_for_max_connections_is_warned_about_at_start_up() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start_with_ulimit(&pki, &config(&app.url(), "", "", ""), "-n 128");
    let line = proxy.wait_log(&["WARN", "below what listener.max_connections needs"]);
    assert!(line.contains("limit=128"), "{line}");
    assert!(line.contains("max_connections=10000"), "{line}");
}

#[test]
fn accept_failures_at_the_file_limit_are_counted_and_logged_once_not_every_retry() {
    let pki = Pki::new();
    let app = quick_app();
    let proxy = start_with_ulimit(&pki, &config(&app.url(), "", "", ""), "-n 64");
    // More silent TCP connections than the shield has descriptors: each one it accepts waits
    // for a ClientHello (handshake_timeout 10 s), and the rest stay in the kernel's backlog,
    // where every accept() retry fails with EMFILE.
    let conns: Vec<_> = (0..100)
        .map(|_| std::net::TcpStream::connect(proxy.addr).unwrap())
        .collect();
    let first = proxy.wait_log(&["accept failed"]);
    assert!(first.contains("Too many open files"), "{first}");
    // Keep the descriptors exhausted for several 50 ms retry periods: the point is that the
    // failures repeat while the log stays at one line.
    let hold_until = Instant::now() + Duration::from_millis(400);
    while Instant::now() < hold_until {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(conns);
    // With the backlog drained the admin listener can accept the scrape again.
    wait_until("the failed accepts counted", DEADLINE, || {
        proxy.metric("mtls_shield_accept_errors_total") >= 2.0
    });
    let lines = proxy
        .logs()
        .iter()
        .filter(|l| l.contains("accept failed") && l.contains("listener=\"listener\""))
        .count();
    assert_eq!(lines, 1, "{:#?}", proxy.logs());
    // And the shield serves again.
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"GET /pets HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 200);
}
