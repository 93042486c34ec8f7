//! The running program: the current [`Generation`], swapped whole by the [`reload`]er; the
//! start of the listeners (the mTLS one and the admin one); and the signals (SIGHUP reloads,
//! SIGTERM/SIGINT drain).

pub(crate) mod generation;
pub(crate) mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::server::{self, Server};
pub(crate) use generation::{BuildError, Generation};
pub(crate) use reload::Reloader;

/// The current generation and the data plane it feeds.
#[derive(Debug)]
pub(crate) struct App {
    generation: ArcSwap<Generation>,
    server: Arc<Server>,
    metrics: Arc<Metrics>,
}

impl App {
    /// Wraps the first generation.
    pub(crate) fn new(first: Generation, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.set_inventory(first.inventory());
        let server = Server::new(
            first.frontend.clone(),
            metrics.clone(),
            first.config.listener.max_connections,
        );
        Arc::new(Self {
            generation: ArcSwap::from_pointee(first),
            server,
            metrics,
        })
    }

    /// The generation in service.
    pub(crate) fn current(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// Puts `next` in service: new connections use its frontend from now on.
    pub(crate) fn swap(&self, next: Generation) {
        self.metrics.set_inventory(next.inventory());
        let frontend = next.frontend.clone();
        self.generation.store(Arc::new(next));
        self.server.install(frontend);
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
    let app = App::new(Generation::build(cfg, 1, None)?, metrics);

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
    tracing::info!(address = %bound, version = env!("CARGO_PKG_VERSION"), "listening");

    let reloader = config_path.map(|p| Arc::new(Reloader::new(app.clone(), p)));
    if let (Some(r), Some(every)) = (&reloader, watch_interval) {
        tokio::spawn(r.clone().watch(every));
    }
    let accept = tokio::spawn(server::serve(listener, app.server().clone()));
    Ok(Running {
        address: bound,
        admin: admin_bound,
        app,
        reloader,
        accept,
    })
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
        let shutdown_timeout = app.current().config.listener.shutdown_timeout;
        tracing::info!(signal = which, timeout = ?shutdown_timeout, "draining: no new connections; in-flight requests may finish");
        app.server().begin_drain();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::warn!("second signal: exiting now");
            std::process::exit(1);
        });
        let _ = accept.await;
        if app.server().wait_drained(shutdown_timeout).await {
            tracing::info!("all connections closed; exiting");
        } else {
            tracing::warn!(timeout = ?shutdown_timeout, "shutdown_timeout reached with connections still open; exiting");
        }
        Ok(())
    }
}
