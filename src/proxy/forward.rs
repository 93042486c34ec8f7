//! The per-request handler: header rewriting, the request body's limits, forwarding to the
//! upstream, streaming the answer back, upgrades, and the few answers the proxy writes
//! itself (405, 413, 400, 502, 504), all through [`local`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;

use super::activity::Activity;
use super::body::{BodyState, RequestBody, ResponseBody};
pub(crate) use super::context::ConnContext;
use super::headers;
use super::record::{Finish, RequestRecord};
use super::slot::ConnectionSlot;
use super::trust::ConnTrust;
use super::upstream::{Upstream, UpstreamFailure};
use super::viewer;
use crate::policy::{Lookup, Route};

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

/// A request that arrived on a connection whose chain a later judgement refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "the connection's client certificate is no longer trusted ({0}); closing without an answer"
)]
pub(crate) struct Untrusted(&'static str);

/// Handles one request: rewrite, forward, stream back, or answer 405/413/400/502/504 itself.
///
/// Security: the request is never forwarded on a connection whose chain the current trust
/// state refuses. It gets no HTTP answer at all, as a refused handshake gets none: the error
/// makes hyper close an HTTP/1.1 connection without writing, and reset the h2 stream.
pub(crate) async fn handle(
    ctx: Arc<ConnContext>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Untrusted> {
    if let Err(closed) = ctx.trust.admit_request() {
        return Err(Untrusted(closed.reason.as_str()));
    }
    ctx.activity.request_started();
    if let Some(seen) = &ctx.seen {
        seen.request(super::trust::unix_now());
    }
    let mut pending = Pending(Some(ctx.activity.clone()));
    let response = respond(&ctx, req).await;
    // From here the response body closes the request's books (see `record::Finish`).
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
    let framing = Framing {
        http1: parts.version < Version::HTTP_2,
        has_body: !body.is_end_stream(),
    };
    // Before the identity headers are stripped: they carry the viewer's certificate.
    let viewer_input = viewer::read(ctx, &parts.headers);
    rewrite_head(ctx, &mut parts, &body, upgrade);
    let access = ctx.access_log.then(|| (ctx.peer.ip(), &ctx.identity));
    let mut books = RequestRecord::open(&ctx.activity, &ctx.metrics, access, start, &parts);
    let bytes_in = books.bytes_in();
    if let Some(answer) = refuse_before_upstream(ctx, &parts, &body) {
        return local(books.close(answer.status(), None), answer, framing);
    }
    let upstream = match route_and_viewer(ctx, &mut parts, viewer_input, &mut books).await {
        Ok(upstream) => upstream,
        Err(answer) => return local(books.close(answer.status(), None), answer, framing),
    };
    parts.uri = upstream.uri_for(&parts.uri);
    parts.version = Version::HTTP_11;
    let mut body = RequestBody::new(body, bytes_in);
    body.limit(ctx.generation.listener().limits.max_request_body_bytes);
    let body_state = body.state();
    let result = upstream
        .send(
            Request::from_parts(parts, body),
            &ctx.affinity,
            || ctx.activity.in_flight(),
            &ctx.metrics,
        )
        .await;
    let upstream_time = start.elapsed();
    match result {
        Ok(resp) => relay(ctx, resp, client_upgrade, upgrade, books, upstream_time),
        Err(failure) => {
            // A body that failed before the upstream answered made the client abandon that
            // upstream connection mid-body: the app never saw a complete request. Answer for
            // the client's fault, and count no upstream error.
            let answer = client_fault(ctx, &body_state).unwrap_or_else(|| {
                ctx.metrics.upstream_error(failure.kind());
                tracing::warn!(peer = %ctx.peer, upstream = %upstream.target(), error = %failure, status = failure.status().as_u16(), "upstream request failed");
                Answer::Upstream(failure)
            });
            local(books.close(answer.status(), None), answer, framing)
        }
    }
}

/// The request head as the upstream gets it: Host kept, hop-by-hop and client-sent identity
/// headers removed, X-Forwarded-*, the identity headers, and framing that states exactly
/// what the proxy parsed.
fn rewrite_head(ctx: &ConnContext, parts: &mut Parts, body: &Incoming, upgrade: bool) {
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
    headers::set_framing(&mut parts.headers, body);
}

/// A request refused before the upstream is contacted.
fn refuse_before_upstream(ctx: &ConnContext, parts: &Parts, body: &Incoming) -> Option<Answer> {
    if let Some(sni) = &ctx.sni {
        // A request for another host than the one the connection was opened (and its
        // certificate chosen) for: RFC 9110 §15.5.20 lets the client retry it on a connection
        // of its own.
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(headers::host_without_port);
        if !host.is_some_and(|h| h.eq_ignore_ascii_case(sni)) {
            tracing::info!(peer = %ctx.peer, sni = %sni, host = host.unwrap_or("-"), "Host does not match the connection's SNI; 421");
            return Some(Answer::Misdirected);
        }
    }
    // Security: this is a reverse proxy. CONNECT would ask the upstream for a raw tunnel that
    // hyper's client and server both treat as leaving HTTP framing; refuse it here.
    if parts.method == http::Method::CONNECT {
        return Some(Answer::ConnectRefused);
    }
    // A declared length over the limit is refused before the upstream is contacted, and
    // before hyper sends `100 Continue`, so the client never uploads the body.
    let limit = ctx.generation.listener().limits.max_request_body_bytes?;
    let declared = body.size_hint().lower();
    (declared > limit).then(|| {
        tracing::info!(peer = %ctx.peer, limit, declared, "request body over max_request_body_bytes; 413");
        Answer::TooLarge
    })
}

/// The upstream a request goes to, once its route and its viewer certificate (`[viewer]`)
/// allow it; a verified viewer's identity replaces the edge's in the headers. 403 when the
/// viewer is refused (see `viewer`): the upstream is never contacted.
async fn route_and_viewer<'a>(
    ctx: &'a ConnContext,
    parts: &mut Parts,
    input: viewer::ViewerInput,
    books: &mut RequestRecord,
) -> Result<&'a Arc<Upstream>, Answer> {
    let (upstream, route) = route(ctx, parts, books)?;
    match viewer::judge(ctx, input, route, parts).await {
        Ok(None) => {}
        Ok(Some(v)) => {
            books.viewer(viewer::accepted_note(&v));
            viewer::set_identity(&mut parts.headers, ctx, &v);
        }
        Err(refusal) => {
            books.viewer(viewer::refused_note(refusal));
            return Err(Answer::Forbidden);
        }
    }
    Ok(upstream)
}

