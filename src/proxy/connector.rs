//! How the proxy reaches its upstream: plain TCP (`http://`), TLS with an optional client
//! certificate (`https://`, re-originated mTLS), or a unix socket (`unix:/path.sock`).
//!
//! [`Connector`] opens all three; [`UpstreamIo`] is the stream it
//! returns. The TLS client is rustls (aws-lc-rs), trusting only `upstream.ca`: the proxy ships
//! no public root store, so an `https://` upstream without a configured CA is a config error
//! rather than a silent trust of whatever the system offers.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{UpstreamConfig, UpstreamTarget, UpstreamTls};
use crate::tls::load::{self, LoadError};

/// Why the upstream could not be reached; the handler answers any of these with 502.
pub(crate) type ConnectError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
enum Kind {
    Tcp,
    Tls {
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    },
    Unix(PathBuf),
}

/// Connects to the configured upstream; cheap to clone (one clone per connect).
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    kind: Arc<Kind>,
    connect_timeout: Duration,
}

/// The TLS files of an `https://` upstream, read once: the connector is built from these
/// bytes, and a reload compares them with the files' new bytes to tell whether the warm pool
/// can be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Material {
    /// `ca`, as read.
    ca: Vec<u8>,
    /// `client_certificate` and `client_key`, as read.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl Material {
    /// Reads the TLS files `cfg` names; `None` for a plain upstream.
    pub(crate) fn read(cfg: &UpstreamConfig) -> Result<Option<Material>, LoadError> {
        let Some(tls) = &cfg.tls else {
            return Ok(None);
        };
        let ca = load::read(&tls.ca, "upstream CA bundle")?;
        let client = match &tls.client {
            Some(c) => Some((
                load::read(&c.certificate, "upstream client certificate")?,
                load::read(&c.key, "upstream client key")?,
            )),
            None => None,
        };
        Ok(Some(Material { ca, client }))
    }
}

impl Connector {
    /// Builds the connector for `cfg`, from the TLS `material` read for it (present exactly
    /// when the upstream is `https://`). Fails with an error that names the file.
    pub(crate) fn new(
        cfg: &UpstreamConfig,
        material: Option<&Material>,
    ) -> Result<Self, LoadError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        // The scheme says TLS or not; the TCP part is the same for both.
        http.enforce_http(false);
        let kind = match (&cfg.url, &cfg.tls, material) {
            (UpstreamTarget::Unix { path }, _, _) => Kind::Unix(path.clone()),
            (UpstreamTarget::Https { .. }, Some(tls), Some(material)) => {
                let server_name = ServerName::try_from(tls.server_name.clone()).map_err(|e| {
                    // The config checked the name already; this only fails if that check
                    // and rustls ever disagree.
                    LoadError::new(
                        &tls.ca,
                        format!("upstream server name {:?}: {e}", tls.server_name),
                    )
                })?;
                Kind::Tls {
                    config: Arc::new(client_config(tls, material)?),
                    server_name,
                }
            }
            (UpstreamTarget::Https { .. }, _, _) => {
                // The config gives every https upstream its TLS settings, and the caller reads
                // them: refuse rather than connect without TLS.
                return Err(LoadError::new(
                    Path::new("upstream.ca"),
                    "an https upstream needs its TLS settings and files",
                ));
            }
            (UpstreamTarget::Http { .. }, _, _) => Kind::Tcp,
        };
        Ok(Self {
            http,
            kind: Arc::new(kind),
            connect_timeout: cfg.connect_timeout,
        })
    }

    /// Opens a connection to the upstream `uri` names (its scheme and authority; ignored for
    /// a unix socket), TLS handshake included.
    pub(crate) async fn connect(self, uri: Uri) -> Result<UpstreamIo, ConnectError> {
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
    pub(crate) async fn probe(&self, uri: Uri) -> Result<(), ConnectError> {
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

/// The rustls client config for an `https://` upstream, built from the bytes in `material`.
fn client_config(
    tls: &UpstreamTls,
    material: &Material,
) -> Result<rustls::ClientConfig, LoadError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load::parse_certificates(&material.ca, &tls.ca, "upstream CA bundle")? {
        roots.add(cert).map_err(|e| {
            LoadError::new(&tls.ca, format!("unusable upstream CA certificate: {e}"))
        })?;
    }
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::new(&tls.ca, format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots);
    let mut config = match (&tls.client, &material.client) {
        (Some(paths), Some((cert, key))) => {
            let chain =
                load::parse_certificates(cert, &paths.certificate, "upstream client certificate")?;
            let key = load::parse_private_key(key, &paths.key)?;
            // Proves that the key belongs to the certificate before any handshake.
            let certified =
                load::certified_key(chain, key, &paths.certificate, &paths.key, &provider)?;
            builder.with_client_cert_resolver(Arc::new(FixedClientCert(certified)))
        }
        _ => builder.with_no_client_auth(),
    };
    // The proxy speaks HTTP/1.1 to the upstream.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Presents the one configured client certificate to the upstream.
#[derive(Debug)]
struct FixedClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A connection to the upstream.
#[derive(Debug)]
pub(crate) enum UpstreamIo {
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
