//! The upstream client: HTTP/1.1 exchanges over [`Connector`]'s connections, reused through
//! [`pool`](super::pool) with client-connection affinity; the request-URI and Host rules,
//! readiness probes, and [`UpstreamFailure`], which knows the status, metric and body of
//! every way the upstream can fail to answer.

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use super::body::RequestBody;
use super::connector::{Connector, Material};
use super::pool::{Affinity, Conn, Pool, Source};
use crate::config::{UpstreamConfig, UpstreamTarget};
use crate::metrics::{Metrics, UpstreamErrorKind};
use crate::tls::load::LoadError;

/// How many reused connections one request tries before it opens a new one. A reused
/// connection can turn out closed by the upstream just as the request goes out; the request
/// is then handed back unsent and is safe to retry (hyper-util's legacy client does the same).
const REUSE_ATTEMPTS: usize = 3;

/// Why the upstream did not answer.
#[derive(Debug)]
pub(crate) enum UpstreamFailure {
    /// Could not connect (502).
    Connect(String),
    /// No response headers in time (504).
    Timeout,
    /// Failed mid-request (502).
    Other(String),
}

impl std::fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamFailure::Connect(e) => write!(f, "cannot connect: {e}"),
            UpstreamFailure::Timeout => {
                f.write_str("no response headers within upstream.response_timeout")
            }
            UpstreamFailure::Other(e) => f.write_str(e),
        }
    }
}

impl UpstreamFailure {
    /// The status the client gets.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            UpstreamFailure::Connect(_) | UpstreamFailure::Other(_) => StatusCode::BAD_GATEWAY,
            UpstreamFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `kind` label of `mtls_shield_upstream_errors_total`.
    pub(crate) fn kind(&self) -> UpstreamErrorKind {
        match self {
            UpstreamFailure::Connect(_) => UpstreamErrorKind::connect,
            UpstreamFailure::Timeout => UpstreamErrorKind::timeout,
            UpstreamFailure::Other(_) => UpstreamErrorKind::other,
        }
    }

    /// The short plain-text body the client gets. It names no upstream address or error: those
    /// are for the log.
    pub(crate) fn body(&self) -> &'static str {
        match self {
            UpstreamFailure::Connect(_) => "502 Bad Gateway: upstream unavailable\n",
            UpstreamFailure::Timeout => "504 Gateway Timeout: upstream did not answer in time\n",
            UpstreamFailure::Other(_) => "502 Bad Gateway: upstream error\n",
        }
    }
}

/// The upstream: where to go, how to connect, and its pool of idle connections.
#[derive(Debug)]
pub(crate) struct Upstream {
    pool: Pool,
    connector: Connector,
    /// What the connector is handed: the upstream's scheme and authority.
    connect_uri: Uri,
    /// The Host a request without one gets: the upstream's authority, as hyper-util's client
    /// set it.
    default_host: HeaderValue,
    /// The config it was built from, so a reload can keep the pool when nothing changed.
    config: UpstreamConfig,
    /// The TLS files' bytes it was built from, so a reload notices rotated certificates.
    material: Option<Material>,
}

