//! Hot reload: SIGHUP or a content change seen by the poller reads the config file and every
//! file it names, builds a complete new [`Generation`], and swaps it in atomically.
//!
//! New handshakes use the new generation at once; open connections finish on the one they
//! started with. A reload that fails keeps the last good generation. The poller hashes file
//! contents through their paths, so a Kubernetes Secret update (an atomic symlink swap of the
//! `..data` folder) is seen like an in-place write, and it parses the config only when a
//! file changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::current::App;
use super::fetch::Fetcher;
use super::generation::{self, BuildError, Generation};
use crate::config::{Config, ConfigError};
use crate::ledger::Reloaded;
use crate::metrics::ReloadOutcome;
use crate::proxy::trust::unix_now;
use crate::x509::{rfc3339_z, CertInfo, Inventory};

/// Why a reload did not happen; the last good generation stays in service.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// The config file did not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file it names did not load.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The blocking task that reads the files failed.
    #[error("reload task failed: {0}")]
    Task(String),
}

/// What the poller compares: the digest of the config file and of every file the last
/// reload attempt found in it, and those files.
#[derive(Debug, Default)]
struct Seen {
    /// The files besides the config file itself.
    files: Vec<PathBuf>,
    /// SHA-256 over the config file and `files`, as the last attempt read them.
    digest: Option<[u8; 32]>,
}

/// Reloads the running state; one reload at a time.
#[derive(Debug)]
pub(crate) struct Reloader {
    app: Arc<App>,
    config_path: PathBuf,
    /// The config the process started with: settings that need a restart are compared with
    /// it, so a reload keeps warning for as long as the file disagrees with what runs.
    boot: Arc<Config>,
    /// Serialises reloads, and holds what the last attempt read (successful or not), so the
    /// poller reacts to each change once.
    seen: tokio::sync::Mutex<Seen>,
}

impl Reloader {
    /// A reloader for the config at `config_path`.
    pub(crate) fn new(app: Arc<App>, config_path: PathBuf) -> Self {
        let boot = app.current().config.clone();
        let files = boot.watched_files().into_iter().skip(1).collect();
        Self {
            app,
            config_path,
            boot,
            seen: tokio::sync::Mutex::new(Seen {
                files,
                digest: None,
            }),
        }
    }

    /// Rebuilds everything from disk and swaps it in. Errors are logged and counted; the
    /// previous generation stays in service.
    pub(crate) async fn reload(&self, cause: &str) -> Result<u64, ReloadError> {
        let mut seen = self.seen.lock().await;
        let current = self.app.current();
        let path = self.config_path.clone();
        let prev = current.clone();
        let running_files = seen.files.clone();
        let app = self.app.clone();
        let attempt =
            tokio::task::spawn_blocking(move || attempt(&path, &running_files, &prev, &app)).await;
        let built = match attempt {
            Ok(a) => {
                // Record what this attempt read, even when it failed: the poller then does not
                // retry (and re-log) the same broken content every interval, nor repeat a
                // failure that SIGHUP already reported.
                seen.files = a.files;
                seen.digest = Some(a.digest);
                a.result
            }
            Err(e) => Err(ReloadError::Task(e.to_string())),
        };
        let metrics = self.app.metrics();
        match built {
            Err(e) => {
                metrics.reload(ReloadOutcome::failure);
                self.app.server().ledger().reloaded(Reloaded {
                    at: unix_now(),
                    cause: cause.to_owned(),
                    generation: None,
                    error: Some(e.to_string()),
                });
                tracing::error!(target: crate::logs::target::RELOAD, cause, error = %e, generation = current.id, "reload failed; keeping the last good configuration");
                Err(e)
            }
            Ok((next, fetcher)) => {
                warn_restart_only(&self.boot, &next.config);
                // Before the swap, so the tasks of added URLs start as the state that
                // excludes removed URLs goes in force.
                self.app.crl().apply(
                    &next.config.client_auth.crl_fetch,
                    fetcher,
                    self.app.server(),
                    &self.app.anchors_source(),
                );
                log_changes(
                    current.inventory(),
                    next.inventory(),
                    &current.config,
                    &next.config,
                );
                let id = next.id;
                let _ = self.app.swap(next).await;
                metrics.reload(ReloadOutcome::success);
                self.app.server().ledger().reloaded(Reloaded {
                    at: unix_now(),
                    cause: cause.to_owned(),
                    generation: Some(id),
                    error: None,
                });
                tracing::info!(target: crate::logs::target::RELOAD, cause, generation = id, "reload complete");
                Ok(id)
            }
        }
    }

