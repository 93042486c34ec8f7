//! Live trust (issue 14, part 1): a new trust state, or an expiry, reaches the connections
//! already open. A connection whose chain the current state refuses takes no more requests
//! (the upstream never sees them) and is closed; the others are untouched.
use crate::common::*;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;

const SUCCESS: &str = "mtls_shield_reloads_total{result=\"success\"}";

fn closed_metric(reason: &str) -> String {
    format!("mtls_shield_connections_closed_total{{reason=\"{reason}\"}}")
}

/// Writes the config with `client_auth` extra keys and extra tables; returns its path.
fn write_config(pki: &Pki, up: &Upstream, client_auth_extra: &str, tables: &str) -> PathBuf {
    let path = pki.path("mtls-shield.toml");
    std::fs::write(&path, config_with(&up.url(), "", client_auth_extra, tables)).unwrap();
    path
}

fn pins(certs: &[&Issued]) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|c| format!("\"{}\"", c.fingerprint()))
        .collect();
    format!(
        "[client_auth.allow]\nfingerprints_sha256 = [{}]\n",
        list.join(", ")
    )
}

/// SIGHUP, then wait until the reload counter reaches `n`.
fn reload(proxy: &Proxy, n: f64) {
    proxy.signal("HUP");
    wait_until("the reload to complete", DEADLINE, || {
        proxy.metric(SUCCESS) >= n
    });
}

fn pets() -> (u16, String) {
    (200, mtls_shield::demo::PETS.to_owned())
}

/// The open connection of `cert` is closed (its next request fails) and the upstream saw no
/// new request; the log and the metric name `reason`.
fn assert_closed_by_trust(proxy: &Proxy, up: &Upstream, open: &mut KeepAlive, reason: &str) {
    let hits = up.hits();
    assert!(
        open.wait_closed(DEADLINE),
        "the untrusted idle connection was not closed"
    );
    assert!(open.get("/pets").is_err(), "a request went through");
    assert_eq!(up.hits(), hits, "the upstream saw a request");
    let line = proxy.wait_log(&[
        "open connection no longer trusted",
        &format!("reason=\"{reason}\""),
    ]);
    assert!(line.contains("generation=2"), "{line}");
    assert!(line.contains("fingerprint="), "{line}");
    assert_eq!(proxy.metric(&closed_metric(reason)), 1.0);
}

#[test]
fn removing_a_pin_closes_that_clients_open_connection_and_spares_its_sibling() {
    let pki = Pki::new();
    let up = Upstream::start();
    let sibling = pki.root.issue(Leaf::client("sibling"));
    let config = write_config(&pki, &up, "", &pins(&[&pki.client, &sibling]));
    let proxy = Proxy::start(&config);
    let mut revoked = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    let mut kept = KeepAlive::open(proxy.addr, &pki.root, &sibling);
    assert_eq!(revoked.get("/pets").unwrap(), pets());
    assert_eq!(kept.get("/pets").unwrap(), pets());

    write_config(&pki, &up, "", &pins(&[&sibling]));
    reload(&proxy, 1.0);
    let line = proxy.wait_log(&["open connections judged"]);
    assert!(
        line.contains("judged=2") && line.contains("closed=1"),
        "{line}"
    );
    assert_closed_by_trust(&proxy, &up, &mut revoked, "not_allowed");
    // The sibling's connection keeps working across the same reload, on the same socket.
    for _ in 0..3 {
        assert_eq!(kept.get("/pets").unwrap(), pets());
    }
}

