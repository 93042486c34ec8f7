//! The data plane's shared state ([`Server`]: the generation new connections use, the
//! connection slots, the drain signal), binding the listener, and the accept loop, which runs
//! each connection through its two stages: [`admit`](super::admit::admit), then
//! [`serve`](super::serve::serve).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::activity::Activity;
use super::admit::{admit, report_candidate, source_refused};
use super::generation::Generation;
use super::serve::{draining, serve as serve_connection, ServeDeps};
use super::slot::ConnectionSlot;
use super::trust::{Judged, LiveTrust};
use crate::config::ProxyProtocol;
use crate::ledger::{Fetching, Ledger, Refused};
use crate::metrics::Metrics;

/// State shared by the accept loop, every connection, the admin listener and the reloader.
#[derive(Debug)]
pub(crate) struct Server {
    /// The generation in service, and every open connection's standing with it.
    trust: Arc<LiveTrust>,
    metrics: Arc<Metrics>,
    listening: AtomicBool,
    connections: Arc<Semaphore>,
    max_connections: usize,
    /// Why the program is not ready yet besides the listener and the upstream (e.g. a CRL URL
    /// that has not delivered), asked by `/readyz`.
    not_ready: std::sync::RwLock<Option<NotReady>>,
    /// The clients seen, the last refusals and reloads, for `/trust`.
    ledger: Arc<Ledger>,
    /// The CRL URLs' fetching and the OCSP answers, given by the app, for `/trust`.
    fetching: std::sync::RwLock<Option<FetchingSource>>,
}

/// The ledger's name for the handshake's trust domain.
pub(crate) const CLIENT_AUTH: &str = "client_auth";

/// What the app reports of its fetcher and OCSP cache.
#[derive(Clone)]
pub(crate) struct FetchingSource(pub(crate) Arc<dyn Fn() -> Fetching + Send + Sync>);

impl std::fmt::Debug for FetchingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FetchingSource")
    }
}

/// A readiness condition the app adds: `Some(why)` while not ready.
#[derive(Clone)]
pub(crate) struct NotReady(pub(crate) Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NotReady")
    }
}

