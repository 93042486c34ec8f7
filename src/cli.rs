//! The command line (clap derive) and the `run`, `demo` and `gen-certs` commands: building
//! the runtime, starting the listeners, and handling signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, LogConfig, LogFormat};
use crate::metrics::Metrics;
use crate::proxy::server::{self, Generation, Shared};
use crate::tls::reload::Reloader;

/// mtls-shield: verifies client certificates before a single byte reaches your app.
#[derive(Debug, Parser)]
#[command(name = "mtls-shield", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: terminate mTLS and forward verified requests to the upstream.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "config/mtls-shield.toml")]
        config: PathBuf,
    },
    /// Start a working demo: generated certificates, a sample upstream, and the proxy.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Where the admin listener listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Where to write the demo PKI and config (default: a folder under the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Validate a config exactly as `run` would, without binding ports, and report what it
    /// serves and trusts. Exit 0 when valid (warnings allowed), 1 otherwise.
    Check {
        /// The config file.
        #[arg(long, short, default_value = "config/mtls-shield.toml")]
        config: PathBuf,
        /// Report format.
        #[arg(long, value_enum, default_value_t = crate::check::Format::Text)]
        format: crate::check::Format,
    },
    /// Would this client certificate be accepted (now, or at --at)? Exit 0 accepted,
    /// 2 refused (with the reason code), 1 error.
    Verify {
        /// The config file.
        #[arg(long, short, default_value = "config/mtls-shield.toml")]
        config: PathBuf,
        /// The client certificate (PEM); certificates after the first are its intermediates.
        cert: PathBuf,
        /// Intermediates the client sends with it (PEM).
        #[arg(long)]
        chain: Option<PathBuf>,
        /// Check at this RFC 3339 time instead of now, e.g. 2026-03-01T12:00:00Z.
        #[arg(long)]
        at: Option<String>,
    },
    /// Write a development PKI (CA, server and client certificates) as PEM files.
    GenCerts {
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Runs the command line; the binary's `main` only prints errors.
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap exits 2 on a usage error, but `verify` uses 2 for "refused": a typo in a
            // script must not read as a refusal. Usage errors exit 1 like every other error.
            let _ = e.print();
            return Ok(if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
    };
    match cli.command {
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            init_logging(&cfg.log);
            runtime(cfg.runtime.worker_threads)?.block_on(run(cfg, Some(config)))
        }
        Command::Demo { listen, admin, dir } => {
            init_logging(&LogConfig::default());
            runtime(None)?.block_on(demo(listen, admin, dir))
        }
        Command::Check { config, format } => crate::check::run(&config, format),
        Command::Verify {
            config,
            cert,
            chain,
            at,
        } => crate::verify::run(&config, &cert, chain.as_deref(), at.as_deref()),
        Command::GenCerts { out, force } => gen_certs(&out, force),
    }
}

fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    // Default: the CPUs this process may use (cgroup quota and affinity aware).
    let workers = workers
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Sets up tracing: `RUST_LOG` overrides `log.level`.
pub fn init_logging(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = match log.format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A started server: listeners bound, accepting, not yet waiting for signals.
pub struct Running {
    /// The bound mTLS listener address.
    pub address: SocketAddr,
    /// The bound admin address, if any.
    pub admin: Option<SocketAddr>,
    shared: Arc<Shared>,
    reloader: Option<Arc<Reloader>>,
    accept: tokio::task::JoinHandle<()>,
}

/// Builds everything from `cfg`, binds the listeners and starts accepting. `config_path`
/// enables SIGHUP and watch reloads.
pub async fn start(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let address = cfg.listener.address;
    let admin_address = cfg.admin.as_ref().map(|a| a.address);
    let watch_interval = cfg.reload.watch_interval;
    let generation = Generation::build(cfg, 1, None)?;
    let shared = Shared::new(generation, metrics);

    let listener = server::bind(address)
        .await
        .with_context(|| format!("cannot bind listener.address {address}"))?;
    let bound = listener.local_addr()?;
    let mut admin_bound = None;
    if let Some(addr) = admin_address {
        let admin = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind admin.address {addr}"))?;
        admin_bound = Some(admin.local_addr()?);
        tracing::info!(address = %admin.local_addr()?, "admin listening");
        tokio::spawn(crate::admin::serve(admin, shared.clone()));
    }
    tracing::info!(address = %bound, version = env!("CARGO_PKG_VERSION"), "listening");

    let reloader = config_path.map(|p| Arc::new(Reloader::new(shared.clone(), p)));
    if let (Some(r), Some(every)) = (&reloader, watch_interval) {
        tokio::spawn(r.clone().watch(every));
    }
    let accept = tokio::spawn(server::serve(listener, shared.clone()));
    Ok(Running {
        address: bound,
        admin: admin_bound,
        shared,
        reloader,
        accept,
    })
}

impl Running {
    /// Handles signals until SIGTERM/SIGINT, then drains and returns.
    pub async fn wait(self) -> anyhow::Result<ExitCode> {
        let Running {
            shared,
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
        let shutdown_timeout = shared.current.load().config.listener.shutdown_timeout;
        tracing::info!(signal = which, timeout = ?shutdown_timeout, "draining: no new connections; in-flight requests may finish");
        shared.begin_drain();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::warn!("second signal: exiting now");
            std::process::exit(1);
        });
        let _ = accept.await;
        if shared.wait_drained(shutdown_timeout).await {
            tracing::info!("all connections closed; exiting");
        } else {
            tracing::warn!(timeout = ?shutdown_timeout, "shutdown_timeout reached with connections still open; exiting");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Serves `cfg` until SIGTERM/SIGINT.
pub async fn run(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    start(cfg, config_path).await?.wait().await
}

async fn demo(
    listen: SocketAddr,
    admin: SocketAddr,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join("mtls-shield-demo"));
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    crate::pki::DevPki::generate()?.write(&dir)?;
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the sample upstream")?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(crate::demo::sample_upstream(upstream));
    let config_path = dir.join("mtls-shield.toml");
    std::fs::write(
        &config_path,
        crate::demo::config_text(listen, admin, upstream_addr),
    )
    .with_context(|| format!("{}: cannot write demo config", config_path.display()))?;
    let cfg = Config::load(&config_path)?;
    let running = start(cfg, Some(config_path)).await?;
    let (good, bad) = crate::demo::curl_commands(&dir, running.address);
    println!(
        "mtls-shield demo: certificates and config in {}",
        dir.display()
    );
    println!();
    println!("With the client certificate (gets the pets):");
    println!("  {good}");
    println!("Without it (empty reply: the handshake is refused, no HTTP at all):");
    println!("  {bad}");
    println!();
    println!(
        "See what the upstream receives:  {}",
        good.replace("/pets", "/headers")
    );
    if let Some(admin) = running.admin {
        println!("Metrics:                         curl http://{admin}/metrics");
    }
    println!("Press Ctrl-C to stop.");
    running.wait().await
}

fn gen_certs(out: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if !force && out.join("ca.key").exists() {
        anyhow::bail!(
            "{}: already holds ca.key; pass --force to overwrite, or choose another --out",
            out.display()
        );
    }
    let written = crate::pki::DevPki::generate()?.write(out)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
