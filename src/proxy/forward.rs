//! Forwarding accepted requests to the upstream through a pooled hyper-util client, and the
//! per-request handler that ties header rewriting, streaming and error answers together.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::activity::Activity;
use super::body::{AccessRecord, Finish, RequestBody, ResponseBody};
use super::connector::{self, Connector, Material};
use super::headers;
use crate::config::UpstreamConfig;
use crate::identity::ClientIdentity;
use crate::metrics::{Metrics, UpstreamErrorKind};

/// A parsed `upstream.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// `http://host[:port]`
    Http {
        /// `host:port`
        authority: Authority,
    },
    /// `https://host[:port]`: TLS to the upstream, trusting `upstream.ca`.
    Https {
        /// `host:port`
        authority: Authority,
    },
    /// `unix:/absolute/path.sock`
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
}

const URL_FORMS: &str = "\"http://host:port\", \"https://host:port\" or \"unix:/path/to.sock\"";

impl UpstreamTarget {
    /// Parses `http://host[:port]`, `https://host[:port]` or `unix:/absolute/path`. Returns a
    /// message for the config error otherwise.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("unix:") {
            // `unix:///run/app.sock` is accepted as well as `unix:/run/app.sock`.
            let path = Path::new(path.strip_prefix("//").unwrap_or(path));
            if !path.is_absolute() {
                return Err(format!(
                    "{url:?}: the socket path must be absolute, e.g. \"unix:/run/app.sock\""
                ));
            }
            return Ok(Self::Unix {
                path: path.to_owned(),
            });
        }
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL ({e}); expected {URL_FORMS}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(format!(
                    "scheme {other:?} is not supported; use {URL_FORMS}"
                ))
            }
            None => return Err(format!("{url:?} has no scheme; expected {URL_FORMS}")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url:?} has no host; expected {URL_FORMS}"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{url:?} has user info; credentials do not belong in upstream.url"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{url:?} has a path; the request path is forwarded as-is, so give only \"scheme://host:port\""
            ));
        }
        Ok(if https {
            Self::Https { authority }
        } else {
            Self::Http { authority }
        })
    }

    /// True for `https://`.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Https { .. })
    }

    /// The scheme and authority of request URIs handed to the pooled client. A unix socket
    /// has no authority; `localhost` stands in (the client's own Host header is forwarded).
    fn uri_base(&self) -> (Scheme, Authority) {
        match self {
            Self::Http { authority } => (Scheme::HTTP, authority.clone()),
            Self::Https { authority } => (Scheme::HTTPS, authority.clone()),
            Self::Unix { .. } => (Scheme::HTTP, Authority::from_static("localhost")),
        }
    }
}

impl std::fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http { authority } => write!(f, "http://{authority}"),
            Self::Https { authority } => write!(f, "https://{authority}"),
            Self::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Why the upstream did not answer.
#[derive(Debug)]
pub enum UpstreamFailure {
    /// Could not connect (502).
    Connect(String),
    /// No response headers in time (504).
    Timeout,
    /// Failed mid-request (502).
    Other(String),
}

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// `upstream.url` is not usable.
    #[error("{0}")]
    Target(String),
    /// A TLS file (`upstream.ca`, `client_certificate`, `client_key`) is missing or bad.
    #[error(transparent)]
    Load(#[from] crate::tls::load::LoadError),
}

/// The upstream: where to go and a pooled client to get there.
#[derive(Debug)]
pub struct Upstream {
    client: Client<Connector, RequestBody>,
    connector: Connector,
    /// The parsed target.
    pub target: UpstreamTarget,
    response_timeout: Duration,
    /// The config it was built from, so a reload can keep the pool when nothing changed.
    pub config: UpstreamConfig,
    /// The TLS files' bytes when built, so a reload notices rotated upstream certificates.
    material: Material,
}

impl Upstream {
    /// Builds the client, loading the TLS material of an `https://` upstream.
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let target = UpstreamTarget::parse(&cfg.url).map_err(UpstreamError::Target)?;
        let (connector, material) = Connector::new(cfg, &target)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .build(connector.clone());
        Ok(Self {
            client,
            connector,
            target,
            response_timeout: cfg.response_timeout,
            config: cfg.clone(),
            material,
        })
    }

    /// True when a reload with `cfg` can keep this client and its warm pool: same settings
    /// and the same bytes in every upstream TLS file.
    pub fn reusable_for(&self, cfg: &UpstreamConfig) -> bool {
        self.config == *cfg && connector::current_material(cfg).as_ref() == Some(&self.material)
    }

    /// Sends a request; the response body streams afterwards, untimed.
    pub async fn send(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamFailure::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamFailure::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(UpstreamFailure::Other(error_chain(&e))),
        }
    }

    /// True when a new upstream connection can be opened, TLS handshake (and client
    /// certificate) included, within the connect timeout (readiness).
    pub async fn probe(&self) -> bool {
        match self
            .connector
            .probe(self.uri_for(&Uri::from_static("/")))
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(upstream = %self.target, error = %error_chain(&*e), "upstream probe failed");
                false
            }
        }
    }

    fn uri_for(&self, original: &Uri) -> Uri {
        let pq = original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let (scheme, authority) = self.target.uri_base();
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme);
        parts.authority = Some(authority);
        parts.path_and_query = Some(pq);
        // Scheme, authority and path all come from already-valid URIs.
        Uri::from_parts(parts).unwrap_or_else(|_| original.clone())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// What every request on one accepted connection shares. Built once per connection.
