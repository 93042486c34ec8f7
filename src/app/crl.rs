//! CRLs the shield fetches itself: each `client_auth.crl_urls` entry (and, when
//! `crl_from_distribution_points` is on, the distribution points of chains that verified)
//! gets a background task that keeps its CRL fresh, never on the handshake or request path.
//!
//! A fetched CRL is used only when it parses, its signature verifies against a CA of the
//! truststore (or, for a distribution point, the intermediate of the verified chain that
//! named it), its thisUpdate is not in the future, and its cRLNumber is not lower than the
//! one in use for that issuer (no rollback). Anything else is refused, counted and logged
//! with the URL and why, and the last good CRL stays in force. A new CRL goes through the
//! same build-validate-swap as a reload, so it reaches the connections already open.
//!
//! Until every URL configured at start-up has delivered a usable CRL once (from the network
//! or from `crl_cache_dir`), readiness is 503: a balancer then sends no traffic to an
//! instance that cannot check revocation. The process itself starts, so it can be observed.
//!
//! Every `crl_*` key takes effect on reload ([`CrlFetch::apply`]): a URL that a reload adds is
//! fetched at once, one it removes stops being fetched and its CRL leaves the next state, and
//! the fetch settings (refresh, timeout, size limit, CA, cache dir) apply from the next fetch.
//! A URL added by a reload does not gate readiness: a fleet-wide reload must not take every
//! replica out of service at once. The log and `mtls_shield_crl_last_success_timestamp_seconds`
//! (0 until then) say which URL has not delivered yet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::sync::Notify;
use x509_parser::num_bigint::BigUint;

use super::fetch::{Fetched, Fetcher, Validators};
use crate::config::CrlFetchConfig;
use crate::ledger::UrlStatus;
use crate::metrics::{CrlFetchResult, Metrics};
use crate::proxy::server::Server;
use crate::tls::crl::{Anchor, Crl, DistributionPoint, MAX_DISTRIBUTION_POINTS};
use crate::tls::load::LoadError;
use crate::tls::state::FetchedCrl;
use crate::x509::{CrlInfo, CrlScope, CrlSignature};

/// A thisUpdate this far in the future is still taken: the CA's clock and this host's may
/// disagree by a little, and refusing a fresh CRL for it would keep a stale one in force.
const CLOCK_SKEW: i64 = 300;

/// The longest wait between two attempts after failures (and while a CRL is stale).
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The last good CRL of one URL, parsed once (the trust states built with it share the parse).
#[derive(Debug, Clone)]
struct Entry {
    crl: Crl,
    validators: Validators,
}

/// What the fetcher knows about one URL.
#[derive(Debug)]
struct Source {
    /// The intermediate that signs it, for a distribution point of an intermediate.
    issuer: Option<CertificateDer<'static>>,
    /// A configured URL, or a distribution point found in a verified chain.
    configured: bool,
    /// Readiness waits for it: a URL configured at start-up.
    gates_readiness: bool,
    last_good: Option<Entry>,
    /// The task that keeps it fresh, stopped when a reload removes the URL.
    task: Option<tokio::task::AbortHandle>,
}

impl Source {
    fn new(configured: bool, gates_readiness: bool, last_good: Option<Entry>) -> Self {
        Source {
            issuer: None,
            configured,
            gates_readiness,
            last_good,
            task: None,
        }
    }
}

/// The fetch settings in force: the `crl_*` keys of the current generation.
#[derive(Debug, Clone)]
struct Settings {
    config: CrlFetchConfig,
    fetcher: Fetcher,
}

/// The fetched CRLs of the running program, and the tasks that keep them fresh.
#[derive(Debug)]
pub(crate) struct CrlFetch {
    settings: Mutex<Settings>,
    sources: Mutex<HashMap<String, Source>>,
    /// Each URL's last attempt, for `/trust`.
    status: Mutex<HashMap<String, UrlStatus>>,
    metrics: Arc<Metrics>,
    /// Notified when a new CRL arrived: the app rebuilds the trust state.
    changed: Notify,
}

/// A CRL checked for use, with its facts.
#[derive(Debug)]
pub(crate) struct Checked {
    entry: Entry,
}