impl Upstream {
    /// Builds the client from `cfg` and the TLS `material` read for it.
    pub(crate) fn new(cfg: &UpstreamConfig, material: Option<Material>) -> Result<Self, LoadError> {
        let connector = Connector::new(cfg, material.as_ref())?;
        let (scheme, authority) = uri_base(&cfg.url);
        let default_host = default_host(&scheme, &authority);
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme);
        parts.authority = Some(authority);
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
        // Scheme, authority and path all come from already-valid URIs.
        let connect_uri = Uri::from_parts(parts).unwrap_or_default();
        Ok(Self {
            pool: Pool::new(cfg.pool_max_idle, cfg.pool_idle_timeout),
            connector,
            connect_uri,
            default_host,
            config: cfg.clone(),
            material,
        })
    }

    /// True when a reload with `cfg`, whose TLS files now hold `material`, can keep this client
    /// and its warm pool: the same settings and the same bytes in every TLS file.
    pub(crate) fn reusable_for(&self, cfg: &UpstreamConfig, material: &Option<Material>) -> bool {
        self.config == *cfg && self.material == *material
    }

    /// Where it connects.
    pub(crate) fn target(&self) -> &UpstreamTarget {
        &self.config.url
    }

    /// Sends a request on a connection of `affinity`'s client connection, of the pool, or a
    /// new one; the response body streams afterwards, untimed. The connection is kept for the
    /// client connection's next request (see [`Affinity::keep`]).
    pub(crate) async fn send(
        &self,
        req: Request<RequestBody>,
        affinity: &Affinity,
        in_flight: impl Fn() -> usize,
        metrics: &Metrics,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        let timeout = self.config.response_timeout;
        let (resp, conn) = tokio::time::timeout(timeout, self.exchange(req, affinity, metrics))
            .await
            .map_err(|_| UpstreamFailure::Timeout)??;
        affinity.keep(conn, in_flight());
        Ok(resp)
    }

    async fn exchange(
        &self,
        mut req: Request<RequestBody>,
        affinity: &Affinity,
        metrics: &Metrics,
    ) -> Result<(Response<Incoming>, Conn), UpstreamFailure> {
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, self.default_host.clone());
        }
        for _ in 0..REUSE_ATTEMPTS {
            let Some(mut conn) = self.pool.take(affinity) else {
                break;
            };
            match conn.sender.try_send_request(req).await {
                Ok(resp) => {
                    metrics.upstream_connection(conn.source);
                    return Ok((resp, conn));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection closed under it. Try the next one.
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamFailure::Other(error_chain(&e.into_error()))),
                },
            }
        }
        let mut conn = self.pool.opened(self.open().await?);
        match conn.sender.try_send_request(req).await {
            Ok(resp) => {
                metrics.upstream_connection(Source::opened);
                Ok((resp, conn))
            }
            Err(e) => Err(UpstreamFailure::Other(error_chain(&e.into_error()))),
        }
    }

    /// Opens a connection and starts hyper's HTTP/1.1 client on it, upgrades enabled (a
    /// `101` answer becomes a tunnel, see `forward`).
    async fn open(&self) -> Result<super::pool::Sender, UpstreamFailure> {
        let io = self
            .connector
            .clone()
            .connect(self.connect_uri.clone())
            .await
            .map_err(|e| UpstreamFailure::Connect(error_chain(&*e)))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| UpstreamFailure::Connect(error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %error_chain(&e), "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// True when a new upstream connection can be opened, TLS handshake (and client
    /// certificate) included, within the connect timeout (readiness).
    pub(crate) async fn probe(&self) -> bool {
        match self.connector.probe(self.connect_uri.clone()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(upstream = %self.target(), error = %error_chain(&*e), "upstream probe failed");
                false
            }
        }
    }

    /// The request target the upstream gets for a request to `original`: its path and query
    /// (origin form, RFC 9112 §3.2.1). The authority travels in Host.
    pub(crate) fn uri_for(&self, original: &Uri) -> Uri {
        match original.path_and_query() {
            Some(pq) if pq.as_str() != "/" => {
                let mut parts = http::uri::Parts::default();
                parts.path_and_query = Some(pq.clone());
                Uri::from_parts(parts).unwrap_or_default()
            }
            _ => Uri::default(),
        }
    }
}

/// `authority`, without the port when it is the scheme's default, as hyper-util's client
/// wrote Host for a request that had none.
fn default_host(scheme: &Scheme, authority: &Authority) -> HeaderValue {
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let host = match authority.port_u16() {
        Some(p) if p != default_port => authority.as_str(),
        _ => authority.host(),
    };
    // An authority is always a valid header value; "localhost" stands in if not.
    HeaderValue::from_str(host).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// The upstream's scheme and authority. A unix socket has no authority; `localhost` stands in
/// (the client's own Host header is forwarded).
fn uri_base(target: &UpstreamTarget) -> (Scheme, Authority) {
    match target {
        UpstreamTarget::Http { authority } => (Scheme::HTTP, authority.clone()),
        UpstreamTarget::Https { authority } => (Scheme::HTTPS, authority.clone()),
        UpstreamTarget::Unix { .. } => (Scheme::HTTP, Authority::from_static("localhost")),
    }
}

/// An error and its sources, on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
