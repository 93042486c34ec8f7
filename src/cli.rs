//! The command line (clap derive): parses the arguments, sets up logging and the runtime, and
//! hands each command to its module (`run` to `crate::app`, `check`, `verify`, `demo`,
//! `gen-certs`). This is the binary's edge: errors become anyhow errors here.

#[cfg(feature = "demo")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{Config, LogConfig, LogFormat};

/// mtls-shield: verifies client certificates before a single byte reaches your app.
#[derive(Debug, Parser)]
#[command(name = "mtls-shield", version, about, long_about = None)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve: terminate mTLS and forward verified requests to the upstream.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "config/mtls-shield.toml")]
        config: PathBuf,
    },
    /// Start a working demo: generated certificates, a sample upstream, and the proxy.
    #[cfg(feature = "demo")]
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
        /// With `--viewer`: the viewer's certificate.
        #[arg(required_unless_present = "headers")]
        cert: Option<PathBuf>,
        /// Intermediates the client sends with it (PEM).
        #[arg(long)]
        chain: Option<PathBuf>,
        /// Check at this RFC 3339 time instead of now, e.g. 2026-03-01T12:00:00Z.
        #[arg(long)]
        at: Option<String>,
        /// Also print the verdict of `[client_auth.report_only]`, the candidate policy.
        #[arg(long)]
        report_only: bool,
        /// Judge a viewer certificate with `[viewer]`, as a request from an edge would be.
        #[arg(long)]
        viewer: bool,
        /// With `--viewer`: a viewer header as the edge sends it (`Name: value`), instead of
        /// CERT; repeat it for each header.
        #[arg(long = "header", value_name = "NAME: VALUE", requires = "viewer")]
        headers: Vec<String>,
        /// With `--viewer`: the request path, whose route's `viewer` and `viewer_allow` apply.
        #[arg(long, requires = "viewer")]
        path: Option<String>,
    },
    /// Ask a running shield's admin listener for its trust state and print what expires, CRL
    /// freshness, the clients seen and the last refusals. Exit 0 when nothing needs
    /// attention, 2 when something does, 1 when the shield cannot be asked.
    Status {
        /// The admin listener.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// A file with the admin listener's bearer token (else MTLS_SHIELD_ADMIN_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the `/trust` JSON document instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Write a development PKI (CA, server and client certificates) as PEM files.
    #[cfg(feature = "demo")]
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
            // A malformed allow-list entry or route is a config error, refused before
            // anything starts, like every other key (the generation compiles it again).
            crate::policy::Policy::compile(&cfg)?;
            init_logging(&cfg.log);
            let result = runtime(cfg.runtime.worker_threads)?.block_on(run(cfg, Some(config)));
            // Every connection has drained: write the access lines still pending.
            crate::logs::flush();
            result
        }
        #[cfg(feature = "demo")]
        Command::Demo { listen, admin, dir } => {
            let log = LogConfig::default();
            init_logging(&log);
            let result = runtime(None)?.block_on(crate::demo::run(listen, admin, dir));
            crate::logs::flush();
            result
        }
        Command::Check { config, format } => crate::check::run(&config, format),
        Command::Verify {
            config,
            cert,
            chain,
            at,
            report_only: _,
            viewer: true,
            headers,
            path,
        } => crate::verify::run_viewer(
            &config,
            crate::verify::ViewerInput {
                cert: cert.as_deref(),
                chain: chain.as_deref(),
                headers: &headers,
                path: path.as_deref(),
            },
            at.as_deref(),
        ),
        Command::Verify {
            config,
            cert,
            chain,
            at,
            report_only,
            ..
        } => {
            let cert = cert.context("a certificate file is required")?;
            crate::verify::run(&config, &cert, chain.as_deref(), at.as_deref(), report_only)
        }
        Command::Status {
            admin,
            token_file,
            json,
        } => crate::status::run(admin, token_file.as_deref(), json),
        #[cfg(feature = "demo")]
        Command::GenCerts { out, force } => crate::demo::gen_certs(&out, force),
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

/// Sets up tracing (`RUST_LOG` overrides `log.level`) and the access-log writer.
pub(crate) fn init_logging(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::logs::Sink)
        .with_target(true);
    let _ = match log.format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    crate::logs::start(match log.format {
        LogFormat::Text => crate::logs::Format::Text,
        LogFormat::Json => crate::logs::Format::Json,
    });
}

/// Serves `cfg` until SIGTERM/SIGINT.
pub(crate) async fn run(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    crate::app::start(cfg, config_path).await?.wait().await?;
    Ok(ExitCode::SUCCESS)
}
