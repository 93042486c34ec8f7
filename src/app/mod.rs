//! The running program: the generation in service (`App`, in `current`), swapped whole by the
//! reloader (`reload`); the CRLs fetched from URLs (`crl`, over `fetch`); the start of the
//! listeners (the mTLS one and the admin one); and the signals (SIGHUP reloads, SIGTERM/SIGINT
//! drain).

pub(crate) mod crl;
pub(crate) mod current;
pub(crate) mod fetch;
pub(crate) mod generation;
pub(crate) mod ocsp;
pub(crate) mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::server::{self, NotReady};
use crate::tls::crl::{DistributionPoint, DistributionPoints, MAX_DISTRIBUTION_POINTS};
use crl::{AnchorsSource, CrlFetch};
pub(crate) use current::{App, TrustSources};
pub(crate) use generation::BuildError;
pub(crate) use reload::Reloader;

/// Why the program could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// A file named by the config did not load.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listener could not be bound.
    #[error("cannot bind {key} {address}: {reason}")]
    Bind {
        /// The config key, e.g. `listener.address`.
        key: &'static str,
        /// The address.
        address: SocketAddr,
        /// The OS's reason.
        reason: std::io::Error,
    },
}

/// A started server: listeners bound, accepting, not yet waiting for signals.
#[derive(Debug)]
pub(crate) struct Running {
    /// The bound mTLS listener address (the demo prints it).
    #[cfg_attr(not(feature = "demo"), allow(dead_code))]
    pub(crate) address: SocketAddr,
    /// The bound admin address, if any (the demo prints it).
    #[cfg_attr(not(feature = "demo"), allow(dead_code))]
    pub(crate) admin: Option<SocketAddr>,
    app: Arc<App>,
    reloader: Option<Arc<Reloader>>,
    accept: tokio::task::JoinHandle<()>,
}

/// Builds everything from `cfg`, binds the listeners and starts accepting. `config_path`
/// enables SIGHUP and watch reloads.
pub(crate) async fn start(
    cfg: Config,
    config_path: Option<PathBuf>,
) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let address = cfg.listener.address;
    let admin_address = cfg.admin.as_ref().map(|a| a.address);
    let watch_interval = cfg.reload.watch_interval;
    let fetch_cfg = cfg.client_auth.crl_fetch.clone();
    // The cached CRLs are checked against the truststore before the first state is built with
    // them. The fetcher exists even with nothing to fetch, so a reload can add a URL.
    let anchors = if fetch_cfg.urls.is_empty() {
        Vec::new()
    } else {
        crl::crl_anchors(&cfg).map_err(BuildError::from)?
    };
    let crl = CrlFetch::new(&fetch_cfg, &anchors, metrics.clone()).map_err(BuildError::from)?;
    let (dp_tx, dp_rx) = tokio::sync::mpsc::channel(MAX_DISTRIBUTION_POINTS);
    let inputs = TrustSources {
        crl,
        distribution_points: DistributionPoints::new(dp_tx),
        ocsp_cache: Arc::default(),
        ocsp_in_flight: Arc::default(),
        ocsp_changed: Arc::default(),
        metrics: metrics.clone(),
    };
    let max_connections = cfg.listener.limits.max_connections;
    let first_inputs = inputs.build_inputs_for(&cfg);
    let first = generation::build(cfg, 1, None, &first_inputs)?;
    // After the config and its files proved usable, so a config error stays the only line.
    raise_file_limit(max_connections);
    let app = App::new(first, metrics, inputs);

    let bind_error = |key, address| {
        move |reason| StartError::Bind {
            key,
            address,
            reason,
        }
    };
    let listener = server::bind(address)
        .await
        .map_err(bind_error("listener.address", address))?;
    let bound = listener
        .local_addr()
        .map_err(bind_error("listener.address", address))?;
    let mut admin_bound = None;
    if let Some(addr) = admin_address {
        let admin = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error("admin.address", addr))?;
        let local = admin
            .local_addr()
            .map_err(bind_error("admin.address", addr))?;
        admin_bound = Some(local);
        tracing::info!(address = %local, "admin listening");
        tokio::spawn(crate::admin::serve(admin, app.server().clone()));
    }
    tracing::info!(target: crate::logs::target::APP, address = %bound, version = env!("CARGO_PKG_VERSION"), "listening");

    let reloader = config_path.map(|p| Arc::new(Reloader::new(app.clone(), p)));
    if let (Some(r), Some(every)) = (&reloader, watch_interval) {
        tokio::spawn(r.clone().watch(every));
    }
    start_crl_fetch(&app, reloader.clone(), dp_rx);
    start_ocsp_refresh(&app, reloader.clone());
    let accept = tokio::spawn(server::serve(listener, app.server().clone()));
    Ok(Running {
        address: bound,
        admin: admin_bound,
        app,
        reloader,
        accept,
    })
}