#[derive(Debug)]
pub struct ConnContext {
    /// Client address.
    pub peer: SocketAddr,
    /// The client's address as rendered into `X-Forwarded-For`.
    pub forwarded_peer: headers::ForwardedPeer,
    /// The verified identity.
    pub identity: Arc<ClientIdentity>,
    /// Identity headers, rendered once for this connection.
    pub identity_headers: Vec<(HeaderName, HeaderValue)>,
    /// Activity tracker for idle and header timeouts.
    pub activity: Arc<Activity>,
    /// The upstream of the state this connection started on.
    pub upstream: Arc<Upstream>,
    /// Metrics sink.
    pub metrics: Arc<Metrics>,
    /// Write access-log lines.
    pub access_log: bool,
    /// `listener.max_request_body_bytes`.
    pub max_request_body: Option<u64>,
    /// The connection's `max_connections` slot; an upgraded tunnel holds it for as long as
    /// it runs, so tunnels count against the limit (and are waited for when draining).
    pub slot: Slot,
}

/// Whatever keeps a connection's `max_connections` permit and active-connection count.
pub type Slot = Arc<dyn std::any::Any + Send + Sync>;

fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Handles one request: rewrite, forward, stream back, or answer 413/502/504 itself.
pub async fn handle(
    ctx: Arc<ConnContext>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    ctx.activity.request_started();
    let mut pending = Pending(Some(ctx.activity.clone()));
    let response = respond(&ctx, req).await;
    // From here the response body closes the request's books (see `body::Finish`).
    pending.0 = None;
    Ok(response)
}

/// Notes a request whose handler was dropped before it produced a response head: the client
/// reset the stream or went away. Without this the request would stay "in flight" forever
/// and the connection could never go idle.
struct Pending(Option<Arc<Activity>>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(activity) = self.0.take() {
            activity.request_cancelled();
        }
    }
}

