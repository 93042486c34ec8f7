//! Microbenchmarks of the per-handshake and per-request paths, run with `cargo bench`.
//!
//! - server-side CPU per full mTLS handshake, rustls with aws-lc-rs vs ring (the provider
//!   choice recorded in `tls::state::provider`), TLS 1.3 and TLS 1.2, P-256 server key and an
//!   RSA-2048 client certificate under an RSA-4096 root (the CloudFront recipe);
//! - the verify path alone (`ShieldVerifier::check`: WebPKI + allow-list + leaf parse), in
//!   full and as a hit in the memo of accepted chains;
//! - the server side of a full handshake through the product's own `TlsState`, with and
//!   without that memo;
//! - rendering identity headers (done once per connection) and rewriting request headers
//!   (done per request).
//!
//! Figures are wall time on a possibly shared machine: compare the ratios printed in one run,
//! not absolute numbers across runs. For instruction counts, run the bench binary under
//! `valgrind --tool=callgrind` with BENCH_ITERS=50.

// A benchmark's unwrap is its assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

struct Pki {
    root: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    client_chain: Vec<CertificateDer<'static>>,
    client_key: Vec<u8>,
}

fn pki() -> Pki {
    let root_key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut rp = CertificateParams::default();
    rp.distinguished_name.push(DnType::CommonName, "bench root");
    rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    rp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = rp.self_signed(&root_key).unwrap();
    let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut sp = CertificateParams::new(vec!["localhost".into()]).unwrap();
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = sp.signed_by(&server_key, &root, &root_key).unwrap();
    let client_key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut cp = CertificateParams::default();
    cp.distinguished_name
        .push(DnType::CommonName, "bench-client");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = cp.signed_by(&client_key, &root, &root_key).unwrap();
    Pki {
        root: root.der().clone(),
        server_chain: vec![server.der().clone()],
        server_key: server_key.serialize_der(),
        client_chain: vec![client.der().clone()],
        client_key: client_key.serialize_der(),
    }
}

fn configs(
    p: &Pki,
    provider: Arc<CryptoProvider>,
    version: &'static rustls::SupportedProtocolVersion,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let mut roots = RootCertStore::empty();
    roots.add(p.root.clone()).unwrap();
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            p.server_chain.clone(),
            PrivateKeyDer::try_from(p.server_key.clone()).unwrap(),
        )
        .unwrap();
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            p.client_chain.clone(),
            PrivateKeyDer::try_from(p.client_key.clone()).unwrap(),
        )
        .unwrap();
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

