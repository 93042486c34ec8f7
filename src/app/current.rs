//! [`App`]: the running program's handle on the data plane, which holds the generation in
//! service (`proxy::trust::LiveTrust`, the one place), and what every generation's trust is
//! built with besides the config's files ([`TrustSources`]).

use std::sync::Arc;

use tokio::sync::Notify;

use super::crl::{AnchorsSource, CrlFetch};
use super::generation::Generation;
use super::ocsp::{InFlight, Resolver};
use crate::config::{OcspConfig, OcspMode};
use crate::ledger::{Fetching, Reloaded};
use crate::metrics::Metrics;
use crate::proxy::server::{FetchingSource, Server};
use crate::proxy::trust::Judged;
use crate::tls::crl::DistributionPoints;
use crate::tls::ocsp::OcspCache;
use crate::tls::state::BuildInputs;
use crate::tls::state::OcspSetup;

/// The data plane, which holds the generation in service, and what generations are built with.
#[derive(Debug)]
pub(crate) struct App {
    server: Arc<Server>,
    metrics: Arc<Metrics>,
    /// What every generation's trust state is built with besides the config's files.
    inputs: TrustSources,
}

/// What a trust state takes from the running program, besides the config's files: the CRL
/// fetcher, the distribution-point sink and the OCSP answers. Made before the first
/// generation, held by [`App`] for every later one.
#[derive(Debug)]
pub(crate) struct TrustSources {
    /// The CRLs fetched from URLs; always there, so a reload can add the first URL.
    pub(crate) crl: Arc<CrlFetch>,
    /// Where verifiers report distribution points (given to them while
    /// `crl_from_distribution_points` is on).
    pub(crate) distribution_points: DistributionPoints,
    /// The OCSP answers, shared by every generation.
    pub(crate) ocsp_cache: Arc<OcspCache>,
    /// OCSP lookups under way, shared by every generation.
    pub(crate) ocsp_in_flight: InFlight,
    /// Notified when an OCSP answer changed status.
    pub(crate) ocsp_changed: Arc<Notify>,
    /// The metrics.
    pub(crate) metrics: Arc<Metrics>,
}

impl TrustSources {
    /// What a trust-state build from `config` takes besides the config's files: the fetched
    /// CRLs of its URLs, the distribution-point sink when it fetches those, and OCSP when on.
    pub(crate) fn build_inputs_for(&self, config: &crate::config::Config) -> BuildInputs {
        let fetch = &config.client_auth.crl_fetch;
        let ocsp = &config.client_auth.ocsp;
        BuildInputs {
            fetched: self.crl.in_force_for(fetch),
            distribution_points: fetch
                .from_distribution_points
                .then(|| self.distribution_points.clone()),
            ocsp: (ocsp.mode != OcspMode::Off).then(|| OcspSetup {
                cache: self.ocsp_cache.clone(),
                resolver: Arc::new(self.resolver(ocsp)),
            }),
            viewer_ocsp: config
                .viewer
                .as_ref()
                .filter(|v| v.ocsp.mode != OcspMode::Off)
                .map(|v| OcspSetup {
                    cache: self.ocsp_cache.clone(),
                    resolver: Arc::new(self.resolver(&v.ocsp)),
                }),
        }
    }

    /// The OCSP client for `config`'s settings.
    pub(crate) fn resolver(&self, config: &OcspConfig) -> Resolver {
        Resolver::new(
            config,
            self.ocsp_cache.clone(),
            self.ocsp_in_flight.clone(),
            self.metrics.clone(),
            self.ocsp_changed.clone(),
        )
    }
}

impl App {
    /// Wraps the first generation.
    pub(crate) fn new(first: Generation, metrics: Arc<Metrics>, inputs: TrustSources) -> Arc<Self> {
        metrics.set_inventory(first.inventory());
        metrics.route_series(first.policy.routes.routes().iter().map(|r| r.label()));
        if first.config.client_auth.report_only.is_some() {
            metrics.report_only_series();
        }
        let max_connections = first.config.listener.limits.max_connections;
        let inventory_max = first.config.admin.as_ref().map_or(0, |a| a.inventory_max);
        let server = Server::new(
            Arc::new(first),
            metrics.clone(),
            max_connections,
            inventory_max,
        );
        server.ledger().reloaded(Reloaded {
            at: crate::proxy::trust::unix_now(),
            cause: "start".to_owned(),
            generation: Some(1),
            error: None,
        });
        let (crl, cache) = (inputs.crl.clone(), inputs.ocsp_cache.clone());
        server.set_fetching(FetchingSource(Arc::new(move || {
            let (ocsp_entries, ocsp_oldest_age) = cache.stats(crate::proxy::trust::unix_now());
            Fetching {
                crl_urls: crl.status(),
                ocsp_entries,
                ocsp_oldest_age,
            }
        })));
        Arc::new(Self {
            server,
            metrics,
            inputs,
        })
    }

    /// What a trust-state build from `config` takes besides the config's files: the fetched
    /// CRLs of its URLs, and the distribution-point sink when it fetches those.
    pub(crate) fn build_inputs_for(&self, config: &crate::config::Config) -> BuildInputs {
        self.inputs.build_inputs_for(config)
    }

    /// What trust states are built with.
    pub(crate) fn inputs(&self) -> &TrustSources {
        &self.inputs
    }

    /// The CRL fetcher.
    pub(crate) fn crl(&self) -> &Arc<CrlFetch> {
        &self.inputs.crl
    }

    /// The current generation's truststores (`client_auth`'s and `viewer`'s), for checking
    /// fetched CRLs when they arrive.
    pub(crate) fn anchors_source(self: &Arc<Self>) -> AnchorsSource {
        let weak = Arc::downgrade(self);
        Arc::new(move || {
            let Some(app) = weak.upgrade() else {
                return Vec::new();
            };
            let current = app.current();
            let mut anchors = current.tls.anchors.clone();
            if let Some(v) = &current.viewer {
                anchors.extend(v.crl_signers.iter().cloned());
            }
            anchors
        })
    }

    /// The generation in service.
    pub(crate) fn current(&self) -> Arc<Generation> {
        self.server.current()
    }

    /// Puts `next` in service: new connections use it from now on, and every open connection
    /// judges itself against its trust; returns once they have.
    pub(crate) async fn swap(&self, next: Generation) -> Judged {
        self.metrics.set_inventory(next.inventory());
        self.metrics
            .route_series(next.policy.routes.routes().iter().map(|r| r.label()));
        if next.config.client_auth.report_only.is_some() {
            self.metrics.report_only_series();
        }
        let id = next.id;
        let judged = self.server.install(Arc::new(next)).await;
        tracing::info!(
            target: crate::logs::target::TRUST,
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
