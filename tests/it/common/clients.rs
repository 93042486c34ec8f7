//! Real clients: a rustls + hyper client in Rust, curl, `openssl s_client`, raw TLS attempts
//! and keep-alive connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::*;

/// A plain HTTP/1.1 GET with std networking: (status, body).
pub fn http_get_plain(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A client identity for the Rust client.
#[derive(Clone)]
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Vec<u8>,
}

impl ClientCert {
    pub fn leaf(i: &Issued) -> ClientCert {
        ClientCert {
            chain: vec![i.cert_der.clone()],
            key: i.key_der.clone(),
        }
    }
    pub fn with_chain(i: &Issued, intermediates: &[&Ca]) -> ClientCert {
        let mut chain = vec![i.cert_der.clone()];
        chain.extend(intermediates.iter().map(|c| c.cert.der().clone()));
        ClientCert {
            chain,
            key: i.key_der.clone(),
        }
    }
}

/// Options for the Rust client.
#[derive(Clone)]
pub struct ClientOpts {
    pub cert: Option<ClientCert>,
    pub h2: bool,
    pub tls12_only: bool,
    pub resumption: Option<Arc<dyn rustls::client::ClientSessionStore>>,
}

impl ClientOpts {
    pub fn with(cert: ClientCert) -> ClientOpts {
        ClientOpts {
            cert: Some(cert),
            h2: false,
            tls12_only: false,
            resumption: None,
        }
    }
    pub fn anonymous() -> ClientOpts {
        ClientOpts {
            cert: None,
            h2: false,
            tls12_only: false,
            resumption: None,
        }
    }
}

/// A rustls client config trusting `root`.
pub fn client_config(root: &Ca, opts: &ClientOpts) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let b = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match &opts.cert {
        // `CertifiedKey::new` does not check that the key belongs to the certificate (unlike
        // `with_client_auth_cert`), so a test can present a certificate it does not hold the
        // key of and prove the server checks possession.
        Some(c) => {
            let key = provider
                .key_provider
                .load_private_key(PrivateKeyDer::try_from(c.key.clone()).unwrap())
                .unwrap();
            let certified = rustls::sign::CertifiedKey::new(c.chain.clone(), key);
            b.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)))
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = if opts.h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    if let Some(store) = &opts.resumption {
        cfg.resumption = rustls::client::Resumption::store(store.clone());
    } else {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(cfg)
}

/// A response seen by the Rust client.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `/headers` echo as a map.
    pub fn echoed(&self) -> BTreeMap<String, Vec<String>> {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// The error a refused client sees, and every byte it received after the handshake.
#[derive(Debug)]
pub struct Refused {
    pub error: String,
}

/// Connects over TLS with `opts`; returns the TLS stream.
pub async fn tls_connect(
    addr: SocketAddr,
    root: &Ca,
    opts: &ClientOpts,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(client_config(root, opts));
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// One request over a fresh connection. `Err` holds the client-side error (a refused
/// handshake surfaces here, often only at the first read in TLS 1.3).
pub async fn request(
    addr: SocketAddr,
    root: &Ca,
    opts: &ClientOpts,
    req: Request<Full<Bytes>>,
) -> Result<Got, String> {
    let tls = tls_connect(addr, root, opts)
        .await
        .map_err(|e| e.to_string())?;
    let io = hyper_util::rt::TokioIo::new(tls);
    let resp = if opts.h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok(Got {
        status,
        headers,
        body,
    })
}

/// `GET path` with Host: localhost.
pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// `GET path` through `proxy` as the PKI's good client (`my-client`) over HTTP/1.1;
/// panics with the client's error if the request fails.
pub fn get_as_client(proxy: &Proxy, pki: &Pki, path: &str) -> Got {
    block_request(
        proxy.addr,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&pki.client)),
        get(path),
    )
    .unwrap_or_else(|e| panic!("GET {path} as my-client failed: {e}"))
}

/// A blocking wrapper around [`request`] for tests that are not async.
pub fn block_request(
    addr: SocketAddr,
    root: &Ca,
    opts: &ClientOpts,
    req: Request<Full<Bytes>>,
) -> Result<Got, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(DEADLINE, request(addr, root, opts, req))
                .await
                .map_err(|_| "client timed out".to_owned())?
        })
}