/// One full handshake in memory; returns the time spent in the server's code.
fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> Duration {
    let mut c =
        ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut server_time = Duration::ZERO;
    let t = Instant::now();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    server_time += t.elapsed();
    let mut buf = Vec::with_capacity(16 * 1024);
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            let t = Instant::now();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
            }
            s.process_new_packets().unwrap();
            server_time += t.elapsed();
        }
        buf.clear();
        let t = Instant::now();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        server_time += t.elapsed();
        if !buf.is_empty() {
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
            }
            c.process_new_packets().unwrap();
        }
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            break;
        }
    }
    server_time
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn iters() -> usize {
    std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

fn main() {
    let p = pki();
    let n = iters();
    println!("server CPU per full mTLS handshake (median of {n}; P-256 server, RSA-2048 client, RSA-4096 root)");
    for (vname, version) in [
        ("TLS1.3", &rustls::version::TLS13),
        ("TLS1.2", &rustls::version::TLS12),
    ] {
        let mut results = Vec::new();
        // Interleave providers round by round so machine noise hits both alike.
        let aws = configs(
            &p,
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            version,
        );
        let ring = configs(
            &p,
            Arc::new(rustls::crypto::ring::default_provider()),
            version,
        );
        let (mut a, mut r) = (Vec::new(), Vec::new());
        for _ in 0..n {
            a.push(handshake(&aws.0, &aws.1));
            r.push(handshake(&ring.0, &ring.1));
        }
        let (a, r) = (median(a), median(r));
        results.push((a, r));
        println!(
            "  {vname}: aws-lc-rs {:>7.1} µs   ring {:>7.1} µs   ring/aws-lc-rs = {:.2}",
            a.as_secs_f64() * 1e6,
            r.as_secs_f64() * 1e6,
            r.as_secs_f64() / a.as_secs_f64()
        );
    }

    // The verify path alone, through the product's own verifier.
    let dir = tempfile::tempdir().unwrap();
    let pem = |der: &CertificateDer<'_>| {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
        for c in b.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(c).unwrap());
            s.push('\n');
        }
        s + "-----END CERTIFICATE-----\n"
    };
    std::fs::write(dir.path().join("root.pem"), pem(&p.root)).unwrap();
    std::fs::write(dir.path().join("server.pem"), pem(&p.server_chain[0])).unwrap();
    let key_pem = {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(&p.server_key);
        let mut s = String::from("-----BEGIN PRIVATE KEY-----\n");
        for c in b.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(c).unwrap());
            s.push('\n');
        }
        s + "-----END PRIVATE KEY-----\n"
    };
    std::fs::write(dir.path().join("server.key"), key_pem).unwrap();
    let state_with = |client_auth_extra: &str| {
        let cfg = mtls_shield::config::Config::from_toml(
            &format!("[listener]\naddress = \"127.0.0.1:0\"\ncertificate = \"server.pem\"\nprivate_key = \"server.key\"\n[client_auth]\ntruststore = \"root.pem\"\n{client_auth_extra}\n[client_auth.allow]\ncommon_names = [\"bench-client\"]\n[upstream]\nurl = \"http://127.0.0.1:1\"\n"),
            &dir.path().join("c.toml"),
        )
        .unwrap();
        let policy = mtls_shield::policy::Policy::compile(&cfg).unwrap();
        mtls_shield::tls::TlsState::build(&cfg, &policy).unwrap()
    };
    let state = state_with("");
    let no_memo = state_with("verified_chain_cache = 0");
    let now = UnixTime::now();
    let (mut full, mut hit) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let s = Instant::now();
        std::hint::black_box(
            no_memo
                .verifier
                .check(&p.client_chain[0], &[], now)
                .unwrap(),
        );
        full.push(s.elapsed());
        let s = Instant::now();
        std::hint::black_box(state.verifier.check(&p.client_chain[0], &[], now).unwrap());
        hit.push(s.elapsed());
    }
    println!(
        "verify path (ShieldVerifier::check: RSA-2048 leaf under RSA-4096 root + allow-list + parse): full {:.1} µs, remembered chain {:.2} µs",
        median(full).as_secs_f64() * 1e6,
        median(hit).as_secs_f64() * 1e6
    );

    // The whole server side of a handshake through the product's own server config, with the
    // memo of accepted chains (the default) and without it, interleaved.
    for (vname, version) in [
        ("TLS1.3", &rustls::version::TLS13),
        ("TLS1.2", &rustls::version::TLS12),
    ] {
        let (_, client) = configs(
            &p,
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            version,
        );
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..n {
            with.push(handshake(&state.server_config, &client));
            without.push(handshake(&no_memo.server_config, &client));
        }
        let (w, wo) = (median(with), median(without));
        println!(
            "  {vname} product server config: remembered chain {:>7.1} µs   verified in full {:>7.1} µs   ratio {:.2}",
            w.as_secs_f64() * 1e6,
            wo.as_secs_f64() * 1e6,
            w.as_secs_f64() / wo.as_secs_f64()
        );
    }

    let id = state
        .verifier
        .check(&p.client_chain[0], &[], now)
        .unwrap()
        .identity
        .clone();
    let fwd = mtls_shield::config::ForwardConfig {
        client_cert_headers: vec![
            mtls_shield::config::HeaderFamily::Xfcc,
            mtls_shield::config::HeaderFamily::Alb,
            mtls_shield::config::HeaderFamily::Rfc9440,
        ],
        xfcc_include_cert: false,
    };
    let mut t = Vec::new();
    for _ in 0..n {
        let s = Instant::now();
        std::hint::black_box(id.headers(&fwd));
        t.push(s.elapsed());
    }
    println!(
        "identity headers, all three families (once per connection): {:.2} µs",
        median(t).as_secs_f64() * 1e6
    );

    let headers = id.headers(&mtls_shield::config::ForwardConfig::default());
    let peer = mtls_shield::proxy::headers::ForwardedPeer::new("10.0.0.1".parse().unwrap());
    let mut t = Vec::new();
    for _ in 0..n * 10 {
        let mut h = http::HeaderMap::new();
        h.insert("host", "origin.example.com".parse().unwrap());
        h.insert("user-agent", "Amazon CloudFront".parse().unwrap());
        h.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
        h.insert(
            "via",
            "2.0 abc.cloudfront.net (CloudFront)".parse().unwrap(),
        );
        h.insert("accept-encoding", "gzip".parse().unwrap());
        let s = Instant::now();
        mtls_shield::proxy::headers::rewrite_request(&mut h, &peer, &headers, false);
        t.push(s.elapsed());
        std::hint::black_box(h);
    }
    println!(
        "request header rewrite (per request, CloudFront-like head): {:.2} µs",
        median(t).as_secs_f64() * 1e6
    );
}