    /// Polls the config and every file it names; reloads when their content changes.
    ///
    /// Files are read through their paths, so symlinks are followed at each poll: a
    /// Kubernetes Secret update (a new `..2026_…` folder, then an atomic rename of the
    /// `..data` symlink) changes what the paths read, and is seen like an in-place write.
    pub(crate) async fn watch(self: Arc<Self>, interval: Duration) {
        {
            let mut seen = self.seen.lock().await;
            if seen.digest.is_none() {
                let mut files = vec![self.config_path.clone()];
                files.extend(seen.files.iter().cloned());
                seen.digest = tokio::task::spawn_blocking(move || digest_files(&files))
                    .await
                    .ok();
            }
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if self.app.server().is_draining() {
                return;
            }
            let (mut files, recorded) = {
                let seen = self.seen.lock().await;
                (seen.files.clone(), seen.digest)
            };
            files.insert(0, self.config_path.clone());
            let Ok(now) = tokio::task::spawn_blocking(move || digest_files(&files)).await else {
                continue;
            };
            if recorded != Some(now) {
                // `reload` records the digest of what it read, success or failure, so a
                // broken file is reported once per change, not every interval.
                let _ = self.reload("file change").await;
            }
        }
    }
}

/// One reload attempt's reading: the new generation (with the CRL fetcher's HTTP client for
/// its settings) or why not, and what it read.
struct Attempt {
    result: Result<(Generation, Fetcher), ReloadError>,
    files: Vec<PathBuf>,
    digest: [u8; 32],
}

/// Reads the config once and builds from it. Each file is digested before it is read for the
/// build, and the config file by the very bytes that were parsed: a file that changes while
/// it is being read then differs from the recorded digest, and the poller reloads again
/// (digesting after reading could record the new content after reading the old, and miss it).
fn attempt(path: &Path, running_files: &[PathBuf], prev: &Generation, app: &App) -> Attempt {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let bytes = std::fs::read(path);
    update_digest(
        &mut digest,
        path,
        bytes.as_deref().map_err(std::io::Error::kind),
    );
    let config = match bytes {
        Ok(b) => Config::from_bytes(&b, path),
        Err(reason) => Err(ConfigError::Read {
            path: path.to_owned(),
            reason,
        }),
    };
    let files = match &config {
        Ok(c) => c.watched_files().into_iter().skip(1).collect(),
        Err(_) => running_files.to_vec(),
    };
    for f in &files {
        update_digest(
            &mut digest,
            f,
            std::fs::read(f).as_deref().map_err(|e| e.kind()),
        );
    }
    let result = config.map_err(ReloadError::from).and_then(|c| {
        let fetcher = app
            .crl()
            .prepare(&c.client_auth.crl_fetch)
            .map_err(BuildError::from)?;
        let inputs = app.build_inputs_for(&c);
        let next = generation::build(c, prev.id + 1, Some(prev), &inputs)?;
        Ok((next, fetcher))
    });
    Attempt {
        result,
        files,
        digest: finish(digest),
    }
}

/// SHA-256 over each file's path and content (or its read error), in order.
fn digest_files(files: &[PathBuf]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for f in files {
        update_digest(
            &mut ctx,
            f,
            std::fs::read(f).as_deref().map_err(|e| e.kind()),
        );
    }
    finish(ctx)
}