#[test]
fn removing_a_ca_from_the_truststore_closes_its_clients_open_connections() {
    let pki = Pki::new();
    let up = Upstream::start();
    let partner = Ca::root("Partner Root CA");
    let partner_client = partner.issue(Leaf::client("partner-client"));
    std::fs::write(
        pki.path("truststore.pem"),
        format!("{}{}", pki.root.pem(), partner.pem()),
    )
    .unwrap();
    let config = write_config(&pki, &up, "", "");
    let proxy = Proxy::start(&config);
    let mut gone = KeepAlive::open(proxy.addr, &pki.root, &partner_client);
    let mut kept = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    assert_eq!(gone.get("/pets").unwrap(), pets());

    std::fs::write(pki.path("truststore.pem"), pki.root.pem()).unwrap();
    reload(&proxy, 1.0);
    assert_closed_by_trust(&proxy, &up, &mut gone, "unknown_ca");
    assert_eq!(kept.get("/pets").unwrap(), pets());
}

#[test]
fn a_crl_that_starts_listing_the_client_closes_its_open_connection() {
    let pki = Pki::new();
    let up = Upstream::start();
    let sibling = pki.root.issue(Leaf::client("sibling"));
    let config = write_config(&pki, &up, "", "");
    let proxy = Proxy::start(&config);
    let mut revoked = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    let mut kept = KeepAlive::open(proxy.addr, &pki.root, &sibling);
    assert_eq!(revoked.get("/pets").unwrap(), pets());

    std::fs::write(
        pki.path("root.crl"),
        pki.root.crl(&[pki.client.serial], 7, -1, 7),
    )
    .unwrap();
    write_config(&pki, &up, "crls = [\"root.crl\"]", "");
    reload(&proxy, 1.0);
    assert_closed_by_trust(&proxy, &up, &mut revoked, "revoked");
    assert_eq!(kept.get("/pets").unwrap(), pets());
}

#[test]
fn a_reload_that_changes_nothing_about_trust_keeps_every_connection() {
    let pki = Pki::new();
    let up = Upstream::start();
    let config = write_config(&pki, &up, "", &pins(&[&pki.client]));
    let proxy = Proxy::start(&config);
    let mut open = KeepAlive::open(proxy.addr, &pki.root, &pki.client);
    assert_eq!(open.get("/pets").unwrap(), pets());
    reload(&proxy, 1.0);
    let line = proxy.wait_log(&["open connections judged"]);
    assert!(
        line.contains("judged=1") && line.contains("closed=0"),
        "{line}"
    );
    assert_eq!(open.get("/pets").unwrap(), pets());
    assert_eq!(proxy.metric(&closed_metric("not_allowed")), 0.0);
}

