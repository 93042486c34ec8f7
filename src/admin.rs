//! The plain-HTTP admin listener: `/healthz` (liveness), `/readyz` (readiness: listening,
//! not draining, upstream reachable) and `/metrics` (Prometheus text). Bind it to loopback or
//! a private interface: it is not authenticated.

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
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if server.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !server.is_listening() {
                text(StatusCode::SERVICE_UNAVAILABLE, "not listening yet\n")
            } else if let Some(why) = server.not_ready_reason() {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
            } else {
                match unreachable_upstream(&server).await {
                    Some(name) if name == "upstream" => {
                        text(StatusCode::SERVICE_UNAVAILABLE, "upstream unreachable\n")
                    }
                    Some(name) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("upstream {name} unreachable ([upstreams.{name}])\n"),
                    ),
                    None => text(StatusCode::OK, "ready\n"),
                }
            }
        }
        "/metrics" => {
            let mut r = text(StatusCode::OK, server.metrics().encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n",
        ),
    })
}
