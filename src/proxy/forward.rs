//! Forwarding accepted requests to the upstream through a pooled hyper-util client, and the
//! per-request handler that ties header rewriting, streaming and error answers together.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::activity::Activity;
use super::body::{AccessRecord, Finish, RequestBody, ResponseBody};
use super::headers;
use crate::config::UpstreamConfig;
use crate::identity::ClientIdentity;
use crate::metrics::{Metrics, UpstreamErrorKind};

/// A parsed `upstream.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// `http`
    pub scheme: Scheme,
    /// `host:port`
    pub authority: Authority,
}

impl UpstreamTarget {
    /// Parses `http://host[:port]`. Returns a message for the config error otherwise.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| {
            format!("{url:?} is not a URL ({e}); expected e.g. \"http://127.0.0.1:8080\"")
        })?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some(other) => {
                return Err(format!(
                    "scheme {other:?} is not supported; use \"http://host:port\""
                ))
            }
            None => {
                return Err(format!(
                    "{url:?} has no scheme; expected \"http://host:port\""
                ))
            }
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url:?} has no host; expected \"http://host:port\""))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{url:?} has a path; the request path is forwarded as-is, so give only \"http://host:port\""
            ));
        }
        Ok(Self { scheme, authority })
    }

    /// `host:port` for a TCP readiness probe.
    pub fn socket_target(&self) -> String {
        let port = self.authority.port_u16().unwrap_or(80);
        format!(
            "{}:{port}",
            self.authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
        )
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

/// The upstream: where to go and a pooled client to get there.
#[derive(Debug)]
pub struct Upstream {
    client: Client<HttpConnector, RequestBody>,
    /// The parsed target.
    pub target: UpstreamTarget,
    response_timeout: Duration,
    connect_timeout: Duration,
    /// The config it was built from, so a reload can keep the pool when nothing changed.
    pub config: UpstreamConfig,
}

impl Upstream {
    /// Builds the client. Fails only on a bad URL (already validated at config load).
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, String> {
        let target = UpstreamTarget::parse(&cfg.url)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .build(connector);
        Ok(Self {
            client,
            target,
            response_timeout: cfg.response_timeout,
            connect_timeout: cfg.connect_timeout,
            config: cfg.clone(),
        })
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

    /// True when the upstream accepts a TCP connection (readiness).
    pub async fn probe(&self) -> bool {
        let connect = tokio::net::TcpStream::connect(self.target.socket_target());
        matches!(
            tokio::time::timeout(self.connect_timeout, connect).await,
            Ok(Ok(_))
        )
    }

    fn uri_for(&self, original: &Uri) -> Uri {
        let pq = original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.target.scheme.clone());
        parts.authority = Some(self.target.authority.clone());
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
        ctx.peer.ip(),
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
            tracing::warn!(peer = %ctx.peer, upstream = %ctx.upstream.target.authority, error = ?failure, status = status.as_u16(), "upstream request failed");
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
        assert_eq!(t.socket_target(), "127.0.0.1:8080");
        assert!(UpstreamTarget::parse("http://h:1/api").is_err());
        assert!(UpstreamTarget::parse("ftp://h:1").is_err());
        assert_eq!(
            UpstreamTarget::parse("http://app").unwrap().socket_target(),
            "app:80"
        );
    }
}
