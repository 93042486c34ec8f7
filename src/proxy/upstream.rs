//! The upstream client: a pooled hyper-util client over [`Connector`], the request-URI
//! rewrite, readiness probes, and [`UpstreamFailure`], which knows the status, metric and
//! body of every way the upstream can fail to answer.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::RequestBody;
use super::connector::{Connector, Material};
use crate::config::{UpstreamConfig, UpstreamTarget};
use crate::metrics::UpstreamErrorKind;
use crate::tls::load::LoadError;

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

/// The upstream: where to go and a pooled client to get there.
#[derive(Debug)]
pub(crate) struct Upstream {
    client: Client<Connector, RequestBody>,
    connector: Connector,
    /// The config it was built from, so a reload can keep the pool when nothing changed.
    config: UpstreamConfig,
    /// The TLS files' bytes it was built from, so a reload notices rotated certificates.
    material: Option<Material>,
}

impl Upstream {
    /// Builds the client from `cfg` and the TLS `material` read for it.
    pub(crate) fn new(cfg: &UpstreamConfig, material: Option<Material>) -> Result<Self, LoadError> {
        let connector = Connector::new(cfg, material.as_ref())?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .build(connector.clone());
        Ok(Self {
            client,
            connector,
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

    /// Sends a request; the response body streams afterwards, untimed.
    pub(crate) async fn send(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        let timeout = self.config.response_timeout;
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamFailure::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamFailure::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(UpstreamFailure::Other(error_chain(&e))),
        }
    }

    /// True when a new upstream connection can be opened, TLS handshake (and client
    /// certificate) included, within the connect timeout (readiness).
    pub(crate) async fn probe(&self) -> bool {
        match self
            .connector
            .probe(self.uri_for(&Uri::from_static("/")))
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(upstream = %self.target(), error = %error_chain(&*e), "upstream probe failed");
                false
            }
        }
    }

    /// The URI handed to the pooled client for a request to `original`: the upstream's scheme
    /// and authority, the client's path and query.
    pub(crate) fn uri_for(&self, original: &Uri) -> Uri {
        let pq = original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let (scheme, authority) = uri_base(self.target());
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme);
        parts.authority = Some(authority);
        parts.path_and_query = Some(pq);
        // Scheme, authority and path all come from already-valid URIs.
        Uri::from_parts(parts).unwrap_or_else(|_| original.clone())
    }
}

/// The scheme and authority of request URIs handed to the pooled client. A unix socket has no
/// authority; `localhost` stands in (the client's own Host header is forwarded).
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