fn update_digest(
    ctx: &mut aws_lc_rs::digest::Context,
    path: &Path,
    content: Result<&[u8], std::io::ErrorKind>,
) {
    ctx.update(path.as_os_str().as_encoded_bytes());
    ctx.update(&[0]);
    match content {
        Ok(bytes) => {
            ctx.update(&(bytes.len() as u64).to_le_bytes());
            ctx.update(bytes);
        }
        Err(kind) => ctx.update(format!("error:{kind}").as_bytes()),
    }
}

fn finish(ctx: aws_lc_rs::digest::Context) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Whether a key differs between the running config and the reloaded one.
type Changed = fn(&Config, &Config) -> bool;

/// How to tell that each restart-only key (`config::keys`, `Restart`) changed. A test keeps
/// this list and the keys table the same, so a key marked restart-only is always warned about.
const RESTART_CHECKS: &[(&str, Changed)] = &[
    ("listener.address", |o, n| {
        o.listener.address != n.listener.address
    }),
    ("listener.max_connections", |o, n| {
        o.listener.limits.max_connections != n.listener.limits.max_connections
    }),
    ("admin.address", |o, n| {
        o.admin.as_ref().map(|a| a.address) != n.admin.as_ref().map(|a| a.address)
    }),
    ("admin.inventory_max", |o, n| {
        o.admin.as_ref().map(|a| a.inventory_max) != n.admin.as_ref().map(|a| a.inventory_max)
    }),
    ("log.level", |o, n| o.log.level != n.log.level),
    ("log.format", |o, n| o.log.format != n.log.format),
    // The poller's period is fixed when it starts (and starting or stopping it is a restart).
    ("reload.watch_interval", |o, n| {
        o.reload.watch_interval != n.reload.watch_interval
    }),
    ("runtime.worker_threads", |o, n| {
        o.runtime.worker_threads != n.runtime.worker_threads
    }),
];

fn warn_restart_only(old: &Config, new: &Config) {
    let ignored: Vec<&str> = RESTART_CHECKS
        .iter()
        .filter(|(_, changed)| changed(old, new))
        .map(|(key, _)| *key)
        .collect();
    if !ignored.is_empty() {
        tracing::warn!(target: crate::logs::target::RELOAD, keys = ?ignored, "these settings changed but need a restart; the running values stay in force");
    }
}

fn log_changes(old: &Inventory, new: &Inventory, old_cfg: &Config, new_cfg: &Config) {
    let key = |a: &CertInfo| format!("{} ({})", a.subject, &a.fingerprint[..16]);
    let before: BTreeSet<_> = old.anchors.iter().map(key).collect();
    let after: BTreeSet<_> = new.anchors.iter().map(key).collect();
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    if !added.is_empty() || !removed.is_empty() {
        tracing::info!(target: crate::logs::target::RELOAD, added = ?added, removed = ?removed, "trust anchors changed");
    }
    if old.crls != new.crls {
        let crls: Vec<String> = new
            .crls
            .iter()
            .map(|c| {
                format!(
                    "{} number={} revoked={}",
                    c.issuer,
                    c.number.as_deref().unwrap_or("-"),
                    c.revoked
                )
            })
            .collect();
        tracing::info!(target: crate::logs::target::RELOAD, crls = ?crls, "CRLs changed");
    }
    if old.server != new.server {
        tracing::info!(
            subject = %new.server.subject,
            not_after = %rfc3339_z(new.server.not_after),
            "server certificate changed"
        );
    }
    if old_cfg.client_auth.allow != new_cfg.client_auth.allow {
        tracing::info!("allow-list changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_warning_names_exactly_the_restart_only_keys() {
        let checked: Vec<&str> = RESTART_CHECKS.iter().map(|(k, _)| *k).collect();
        let listed: Vec<&str> = crate::config::keys::restart_only().collect();
        assert_eq!(checked, listed);
    }
}
