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
use super::generation::Generation;
use super::headers::ForwardedPeer;
use super::pool::{Affinity, AFFINE_IDLE};
use super::record::{record_unparsed, Client};
use super::slot::ConnectionSlot;
use super::trust::{unix_now, ConnTrust, InService};
use crate::config::SniPolicy;
use crate::identity::{capped_for_log, ClientIdentity};
use crate::ledger::{Ledger, Seen};
use crate::metrics::Metrics;

/// What a connection is served with besides its stream and generation.
pub(crate) struct ServeDeps {
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Its activity, for the idle and header-read timeouts.
    pub(crate) activity: Arc<Activity>,
    /// Its `max_connections` slot.
    pub(crate) slot: ConnectionSlot,
    /// Its standing with the generation in service.
    pub(crate) trust: Arc<ConnTrust>,
    /// Its subscription to what is in service: the watchdog judges the connection again
    /// when the generation changes, and starts closing it when draining starts.
    pub(crate) current: watch::Receiver<InService<Generation>>,
    /// Its certificate's entry among the clients seen (`None` when the inventory is off).
    pub(crate) seen: Option<Arc<Seen>>,
    /// The ledger, for the viewers its requests carry.
    pub(crate) ledger: Arc<Ledger>,
}

/// Serves `admitted` until it closes, times out, misbehaves, loses the trust it was admitted
/// with, or the drain signal ends it.
pub(crate) async fn serve(admitted: Box<Admitted>, generation: Arc<Generation>, deps: ServeDeps) {
    let Admitted {
        tls,
        peer,
        accepted,
        tls_version,
        is_h2,
        sni,
        ..
    } = *admitted;
    tracing::debug!(peer = %peer, tls_version = tls_version.unwrap_or("-"), client = capped_for_log(&accepted.identity.subject).as_ref(), h2 = is_h2, "handshake accepted");
    let ctx = context(&generation, peer, &accepted.identity, sni, &deps);
    let ServeDeps {
        activity,
        trust,
        mut current,
        ..
    } = deps;
    let shared = ctx.clone();
    let service = service_fn(move |req| forward::handle(ctx.clone(), req));
    // Boxed for the same reason as the stages in `server::connection`: inline, rustc gives
    // hyper's connection state its own slot next to its moved-from copies.
    let mut conn = Box::pin(
        generation
            .http
            .serve_connection_with_upgrades(TokioIo::new(tls), service),
    );
    let mut dog = Watchdog::new(&generation, &shared, is_h2);
    let mut subscribed = true;
    if dog.drain(current.borrow_and_update().draining) {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let Ok((wait, close)) = dog.next_wait().map_err(|end| end.log(peer)) else {
            return;
        };
        if close {
            conn.as_mut().graceful_shutdown();
        }
        tokio::select! {
            res = conn.as_mut() => return ended(res, &shared),
            changed = current.changed(), if subscribed => {
                subscribed = changed.is_ok();
                if dog.drain(current.borrow().draining) {
                    conn.as_mut().graceful_shutdown();
                }
                let _ = trust.judge_if_stale();
            }
            _ = trust.closed(), if !dog.is_untrusted() => {}
            _ = tokio::time::sleep(wait) => {
                let _ = trust.judge_if_stale();
            }
            _ = activity.woken() => {}
            _ = shared.affinity.filled() => {}
        }
        if trust.is_closed() && !dog.is_untrusted() && dog.untrusted() {
            conn.as_mut().graceful_shutdown();
        }
    }
}

/// The end of hyper's connection: a request head hyper refused itself is recorded (it never
/// reached the handler), anything else only logged.
fn ended(res: Result<(), Box<dyn std::error::Error + Send + Sync>>, ctx: &ConnContext) {
    let Err(e) = res else { return };
    if let Some(status) = answered_by_hyper(&*e) {
        let client = ctx.access_log.then(|| Client {
            peer: ctx.peer.ip(),
            identity: &ctx.identity,
        });
        record_unparsed(&ctx.metrics, client, status);
    }
    tracing::debug!(peer = %ctx.peer, error = %e, "connection ended with an error");
}

/// Where a served connection stands, as its watchdog sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Serving requests.
    Open,
    /// Graceful shutdown has started (idle, or draining): requests in flight finish, hyper
    /// takes no new one and closes when they are done.
    Closing,
    /// A later judgement refused the chain: requests in flight get until `deadline`
    /// (`listener.shutdown_timeout`), the handler refuses new ones.
    Untrusted {
        /// When whatever is still running is dropped.
        deadline: tokio::time::Instant,
    },
}

/// Why the watchdog ends a connection at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// An HTTP/1.1 request head did not arrive whole within `header_read_timeout`.
    HeaderTimeout,
    /// h2 rapid reset: far more requests cancelled than completed.
    Abusive,
    /// Requests still running on an untrusted connection past `shutdown_timeout`.
    UntrustedTooLong,
}

impl End {
    fn log(self, peer: std::net::SocketAddr) {
        match self {
            End::HeaderTimeout => {
                tracing::info!(peer = %peer, "request header not received in time; closing");
            }
            // Security: rapid reset (CVE-2023-44487) paced to dodge h2's own guard; dropping
            // the connection cancels everything it started upstream.
            End::Abusive => {
                tracing::warn!(peer = %peer, "client cancelled too many requests (h2 rapid reset); closing");
            }
            End::UntrustedTooLong => {
                tracing::info!(peer = %peer, "requests still in flight on an untrusted connection after listener.shutdown_timeout; closing");
            }
        }
    }
}