impl Checked {
    /// The CRL's facts.
    pub(crate) fn info(&self) -> &CrlInfo {
        &self.entry.crl.info
    }
}

/// Why a fetched or cached CRL is not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The bytes are not a CRL webpki can use.
    #[error("{0}")]
    Parse(String),
    /// Not a CRL the shield can use, or its signature does not verify with the CA it names.
    #[error(transparent)]
    Crl(#[from] crate::tls::crl::CrlError),
    /// Its issuer is not a CA of the truststore.
    #[error("its issuer {0} is not a CA of the truststore, so its signature cannot be checked; configure the issuing CA's CRL, or turn on crl_from_distribution_points for intermediates' CRLs")]
    UnknownIssuer(String),
    /// thisUpdate in the future.
    #[error("its thisUpdate is in the future ({0}); check the clocks")]
    Future(String),
    /// A lower cRLNumber than the one in use.
    #[error("its cRLNumber {offered} is lower than the {in_use} in use for {issuer} and the same scope (a rollback)")]
    Rollback {
        /// The fetched number.
        offered: String,
        /// The number in use.
        in_use: String,
        /// The issuer.
        issuer: String,
    },
}

impl CrlFetch {
    /// The fetcher for `config`, with the last good CRL of each configured URL read back from
    /// the cache dir (checked against `anchors` like a fetched one).
    pub(crate) fn new(
        config: &CrlFetchConfig,
        anchors: &[Anchor],
        metrics: Arc<Metrics>,
    ) -> Result<Arc<CrlFetch>, LoadError> {
        let fetch = CrlFetch {
            status: Mutex::default(),
            settings: Mutex::new(Settings {
                fetcher: Fetcher::new(config)?,
                config: config.clone(),
            }),
            sources: Mutex::new(HashMap::new()),
            metrics,
            changed: Notify::new(),
        };
        for url in &config.urls {
            fetch.metrics.crl_fetch_series(url);
            let last_good = fetch.read_cache(config.cache_dir.as_deref(), url, anchors);
            if let Ok(mut s) = fetch.sources.lock() {
                s.insert(url.clone(), Source::new(true, true, last_good));
            }
        }
        Ok(Arc::new(fetch))
    }

    /// The HTTP client for `config`'s fetch settings: the running one when they did not change
    /// (and no `crl_ca` file is read, whose content may have), else a new one. Called while a
    /// reload builds, so a `crl_ca` that does not load fails the reload, not the fetches.
    pub(crate) fn prepare(&self, config: &CrlFetchConfig) -> Result<Fetcher, LoadError> {
        let current = self.settings();
        if current.config.ca.is_none()
            && current.config.ca == config.ca
            && current.config.timeout == config.timeout
            && current.config.max_bytes == config.max_bytes
            && current.config.is_active() == config.is_active()
        {
            return Ok(current.fetcher);
        }
        Fetcher::new(config)
    }

    fn settings(&self) -> Settings {
        match self.settings.lock() {
            Ok(s) => s.clone(),
            // A poisoned lock only means a panic elsewhere mid-update; the value is whole.
            Err(e) => e.into_inner().clone(),
        }
    }

    /// The CRLs in force, for a trust-state build.
    pub(crate) fn in_force(&self) -> Vec<FetchedCrl> {
        self.in_force_for(&self.settings().config)
    }

