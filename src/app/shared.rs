//! [`App`]: the generation in service, swapped whole by a reload, and the data plane it
//! feeds.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::crl::{AnchorsSource, CrlFetch};
use super::generation::Generation;
use crate::metrics::Metrics;
use crate::proxy::server::Server;
use crate::proxy::trust::Judged;
use crate::tls::crl::DistributionPoints;
use crate::tls::state::Extra;

/// The current generation and the data plane it feeds.
#[derive(Debug)]
pub(crate) struct App {
    generation: ArcSwap<Generation>,
    server: Arc<Server>,
    metrics: Arc<Metrics>,
    /// The CRLs fetched from URLs; always there, so a reload can add the first URL.
    crl: Arc<CrlFetch>,
    /// Where verifiers report distribution points (given to them while
    /// `crl_from_distribution_points` is on).
    distribution_points: DistributionPoints,
}

impl App {
    /// Wraps the first generation.
    pub(crate) fn new(
        first: Generation,
        metrics: Arc<Metrics>,
        crl: Arc<CrlFetch>,
        distribution_points: DistributionPoints,
    ) -> Arc<Self> {
        metrics.set_inventory(first.inventory());
        metrics.route_series(first.config.routes.routes().iter().map(|r| r.label()));
        if first.config.client_auth.report_only.is_some() {
            metrics.report_only_series();
        }
        let server = Server::new(
            first.frontend.clone(),
            metrics.clone(),
            first.config.listener.max_connections,
        );
        Arc::new(Self {
            generation: ArcSwap::from_pointee(first),
            server,
            metrics,
            crl,
            distribution_points,
        })
    }

    /// What a trust-state build from `config` takes besides the config's files: the fetched
    /// CRLs of its URLs, and the distribution-point sink when it fetches those.
    pub(crate) fn extra_for(&self, config: &crate::config::Config) -> Extra {
        extra(&self.crl, &self.distribution_points, config)
    }

    /// The CRL fetcher.
    pub(crate) fn crl(&self) -> &Arc<CrlFetch> {
        &self.crl
    }

    /// The current generation's truststore, for checking fetched CRLs when they arrive.
    pub(crate) fn anchors_source(self: &Arc<Self>) -> AnchorsSource {
        let weak = Arc::downgrade(self);
        Arc::new(move || {
            weak.upgrade()
                .map(|a| a.current().frontend.tls.anchors.clone())
                .unwrap_or_default()
        })
    }

    /// The generation in service.
    pub(crate) fn current(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// Puts `next` in service: new connections use its frontend from now on, and every open
    /// connection is judged against its trust state.
    pub(crate) fn swap(&self, next: Generation) -> Judged {
        self.metrics.set_inventory(next.inventory());
        self.metrics
            .route_series(next.config.routes.routes().iter().map(|r| r.label()));
        if next.config.client_auth.report_only.is_some() {
            self.metrics.report_only_series();
        }
        let frontend = next.frontend.clone();
        let id = next.id;
        self.generation.store(Arc::new(next));
        let judged = self.server.install(frontend);
        tracing::info!(
            generation = id,
            judged = judged.judged,
            closed = judged.closed,
            "open connections judged against the new trust state"
        );
        judged
    }

    /// The data plane.
    pub(crate) fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// What a trust-state build from `config` takes besides the config's files.
pub(crate) fn extra(
    crl: &CrlFetch,
    distribution_points: &DistributionPoints,
    config: &crate::config::Config,
) -> Extra {
    let fetch = &config.client_auth.crl_fetch;
    Extra {
        fetched: crl.in_force_for(fetch),
        distribution_points: fetch
            .from_distribution_points
            .then(|| distribution_points.clone()),
    }
}