/// The upstream a request goes to, by `[[routes]]`, and its route, or the answer that refuses
/// it: 403 when the matching route's allow-list refuses the connection's identity (the
/// upstream is never contacted), 400 for a path or Host whose meaning upstreams could
/// disagree on.
fn route<'a>(
    ctx: &'a ConnContext,
    parts: &Parts,
    books: &mut RequestRecord,
) -> Result<(&'a Arc<Upstream>, Option<&'a Route>), Answer> {
    let routes = &ctx.generation.policy.routes;
    if routes.is_empty() {
        return Ok((&ctx.generation.upstream, None));
    }
    // Routes match the Host the upstream will see. Two Host fields, or an h2 :authority that
    // disagrees with a Host field, would let the proxy and the upstream read different hosts.
    let refuse = |why: &str| {
        tracing::info!(target: crate::logs::target::REQUEST, peer = %ctx.peer, path = %parts.uri.path(), why, "request target refused; 400");
        Answer::BadTarget
    };
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => Some(h.to_str().map_err(|_| refuse("Host is not text"))?),
        (None, _) => None,
        (Some(_), Some(_)) => return Err(refuse("several Host fields")),
    };
    if let (Some(authority), Some(host)) = (parts.uri.authority(), host) {
        if !authority.as_str().eq_ignore_ascii_case(host) {
            return Err(refuse(":authority and Host disagree"));
        }
    }
    match routes.lookup(host, &parts.method, parts.uri.path()) {
        Lookup::NoRoute => Ok((&ctx.generation.upstream, None)),
        Lookup::BadPath(why) | Lookup::BadHost(why) => Err(refuse(why)),
        Lookup::Route(r) => {
            books.route(r.label());
            if let Some(allow) = r.allow() {
                if !allow.allows(&ctx.identity) {
                    ctx.metrics.request_denied(r.label());
                    tracing::info!(target: crate::logs::target::REQUEST, peer = %ctx.peer, route = r.label(), fingerprint = %ctx.identity.fingerprint_hex(), "route's allow-list refuses the client; 403");
                    return Err(Answer::Forbidden);
                }
            }
            let upstream = r
                .upstream()
                .and_then(|name| ctx.generation.upstreams.get(name))
                .unwrap_or(&ctx.generation.upstream);
            Ok((upstream, Some(r)))
        }
    }
}

/// The client's share of a failed upstream exchange, if it had one.
fn client_fault(ctx: &ConnContext, state: &BodyState) -> Option<Answer> {
    if state.over_limit() {
        tracing::info!(peer = %ctx.peer, limit = ctx.generation.listener().limits.max_request_body_bytes, "request body over max_request_body_bytes while streaming; 413");
        return Some(Answer::TooLarge);
    }
    if state.client_failed() {
        tracing::info!(peer = %ctx.peer, "request body malformed or interrupted; 400");
        return Some(Answer::BadBody);
    }
    None
}

