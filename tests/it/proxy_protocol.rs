//! `listener.proxy_protocol`: a PROXY v1/v2 header before TLS names the client, whose
//! address then feeds X-Forwarded-For and the logs; malformed or missing headers are refused
//! and counted (issue 5).

use std::io::Write;
use std::net::TcpStream;

use crate::common::*;
use crate::rawtls::*;

fn xff_app() -> App {
    App::start(|req| async move {
        let xff = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(" | ");
        full(200, xff)
    })
}

fn setup(mode: &str) -> (Pki, App, Proxy) {
    let pki = Pki::new();
    let app = xff_app();
    let proxy = start(
        &pki,
        &config(&app.url(), &format!("proxy_protocol = \"{mode}\""), "", ""),
    );
    (pki, app, proxy)
}

/// Connects, writes `preamble` (a PROXY header or nothing), then speaks TLS and sends one
/// GET; returns the X-Forwarded-For the upstream saw.
fn xff_through(proxy: &Proxy, pki: &Pki, preamble: &[u8]) -> String {
    let mut sock = TcpStream::connect(proxy.addr).unwrap();
    sock.write_all(preamble).unwrap();
    let mut c = RawTls::over(sock, &pki.root, &good(pki)).unwrap();
    c.send(b"GET /xff HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 198.51.100.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    r.text()
}

fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | cmd);
    h.push(fam);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v2_inet6() -> Vec<u8> {
    let mut body = "2001:db8::7"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    body.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    body.extend_from_slice(&51234u16.to_be_bytes());
    body.extend_from_slice(&443u16.to_be_bytes());
    // An AWS-style TLV after the addresses.
    body.extend_from_slice(&[0xea, 0x00, 0x04, 0x01, b'v', b'p', b'c']);
    v2(1, 0x21, &body)
}

#[test]
fn v1_header_address_feeds_x_forwarded_for_and_the_access_log() {
    let (pki, _app, proxy) = setup("v1");
    let xff = xff_through(
        &proxy,
        &pki,
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n",
    );
    // The client's own list is kept; the PROXY header's address, not the balancer's
    // (127.0.0.1), is appended.
    assert_eq!(xff, "198.51.100.1, 203.0.113.7");
    proxy.wait_log(&["mtls_shield::access", "peer=203.0.113.7"]);
}

#[test]
fn v2_header_with_ipv6_and_tlvs_feeds_x_forwarded_for() {
    let (pki, _app, proxy) = setup("v2");
    assert_eq!(
        xff_through(&proxy, &pki, &v2_inet6()),
        "198.51.100.1, 2001:db8::7"
    );
}

#[test]
fn v2_local_command_keeps_the_connection_address() {
    let (pki, _app, proxy) = setup("v2");
    assert_eq!(
        xff_through(&proxy, &pki, &v2(0, 0x00, &[])),
        "198.51.100.1, 127.0.0.1"
    );
}

#[test]
fn optional_mode_takes_a_header_when_present_and_the_tcp_peer_otherwise() {
    let (pki, _app, proxy) = setup("optional");
    assert_eq!(
        xff_through(&proxy, &pki, b"PROXY TCP4 203.0.113.9 10.0.0.1 1 443\r\n"),
        "198.51.100.1, 203.0.113.9"
    );
    assert_eq!(
        xff_through(&proxy, &pki, &v2_inet6()),
        "198.51.100.1, 2001:db8::7"
    );
    assert_eq!(xff_through(&proxy, &pki, b""), "198.51.100.1, 127.0.0.1");
}

/// Sends `preamble` plus a TLS ClientHello's first bytes; the proxy must close without a
/// byte. Returns the proxy's connection-log line.
fn refused(proxy: &Proxy, preamble: &[u8], reason: &str) -> String {
    let mut sock = TcpStream::connect(proxy.addr).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = sock.write_all(preamble);
    let _ = sock.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01]);
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut sock, &mut buf);
    assert!(buf.is_empty(), "got {buf:?}");
    proxy.wait_log(&["handshake rejected", &format!("reason=\"{reason}\"")])
}

