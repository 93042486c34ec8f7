//! [`Generation`]: everything built from one config, whole: the config and its compiled
//! policy, the TLS state (certificates, trust, the verifier), the upstream clients, the HTTP
//! server settings, the source allow-list and the viewer trust. The app builds one at start and one per reload
//! (`app::generation::build`); [`super::trust::LiveTrust`] holds the one in service, and every
//! reader (the accept loop, open connections, the admin listener, the app) takes it from
//! there. A connection keeps the generation it started on for its settings and upstreams, and
//! is judged against each newer one's trust.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_rustls::TlsAcceptor;

use super::judged::{Tally, TrustState};
use super::upstream::Upstream;
use crate::config::{Config, ListenerConfig};
use crate::policy::{Policy, SourcePolicy};
use crate::tls::verifier::ShieldVerifier;
use crate::tls::TlsState;
use crate::viewer::ViewerTrust;
use crate::x509::Inventory;

/// Everything a reload replaces at once.
pub(crate) struct Generation {
    /// Counts generations; 1 at start-up.
    pub(crate) id: u64,
    /// The config it was built from.
    pub(crate) config: Arc<Config>,
    /// Its allow-lists and routes, compiled.
    pub(crate) policy: Arc<Policy>,
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
    /// Who may connect at all (`listener.allow_sources` and its file).
    pub(crate) sources: SourcePolicy,
    /// The judgements of the connections that were open when it went into service.
    pub(crate) tally: Tally,
    /// `[viewer]`: the trust that judges viewer certificates, when they are judged.
    pub(crate) viewer: Option<Arc<ViewerTrust>>,
    /// The token of `admin.bearer_token_file`, read when the generation was built.
    pub(crate) admin_token: Option<Box<str>>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Generation {
    /// Generation `id` of `config`, over its compiled policy, loaded TLS state and upstreams.
    pub(crate) fn new(
        id: u64,
        config: Arc<Config>,
        policy: Arc<Policy>,
        tls: Arc<TlsState>,
        upstream: Arc<Upstream>,
        upstreams: HashMap<String, Arc<Upstream>>,
        sources: SourcePolicy,
    ) -> Generation {
        Generation {
            id,
            acceptor: TlsAcceptor::from(tls.server_config.clone()),
            http: http_builder(&config.listener),
            config,
            policy,
            tls,
            upstream,
            upstreams,
            sources,
            tally: Tally::default(),
            viewer: None,
            admin_token: None,
        }
    }

    /// The same generation, with the admin listener's bearer token.
    pub(crate) fn with_admin_token(mut self, token: Option<Box<str>>) -> Generation {
        self.admin_token = token;
        self
    }

    /// The same generation, judging viewer certificates with `viewer` (`[viewer]`).
    pub(crate) fn with_viewer(mut self, viewer: Option<Arc<ViewerTrust>>) -> Generation {
        self.viewer = viewer;
        self
    }

    /// `[listener]`: timeouts, limits, the PROXY protocol.
    pub(crate) fn listener(&self) -> &ListenerConfig {
        &self.config.listener
    }

    /// Write access-log lines (`log.access_log`).
    pub(crate) fn access_log(&self) -> bool {
        self.config.log.access_log
    }

    /// What its TLS state trusts and serves.
    pub(crate) fn inventory(&self) -> &Inventory {
        &self.tls.inventory
    }
}

impl Generation {
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

impl TrustState for Generation {
    fn id(&self) -> u64 {
        self.id
    }

    fn verifier(&self) -> &Arc<ShieldVerifier> {
        &self.tls.verifier
    }

    fn tally(&self) -> &Tally {
        &self.tally
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
        .max_buf_size(l.limits.max_header_bytes.max(8192));
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(l.limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(l.limits.max_header_bytes).unwrap_or(u32::MAX))
        // CVE-2023-44487 (rapid reset): cap streams reset before we could process them,
        // and streams we reset because the client misbehaved; past either, GOAWAY.
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    http
}
