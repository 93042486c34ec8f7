//! [`Frontend`]: everything the data path needs from one generation of the configuration,
//! built once per generation and shared by every connection that starts on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_rustls::TlsAcceptor;

use super::upstream::Upstream;
use crate::config::{Config, ForwardConfig, ListenerConfig};
use crate::policy::{Policy, RouteTable, SourcePolicy};
use crate::tls::TlsState;

/// What the data path needs from one generation. Connections keep the frontend they started
/// on; a reload installs a new one for new connections.
pub(crate) struct Frontend {
    /// The generation it belongs to; 1 at start-up.
    pub(crate) generation: u64,
    /// Certificates, trust and the verifier.
    pub(crate) tls: Arc<TlsState>,
    /// The acceptor for new handshakes (over `tls`'s server config).
    pub(crate) acceptor: TlsAcceptor,
    /// The default upstream's client (shared with the previous generation when unchanged).
    pub(crate) upstream: Arc<Upstream>,
    /// `[upstreams.NAME]`: the named upstreams' clients, for routes.
    pub(crate) upstreams: HashMap<String, Arc<Upstream>>,
    /// HTTP server settings.
    pub(crate) http: auto::Builder<TokioExecutor>,
    /// `[listener]`: timeouts, limits, the PROXY protocol.
    pub(crate) listener: ListenerConfig,
    /// `[forward]`: which identity headers the upstream gets.
    pub(crate) forward: ForwardConfig,
    /// `log.access_log`.
    pub(crate) access_log: bool,
    /// `[[routes]]`.
    pub(crate) routes: RouteTable,
    /// Who may connect at all (`listener.allow_sources` and its file).
    pub(crate) sources: SourcePolicy,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Frontend {
    /// The frontend of generation `generation` of `config`, over its loaded TLS state and
    /// upstream.
    pub(crate) fn new(
        generation: u64,
        config: &Config,
        policy: &Policy,
        tls: Arc<TlsState>,
        upstream: Arc<Upstream>,
        upstreams: HashMap<String, Arc<Upstream>>,
        sources: SourcePolicy,
    ) -> Frontend {
        Frontend {
            generation,
            acceptor: TlsAcceptor::from(tls.server_config.clone()),
            tls,
            upstream,
            upstreams,
            http: http_builder(&config.listener),
            listener: config.listener.clone(),
            forward: config.forward.clone(),
            access_log: config.log.access_log,
            routes: policy.routes.clone(),
            sources,
        }
    }
}

impl Frontend {
    /// Every upstream, the default first (as `upstream`), then the named ones by name.
    pub(crate) fn all_upstreams(&self) -> Vec<(&str, &Arc<Upstream>)> {
        let mut named: Vec<_> = self
            .upstreams
            .iter()
            .map(|(n, u)| (n.as_str(), u))
            .collect();
        named.sort_by_key(|(n, _)| *n);
        let mut all = vec![("upstream", &self.upstream)];
        all.extend(named);
        all
    }
}

/// hyper-util's auto server (HTTP/1.1 and h2) with the listener's limits.
fn http_builder(l: &ListenerConfig) -> auto::Builder<TokioExecutor> {
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
        .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX))
        // CVE-2023-44487 (rapid reset): cap streams reset before we could process them,
        // and streams we reset because the client misbehaved; past either, GOAWAY.
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    http
}