/// The connection's watchdog: the idle and header-read timeouts, the rapid-reset guard, the
/// end of the acceptance (an expiry, a CRL's nextUpdate), draining, a judgement that refused
/// the chain, and giving a quiet client's upstream connections back to the pool.
struct Watchdog<'a> {
    state: State,
    ctx: &'a ConnContext,
    idle_timeout: Duration,
    /// HTTP/1.1 only: h2 has no request head to trickle in.
    header_timeout: Option<Duration>,
    shutdown_timeout: Duration,
}

impl<'a> Watchdog<'a> {
    fn new(generation: &Generation, ctx: &'a ConnContext, is_h2: bool) -> Self {
        Self {
            state: State::Open,
            ctx,
            idle_timeout: generation.listener().timeouts.idle,
            header_timeout: (!is_h2).then_some(generation.listener().timeouts.header_read),
            shutdown_timeout: generation.listener().timeouts.shutdown,
        }
    }

    fn is_untrusted(&self) -> bool {
        matches!(self.state, State::Untrusted { .. })
    }

    /// Draining has started (when `draining`): true when graceful shutdown must start now.
    fn drain(&mut self, draining: bool) -> bool {
        let start = draining && self.state == State::Open;
        if start {
            self.state = State::Closing;
        }
        start
    }

    /// A judgement refused the chain. Security: requests already forwarded finish
    /// (HTTP/1.1 answers them with `Connection: close`, h2 gets GOAWAY), new ones are refused
    /// by the handler, and whatever still runs after `shutdown_timeout` is dropped. True when
    /// graceful shutdown must start now.
    fn untrusted(&mut self) -> bool {
        let start = self.state == State::Open;
        self.state = State::Untrusted {
            deadline: tokio::time::Instant::now() + self.shutdown_timeout,
        };
        start
    }

    /// How long to wait before looking again, and whether graceful shutdown must start now;
    /// or why to end the connection at once.
    fn next_wait(&mut self) -> Result<(Duration, bool), End> {
        let ctx = self.ctx;
        let mut close = false;
        let wait = match ctx.activity.check(self.idle_timeout, self.header_timeout) {
            Due::Wait(d) => d,
            Due::Idle => {
                close = self.drain(true);
                self.idle_timeout
            }
            Due::HeaderTimeout => return Err(End::HeaderTimeout),
            Due::Abusive => return Err(End::Abusive),
        };
        if let State::Untrusted { deadline } = self.state {
            if tokio::time::Instant::now() >= deadline {
                return Err(End::UntrustedTooLong);
            }
        }
        // Wake when the acceptance runs out by itself (an expiry, a CRL's nextUpdate), so an
        // idle connection is judged then, not at its next request.
        let left = u64::try_from(ctx.trust.seconds_left(unix_now())).unwrap_or(0);
        let wait = wait.min(Duration::from_secs(left.max(1)));
        Ok((self.release_upstreams(wait), close))
    }

    /// A client that has gone quiet gives its upstream connections back to the pools, so
    /// idle clients hold none (see `pool`). While it keeps some, look every `AFFINE_IDLE`.
    fn release_upstreams(&self, wait: Duration) -> Duration {
        let ctx = self.ctx;
        if !ctx.affinity.holds() {
            return wait;
        }
        match ctx.activity.quiet_for() {
            Some(q) if q >= AFFINE_IDLE => {
                let n = ctx.affinity.release();
                tracing::debug!(peer = %ctx.peer, connections = n, "client quiet; its upstream connections went back to the pool");
                wait
            }
            _ => wait.min(AFFINE_IDLE),
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

/// What every request of the connection shares, built once.
fn context(
    generation: &Arc<Generation>,
    peer: std::net::SocketAddr,
    identity: &Arc<ClientIdentity>,
    sni: Option<Box<str>>,
    deps: &ServeDeps,
) -> Arc<ConnContext> {
    Arc::new(ConnContext {
        peer,
        affinity: Affinity::default(),
        forwarded_peer: ForwardedPeer::new(peer.ip()),
        identity_headers: identity.headers(&generation.config.forward),
        identity: identity.clone(),
        activity: deps.activity.clone(),
        generation: generation.clone(),
        metrics: deps.metrics.clone(),
        // Skip the per-request access record (a path copy and a byte counter) when nothing
        // would print it, e.g. `log.level = "warn"`.
        access_log: generation.access_log()
            && tracing::enabled!(target: crate::logs::target::ACCESS, tracing::Level::INFO),
        slot: deps.slot.clone(),
        trust: deps.trust.clone(),
        seen: deps.seen.clone(),
        ledger: deps.ledger.clone(),
        sni: (generation.listener().sni == SniPolicy::RequireHostMatch)
            .then_some(sni)
            .flatten(),
    })
}

/// Resolves once draining has started.
pub(super) async fn draining(rx: &mut watch::Receiver<InService<Generation>>) {
    // The guard `wait_for` returns is not Send; drop it here rather than across an await.
    let _ = rx.wait_for(|s| s.draining).await;
}