#[test]
fn h2_connection_gets_goaway_and_its_open_stream_completes() {
    let pki = Pki::new();
    let up = Upstream::start();
    let config = write_config(&pki, &up, "", &pins(&[&pki.client]));
    let proxy = Proxy::start(&config);
    let sibling = pki.root.issue(Leaf::client("sibling"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut opts = ClientOpts::with(ClientCert::leaf(&pki.client));
    opts.h2 = true;
    let (status, body, goaway) = rt.block_on(async {
        let tls = tls_connect(proxy.addr, &pki.root, &opts).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (client, conn) = h2::client::handshake(tls).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let req = http::Request::get("https://localhost/slow/1500")
            .body(())
            .unwrap();
        let (response, _) = client.send_request(req, true).unwrap();
        let response = tokio::spawn(response);
        let end = Instant::now() + DEADLINE;
        while up.hits() == 0 {
            assert!(Instant::now() < end, "request never reached the upstream");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Unpin the client while its stream is in flight.
        write_config(&pki, &up, "", &pins(&[&sibling]));
        proxy.signal("HUP");
        let goaway = loop {
            match std::future::poll_fn(|cx| client.poll_ready(cx)).await {
                Err(e) => break e,
                Ok(()) => {
                    assert!(Instant::now() < end, "no GOAWAY received");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let response = response.await.unwrap().expect("the open stream completes");
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        let _ = tokio::time::timeout(DEADLINE, conn).await;
        (status, String::from_utf8(bytes).unwrap(), goaway)
    });
    assert!(
        goaway.is_go_away() && goaway.is_remote(),
        "expected a GOAWAY from the server, got {goaway:?}"
    );
    assert_eq!(status, 200);
    assert_eq!(body, "slow done");
    assert_eq!(
        up.hits(),
        1,
        "only the stream open before the reload was forwarded"
    );
    proxy.wait_log(&[
        "open connection no longer trusted",
        "reason=\"not_allowed\"",
    ]);
}

#[test]
fn a_streaming_upload_under_way_when_its_client_is_revoked_completes_then_the_connection_closes() {
    let pki = Pki::new();
    let up = Upstream::start();
    let sibling = pki.root.issue(Leaf::client("sibling"));
    let config = write_config(&pki, &up, "", &pins(&[&pki.client, &sibling]));
    let proxy = Proxy::start(&config);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = ClientOpts::with(ClientCert::leaf(&pki.client));
    let (status, body, connection, closed) = rt.block_on(async {
        let tls = tls_connect(proxy.addr, &pki.root, &opts).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| {
                (
                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)),
                    rx,
                )
            })
        });
        let req = http::Request::post("/upload")
            .header("host", "localhost")
            .body(http_body_util::StreamBody::new(stream))
            .unwrap();
        let response = tokio::spawn(sender.send_request(req));
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        for _ in 0..4 {
            tx.send(chunk.clone()).await.unwrap();
        }
        let end = Instant::now() + DEADLINE;
        while up.hits() == 0 {
            assert!(
                Instant::now() < end,
                "the upload never reached the upstream"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        write_config(&pki, &up, "", &pins(&[&sibling]));
        proxy.signal("HUP");
        while proxy.metric(&closed_metric("not_allowed")) < 1.0 {
            assert!(Instant::now() < end, "the connection was never judged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The upload goes on after the judgement, to its end.
        for _ in 0..4 {
            tx.send(chunk.clone()).await.unwrap();
        }
        drop(tx);
        let response = response.await.unwrap().expect("the upload completes");
        let status = response.status().as_u16();
        let connection = response
            .headers()
            .get("connection")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let closed = tokio::time::timeout(DEADLINE, conn).await.is_ok();
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            connection,
            closed,
        )
    });
    assert_eq!(status, 200);
    assert!(body.starts_with(&format!("{} ", 8 * 64 * 1024)), "{body}");
    assert_eq!(connection.as_deref(), Some("close"));
    assert!(closed, "the connection was not closed after the upload");
    assert_eq!(up.hits(), 1);
}

#[test]
fn a_certificate_that_expires_mid_connection_takes_no_more_requests() {
    let pki = Pki::new();
    let up = Upstream::start();
    let short = pki
        .root
        .issue(Leaf::client("short-lived").expires_in_secs(3));
    let config = write_config(&pki, &up, "", "");
    let proxy = Proxy::start(&config);
    let mut open = KeepAlive::open(proxy.addr, &pki.root, &short);
    assert_eq!(open.get("/pets").unwrap(), pets());
    assert_eq!(up.hits(), 1);
    let pem = short.write(pki.dir.path(), "short").0;
    let not_after = unix_of_openssl_date(after_eq(&openssl_x509(&pem, &["-enddate"]), "notAfter"));
    // Past notAfter (validity is inclusive of its last second), the idle connection is closed
    // by its watchdog, without a request.
    wait_until("the certificate's notAfter to pass", DEADLINE, || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            > not_after
    });
    assert!(
        open.wait_closed(DEADLINE),
        "the expired connection stayed open"
    );
    assert!(open.get("/pets").is_err());
    assert_eq!(up.hits(), 1, "the upstream saw a request after the expiry");
    let line = proxy.wait_log(&["open connection no longer trusted", "reason=\"expired\""]);
    assert!(line.contains("CN=short-lived"), "{line}");
    assert_eq!(proxy.metric(&closed_metric("expired")), 1.0);
}
