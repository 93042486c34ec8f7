//! WebSocket and other HTTP/1.1 Upgrades pass through the proxy: 101 from the upstream, then
//! bytes both ways until either side closes (issue 5).

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::common::*;
use crate::rawtls::*;

/// A real WebSocket echo server (tokio-tungstenite). Records the upgrade request's headers.
/// A text message "bye" makes the server close first.
struct EchoServer {
    url: String,
    headers: Arc<Mutex<Vec<(String, String)>>>,
    _rt: tokio::runtime::Runtime,
}

fn echo_server() -> EchoServer {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let headers = Arc::new(Mutex::new(Vec::new()));
    let h = headers.clone();
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let h = h.clone();
            tokio::spawn(async move {
                // tungstenite's callback signature fixes the (large) error type.
                #[allow(clippy::result_large_err)]
                let record =
                    |req: &tungstenite::handshake::server::Request,
                     resp: tungstenite::handshake::server::Response| {
                        let mut h = h.lock().unwrap();
                        for (k, v) in req.headers() {
                            h.push((k.to_string(), v.to_str().unwrap_or("?").to_owned()));
                        }
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, record).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match &msg {
                        Message::Text(t) if t.as_str() == "bye" => {
                            let _ = ws.close(None).await;
                            continue;
                        }
                        Message::Text(_) | Message::Binary(_) => msg,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    EchoServer {
        url,
        headers,
        _rt: rt,
    }
}

#[test]
fn websocket_echo_passes_both_ways_until_the_client_closes() {
    let pki = Pki::new();
    let echo = echo_server();
    let proxy = start(&pki, &config(&echo.url, "", "", ""));
    block_on(async {
        let tls = tls_connect(proxy.addr, &pki.root, &good(&pki))
            .await
            .unwrap();
        let req =
            tungstenite::client::IntoClientRequest::into_client_request("wss://localhost/chat")
                .unwrap();
        let mut req = req;
        // A forged identity header on the upgrade request must not get through.
        req.headers_mut()
            .insert("x-forwarded-client-cert", "Hash=forged".parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
        assert_eq!(resp.status(), 101);
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        // The tunnel still holds its connection slot after hyper handed the socket over.
        let active = proxy.metric("mtls_shield_connections_active");
        assert_eq!(active, 1.0);
        // A message far bigger than any buffer, both ways.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => assert!(b.as_ref() == big.as_slice()),
            other => panic!("expected binary, got {other:?}"),
        }
        ws.close(None).await.unwrap();
        // The server's close frame comes back, then the stream ends.
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(_)) => {}
                Ok(other) => panic!("unexpected {other:?}"),
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("{e}"),
            }
        }
    });
    wait_until("the tunnel released its slot", DEADLINE, || {
        proxy.metric("mtls_shield_connections_active") == 0.0
    });
    let headers = echo.headers.lock().unwrap().clone();
    let xfcc: Vec<_> = headers
        .iter()
        .filter(|(k, _)| k == "x-forwarded-client-cert")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(xfcc.len(), 1, "{headers:?}");
    assert!(xfcc[0].contains("CN=my-client"), "{}", xfcc[0]);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "upgrade" && v.eq_ignore_ascii_case("websocket")));
}

#[test]
fn websocket_closed_by_the_upstream_ends_the_client_side() {
    let pki = Pki::new();
    let echo = echo_server();
    let proxy = start(&pki, &config(&echo.url, "", "", ""));
    block_on(async {
        let tls = tls_connect(proxy.addr, &pki.root, &good(&pki))
            .await
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/chat", tls)
            .await
            .unwrap();
        ws.send(Message::text("bye")).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Close(_))) => {}
            other => panic!("expected the server's close, got {other:?}"),
        }
        // Our close reply completes the handshake; then the stream ends.
        assert!(matches!(
            ws.next().await,
            None | Some(Err(tungstenite::Error::ConnectionClosed))
        ));
    });
}

