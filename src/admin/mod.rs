//! The plain-HTTP admin listener: `/healthz` (liveness), `/readyz` (readiness: listening,
//! not draining, upstream reachable), `/metrics` (Prometheus text), `/trust` (the trust state
//! as JSON, `report`) and `/` (the same for a person, `page`). Bind it to loopback or a
//! private interface. With `admin.bearer_token_file`, `/trust`, `/` and `/metrics` require
//! `Authorization: Bearer …`; `/healthz` and `/readyz` stay open for probes.

pub(crate) mod page;
pub(crate) mod report;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::proxy::server::{AcceptErrors, Server};

/// Sets the inventory gauges (`mtls_shield_clients_seen`, `mtls_shield_clients_expiring`)
/// from the ledger, at scrape time: nothing is counted on the data path for them.
fn inventory_gauges(server: &Server) {
    let now = crate::proxy::trust::unix_now();
    let clients = server.ledger().clients();
    let within = |days: i64| {
        clients
            .iter()
            .filter(|c| c.identity.not_after - now < days * 86_400)
            .count()
    };
    server.metrics().clients(
        clients.len(),
        within(report::SOON_DAYS),
        within(report::LATER_DAYS),
    );
}

/// Serves admin requests until the process exits.
pub(crate) async fn serve(listener: TcpListener, server: Arc<Server>) {
    let mut accept_errors = AcceptErrors::new("admin");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                accept_errors.failed(&e, server.metrics()).await;
                continue;
            }
        };
        let server = server.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(server.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Readiness: `Ok`, or why not (the `/readyz` body).
async fn readiness(server: &Server) -> Result<(), String> {
    if server.is_draining() {
        return Err("draining".to_owned());
    }
    if !server.is_listening() {
        return Err("not listening yet".to_owned());
    }
    if let Some(why) = server.not_ready_reason() {
        return Err(why);
    }
    match unreachable_upstream(server).await {
        Some(name) if name == "upstream" => Err("upstream unreachable".to_owned()),
        Some(name) => Err(format!("upstream {name} unreachable ([upstreams.{name}])")),
        None => Ok(()),
    }
}

/// Security: the token is compared in constant time, so its bytes cannot be found one by one
/// from response times. Without a configured token every request passes.
fn authorized(server: &Server, req: &Request<Incoming>) -> bool {
    let generation = server.current();
    let Some(token) = generation.admin_token.as_deref() else {
        return true;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), token.as_bytes())
        .is_ok()
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        "401 Unauthorized: send Authorization: Bearer <the token of admin.bearer_token_file>\n",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"mtls-shield\""),
    );
    r
}

fn typed(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    // The page and the document describe certificates and peers: no cache keeps them.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// The trust document of now. Built on the blocking pool: after a reload, each certificate of
/// the inventory is judged again once (a signature check each), which must not hold up a
/// worker that serves connections.
async fn trust_report(server: &Arc<Server>) -> Option<report::TrustReport> {
    let ready = readiness(server).await;
    let server = server.clone();
    tokio::task::spawn_blocking(move || {
        report::build(&server, ready, crate::proxy::trust::unix_now())
    })
    .await
    .ok()
}

/// The first upstream (the default, then the named ones) that a new connection cannot reach.
async fn unreachable_upstream(server: &Server) -> Option<String> {
    let generation = server.current();
    for (name, upstream) in generation.all_upstreams() {
        if !upstream.probe().await {
            return Some(name.to_owned());
        }
    }
    None
}

async fn answer(
    server: Arc<Server>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let guarded = matches!(path, "/" | "/trust" | "/metrics");
    if guarded && !authorized(&server, &req) {
        return Ok(unauthorized());
    }
    Ok(match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match readiness(&server).await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        "/metrics" => {
            inventory_gauges(&server);
            let mut r = text(StatusCode::OK, server.metrics().encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/trust" => match trust_report(&server).await {
            Some(doc) => match serde_json::to_string_pretty(&doc) {
                Ok(body) => typed(body, "application/json"),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            },
            None => text(StatusCode::INTERNAL_SERVER_ERROR, "the report failed\n"),
        },
        "/" => match trust_report(&server).await {
            Some(doc) => typed(page::render(&doc), "text/html; charset=utf-8"),
            None => text(StatusCode::INTERNAL_SERVER_ERROR, "the report failed\n"),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /trust, /healthz, /readyz or /metrics\n",
        ),
    })
}
