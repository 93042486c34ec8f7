//! How the proxy reaches its upstream: plain TCP (`http://`), TLS with an optional client
//! certificate (`https://`, re-originated mTLS), or a unix socket (`unix:/path.sock`).
//!
//! [`Connector`] is the hyper-util connector for all three; [`UpstreamIo`] is the stream it
//! returns. The TLS client is rustls (aws-lc-rs), trusting only `upstream.ca`: the proxy ships
//! no public root store, so an `https://` upstream without a configured CA is a config error
//! rather than a silent trust of whatever the system offers.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::UpstreamConfig;
use crate::tls::load::{self, LoadError};

/// Why the upstream could not be reached; hyper-util reports any of these as a connect
/// error, which the handler answers with 502.
pub type ConnectError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
enum Kind {
    Tcp,
    Tls {
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    },
    Unix(PathBuf),
}

/// Connects to the configured upstream; cheap to clone (hyper-util clones it per connect).
#[derive(Debug, Clone)]
pub struct Connector {
    http: HttpConnector,
    kind: Arc<Kind>,
    connect_timeout: Duration,
}

/// The TLS material an `https://` upstream was built from, to notice when a reload changed
/// a file's content under the same path.
pub type Material = Vec<Vec<u8>>;

impl Connector {
    /// Builds the connector for `target`. For TLS this loads `upstream.ca` and the optional
    /// client certificate and key, failing with an error that names the file.
    pub fn new(
        cfg: &UpstreamConfig,
        target: &super::forward::UpstreamTarget,
    ) -> Result<(Self, Material), LoadError> {
        use super::forward::UpstreamTarget as T;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        // The scheme says TLS or not; the TCP part is the same for both.
        http.enforce_http(false);
        let mut material = Vec::new();
        let kind = match target {
            T::Http { .. } => Kind::Tcp,
            T::Unix { path } => Kind::Unix(path.clone()),
            T::Https { authority } => {
                let (config, m) = client_config(cfg)?;
                material = m;
                let name = cfg
                    .server_name
                    .clone()
                    .unwrap_or_else(|| host_of(authority.host()).to_owned());
                let server_name = ServerName::try_from(name.clone()).map_err(|e| {
                    LoadError::new(
                        &cfg_path(cfg),
                        format!("upstream server name {name:?} is not a DNS name or IP address: {e}; set upstream.server_name"),
                    )
                })?;
                Kind::Tls {
                    config: Arc::new(config),
                    server_name,
                }
            }
        };
        Ok((
            Self {
                http,
                kind: Arc::new(kind),
                connect_timeout: cfg.connect_timeout,
            },
            material,
        ))
    }

    async fn connect(self, uri: Uri) -> Result<UpstreamIo, ConnectError> {
        use tower_service::Service;
        match &*self.kind {
            Kind::Tcp => {
                let mut http = self.http.clone();
                Ok(UpstreamIo::Tcp(http.call(uri).await?))
            }
            Kind::Tls {
                config,
                server_name,
            } => {
                let connector = TlsConnector::from(config.clone());
                let mut http = self.http.clone();
                let tcp = http.call(uri).await?.into_inner();
                // The TLS handshake gets its own connect_timeout: an upstream that accepts TCP
                // but never answers the ClientHello is as unreachable as one that drops SYNs.
                let tls = tokio::time::timeout(
                    self.connect_timeout,
                    connector.connect(server_name.clone(), tcp),
                )
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "upstream TLS handshake timed out")
                })??;
                Ok(UpstreamIo::Tls(Box::new(TokioIo::new(tls))))
            }
            Kind::Unix(path) => {
                let s = tokio::time::timeout(self.connect_timeout, UnixStream::connect(path))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "unix socket connect timed out")
                    })?
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                Ok(UpstreamIo::Unix(TokioIo::new(s)))
            }
        }
    }

    /// Opens (and drops) one connection, TLS handshake included: the readiness probe.
    pub async fn probe(&self, uri: Uri) -> Result<(), ConnectError> {
        // The TCP connect and the TLS handshake each have connect_timeout; bound the sum too.
        let io =
            match tokio::time::timeout(self.connect_timeout * 2, self.clone().connect(uri)).await {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("upstream probe timed out".into()),
            };
        if let UpstreamIo::Tls(tls) = io {
            settle(tls.into_inner(), self.connect_timeout).await?;
        }
        Ok(())
    }
}