/// An upstream speaking a made-up protocol after `Upgrade: x-echo`: it echoes raw bytes.
fn raw_upgrade_app() -> App {
    App::start(|mut req| async move {
        if req.headers().get("upgrade").map(|v| v.as_bytes()) != Some(b"x-echo") {
            return full(200, "not upgraded");
        }
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut io = hyper_util::rt::TokioIo::new(on.await.unwrap());
            let mut buf = vec![0u8; 4096];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut out = b"echo:".to_vec();
                        out.extend_from_slice(&buf[..n]);
                        if io.write_all(&out).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = io.shutdown().await;
        });
        let mut r = full(101, "");
        r.headers_mut().insert("upgrade", "x-echo".parse().unwrap());
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        r
    })
}

#[test]
fn other_upgrade_protocols_tunnel_raw_bytes_until_the_client_half_closes() {
    let pki = Pki::new();
    let app = raw_upgrade_app();
    let proxy = start(&pki, &config(&app.url(), "", "", ""));
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"GET /tunnel HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: x-echo\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("x-echo"));
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("upgrade")
    );
    c.send(b"ping-1").unwrap();
    let mut got = Vec::new();
    while got.len() < b"echo:ping-1".len() {
        c.set_read_timeout(std::time::Duration::from_millis(300));
        let (mut b, end) = c.read_to_end();
        got.append(&mut b);
        assert_ne!(end, End::Closed, "tunnel closed early: {got:?}");
    }
    assert_eq!(got, b"echo:ping-1");
    // The client closes its side (TLS close_notify): the upstream sees EOF, closes, and
    // the client sees the end of the tunnel.
    c.close_write();
    c.set_read_timeout(DEADLINE);
    let (rest, end) = c.read_to_end();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(end, End::Closed);
}

#[test]
fn upgrade_declined_by_the_upstream_is_an_ordinary_response_and_keeps_the_connection() {
    let pki = Pki::new();
    let app = raw_upgrade_app();
    let proxy = start(&pki, &config(&app.url(), "", "", ""));
    let mut c = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    c.send(b"GET /no HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "not upgraded"));
    assert!(r.header("upgrade").is_none());
    // Still HTTP on the same connection.
    c.send(b"GET /again HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 200);
    assert_eq!(app.hits(), 2);
}

/// A WebSocket tunnel outlives its HTTP connection, so it must keep being judged: a reload that
/// stops trusting its client ends it after `listener.shutdown_timeout`, and the other side
/// sees the stream end. (It used to run on, unjudged, once hyper had handed it over.)
#[test]
fn a_websocket_tunnel_is_closed_when_a_reload_stops_trusting_its_client() {
    let pki = Pki::new();
    let echo = echo_server();
    let other = pki.root.issue(Leaf::client("other"));
    let pin = |c: &Issued| {
        format!(
            "[client_auth.allow]\nfingerprints_sha256 = [\"{}\"]\n",
            c.fingerprint()
        )
    };
    let listener = "shutdown_timeout = \"1s\"";
    let proxy = start(&pki, &config(&echo.url, listener, "", &pin(&pki.client)));
    block_on(async {
        let tls = tls_connect(proxy.addr, &pki.root, &good(&pki))
            .await
            .unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async("wss://localhost/chat", tls)
            .await
            .unwrap();
        assert_eq!(resp.status(), 101);
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));

        std::fs::write(
            pki.path("mtls-shield.toml"),
            config(&echo.url, listener, "", &pin(&other)),
        )
        .unwrap();
        proxy.signal("HUP");
        proxy
            .wait_log(&["upgraded connection closed: its client certificate is no longer trusted"]);
        // The client side ends: no more echoes, the stream closes.
        let ended = loop {
            match ws.next().await {
                None | Some(Err(_)) => break true,
                Some(Ok(Message::Close(_))) => break true,
                Some(Ok(_)) => {}
            }
        };
        assert!(ended);
    });
    let line = proxy.wait_log(&[
        "open connection no longer trusted",
        "reason=\"not_allowed\"",
    ]);
    assert!(line.contains("generation=2"), "{line}");
}