async fn respond(ctx: &Arc<ConnContext>, mut req: Request<Incoming>) -> Response<ResponseBody> {
    let start = Instant::now();
    let upgrade = is_upgrade_request(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    // h2 carries the host in :authority; give the upstream the Host the client asked for.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, v);
        }
    }
    headers::rewrite_request(
        &mut parts.headers,
        &ctx.forwarded_peer,
        &ctx.identity_headers,
        upgrade,
    );
    headers::set_framing(&mut parts.headers, &body);
    let access = ctx.access_log.then(|| AccessRecord {
        peer: ctx.peer.ip(),
        identity: ctx.identity.clone(),
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        version: parts.version,
        bytes_in: Arc::new(AtomicU64::new(0)),
        upstream: None,
    });
    let http1 = parts.version < Version::HTTP_2;
    parts.uri = ctx.upstream.uri_for(&parts.uri);
    parts.version = Version::HTTP_11;
    let bytes_in = access
        .as_ref()
        .map(|a| a.bytes_in.clone())
        .unwrap_or_default();
    let finish = |status: StatusCode, upstream: Option<Duration>| Finish {
        activity: ctx.activity.clone(),
        metrics: ctx.metrics.clone(),
        start,
        status: status.as_u16(),
        access: access.map(|a| AccessRecord { upstream, ..a }),
    };

    // Security: this is a reverse proxy. CONNECT would ask the upstream for a raw tunnel that
    // hyper's client and server both treat as leaving HTTP framing; refuse it here.
    if parts.method == http::Method::CONNECT {
        return local(
            finish(StatusCode::METHOD_NOT_ALLOWED, None),
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed: CONNECT is not supported by this reverse proxy\n",
            http1,
        );
    }
    // A declared length over the limit is refused before the upstream is contacted, and
    // before hyper sends `100 Continue`, so the client never uploads the body.
    if let Some(limit) = ctx.max_request_body {
        if body.size_hint().lower() > limit {
            tracing::info!(peer = %ctx.peer, limit, declared = body.size_hint().lower(), "request body over max_request_body_bytes; 413");
            return too_large(finish(StatusCode::PAYLOAD_TOO_LARGE, None), http1);
        }
    }
    let mut body = RequestBody::new(body, bytes_in);
    body.limit(ctx.max_request_body);
    let body_state = body.state();
    let upstream_req = Request::from_parts(parts, body);

    let result = ctx.upstream.send(upstream_req).await;
    let upstream_time = start.elapsed();
    if result.is_err() {
        // The body failed before the upstream answered, so the upstream connection was
        // abandoned mid-body: the app never saw a complete request. Answer for the client's
        // fault, and do not count an upstream error.
        if body_state.over_limit() {
            tracing::info!(peer = %ctx.peer, limit = ctx.max_request_body, "request body over max_request_body_bytes while streaming; 413");
            return too_large(finish(StatusCode::PAYLOAD_TOO_LARGE, None), http1);
        }
        if body_state.client_failed() {
            tracing::info!(peer = %ctx.peer, "request body malformed or interrupted; 400");
            return local(
                finish(StatusCode::BAD_REQUEST, None),
                StatusCode::BAD_REQUEST,
                "400 Bad Request: malformed or interrupted request body\n",
                http1,
            );
        }
    }
    let response = match result {
        Ok(mut resp) => {
            let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            if switching {
                if let Some(client_side) = client_upgrade {
                    let upstream_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(tunnel(client_side, upstream_side, ctx.slot.clone()));
                }
            }
            headers::rewrite_response(resp.headers_mut(), switching && upgrade);
            let status = resp.status();
            let (parts, body) = resp.into_parts();
            Response::from_parts(
                parts,
                ResponseBody::upstream(body, finish(status, Some(upstream_time))),
            )
        }
        Err(failure) => {
            let (status, kind, text) = match &failure {
                UpstreamFailure::Connect(_) => (
                    StatusCode::BAD_GATEWAY,
                    UpstreamErrorKind::connect,
                    "502 Bad Gateway: upstream unavailable\n",
                ),
                UpstreamFailure::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    UpstreamErrorKind::timeout,
                    "504 Gateway Timeout: upstream did not answer in time\n",
                ),
                UpstreamFailure::Other(_) => (
                    StatusCode::BAD_GATEWAY,
                    UpstreamErrorKind::other,
                    "502 Bad Gateway: upstream error\n",
                ),
            };
            ctx.metrics.upstream_error(kind);
            tracing::warn!(peer = %ctx.peer, upstream = %ctx.upstream.target, error = ?failure, status = status.as_u16(), "upstream request failed");
            let mut resp = Response::new(ResponseBody::local(text, Some(finish(status, None))));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp
        }
    };
    response
}

/// The proxy's own 413.
fn too_large(finish: Finish, http1: bool) -> Response<ResponseBody> {
    local(
        finish,
        StatusCode::PAYLOAD_TOO_LARGE,
        "413 Content Too Large: request body exceeds the limit\n",
        http1,
    )
}

/// A short answer from the proxy itself for a request whose body was not (fully) read.
fn local(
    finish: Finish,
    status: StatusCode,
    text: &'static str,
    http1: bool,
) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::local(text, Some(finish)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if http1 {
        // The rest of the body is unread, so this connection cannot carry another request.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Copies bytes both ways between an upgraded client and upstream until either side closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _slot: Slot,
) {
    let (client, upstream) = tokio::join!(client, upstream);
    match (client, upstream) {
        (Ok(c), Ok(u)) => {
            let mut c = TokioIo::new(c);
            let mut u = TokioIo::new(u);
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        (c, u) => tracing::debug!(
            client_ok = c.is_ok(),
            upstream_ok = u.is_ok(),
            "upgrade failed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parsing() {
        let t = UpstreamTarget::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:8080");
        assert!(UpstreamTarget::parse("http://h:1/api").is_err());
        assert!(UpstreamTarget::parse("ftp://h:1").is_err());
        assert!(UpstreamTarget::parse("http://user:pw@h:1").is_err());
        assert!(UpstreamTarget::parse("https://app:8443").unwrap().is_tls());
        assert_eq!(
            UpstreamTarget::parse("unix:/run/app.sock").unwrap(),
            UpstreamTarget::Unix {
                path: "/run/app.sock".into()
            }
        );
        assert_eq!(
            UpstreamTarget::parse("unix:///run/app.sock").unwrap(),
            UpstreamTarget::Unix {
                path: "/run/app.sock".into()
            }
        );
        assert!(UpstreamTarget::parse("unix:app.sock").is_err());
    }
}
