//! Graceful shutdown and readiness (issue 4): SIGTERM/SIGINT stop accepting, send h2 GOAWAY,
//! let in-flight requests finish within `shutdown_timeout`, close idle keep-alive
//! connections and exit 0; a second signal exits at once; `/readyz` turns 503 as soon as
//! draining starts, and when the upstream is down, while `/healthz` stays 200.
use crate::common::*;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn start_with(pki: &Pki, upstream_url: &str, listener_extra: &str) -> Proxy {
    let path: PathBuf = pki.path("mtls-shield.toml");
    std::fs::write(&path, config_with(upstream_url, listener_extra, "", "")).unwrap();
    Proxy::start(&path)
}

/// Runs `GET path` on another thread, waits until the upstream has received it (so it is in
/// flight), runs `during`, then returns what `during` returned and the request's outcome.
fn with_in_flight<R>(
    addr: SocketAddr,
    up: &Upstream,
    pki: &Pki,
    path: &str,
    during: impl FnOnce() -> R,
) -> (R, Result<Got, String>) {
    std::thread::scope(|s| {
        let before = up.hits();
        let request = s.spawn(|| {
            block_request(
                addr,
                &pki.root,
                &ClientOpts::with(ClientCert::leaf(&pki.client)),
                get(path),
            )
        });
        wait_until("request reached the upstream", DEADLINE, || {
            up.hits() > before
        });
        let r = during();
        (r, request.join().unwrap())
    })
}

fn refuses_connections(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

#[test]
fn in_flight_request_completes_across_sigterm_and_new_connections_are_refused() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mut proxy = start_with(&pki, &up.url(), "");
    let addr = proxy.addr;
    let ((), slow) = with_in_flight(addr, &up, &pki, "/slow/2500", || {
        proxy.signal("TERM");
        let line = proxy.wait_log(&["draining: no new connections"]);
        assert!(line.contains("signal=\"SIGTERM\""), "{line}");
        wait_until("the listener refuses connections", DEADLINE, || {
            refuses_connections(addr)
        });
        // Refused by the drain, not by an exit: the in-flight request still holds the process.
        assert!(
            proxy.child.try_wait().unwrap().is_none(),
            "the process must still be draining"
        );
    });
    let got = slow.expect("in-flight request completes");
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "slow done");
    let status = proxy.wait_exit(DEADLINE).expect("process exits");
    assert_eq!(status.code(), Some(0));
    proxy.wait_log(&["all connections closed; exiting"]);
}

