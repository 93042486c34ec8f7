//! The accept loop and the life of one connection: handshake (with a deadline and a
//! classified refusal), the post-handshake identity, HTTP serving through hyper-util's auto
//! server (HTTP/1.1 and h2), idle and header timeouts, and graceful draining.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::HandshakeKind;
use rustls_pki_types::UnixTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::activity::{Activity, Tracked, Verdict};
use super::forward::{self, ConnContext, Upstream};
use super::proxy_protocol::{self, AcceptError};
use crate::config::Config;
use crate::identity::{capped_for_log, ClientIdentity};
use crate::metrics::Metrics;
use crate::tls::verifier::{with_notes, HandshakeNotes};
use crate::tls::{Reason, TlsState};

/// Everything a reload replaces at once. Connections keep the generation they started on.
pub struct Generation {
    /// Counts reloads; 1 at start-up.
    pub id: u64,
    /// The config it was built from.
    pub config: Arc<Config>,
    /// Certificates, trust and the verifier.
    pub tls: TlsState,
    /// The acceptor for new handshakes.
    pub acceptor: TlsAcceptor,
    /// The upstream client (shared with the previous generation when unchanged).
    pub upstream: Arc<Upstream>,
    /// HTTP server settings.
    pub http: auto::Builder<TokioExecutor>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a generation could not be built: one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file named by the config.
    #[error(transparent)]
    Load(#[from] crate::tls::load::LoadError),
    /// The upstream setting.
    #[error("{path}: upstream.url: {message}")]
    Upstream {
        /// The config file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Generation {
    /// Loads and validates everything. `previous` lends its upstream pool when the upstream
    /// settings did not change, so a certificate reload does not drop warm connections.
    pub fn build(
        config: Config,
        id: u64,
        previous: Option<&Generation>,
    ) -> Result<Self, BuildError> {
        let tls = TlsState::build(&config)?;
        let upstream = match previous {
            Some(p) if p.upstream.reusable_for(&config.upstream) => p.upstream.clone(),
            _ => Arc::new(Upstream::new(&config.upstream).map_err(|e| match e {
                forward::UpstreamError::Load(e) => BuildError::Load(e),
                forward::UpstreamError::Target(message) => BuildError::Upstream {
                    path: config.source.clone(),
                    message,
                },
            })?),
        };
        let l = &config.listener;
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .keep_alive(true)
            // hyper's own header timeout also fires on idle keep-alive connections; our
            // watchdog enforces header_read_timeout and idle_timeout separately.
            .header_read_timeout(None)
            .max_buf_size(l.max_header_bytes.max(8192));
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(l.max_concurrent_streams)
            .max_header_list_size(l.max_header_bytes.min(u32::MAX as usize) as u32)
            // CVE-2023-44487 (rapid reset): cap streams reset before we could process them,
            // and streams we reset because the client misbehaved; past either, GOAWAY.
            .max_pending_accept_reset_streams(Some(50))
            .max_local_error_reset_streams(Some(256))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Ok(Self {
            id,
            acceptor: TlsAcceptor::from(tls.server_config.clone()),
            tls,
            upstream,
            http,
            config: Arc::new(config),
        })
    }
}

/// State shared by the accept loop, the admin listener and the reloader.
#[derive(Debug)]
pub struct Shared {
    /// The generation new connections use.
    pub current: ArcSwap<Generation>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set once draining starts: readiness turns 503.
    pub draining: AtomicBool,
    /// Set once the listener is bound.
    pub listening: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    connections: Arc<Semaphore>,
    max_connections: usize,
}

impl Shared {
    /// Wraps the first generation.
    pub fn new(first: Generation, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.set_inventory(&first.tls.inventory);
        let max = first.config.listener.max_connections;
        Arc::new(Self {
            current: ArcSwap::from_pointee(first),
            metrics,
            draining: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            shutdown_tx: watch::channel(false).0,
            connections: Arc::new(Semaphore::new(max)),
            max_connections: max,
        })
    }

    /// Starts draining: stop accepting, close idle connections, GOAWAY on h2.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.shutdown_tx.send_replace(true);
    }

    /// Waits until every connection has closed, or `timeout` passes. True if all closed.
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        tokio::time::timeout(timeout, self.connections.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Binds the listener, logging the bound address (tests and scripts read it).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts until draining starts.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    shared.listening.store(true, Ordering::SeqCst);
    let mut shutdown = shared.shutdown_tx.subscribe();
    loop {
        // Past max_connections, stop calling accept(): new peers wait in the kernel backlog
        // and every served client keeps its resources.
        let permit = tokio::select! {
            p = shared.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = draining(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = draining(&mut shutdown) => break,
        };
        let generation = shared.current.load_full();
        tokio::spawn(connection(stream, peer, generation, shared.clone(), permit));
    }
    tracing::info!("listener closed; draining connections");
}

/// Resolves once draining has started.
async fn draining(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here rather than across an await.
    let _ = rx.wait_for(|d| *d).await;
}

struct ActiveGuard(Arc<Metrics>);

impl ActiveGuard {
    fn new(m: &Arc<Metrics>) -> Self {
        m.connections_active.inc();
        Self(m.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.connections_active.dec();
    }
}

/// One refused handshake: count it and write the connection-log line.
fn refuse(
    metrics: &Metrics,
    peer: SocketAddr,
    reason: Reason,
    tls_version: Option<&str>,
    cert: Option<&ClientIdentity>,
    detail: &str,
) {
    metrics.handshake(Some(reason));
    let subject = cert.map_or("-".into(), |c| capped_for_log(&c.subject));
    let issuer = cert.map_or("-".into(), |c| capped_for_log(&c.issuer));
    tracing::warn!(
        target: "mtls_shield::connection",
        peer = %peer,
        reason = reason.as_str(),
        tls_version = tls_version.unwrap_or("-"),
        subject = subject.as_ref(),
        issuer = issuer.as_ref(),
        serial = cert.map_or("-", |c| c.serial_hex.as_str()),
        fingerprint = %cert.map_or_else(|| "-".to_owned(), |c| c.fingerprint_hex()),
        detail,
        "handshake rejected"
    );
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    generation: Arc<Generation>,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let metrics = &shared.metrics;
    // The connection's max_connections slot and active count, released when the last
    // holder is gone: this task, or an upgraded tunnel that outlives it.
    let slot: forward::Slot = Arc::new((permit, ActiveGuard::new(metrics)));
    let listener_cfg = &generation.config.listener;
    let activity = Activity::new();
    let deadline = tokio::time::Instant::now() + listener_cfg.handshake_timeout;

    // A PROXY protocol header from a load balancer comes before TLS and names the real
    // client, which replaces the TCP peer from here on. Its time counts against the
    // handshake timeout. (A no-op when `proxy_protocol = "off"`.)
    let mode = listener_cfg.proxy_protocol;
    let (stream, peer) =
        match tokio::time::timeout_at(deadline, proxy_protocol::accept(stream, peer, mode)).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(AcceptError::Empty)) => {
                tracing::debug!(peer = %peer, "connection closed before any data");
                return;
            }
            Ok(Err(AcceptError::NotTls)) => {
                refuse(
                    metrics,
                    peer,
                    Reason::NotTls,
                    None,
                    None,
                    "first bytes are neither a PROXY protocol header nor a TLS handshake record",
                );
                return;
            }
            Ok(Err(e)) => {
                // Security: a missing or malformed header is refused before TLS. The stable
                // reason codes have none for the PROXY protocol, so it counts as `other` and the
                // log line's detail says what was wrong.
                refuse(metrics, peer, Reason::Other, None, None, &e.to_string());
                return;
            }
            Err(_) => {
                refuse(
                    metrics,
                    peer,
                    Reason::HandshakeTimeout,
                    None,
                    None,
                    "PROXY protocol header did not arrive in time",
                );
                return;
            }
        };

    // Peek before rustls sees anything: a first byte that is not a TLS handshake record
    // (plain HTTP, a scanner) is `not_tls`, and it gets nothing back at all.
    let handshake = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err(None),
            Ok(_) if first[0] != 0x16 => {
                return Err(Some((
                    Reason::NotTls,
                    None,
                    "first byte is not a TLS handshake record".to_owned(),
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(Some((Reason::Other, None, e.to_string()))),
        }
        generation
            .acceptor
            .accept(Tracked::new(stream, activity.clone()))
            .into_fallible()
            .await
            .map_err(|(e, io)| Some((Reason::from_io(&e), io.tls_version(), e.to_string())))
    };
    let (outcome, notes) = with_notes(tokio::time::timeout_at(deadline, handshake)).await;
    let HandshakeNotes {
        accepted,
        identity,
        rejected,
        detail,
    } = notes;
    let tls = match outcome {
        Err(_elapsed) => {
            refuse(
                metrics,
                peer,
                Reason::HandshakeTimeout,
                None,
                identity.as_deref(),
                "handshake did not finish in time",
            );
            return;
        }
        Ok(Err(None)) => {
            // Connected and closed without a byte: TCP health checks and port probes. Not a
            // handshake, so neither counted nor logged above debug.
            tracing::debug!(peer = %peer, "connection closed before any data");
            return;
        }
        Ok(Err(Some((reason, version, tls_detail)))) => {
            // The verifier's own classification and words win: it saw the certificate.
            let reason = rejected.unwrap_or(reason);
            let detail = detail.unwrap_or(tls_detail);
            refuse(metrics, peer, reason, version, identity.as_deref(), &detail);
            return;
        }
        Ok(Ok(tls)) => tls,
    };

    activity.handshake_done();
    let (_, conn) = tls.get_ref();
    let tls_version = conn.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        _ => "TLSv1.2",
    });
    let is_h2 = conn.alpn_protocol() == Some(b"h2");
    let accepted = match (accepted, conn.handshake_kind()) {
        (Some(a), Some(HandshakeKind::Full | HandshakeKind::FullWithHelloRetryRequest)) => a,
        _ => {
            // Security: a resumed session skips the verifier entirely. Re-run the full check
            // on the chain stored with the session, at the current time, so expiry and the
            // allow-list are never skipped. (Trust changes already cannot resume: each trust
            // state has its own session store and ticket keys.)
            let chain = conn.peer_certificates().unwrap_or_default();
            let Some((leaf, intermediates)) = chain.split_first() else {
                refuse(
                    metrics,
                    peer,
                    Reason::NoCertificate,
                    tls_version,
                    None,
                    "resumed session without a client certificate",
                );
                return;
            };
            match generation
                .tls
                .verifier
                .check(leaf, intermediates, UnixTime::now())
            {
                Ok(a) => a,
                Err(r) => {
                    refuse(
                        metrics,
                        peer,
                        r.reason,
                        tls_version,
                        r.identity.as_deref(),
                        &format!("resumed session failed re-verification: {}", r.detail),
                    );
                    return;
                }
            }
        }
    };
    let identity = accepted.identity.clone();
    metrics.handshake(None);
    tracing::debug!(peer = %peer, tls_version = tls_version.unwrap_or("-"), client = capped_for_log(&identity.subject).as_ref(), h2 = is_h2, "handshake accepted");

    let ctx = Arc::new(ConnContext {
        peer,
        forwarded_peer: super::headers::ForwardedPeer::new(peer.ip()),
        identity_headers: identity.headers(&generation.config.forward),
        identity,
        activity: activity.clone(),
        upstream: generation.upstream.clone(),
        metrics: metrics.clone(),
        // Skip the per-request access record (a path copy and a byte counter) when nothing
        // would print it, e.g. `log.level = "warn"`.
        access_log: generation.config.log.access_log
            && tracing::enabled!(target: "mtls_shield::access", tracing::Level::INFO),
        max_request_body: generation.config.listener.max_request_body_bytes,
        slot,
    });
    let service = service_fn(move |req| forward::handle(ctx.clone(), req));
    let conn = generation
        .http
        .serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);

    let idle_timeout = listener_cfg.idle_timeout;
    let header_timeout = (!is_h2).then_some(listener_cfg.header_read_timeout);
    let mut shutdown = shared.shutdown_tx.subscribe();
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let wait = match activity.check(idle_timeout, header_timeout) {
            Verdict::Wait(d) => d,
            Verdict::Idle if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
                idle_timeout
            }
            Verdict::Idle => idle_timeout,
            Verdict::HeaderTimeout => {
                tracing::info!(peer = %peer, "request header not received in time; closing");
                return;
            }
            Verdict::Abusive => {
                // Security: rapid reset (CVE-2023-44487) paced to dodge h2's own guard;
                // dropping the connection cancels everything it started upstream.
                tracing::warn!(peer = %peer, "client cancelled too many requests (h2 rapid reset); closing");
                return;
            }
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = draining(&mut shutdown), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(wait) => {}
            _ = activity.woken() => {}
        }
    }
}