    /// The CRLs a state built from `config` would use: those of its URLs, and of distribution
    /// points when it fetches them. A reload builds with this before [`CrlFetch::apply`], so a
    /// URL the reload removes is out of the new state at once.
    pub(crate) fn in_force_for(&self, config: &CrlFetchConfig) -> Vec<FetchedCrl> {
        let Ok(sources) = self.sources.lock() else {
            return Vec::new();
        };
        let mut out: Vec<FetchedCrl> = sources
            .iter()
            .filter(|(url, s)| {
                config.urls.contains(url) || (!s.configured && config.from_distribution_points)
            })
            .filter_map(|(url, s)| {
                s.last_good.as_ref().map(|e| FetchedCrl {
                    url: url.clone(),
                    crl: e.crl.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }

    /// The URLs configured at start-up that have not delivered a usable CRL yet.
    pub(crate) fn waiting(&self, now: i64) -> Vec<String> {
        let Ok(sources) = self.sources.lock() else {
            return self.settings().config.urls;
        };
        let mut urls: Vec<String> = sources
            .iter()
            .filter(|(_, s)| s.gates_readiness)
            .filter(|(_, s)| {
                !s.last_good
                    .as_ref()
                    .is_some_and(|e| usable(&e.crl.info, now))
            })
            .map(|(u, _)| u.clone())
            .collect();
        urls.sort();
        urls
    }

    /// Resolves when a new CRL has arrived.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Starts the background task of every configured URL.
    pub(crate) fn spawn(self: &Arc<Self>, server: Arc<Server>, anchors: AnchorsSource) {
        let Ok(mut sources) = self.sources.lock() else {
            return;
        };
        for (url, source) in sources.iter_mut() {
            source.task = Some(self.start_task(url, &server, &anchors));
        }
    }

    /// Starts the task that keeps `url` fresh; its handle stops it.
    fn start_task(
        self: &Arc<Self>,
        url: &str,
        server: &Arc<Server>,
        anchors: &AnchorsSource,
    ) -> tokio::task::AbortHandle {
        tokio::spawn(
            self.clone()
                .keep_fresh(url.to_owned(), server.clone(), anchors.clone()),
        )
        .abort_handle()
    }

    /// Puts the `crl_*` keys of a reloaded config in force (see the module doc). `fetcher` was
    /// built from `config` before the new state, so a bad `crl_ca` fails the reload instead.
    pub(crate) fn apply(
        self: &Arc<Self>,
        config: &CrlFetchConfig,
        fetcher: Fetcher,
        server: &Arc<Server>,
        anchors: &AnchorsSource,
    ) {
        let refresh_changed = {
            let Ok(mut settings) = self.settings.lock() else {
                return;
            };
            let changed = settings.config.refresh != config.refresh;
            *settings = Settings {
                config: config.clone(),
                fetcher,
            };
            changed
        };
        let known: Vec<String> = match self.sources.lock() {
            Ok(s) => s.keys().cloned().collect(),
            Err(_) => return,
        };
        // Read before the sources are locked: the cache check takes that lock too.
        let cached: Vec<(String, Option<Entry>)> = config
            .urls
            .iter()
            .filter(|u| !known.contains(u))
            .map(|u| {
                (
                    u.clone(),
                    self.read_cache(config.cache_dir.as_deref(), u, &anchors()),
                )
            })
            .collect();
        let Ok(mut sources) = self.sources.lock() else {
            return;
        };
        let removed: Vec<String> = sources
            .iter()
            .filter(|(url, s)| match s.configured {
                true => !config.urls.contains(url),
                false => !config.from_distribution_points && !config.urls.contains(url),
            })
            .map(|(u, _)| u.clone())
            .collect();
        for url in removed {
            if let Some(task) = sources.remove(&url).and_then(|s| s.task) {
                task.abort();
            }
            self.metrics.crl_url_forget(&url);
            tracing::info!(
                url,
                "CRL URL removed by reload: no longer fetched, and its CRL is no longer in force"
            );
        }
        for (url, last_good) in cached {
            self.metrics.crl_fetch_series(&url);
            tracing::info!(
                url,
                cached = last_good.is_some(),
                "CRL URL added by reload: fetching it now; /readyz does not wait for it"
            );
            sources.insert(url, Source::new(true, false, last_good));
        }
        for (url, source) in sources.iter_mut() {
            source.configured |= config.urls.contains(url);
            if source.task.is_none() || refresh_changed {
                if let Some(old) = source.task.take() {
                    old.abort();
                }
                source.task = Some(self.start_task(url, server, anchors));
            }
        }
    }

    /// Takes a distribution point found in a verified chain; starts keeping it fresh.
    pub(crate) fn add_distribution_point(
        self: &Arc<Self>,
        dp: DistributionPoint,
        server: Arc<Server>,
        anchors: AnchorsSource,
    ) {
        let Ok(mut sources) = self.sources.lock() else {
            return;
        };
        let discovered = sources.values().filter(|s| !s.configured).count();
        if sources.contains_key(&dp.url) || discovered >= MAX_DISTRIBUTION_POINTS {
            return;
        }
        tracing::info!(url = %dp.url, "fetching the CRL of a distribution point found in a verified chain");
        self.metrics.crl_fetch_series(&dp.url);
        let mut source = Source::new(false, false, None);
        source.issuer = dp.issuer;
        source.task = Some(self.start_task(&dp.url, &server, &anchors));
        sources.insert(dp.url, source);
    }

    /// Keeps one URL's CRL fresh until the program drains.
    async fn keep_fresh(self: Arc<Self>, url: String, server: Arc<Server>, anchors: AnchorsSource) {
        let mut failures: u32 = 0;
        loop {
            let settings = self.settings();
            let refresh = settings.config.refresh;
            let wait = match self.fetch_once(&settings, &url, anchors()).await {
                Ok(next_update) => {
                    failures = 0;
                    next_delay(refresh, next_update, crate::proxy::trust::unix_now())
                }
                Err(()) => {
                    failures = failures.saturating_add(1);
                    backoff(failures, refresh)
                }
            };
            self.note_next(&url, wait);
            if server.is_draining() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One fetch of `url`: counted, logged, and when a new usable CRL came, stored, cached
    /// and announced. Returns the nextUpdate of the CRL in force for `url`.
    async fn fetch_once(
        self: &Arc<Self>,
        settings: &Settings,
        url: &str,
        anchors: Vec<Anchor>,
    ) -> Result<Option<i64>, ()> {
        let (validators, issuer) = self.validators_and_issuer(url);
        match settings.fetcher.get(url, &validators).await {
            Ok(Fetched::NotModified) => {
                self.note(url, "not_modified".to_owned(), true);
                self.metrics.crl_fetch(url, CrlFetchResult::not_modified);
                self.metrics
                    .crl_success(url, crate::proxy::trust::unix_now());
                Ok(self.next_update(url))
            }
            Ok(Fetched::Body { bytes, validators }) => {
                // Parsing, indexing and verifying a CRL of a million entries takes a CPU for
                // a good fraction of a second: on the blocking pool, never on a worker that
                // accepts and serves connections.
                let (this, owned_url) = (self.clone(), url.to_owned());
                let checked = tokio::task::spawn_blocking(move || {
                    this.check(&owned_url, bytes, validators, &anchors, issuer.as_ref())
                })
                .await
                .unwrap_or_else(|e| Err(Refused::Parse(format!("the CRL check failed: {e}"))));
                match checked {
                    Ok(checked) => {
                        let next = checked.entry.crl.info.next_update;
                        let changed = self.store(&settings.config, url, checked.entry);
                        // A 200 with the bytes already in force (an unconditional fetch after
                        // a weak validator) is not a 304: counted apart.
                        let result = match changed {
                            true => CrlFetchResult::updated,
                            false => CrlFetchResult::unchanged,
                        };
                        self.note(url, format!("{result:?}"), true);
                        self.metrics.crl_fetch(url, result);
                        self.metrics
                            .crl_success(url, crate::proxy::trust::unix_now());
                        if changed {
                            self.changed.notify_one();
                        }
                        Ok(next)
                    }
                    Err(e) => {
                        self.note(url, format!("failure: {e}"), false);
                        self.metrics.crl_fetch(url, CrlFetchResult::failure);
                        tracing::warn!(url, error = %e, "fetched CRL refused; the last good CRL stays in force");
                        Err(())
                    }
                }
            }
            Err(e) => {
                self.note(url, format!("failure: {e}"), false);
                self.metrics.crl_fetch(url, CrlFetchResult::failure);
                tracing::warn!(url, error = %e, "CRL fetch failed; the last good CRL stays in force");
                Err(())
            }
        }
    }

    /// Notes an attempt on `url` and what it gave.
    fn note(&self, url: &str, result: String, success: bool) {
        let now = crate::proxy::trust::unix_now();
        if let Ok(mut status) = self.status.lock() {
            let s = status.entry(url.to_owned()).or_insert_with(|| UrlStatus {
                url: url.to_owned(),
                ..UrlStatus::default()
            });
            s.last_attempt = Some(now);
            s.result = Some(result);
            if success {
                s.last_success = Some(now);
            }
        }
    }

    /// Notes when `url` is fetched next.
    fn note_next(&self, url: &str, wait: Duration) {
        let at = crate::proxy::trust::unix_now()
            .saturating_add(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX));
        if let Ok(mut status) = self.status.lock() {
            if let Some(s) = status.get_mut(url) {
                s.next_fetch = Some(at);
            }
        }
    }

    /// Each URL fetched now (configured, or a distribution point), as last seen.
    pub(crate) fn status(&self) -> Vec<UrlStatus> {
        let urls: Vec<String> = self
            .sources
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        let status = self.status.lock().ok();
        let mut out: Vec<UrlStatus> = urls
            .into_iter()
            .map(|url| {
                status
                    .as_ref()
                    .and_then(|s| s.get(&url).cloned())
                    .unwrap_or(UrlStatus {
                        url,
                        ..UrlStatus::default()
                    })
            })
            .collect();
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }

    fn validators_and_issuer(&self, url: &str) -> (Validators, Option<CertificateDer<'static>>) {
        let Ok(sources) = self.sources.lock() else {
            return (Validators::default(), None);
        };
        match sources.get(url) {
            Some(s) => (
                s.last_good
                    .as_ref()
                    .map(|e| e.validators.clone())
                    .unwrap_or_default(),
                s.issuer.clone(),
            ),
            None => (Validators::default(), None),
        }
    }

    fn next_update(&self, url: &str) -> Option<i64> {
        let sources = self.sources.lock().ok()?;
        sources.get(url)?.last_good.as_ref()?.crl.info.next_update
    }

    /// Fetches every configured URL once and keeps what checks (for `check` and `verify`, which
    /// run no background tasks). Returns each URL's CRL or why there is none.
    pub(crate) async fn fetch_all_once(
        &self,
        anchors: &[Anchor],
    ) -> Vec<(String, Result<CrlInfo, String>)> {
        let mut out = Vec::new();
        let settings = self.settings();
        for url in &settings.config.urls {
            let result = match settings.fetcher.get(url, &Validators::default()).await {
                Ok(Fetched::Body { bytes, validators }) => self
                    .check(url, bytes, validators, anchors, None)
                    .map(|c| {
                        let info = c.info().clone();
                        self.store(&settings.config, url, c.entry);
                        info
                    })
                    .map_err(|e| format!("refused: {e}")),
                Ok(Fetched::NotModified) => {
                    Err("the server answered 304 to an unconditional request".to_owned())
                }
                Err(e) => Err(format!("fetch failed: {e}")),
            };
            out.push((url.clone(), result));
        }
        out
    }

    /// Checks fetched bytes for use (see the module doc).
    pub(crate) fn check(
        &self,
        url: &str,
        bytes: Vec<u8>,
        validators: Validators,
        anchors: &[Anchor],
        issuer: Option<&CertificateDer<'static>>,
    ) -> Result<Checked, Refused> {
        let der = to_der(bytes).map_err(Refused::Parse)?;
        let mut crl = Crl::parse(Path::new(url), der)?;
        crl.verify_signature(
            anchors,
            &crate::tls::provider().signature_verification_algorithms,
        )?;
        if crl.info.signature == CrlSignature::IssuerNotInTruststore {
            match issuer {
                Some(cert) => crl.verify_with_issuer(cert)?,
                None => return Err(Refused::UnknownIssuer(crl.info.issuer.clone())),
            }
        }
        let now = crate::proxy::trust::unix_now();
        if crl.info.this_update > now + CLOCK_SKEW {
            return Err(Refused::Future(crate::x509::rfc3339_z(
                crl.info.this_update,
            )));
        }
        if let Some(in_use) = self.number_in_use(&crl.info.issuer, crl.scope()) {
            if crl.number().is_none_or(|n| *n < in_use) {
                return Err(Refused::Rollback {
                    offered: crl.number().map_or("none".to_owned(), ToString::to_string),
                    in_use: in_use.to_string(),
                    issuer: crl.info.issuer.clone(),
                });
            }
        }
        Ok(Checked {
            entry: Entry { crl, validators },
        })
    }

    /// The highest cRLNumber of a fetched CRL in force for `issuer` and `scope`: partitions of
    /// one issuer number their CRLs independently, so only the same partition can roll back.
    fn number_in_use(&self, issuer: &str, scope: Option<&CrlScope>) -> Option<BigUint> {
        let sources = self.sources.lock().ok()?;
        sources
            .values()
            .filter_map(|s| s.last_good.as_ref())
            .filter(|e| e.crl.info.issuer == issuer && e.crl.scope() == scope)
            .filter_map(|e| e.crl.number().cloned())
            .max()
    }

    /// Stores a checked CRL as the last good one of `url` and writes it to the cache dir.
    /// Returns whether it differs from the one stored before.
    fn store(&self, config: &CrlFetchConfig, url: &str, entry: Entry) -> bool {
        let changed = {
            let Ok(mut sources) = self.sources.lock() else {
                return false;
            };
            let Some(source) = sources.get_mut(url) else {
                return false;
            };
            let changed = source
                .last_good
                .as_ref()
                .is_none_or(|old| !old.crl.same_bytes(&entry.crl));
            source.last_good = Some(entry.clone());
            changed
        };
        if changed {
            let info = &entry.crl.info;
            tracing::info!(url, issuer = %info.issuer, number = info.number.as_deref().unwrap_or("-"), revoked = info.revoked, "new CRL fetched");
            if let Some(dir) = &config.cache_dir {
                if let Err(e) = write_cache(dir, url, &entry) {
                    tracing::warn!(url, dir = %dir.display(), error = %e, "cannot write the CRL cache");
                }
            }
        }
        changed
    }

    /// The last good CRL of `url` from the cache dir, if there is one that still checks.
    fn read_cache(&self, dir: Option<&Path>, url: &str, anchors: &[Anchor]) -> Option<Entry> {
        let dir = dir?;
        let (crl, meta) = cache_paths(dir, url);
        let bytes = std::fs::read(&crl).ok()?;
        let validators = std::fs::read(&meta)
            .ok()
            .and_then(|m| serde_json::from_slice::<CacheMeta>(&m).ok())
            .filter(|m| m.url == url)
            .map(|m| m.validators)
            .unwrap_or_default();
        match self.check(url, bytes, validators, anchors, None) {
            Ok(c) => {
                tracing::info!(url, file = %crl.display(), number = c.entry.crl.info.number.as_deref().unwrap_or("-"), "CRL read from the cache dir");
                Some(c.entry)
            }
            Err(e) => {
                tracing::warn!(url, file = %crl.display(), error = %e, "cached CRL not used");
                None
            }
        }
    }
}

/// The outcome of one configured URL in an offline command: its CRL, or why there is none.
pub(crate) type UrlOutcome = (String, Result<CrlInfo, String>);

/// For `check` and `verify`: the CRLs a running instance would have from `config`'s URLs right
/// now, from the cache dir and one fetch of each URL, and what each URL gave.
pub(crate) fn fetch_offline(
    config: &crate::config::Config,
) -> Result<(Vec<FetchedCrl>, Vec<UrlOutcome>), LoadError> {
    let cfg = &config.client_auth.crl_fetch;
    if cfg.urls.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let anchors = crl_anchors(config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadError::new(&config.source, format!("cannot start a runtime: {e}")))?;
    rt.block_on(async {
        let fetch = CrlFetch::new(cfg, &anchors, Arc::new(Metrics::new()))?;
        let outcomes = fetch.fetch_all_once(&anchors).await;
        Ok((fetch.in_force(), outcomes))
    })
}

/// What a fetched CRL is checked against when it arrives: every trust domain's CRL signers
/// (`client_auth.truststore`; with `[viewer]`, `viewer.truststore` and
/// `viewer.intermediates`). Each domain later uses only the CRLs its own CAs signed.
pub(crate) fn crl_anchors(config: &crate::config::Config) -> Result<Vec<Anchor>, LoadError> {
    let mut anchors = crate::tls::state::load_anchors(&config.client_auth.truststore)?;
    if let Some(v) = &config.viewer {
        anchors.extend(crate::tls::state::load_anchors(&v.truststore)?);
        if let Some(path) = &v.intermediates {
            anchors.extend(crate::tls::state::load_anchors(path)?);
        }
    }
    Ok(anchors)
}

/// Where the fetch tasks get the truststore from: the current generation's, so a reload
/// that changes the truststore changes what a fetched CRL is checked against.
pub(crate) type AnchorsSource = Arc<dyn Fn() -> Vec<Anchor> + Send + Sync>;

/// Whether a CRL gives a usable answer at `now`: not past its nextUpdate.
fn usable(info: &CrlInfo, now: i64) -> bool {
    info.next_update.is_none_or(|next| now < next)
}

/// When to fetch again after a success: at the refresh interval, but earlier as nextUpdate
/// nears (half the time left each time), and at most every `MAX_BACKOFF` once it has passed.
pub(crate) fn next_delay(refresh: Duration, next_update: Option<i64>, now: i64) -> Duration {
    let Some(next) = next_update else {
        return refresh;
    };
    let left = next - now;
    if left <= 0 {
        return refresh.min(MAX_BACKOFF);
    }
    let half = Duration::from_secs(u64::try_from(left / 2).unwrap_or(0).max(1));
    refresh.min(half)
}

/// The wait after `failures` failures in a row: 1 s, 2 s, 4 s, … up to the refresh interval
/// and `MAX_BACKOFF`.
pub(crate) fn backoff(failures: u32, refresh: Duration) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(refresh).min(MAX_BACKOFF)
}

/// A CRL as DER: PEM (`-----BEGIN X509 CRL-----`) is converted, anything else is taken as DER
/// (without a copy: a large CRL is tens of megabytes).
fn to_der(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let pem = crate::tls::load::crl_sections(&bytes).map_err(|e| format!("not valid PEM: {e}"))?;
    let mut pem = pem.into_iter();
    match (pem.next(), pem.next()) {
        (None, _) => Ok(bytes),
        (Some(one), None) => Ok(one),
        (Some(_), Some(_)) => {
            Err("several CRLs in one response; a CRL URL serves one CRL".to_owned())
        }
    }
}

/// The cache dir's record of a URL's CRL.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CacheMeta {
    url: String,
    #[serde(flatten)]
    validators: Validators,
}

/// `<dir>/<sha256 of the URL>.crl` and `.json`: one pair per URL, whatever characters it has.
fn cache_paths(dir: &Path, url: &str) -> (PathBuf, PathBuf) {
    let name = hex::encode(crate::x509::sha256(url.as_bytes()));
    (
        dir.join(format!("{name}.crl")),
        dir.join(format!("{name}.json")),
    )
}

/// Writes a CRL and its validators to the cache dir, each through a temporary file and a
/// rename, so a crash never leaves half a CRL that the next start would read.
fn write_cache(dir: &Path, url: &str, entry: &Entry) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (crl, meta) = cache_paths(dir, url);
    let meta_text = serde_json::to_vec(&CacheMeta {
        url: url.to_owned(),
        validators: entry.validators.clone(),
    })
    .map_err(std::io::Error::other)?;
    for (path, bytes) in [(&crl, entry.crl.der()), (&meta, meta_text.as_slice())] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_come_sooner_as_next_update_nears() {
        let hour = Duration::from_secs(3600);
        assert_eq!(next_delay(hour, None, 0), hour);
        assert_eq!(next_delay(hour, Some(10 * 3600), 0), hour);
        assert_eq!(next_delay(hour, Some(600), 0), Duration::from_secs(300));
        assert_eq!(next_delay(hour, Some(1), 0), Duration::from_secs(1));
        assert_eq!(next_delay(hour, Some(0), 100), MAX_BACKOFF);
    }

    #[test]
    fn failures_back_off_up_to_the_refresh_interval() {
        let refresh = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|f| backoff(f, refresh).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(40, Duration::from_secs(3600)), MAX_BACKOFF);
    }
}