#[test]
fn h2_client_gets_goaway_and_its_in_flight_stream_completes() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mut proxy = start_with(&pki, &up.url(), "");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut opts = ClientOpts::with(ClientCert::leaf(&pki.client));
    opts.h2 = true;
    let (status, body, goaway) = rt.block_on(async {
        let tls = tls_connect(proxy.addr, &pki.root, &opts).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (client, conn) = h2::client::handshake(tls).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let req = http::Request::get("https://localhost/slow/2500")
            .body(())
            .unwrap();
        let (response, _) = client.send_request(req, true).unwrap();
        let response = tokio::spawn(response);
        let end = Instant::now() + DEADLINE;
        while up.hits() == 0 {
            assert!(Instant::now() < end, "request never reached the upstream");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        proxy.signal("TERM");
        // The server's GOAWAY makes the client refuse to open new streams on this connection.
        let goaway = loop {
            match std::future::poll_fn(|cx| client.poll_ready(cx)).await {
                Err(e) => break e,
                Ok(()) => {
                    assert!(Instant::now() < end, "no GOAWAY received");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let response = response.await.unwrap().expect("in-flight stream completes");
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        // The connection then ends cleanly.
        conn.await
            .unwrap()
            .expect("connection closes without error");
        (status, String::from_utf8(bytes).unwrap(), goaway)
    });
    assert!(
        goaway.is_go_away() && goaway.is_remote(),
        "expected a GOAWAY from the server, got {goaway:?}"
    );
    assert_eq!(goaway.reason(), Some(h2::Reason::NO_ERROR));
    assert_eq!(status, 200);
    assert_eq!(body, "slow done");
    let exit = proxy.wait_exit(DEADLINE).expect("process exits");
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn readyz_is_200_then_503_while_draining_and_healthz_stays_200() {
    let pki = Pki::new();
    let up = Upstream::start();
    let proxy = start_with(&pki, &up.url(), "");
    assert_eq!(proxy.admin_get("/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(proxy.admin_get("/healthz"), (200, "ok\n".to_owned()));

    // A slow request keeps the drain going long enough to look at it.
    let mut proxy = proxy;
    let ((), slow) = with_in_flight(proxy.addr, &up, &pki, "/slow/3000", || {
        proxy.signal("TERM");
        wait_until("/readyz turns 503", DEADLINE, || {
            proxy.admin_get("/readyz") == (503, "draining\n".to_owned())
        });
        assert_eq!(proxy.admin_get("/healthz"), (200, "ok\n".to_owned()));
        assert!(proxy.child.try_wait().unwrap().is_none(), "still draining");
    });
    assert_eq!(slow.unwrap().status, 200);
}

#[test]
fn readyz_is_503_when_the_upstream_is_down_and_healthz_stays_200() {
    let pki = Pki::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = start_with(&pki, &dead, "");
    assert_eq!(
        proxy.admin_get("/readyz"),
        (503, "upstream unreachable\n".to_owned())
    );
    assert_eq!(proxy.admin_get("/healthz"), (200, "ok\n".to_owned()));
}

#[test]
fn second_sigterm_during_the_drain_exits_at_once() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mut proxy = start_with(&pki, &up.url(), "shutdown_timeout = \"60s\"");
    let addr = proxy.addr;
    let (status, slow) = with_in_flight(addr, &up, &pki, "/slow/15000", || {
        proxy.signal("TERM");
        proxy.wait_log(&["draining: no new connections"]);
        let sent = Instant::now();
        proxy.signal("TERM");
        let status = proxy
            .wait_exit(Duration::from_secs(5))
            .expect("the second signal ends the process without waiting for the drain");
        assert!(sent.elapsed() < Duration::from_secs(5));
        status
    });
    assert_eq!(
        status.code(),
        Some(1),
        "an interrupted drain is not a clean exit"
    );
    proxy.wait_log(&["second signal: exiting now"]);
    assert!(slow.is_err(), "the in-flight request was cut");
}

#[test]
fn sigint_closes_idle_keepalive_connections_and_exits_without_waiting_for_them() {
    let pki = Pki::new();
    let up = Upstream::start();
    // Without closing idle connections, the drain would last the whole shutdown_timeout.
    let mut proxy = start_with(
        &pki,
        &up.url(),
        "shutdown_timeout = \"60s\"\nidle_timeout = \"60s\"",
    );
    let mut idle = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    assert_eq!(idle.get("/pets").unwrap().0, 200);

    proxy.signal("INT");
    assert!(
        idle.wait_closed(DEADLINE),
        "the idle keep-alive connection is closed by the server"
    );
    let status = proxy.wait_exit(DEADLINE).expect("exits promptly");
    assert_eq!(status.code(), Some(0));
    proxy.wait_log(&["signal=\"SIGINT\""]);
    proxy.wait_log(&["all connections closed; exiting"]);
}

#[test]
fn shutdown_timeout_bounds_the_drain_and_exits_0() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mut proxy = start_with(&pki, &up.url(), "shutdown_timeout = \"1s\"");
    let addr = proxy.addr;
    let ((status, took), slow) = with_in_flight(addr, &up, &pki, "/slow/15000", || {
        let sent = Instant::now();
        proxy.signal("TERM");
        let status = proxy
            .wait_exit(DEADLINE)
            .expect("exits after shutdown_timeout");
        (status, sent.elapsed())
    });
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(status.code(), Some(0));
    proxy.wait_log(&["shutdown_timeout reached with connections still open"]);
    assert!(slow.is_err());
}
