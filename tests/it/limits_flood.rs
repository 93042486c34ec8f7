//! `listener.max_connections` under a connection flood: idle and mid-handshake peers past
//! the limit wait in the backlog, connections already served keep working, a legitimate
//! client is served once the flood stops, and memory and descriptors stay bounded (issue 5).

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::*;
use crate::rawtls::*;

const MAX: usize = 20;

#[test]
fn flood_past_max_connections_waits_and_legitimate_clients_are_served() {
    let pki = Pki::new();
    let app = App::start(|_req| async move { full(200, "ok") });
    let proxy = start(
        &pki,
        &config(
            &app.url(),
            // Long enough that the flood, not a timeout, decides when slots free up.
            &format!("max_connections = {MAX}\nhandshake_timeout = \"60s\""),
            "",
            "",
        ),
    );
    let pid = proxy.child.id();
    let active = |p: &Proxy| p.metric("mtls_shield_connections_active");

    // A client connected before the flood, on a keep-alive connection.
    let mut existing = RawTls::connect(proxy.addr, &pki.root, &good(&pki));
    existing
        .send(b"GET /before HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(existing.read_response(false).unwrap().status, 200);
    let rss_before = rss_kib(pid);
    let fds_before = open_fds(pid);

    // The flood: 150 silent TCP peers and 150 that stop mid-ClientHello.
    let mut flood = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        if i % 2 == 1 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x03, 0x03])
                .unwrap();
        }
        flood.push(s);
    }
    wait_until("the flood holds every slot", DEADLINE, || {
        active(&proxy) == MAX as f64
    });

    // A new legitimate client now waits in the kernel backlog...
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let got = block_request(proxy.addr, &pki.root, &good(&pki), get("/after"));
            done.store(true, Ordering::SeqCst);
            got
        });
        // ...while the connection served before the flood keeps being served.
        existing
            .send(b"GET /during HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let during = existing.read_response(false).unwrap();
        assert_eq!(during.status, 200);
        assert_eq!(
            active(&proxy),
            MAX as f64,
            "never more than max_connections"
        );
        assert!(
            !done.load(Ordering::SeqCst),
            "a client past max_connections was served during the flood"
        );

        // Memory stays bounded while 300 peers sit on the port.
        let rss_flood = rss_kib(pid);
        eprintln!(
            "RSS before the flood {rss_before} KiB, during {rss_flood} KiB; fds {fds_before} -> {}",
            open_fds(pid)
        );
        assert!(
            rss_flood < rss_before + 16 * 1024,
            "RSS grew from {rss_before} KiB to {rss_flood} KiB"
        );
        assert!(
            open_fds(pid) <= fds_before + MAX + 2,
            "descriptors past max_connections"
        );

        // The flood stops: the waiting client is served.
        drop(flood);
        let got = waiter.join().unwrap().expect("served after the flood");
        assert_eq!(got.status, 200);
    });
    let mut proxy = proxy;
    assert!(proxy.child.try_wait().unwrap().is_none(), "the proxy died");
    // Every flood connection is gone again.
    drop(existing);
    wait_until("flood connections closed", DEADLINE, || {
        active(&proxy) == 0.0 && open_fds(pid) <= fds_before
    });
    assert_eq!(app.hits(), 3);
}