/// The upstream's answer, streamed back, with a tunnel when it switched protocols.
fn relay(
    ctx: &ConnContext,
    mut resp: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upgrade: bool,
    books: RequestRecord,
    upstream_time: Duration,
) -> Response<ResponseBody> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        if let Some(client_side) = client_upgrade {
            let upstream_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(tunnel(
                client_side,
                upstream_side,
                ctx.slot.clone(),
                ctx.trust.clone(),
                ctx.generation.listener().timeouts.shutdown,
            ));
        }
    }
    headers::rewrite_response(resp.headers_mut(), switching && upgrade);
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    Response::from_parts(
        parts,
        ResponseBody::upstream(body, books.close(status, Some(upstream_time))),
    )
}

/// An answer the proxy writes itself.
#[derive(Debug)]
enum Answer {
    /// 405: CONNECT.
    ConnectRefused,
    /// 413: the body is over `listener.max_request_body_bytes`.
    TooLarge,
    /// 400: the body was malformed or interrupted.
    BadBody,
    /// 421: the Host is not the connection's SNI (`listener.require_sni_host_match`).
    Misdirected,
    /// 403: the route's allow-list refuses the client.
    Forbidden,
    /// 400: a path or Host whose meaning upstreams could disagree on.
    BadTarget,
    /// 502 or 504.
    Upstream(UpstreamFailure),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::ConnectRefused => StatusCode::METHOD_NOT_ALLOWED,
            Answer::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Answer::BadBody => StatusCode::BAD_REQUEST,
            Answer::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Answer::Forbidden => StatusCode::FORBIDDEN,
            Answer::BadTarget => StatusCode::BAD_REQUEST,
            Answer::Upstream(f) => f.status(),
        }
    }

    fn body(&self) -> &'static str {
        match self {
            Answer::ConnectRefused => {
                "405 Method Not Allowed: CONNECT is not supported by this reverse proxy\n"
            }
            Answer::TooLarge => "413 Content Too Large: request body exceeds the limit\n",
            Answer::BadBody => "400 Bad Request: malformed or interrupted request body\n",
            Answer::Misdirected => {
                "421 Misdirected Request: this connection was opened for another host\n"
            }
            // Names no identity and no rule: what the client may not do is its operator's to
            // know, from the log.
            Answer::Forbidden => "403 Forbidden\n",
            Answer::BadTarget => "400 Bad Request: ambiguous or malformed request target\n",
            Answer::Upstream(f) => f.body(),
        }
    }

    /// Whether an HTTP/1.1 connection cannot carry another request after this answer: the
    /// request body may be unread, or a refused CONNECT's client may already be sending
    /// tunnel bytes. A request without a body (every CloudFront GET) keeps the connection
    /// open after a 403, for the next request, such as another viewer's.
    fn closes(&self, has_body: bool) -> bool {
        match self {
            Answer::Upstream(_) => false,
            Answer::ConnectRefused => true,
            _ => has_body,
        }
    }
}

/// How a request was framed, for whether a local answer ends its connection.
#[derive(Debug, Clone, Copy)]
struct Framing {
    /// HTTP/1.x (h2 streams end on their own).
    http1: bool,
    /// The request has a body, which the answer may leave unread.
    has_body: bool,
}

/// Every answer the proxy writes itself: a short plain-text body, counted and logged like
/// any other response.
fn local(finish: Finish, answer: Answer, framing: Framing) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::local(answer.body(), Some(finish)));
    *resp.status_mut() = answer.status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if framing.http1 && answer.closes(framing.has_body) {
        // The rest of the body is unread (or CONNECT's tunnel bytes may follow), so this
        // connection cannot carry another request.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Copies bytes both ways between an upgraded client and upstream until either side closes,
/// or until `shutdown_timeout` after the connection's chain stops being trusted. It holds the
/// connection's slot and trust, so the connection stays counted and judged while it runs.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _slot: ConnectionSlot,
    trust: Arc<ConnTrust>,
    shutdown_timeout: Duration,
) {
    let (client, upstream) = tokio::join!(client, upstream);
    match (client, upstream) {
        (Ok(c), Ok(u)) => {
            let mut c = TokioIo::new(c);
            let mut u = TokioIo::new(u);
            // Security: the tunnel outlives the connection's watchdog, so it keeps the chain
            // judged itself, at each new generation and when the acceptance runs out.
            let current = trust.subscribe();
            let untrusted = async {
                trust.until_refused(current).await;
                tokio::time::sleep(shutdown_timeout).await;
            };
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "upgraded connection ended with an error");
                    }
                }
                _ = untrusted => {
                    tracing::info!("upgraded connection closed: its client certificate is no longer trusted");
                }
            }
        }
        (c, u) => tracing::debug!(
            client_ok = c.is_ok(),
            upstream_ok = u.is_ok(),
            "upgrade failed"
        ),
    }
}