/// In TLS 1.3 the client finishes its handshake before the server has checked the client
/// certificate (or noticed that none came), so an upstream that refuses the proxy says so
/// only in an alert right after. To know before reporting ready, ask for a key update: the
/// server must answer it (RFC 8446 §4.6.3), and it processes our certificate first, so the
/// first record back is either the refusal or proof of acceptance. A server that stays silent
/// for `window` is taken as accepting.
async fn settle(tls: TlsStream<TcpStream>, window: Duration) -> Result<(), ConnectError> {
    let (tcp, mut conn) = tls.into_inner();
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        // TLS 1.2 finishes client authentication inside the handshake.
        return Ok(());
    }
    let exchange = async {
        conn.process_new_packets()
            .map_err(|e| format!("upstream refused the TLS session: {e}"))?;
        conn.refresh_traffic_keys()?;
        while conn.wants_write() {
            tcp.writable().await?;
            match conn.write_tls(&mut TryIo(&tcp)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
        }
        loop {
            tcp.readable().await?;
            match conn.read_tls(&mut TryIo(&tcp)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(ConnectError::from(e)),
                Ok(0) => {
                    return Err(
                        "upstream closed the connection right after the TLS handshake".into(),
                    )
                }
                Ok(_) => {
                    conn.process_new_packets()
                        .map_err(|e| format!("upstream refused the TLS session: {e}"))?;
                    return Ok(());
                }
            }
        }
    };
    tokio::time::timeout(window, exchange)
        .await
        .unwrap_or(Ok(()))
}

/// Non-blocking std I/O over a tokio socket, for rustls's `read_tls`/`write_tls`.
struct TryIo<'a>(&'a TcpStream);

impl io::Read for TryIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for TryIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// `[::1]` → `::1`: rustls wants the bare address.
fn host_of(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The file to blame for a server-name error: the config itself is not known here, so
/// name the CA file, which every https upstream has.
fn cfg_path(cfg: &UpstreamConfig) -> PathBuf {
    cfg.ca
        .clone()
        .unwrap_or_else(|| PathBuf::from("upstream.ca"))
}

/// The rustls client config for an `https://` upstream, and the bytes it was built from.
fn client_config(cfg: &UpstreamConfig) -> Result<(rustls::ClientConfig, Material), LoadError> {
    let ca_path = cfg.ca.as_deref().ok_or_else(|| {
        // Config validation requires `ca` for https; this is only reached if it was bypassed.
        LoadError::new(
            Path::new("upstream.ca"),
            "an https upstream needs upstream.ca",
        )
    })?;
    let mut material = vec![read(ca_path)?];
    let mut roots = rustls::RootCertStore::empty();
    for cert in load::certificates(ca_path, "upstream CA bundle")? {
        roots.add(cert).map_err(|e| {
            LoadError::new(ca_path, format!("unusable upstream CA certificate: {e}"))
        })?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::new(ca_path, format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots);
    let mut config = match (&cfg.client_certificate, &cfg.client_key) {
        (Some(cert_path), Some(key_path)) => {
            material.push(read(cert_path)?);
            material.push(read(key_path)?);
            let key = load::server_identity(cert_path, key_path, &provider)?;
            let chain = key.cert.clone();
            let key_der = load::private_key(key_path)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                LoadError::new(key_path, format!("unusable upstream client key: {e}"))
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        // Config validation requires both or neither.
        (Some(p), None) | (None, Some(p)) => {
            return Err(LoadError::new(
                p,
                "upstream.client_certificate and upstream.client_key must be set together",
            ))
        }
    };
    // The proxy speaks HTTP/1.1 to the upstream.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, material))
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| {
        LoadError::new(
            path,
            format!("cannot read: {e}; check the path and the file's permissions"),
        )
    })
}

/// The current bytes of every TLS file `cfg` names, to compare with a built connector's.
pub fn current_material(cfg: &UpstreamConfig) -> Option<Material> {
    [&cfg.ca, &cfg.client_certificate, &cfg.client_key]
        .into_iter()
        .flatten()
        .map(|p| std::fs::read(p).ok())
        .collect()
}

/// A connection to the upstream.
#[derive(Debug)]
pub enum UpstreamIo {
    /// Plain TCP.
    Tcp(TokioIo<TcpStream>),
    /// TLS over TCP (boxed: the rustls state is large).
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
    /// A unix socket.
    Unix(TokioIo<UnixStream>),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            UpstreamIo::Tcp($s) => $e,
            UpstreamIo::Tls($s) => {
                let $s = &mut **$s;
                $e
            }
            UpstreamIo::Unix($s) => $e,
        }
    };
}

impl Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Tcp(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
            UpstreamIo::Unix(s) => s.is_write_vectored(),
        }
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            UpstreamIo::Tcp(s) => s.connected(),
            UpstreamIo::Tls(_) | UpstreamIo::Unix(_) => Connected::new(),
        }
    }
}