#[test]
fn malformed_v1_header_is_refused_and_counted() {
    let (_pki, app, proxy) = setup("v1");
    let line = refused(
        &proxy,
        b"PROXY TCP4 999.0.113.7 10.0.0.1 51234 443\r\n",
        "other",
    );
    assert!(
        line.contains("PROXY protocol header malformed: bad v1 TCP4 source"),
        "{line}"
    );
    assert_eq!(handshakes(&proxy, "rejected", "other"), 1.0);
    assert_eq!(app.hits(), 0);
}

#[test]
fn malformed_v2_header_is_refused_and_counted() {
    let (_pki, _app, proxy) = setup("v2");
    let line = refused(&proxy, &v2(1, 0x11, &[0; 4]), "other");
    assert!(line.contains("v2 IPv4 addresses truncated"), "{line}");
    assert_eq!(handshakes(&proxy, "rejected", "other"), 1.0);
}

#[test]
fn tls_without_the_required_header_is_refused() {
    let (pki, app, proxy) = setup("v1");
    // A client that bypasses the balancer and speaks TLS directly.
    let r = RawTls::try_connect(proxy.addr, &pki.root, &good(&pki));
    assert!(r.is_err(), "handshake must not complete");
    let line = proxy.wait_log(&["handshake rejected", "reason=\"other\""]);
    assert!(
        line.contains("does not start with a PROXY protocol v1 header"),
        "{line}"
    );
    assert_eq!(app.hits(), 0);
}

#[test]
fn v1_header_in_v2_mode_is_refused() {
    let (_pki, _app, proxy) = setup("v2");
    refused(
        &proxy,
        b"PROXY TCP4 203.0.113.7 10.0.0.1 1 443\r\n",
        "not_tls",
    );
}

#[test]
fn plain_http_in_proxy_mode_is_still_not_tls() {
    let (_pki, _app, proxy) = setup("v1");
    refused(&proxy, b"GET / HTTP/1.1\r\n\r\n", "not_tls");
    assert_eq!(handshakes(&proxy, "rejected", "not_tls"), 1.0);
}

#[test]
fn header_when_proxy_protocol_is_off_is_not_tls() {
    let (_pki, _app, proxy) = setup("off");
    refused(
        &proxy,
        b"PROXY TCP4 203.0.113.7 10.0.0.1 1 443\r\n",
        "not_tls",
    );
}

#[test]
fn refused_handshake_is_logged_with_the_header_address() {
    let (pki, _app, proxy) = setup("v1");
    let mut sock = TcpStream::connect(proxy.addr).unwrap();
    sock.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n")
        .unwrap();
    // No client certificate.
    let _ = RawTls::over(sock, &pki.root, &ClientOpts::anonymous()).map(|mut c| {
        let _ = c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        c.read_to_end()
    });
    let line = proxy.wait_log(&["handshake rejected", "reason=\"no_certificate\""]);
    assert!(line.contains("peer=203.0.113.7:51234"), "{line}");
}

#[test]
fn header_trickled_past_the_handshake_timeout_is_a_handshake_timeout() {
    let pki = Pki::new();
    let app = xff_app();
    let proxy = start(
        &pki,
        &config(
            &app.url(),
            "proxy_protocol = \"v1\"\nhandshake_timeout = \"300ms\"",
            "",
            "",
        ),
    );
    let mut sock = TcpStream::connect(proxy.addr).unwrap();
    sock.write_all(b"PROXY TCP4 203.0.").unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut sock, &mut buf);
    assert!(buf.is_empty());
    let line = proxy.wait_log(&["handshake rejected", "reason=\"handshake_timeout\""]);
    assert!(
        line.contains("PROXY protocol header did not arrive in time"),
        "{line}"
    );
}