/// Starts the CRL fetch tasks: readiness waits for every URL configured at start-up, each new
/// CRL is put in force by a reload, and distribution points found in verified chains are
/// fetched too.
fn start_crl_fetch(
    app: &Arc<App>,
    reloader: Option<Arc<Reloader>>,
    mut distribution_points: tokio::sync::mpsc::Receiver<DistributionPoint>,
) {
    let crl = app.crl();
    let anchors: AnchorsSource = app.anchors_source();
    let waiting = crl.clone();
    app.server().set_not_ready(NotReady(Arc::new(move || {
        let urls = waiting.waiting(crate::proxy::trust::unix_now());
        (!urls.is_empty()).then(|| {
            format!(
                "waiting for a first usable CRL from {} (client_auth.crl_urls)",
                urls.join(", ")
            )
        })
    })));
    crl.spawn(app.server().clone(), anchors.clone());
    let fetch = crl.clone();
    let server = app.server().clone();
    tokio::spawn(async move {
        while let Some(dp) = distribution_points.recv().await {
            fetch.add_distribution_point(dp, server.clone(), anchors.clone());
        }
    });
    let crl = crl.clone();
    reload_when(
        move || {
            let crl = crl.clone();
            async move { crl.changed().await }
        },
        reloader,
        "CRL update",
    );
}

/// Keeps the OCSP answers in use fresh, and rebuilds the trust state when one changes status,
/// so the open connections are judged again by the same build-validate-swap as a reload.
fn start_ocsp_refresh(app: &Arc<App>, reloader: Option<Arc<Reloader>>) {
    let weak = Arc::downgrade(app);
    let draining = app.server().clone();
    tokio::spawn(ocsp::keep_fresh(
        app.inputs().ocsp_cache.clone(),
        move || {
            let app = weak.upgrade()?;
            let config = &app.current().config.client_auth.ocsp;
            (config.mode != crate::config::OcspMode::Off).then(|| app.inputs().resolver(config))
        },
        move || draining.is_draining(),
    ));
    let changed = app.inputs().ocsp_changed.clone();
    reload_when(
        move || {
            let changed = changed.clone();
            async move { changed.notified().await }
        },
        reloader,
        "OCSP update",
    );
}

/// Rebuilds the trust state each time `changed` resolves, with the same build-validate-swap
/// as any reload, so what changed (a fetched CRL, an OCSP answer) reaches the open
/// connections through it.
fn reload_when<F, Fut>(changed: F, reloader: Option<Arc<Reloader>>, cause: &'static str)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            changed().await;
            match &reloader {
                Some(r) => {
                    let _ = r.reload(cause).await;
                }
                None => tracing::warn!(
                    cause,
                    "the trust state changed but there is no config file to rebuild it from"
                ),
            }
        }
    });
}

impl Running {
    /// Handles signals until SIGTERM/SIGINT, then drains and returns.
    pub(crate) async fn wait(self) -> std::io::Result<()> {
        let Running {
            app,
            reloader,
            accept,
            ..
        } = self;
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let which = loop {
            tokio::select! {
                _ = hup.recv() => match &reloader {
                    Some(r) => { let _ = r.reload("SIGHUP").await; }
                    None => tracing::info!("SIGHUP ignored: no config file to reload"),
                },
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
            }
        };
        // Read at drain time, so a reloaded listener.shutdown_timeout applies.
        let shutdown_timeout = app.current().config.listener.timeouts.shutdown;
        tracing::info!(target: crate::logs::target::APP, signal = which, timeout = ?shutdown_timeout, "draining: no new connections; in-flight requests may finish");
        app.server().begin_drain();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::warn!("second signal: exiting now");
            // exit() skips the flush at the end of `run`: write the pending lines first.
            crate::logs::flush();
            std::process::exit(1);
        });
        let _ = accept.await;
        if app.server().wait_drained(shutdown_timeout).await {
            tracing::info!(target: crate::logs::target::APP, "all connections closed; exiting");
        } else {
            tracing::warn!(timeout = ?shutdown_timeout, "shutdown_timeout reached with connections still open; exiting");
        }
        Ok(())
    }
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime and nginx's
/// `worker_rlimit_nofile` do: the common default soft limit of 1024 would make accept() fail
/// with EMFILE at about 1,000 client connections (500 with requests in flight), far below
/// `listener.max_connections`. Logs the result, and warns when even the hard limit is too low
/// for `max_connections`.
fn raise_file_limit(max_connections: usize) {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => {
            let before = before.map_or(0, |(soft, _)| soft);
            tracing::info!(
                before,
                after = soft,
                "open-file limit (RLIMIT_NOFILE soft) raised to the hard limit"
            );
            // One descriptor per client connection (an upstream connection is held only while
            // a request is in flight, and the pool's idle ones are few), plus the listeners,
            // files and a margin: below this, accept() fails before max_connections is reached.
            let needed = (max_connections as u64).saturating_add(256);
            if soft < needed {
                tracing::warn!(
                    limit = soft,
                    max_connections,
                    needed,
                    "the open-file limit is below what listener.max_connections needs; accept() will fail with EMFILE first: raise the hard limit (LimitNOFILE= in systemd, ulimit -Hn, the container runtime's nofile) or lower max_connections"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE); keeping it");
        }
    }
}