/// Runs curl with `args` (plus `-sS --max-time 20`): (exit code, stdout bytes, stderr).
pub fn curl(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed (apt-get install -y curl)");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The URL of `path` on the proxy, as curl should use it (with `--resolve`-free localhost).
pub fn url(p: &Proxy, path: &str) -> String {
    format!("https://localhost:{}{path}", p.addr.port())
}

/// curl with this PKI's CA and (optionally) a client cert/key from the PKI folder.
pub fn curl_pki(
    pki: &Pki,
    client: Option<(&str, &str)>,
    extra: &[&str],
    url: &str,
) -> (i32, Vec<u8>, String) {
    let ca = pki.path("root.pem");
    let mut args: Vec<String> = vec!["--cacert".into(), ca.display().to_string()];
    if let Some((c, k)) = client {
        args.push("--cert".into());
        args.push(pki.path(c).display().to_string());
        args.push("--key".into());
        args.push(pki.path(k).display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url.into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

// ---- Refusal probes, openssl s_client, the binary's other commands (issue 2 tests) ----

/// What a client saw on a connection the proxy may refuse: the client-side handshake result
/// and every application byte received after sending a request line.
#[derive(Debug)]
pub struct Attempt {
    /// `Err` when the handshake failed on the client side (TLS 1.2, or TLS 1.3 alerts
    /// that arrive early).
    pub handshake: Result<(), String>,
    /// Application bytes received after the request line was sent.
    pub received: Vec<u8>,
    /// How reading ended: `None` for a clean EOF, else the error (usually a TLS alert).
    pub read_error: Option<String>,
}

/// The request line [`attempt_raw`] sends.
pub const RAW_REQUEST: &[u8] = b"GET /pets HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Connects, sends [`RAW_REQUEST`] and reads until the server closes: a refused client must
/// see no application byte at all (TLS 1.3 clients finish their side of the handshake before
/// the server has judged their certificate, so the refusal shows up at the first read).
pub async fn attempt_raw(addr: SocketAddr, root: &Ca, opts: &ClientOpts) -> Attempt {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = match tls_connect(addr, root, opts).await {
        Ok(t) => t,
        Err(e) => {
            return Attempt {
                handshake: Err(e.to_string()),
                received: Vec::new(),
                read_error: None,
            }
        }
    };
    let _ = tls.write_all(RAW_REQUEST).await;
    let _ = tls.flush().await;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let read_error = loop {
        match tls.read(&mut buf).await {
            Ok(0) => break None,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e.to_string()),
        }
    };
    Attempt {
        handshake: Ok(()),
        received,
        read_error,
    }
}

/// Blocking [`attempt_raw`] with the default deadline.
pub fn block_attempt(addr: SocketAddr, root: &Ca, opts: &ClientOpts) -> Attempt {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(DEADLINE, attempt_raw(addr, root, opts))
                .await
                .expect("refused connection should close before the deadline")
        })
}

/// Asserts that the Rust client with `opts` is refused: no HTTP byte, the connection ends in
/// an error, the proxy logs `handshake rejected` with `reason` and the peer, and `upstream`
/// was never contacted. Returns the log line.
pub fn assert_refused(
    proxy: &Proxy,
    upstream: &Upstream,
    root: &Ca,
    opts: &ClientOpts,
    reason: &str,
) -> String {
    let before = upstream.hits();
    let a = block_attempt(proxy.addr, root, opts);
    assert!(
        a.received.is_empty(),
        "refused client received bytes: {:?}",
        String::from_utf8_lossy(&a.received)
    );
    assert!(
        a.handshake.is_err() || a.read_error.is_some(),
        "refused connection should end with a TLS error, got {a:?}"
    );
    let line = proxy.wait_log(&["handshake rejected", &format!("reason=\"{reason}\"")]);
    assert!(line.contains("peer=127.0.0.1:"), "no peer in: {line}");
    assert_eq!(upstream.hits(), before, "upstream was contacted");
    line
}

/// Runs `openssl s_client -connect 127.0.0.1:<port> -servername localhost -ign_eof <args>`
/// with `input` on stdin (under `timeout 20`): (exit code, stdout, stderr). `-ign_eof` keeps
/// it reading until the server closes, so everything the server sent is in stdout.
pub fn s_client(addr: SocketAddr, args: &[&str], input: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", addr.port()))
        .args(["-servername", "localhost", "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A refused handshake may close stdin's peer before we finish; ignore EPIPE.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One HTTP/1.1 keep-alive connection kept open across requests, on its own runtime.
pub struct KeepAlive {
    rt: tokio::runtime::Runtime,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    conn: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl KeepAlive {
    /// Connects with `cert` and completes the TLS and HTTP/1.1 handshakes.
    pub fn open(addr: SocketAddr, root: &Ca, cert: &Issued) -> KeepAlive {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (sender, conn) = rt.block_on(async {
            let tls = tls_connect(addr, root, &ClientOpts::with(ClientCert::leaf(cert)))
                .await
                .unwrap();
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            (sender, tokio::spawn(conn))
        });
        KeepAlive { rt, sender, conn }
    }

    /// `GET path` on this connection: (status, body).
    pub fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        let sender = &mut self.sender;
        self.rt.block_on(async {
            tokio::time::timeout(DEADLINE, async {
                sender.ready().await.map_err(|e| e.to_string())?;
                let resp = sender
                    .send_request(get(path))
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((
                    status,
                    String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                ))
            })
            .await
            .map_err(|_| "timed out".to_owned())?
        })
    }

    /// Waits (up to `deadline`) for the server to close the connection; true if it did.
    pub fn wait_closed(&mut self, deadline: Duration) -> bool {
        let conn = &mut self.conn;
        self.rt
            .block_on(async { tokio::time::timeout(deadline, conn).await.is_ok() })
    }
}

// ---- Environment, JSON logs and independent certificate facts (issue 3 tests) ----