impl Server {
    /// A server whose new connections use `first`; at most `max_connections` are served at
    /// once.
    pub(crate) fn new(
        first: Arc<Generation>,
        metrics: Arc<Metrics>,
        max_connections: usize,
        inventory_max: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            trust: Arc::new(LiveTrust::new(first, metrics.clone())),
            metrics,
            listening: AtomicBool::new(false),
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            not_ready: std::sync::RwLock::new(None),
            ledger: Arc::new(Ledger::new(inventory_max)),
            fetching: std::sync::RwLock::new(None),
        })
    }

    /// The clients seen, the last refusals and reloads.
    pub(crate) fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Sets what reports the fetcher and the OCSP cache.
    pub(crate) fn set_fetching(&self, source: FetchingSource) {
        if let Ok(mut f) = self.fetching.write() {
            *f = Some(source);
        }
    }

    /// The CRL URLs' fetching and the OCSP answers, as the app reports them now.
    pub(crate) fn fetching(&self) -> Fetching {
        let source = self.fetching.read().ok().and_then(|f| f.clone());
        source.map(|s| (s.0)()).unwrap_or_default()
    }

    /// The generation in service: new connections use it.
    pub(crate) fn current(&self) -> Arc<Generation> {
        self.trust.current()
    }

    /// Puts `next` in service: connections accepted from now on use it, and every open
    /// connection judges itself against its trust (see `proxy::trust`); returns once they
    /// have. Connections that still pass keep their own generation; the others are closed.
    pub(crate) async fn install(&self, next: Arc<Generation>) -> Judged {
        self.trust.install(next).await
    }

    /// The metrics every connection counts into.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Starts draining: stop accepting, close idle connections, GOAWAY on h2.
    pub(crate) fn begin_drain(&self) {
        self.trust.begin_drain();
    }

    /// True once draining has started: readiness turns 503.
    pub(crate) fn is_draining(&self) -> bool {
        self.trust.is_draining()
    }

    /// Adds a readiness condition.
    pub(crate) fn set_not_ready(&self, check: NotReady) {
        if let Ok(mut n) = self.not_ready.write() {
            *n = Some(check);
        }
    }

    /// Why the program is not ready, by the app's own condition.
    pub(crate) fn not_ready_reason(&self) -> Option<String> {
        let check = self.not_ready.read().ok()?.clone()?;
        (check.0)()
    }

    /// True once the listener is bound and accepting.
    pub(crate) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Waits until every connection has closed, or `timeout` passes. True if all closed.
    pub(crate) async fn wait_drained(&self, timeout: Duration) -> bool {
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        tokio::time::timeout(timeout, self.connections.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Binds the listener.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// At most one `accept failed` line this often.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a listener does when `accept()` fails (EMFILE and friends): back off 50 ms instead of
/// spinning, count every failure (`mtls_shield_accept_errors_total`), and log at most one line
/// every [`ACCEPT_LOG_EVERY`] with how many failed in between, since the condition usually
/// lasts and would otherwise write 20 lines a second.
pub(crate) struct AcceptErrors {
    listener: &'static str,
    /// When a failure was last logged, and how many failed since.
    logged: Option<(tokio::time::Instant, u64)>,
}

impl AcceptErrors {
    /// `listener` names it in the log line: `listener` or `admin`.
    pub(crate) fn new(listener: &'static str) -> AcceptErrors {
        AcceptErrors {
            listener,
            logged: None,
        }
    }

    /// Counts and maybe logs one failure, then waits out the back-off.
    pub(crate) async fn failed(&mut self, e: &std::io::Error, metrics: &Metrics) {
        metrics.accept_error();
        let now = tokio::time::Instant::now();
        match &mut self.logged {
            Some((at, since)) if now.duration_since(*at) < ACCEPT_LOG_EVERY => *since += 1,
            _ => {
                let since = self.logged.map_or(0, |(_, n)| n);
                tracing::warn!(
                    listener = self.listener,
                    error = %e,
                    failed_since_last_line = since,
                    "accept failed; retrying every 50 ms (see mtls_shield_accept_errors_total)"
                );
                self.logged = Some((now, 0));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Accepts until draining starts.
pub(crate) async fn serve(listener: TcpListener, server: Arc<Server>) {
    server.listening.store(true, Ordering::SeqCst);
    let mut shutdown = server.trust.subscribe();
    let mut accept_errors = AcceptErrors::new("listener");
    loop {
        // Past max_connections, stop calling accept(): new peers wait in the kernel backlog
        // and every served client keeps its resources.
        let permit = tokio::select! {
            p = server.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = draining(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    accept_errors.failed(&e, server.metrics()).await;
                    continue;
                }
            },
            _ = draining(&mut shutdown) => break,
        };
        let generation = server.current();
        // Security: outside `listener.allow_sources`, the connection is closed before a byte
        // is read: no TLS work, no crypto. Behind a PROXY-protocol balancer the TCP peer is the
        // balancer; the PROXY header's source is checked instead, in `admit`.
        if generation.listener().proxy_protocol == ProxyProtocol::Off
            && !generation.sources.allows(peer.ip())
        {
            source_refused(server.metrics(), peer);
            drop((stream, permit));
            continue;
        }
        tokio::spawn(connection(stream, peer, generation, server.clone(), permit));
    }
    tracing::info!("listener closed; draining connections");
}

/// One connection: admitted (or refused), then served, on the generation it started on.
///
/// Memory: each stage is its own heap future, so an idle connection's task holds only the
/// serving stage, not the space of the handshake's state as well. Inline, the two stages
/// made the task's future 26 KB (rustc lays out the states of nested `async fn`s side by
/// side where it cannot prove they never overlap); boxed, the task keeps a pointer to the
/// stage that runs (see `docs/measurements.md`).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    generation: Arc<Generation>,
    server: Arc<Server>,
    permit: OwnedSemaphorePermit,
) {
    if let Some(serving) = Box::pin(admission(stream, peer, generation, server, permit)).await {
        serving.await;
    }
}

/// The serving stage of an admitted connection, boxed.
type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Admits the connection (or records its refusal) and returns what serves it.
async fn admission(
    stream: TcpStream,
    peer: SocketAddr,
    generation: Arc<Generation>,
    server: Arc<Server>,
    permit: OwnedSemaphorePermit,
) -> Option<Serving> {
    let metrics = server.metrics();
    // The connection's max_connections slot and active count, released when the last
    // holder is gone: this task, or an upgraded tunnel that outlives it.
    let slot = ConnectionSlot::new(permit, metrics);
    let activity = Activity::new();
    match admit(stream, peer, &generation, &activity).await {
        Ok(Some(admitted)) => {
            metrics.handshake(None);
            let seen = server.ledger().seen(
                &admitted.accepted.identity,
                CLIENT_AUTH,
                crate::proxy::trust::unix_now(),
            );
            if let Some(seen) = &seen {
                seen.connections.fetch_add(1, Ordering::Relaxed);
            }
            let p = admitted.posture;
            metrics.tls_handshake(crate::metrics::TlsLabels {
                version: p.version,
                suite: p.suite,
                group: p.group,
            });
            server.ledger().handshake(p.version, p.suite, p.group);
            report_candidate(
                metrics,
                admitted.peer,
                Some(&admitted.accepted.identity),
                Ok(()),
                admitted.candidate.as_ref(),
            );
            // Registered for as long as anything serves it (its requests, its watchdog, an
            // upgraded tunnel), so every later generation judges it.
            let registered =
                server
                    .trust
                    .register(admitted.peer, admitted.accepted.clone(), generation.id);
            let deps = ServeDeps {
                metrics: metrics.clone(),
                activity,
                slot,
                current: registered.trust().subscribe(),
                trust: registered.trust().clone(),
                seen,
                ledger: server.ledger().clone(),
            };
            // Boxed, so the serving future holds a pointer, not the TLS stream's bytes twice.
            let admitted = Box::new(admitted);
            Some(Box::pin(serve_connection(admitted, generation, deps)))
        }
        Ok(None) => None,
        Err(refusal) => {
            refusal.record(metrics);
            if refusal.reason != crate::tls::Reason::SourceNotAllowed {
                // Sources refused before TLS are counted and rate-limited in the log, not
                // kept: a scan would push every certificate refusal out.
                server.ledger().refused(
                    Refused {
                        at: crate::proxy::trust::unix_now(),
                        peer: refusal.peer,
                        reason: refusal.reason.as_str(),
                        identity: refusal.certificate.clone(),
                    },
                    CLIENT_AUTH,
                );
            }
            None
        }
    }
}
