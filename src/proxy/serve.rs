//! The second stage of a connection: serving an admitted one. hyper-util's auto server
//! (HTTP/1.1 and h2) runs the per-request handler, and a watchdog enforces the idle and
//! header-read timeouts, the rapid-reset guard and graceful draining.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::activity::{Activity, Due};
use super::admit::Admitted;
use super::forward::{self, ConnContext};
use super::frontend::Frontend;
use super::headers::ForwardedPeer;
use super::pool::{Affinity, AFFINE_IDLE};
use super::slot::ConnectionSlot;
use super::trust::{unix_now, ConnTrust};
use crate::identity::{capped_for_log, ClientIdentity};
use crate::metrics::Metrics;

/// What a connection is served with besides its stream and frontend.
pub(crate) struct ServeDeps {
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Its activity, for the idle and header-read timeouts.
    pub(crate) activity: Arc<Activity>,
    /// Its `max_connections` slot.
    pub(crate) slot: ConnectionSlot,
    /// Its standing with the current trust state.
    pub(crate) trust: Arc<ConnTrust>,
    /// The drain signal.
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Serves `admitted` until it closes, times out, misbehaves, loses the trust it was admitted
/// with, or the drain signal ends it.
pub(crate) async fn serve(admitted: Box<Admitted>, frontend: Arc<Frontend>, deps: ServeDeps) {
    let Admitted {
        tls,
        peer,
        accepted,
        tls_version,
        is_h2,
        candidate: _,
        sni,
    } = *admitted;
    let ServeDeps {
        metrics,
        activity,
        slot,
        trust,
        mut shutdown,
    } = deps;
    tracing::debug!(peer = %peer, tls_version = tls_version.unwrap_or("-"), client = capped_for_log(&accepted.identity.subject).as_ref(), h2 = is_h2, "handshake accepted");
    let ctx = context(
        &frontend,
        peer,
        &accepted.identity,
        Conn {
            activity: &activity,
            metrics,
            slot,
            trust: &trust,
            sni,
        },
    );
    let books = ctx.clone();
    let service = service_fn(move |req| forward::handle(ctx.clone(), req));
    // Boxed for the same reason as the stages in `server::connection`: inline, rustc gives
    // hyper's connection state its own slot next to its moved-from copies.
    let mut conn = Box::pin(
        frontend
            .http
            .serve_connection_with_upgrades(TokioIo::new(tls), service),
    );

    let idle_timeout = frontend.listener.idle_timeout;
    let header_timeout = (!is_h2).then_some(frontend.listener.header_read_timeout);
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    // Set once a judgement refused the connection: in-flight requests get until then.
    let mut untrusted_until: Option<tokio::time::Instant> = None;
    loop {
        let wait = match activity.check(idle_timeout, header_timeout) {
            Due::Wait(d) => d,
            Due::Idle if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
                idle_timeout
            }
            Due::Idle => idle_timeout,
            Due::HeaderTimeout => {
                tracing::info!(peer = %peer, "request header not received in time; closing");
                return;
            }
            Due::Abusive => {
                // Security: rapid reset (CVE-2023-44487) paced to dodge h2's own guard;
                // dropping the connection cancels everything it started upstream.
                tracing::warn!(peer = %peer, "client cancelled too many requests (h2 rapid reset); closing");
                return;
            }
        };
        if untrusted_until.is_some_and(|t| tokio::time::Instant::now() >= t) {
            tracing::info!(peer = %peer, "requests still in flight on an untrusted connection after listener.shutdown_timeout; closing");
            return;
        }
        // Wake when the acceptance runs out by itself (an expiry, a CRL's nextUpdate), so an
        // idle connection is judged then, not at its next request.
        let now = unix_now();
        let mut wait = wait.min(Duration::from_secs(
            u64::try_from(trust.seconds_left(now)).unwrap_or(0).max(1),
        ));
        // A client that has gone quiet gives its upstream connections back to the pools, so
        // idle clients hold none (see `pool`). While it keeps some, look every AFFINE_IDLE.
        if books.affinity.holds() {
            match activity.quiet_for() {
                Some(q) if q >= AFFINE_IDLE => {
                    let n = books.affinity.release();
                    tracing::debug!(peer = %peer, connections = n, "client quiet; its upstream connections went back to the pool");
                }
                _ => wait = wait.min(AFFINE_IDLE),
            }
        }
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    if let Some(status) = answered_by_hyper(&*e) {
                        record_hyper_answer(&books, status);
                    }
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = draining(&mut shutdown), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = trust.closed(), if untrusted_until.is_none() => {
                // Security: requests already forwarded finish (HTTP/1.1 answers them with
                // `Connection: close`, h2 gets GOAWAY), new ones are refused by the handler,
                // and whatever is still running after shutdown_timeout is dropped.
                untrusted_until =
                    Some(tokio::time::Instant::now() + frontend.listener.shutdown_timeout);
                if !closing {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep(wait) => {
                let _ = trust.judge_if_stale();
            }
            _ = activity.woken() => {}
            _ = books.affinity.filled() => {}
        }
    }
}

/// The status hyper itself sent, if the connection ended on a request head it could not parse:
/// hyper answers those (400, 414, 431) before the service sees a request, so without this
/// they would be in no counter and no access log.
fn answered_by_hyper(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<u16> {
    let e = e.downcast_ref::<hyper::Error>()?;
    if !e.is_parse() || e.is_parse_version_h2() || e.is_parse_status() {
        return None;
    }
    Some(if e.is_parse_too_large() {
        // hyper's two "too large" kinds differ only in their text.
        if e.to_string().contains("URI too long") {
            414
        } else {
            431
        }
    } else {
        400
    })
}

/// Counts hyper's own answer in `requests_total`, and writes its access line: the request was
/// not parsed, so method and path are `-` and the duration is 0.
fn record_hyper_answer(ctx: &ConnContext, status: u16) {
    ctx.metrics.request_without_duration(status);
    if !ctx.access_log {
        return;
    }
    let client_cn = ctx.identity.cn_for_log();
    crate::logs::write(&crate::logs::Line {
        peer: ctx.peer.ip(),
        client_cn: &client_cn,
        client_fingerprint: &ctx.identity.fingerprint,
        method: "-",
        path: "-",
        version: http::Version::HTTP_11,
        status,
        bytes_in: 0,
        bytes_out: 0,
        total: Duration::ZERO,
        upstream: None,
        route: None,
    });
}

/// What every request of the connection shares, built once.
/// The parts of a connection its request context takes.
struct Conn<'a> {
    activity: &'a Arc<Activity>,
    metrics: Arc<Metrics>,
    slot: ConnectionSlot,
    trust: &'a Arc<ConnTrust>,
    sni: Option<Box<str>>,
}

fn context(
    frontend: &Arc<Frontend>,
    peer: std::net::SocketAddr,
    identity: &Arc<ClientIdentity>,
    conn: Conn<'_>,
) -> Arc<ConnContext> {
    let Conn {
        activity,
        metrics,
        slot,
        trust,
        sni,
    } = conn;
    Arc::new(ConnContext {
        peer,
        affinity: Affinity::default(),
        forwarded_peer: ForwardedPeer::new(peer.ip()),
        identity_headers: identity.headers(&frontend.forward),
        identity: identity.clone(),
        activity: activity.clone(),
        upstream: frontend.upstream.clone(),
        frontend: frontend.clone(),
        metrics,
        // Skip the per-request access record (a path copy and a byte counter) when nothing
        // would print it, e.g. `log.level = "warn"`.
        access_log: frontend.access_log
            && tracing::enabled!(target: crate::logs::target::ACCESS, tracing::Level::INFO),
        max_request_body: frontend.listener.max_request_body_bytes,
        slot,
        trust: trust.clone(),
        shutdown_timeout: frontend.listener.shutdown_timeout,
        sni: frontend
            .listener
            .require_sni_host_match
            .then_some(sni)
            .flatten(),
    })
}

/// Resolves once draining has started.
pub(super) async fn draining(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here rather than across an await.
    let _ = rx.wait_for(|d| *d).await;
}
