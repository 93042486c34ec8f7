//! Hot reload: SIGHUP or a content change seen by the poller re-reads the config file and
//! every file it names, builds a complete new [`Generation`], and swaps it in atomically.
//!
//! New handshakes use the new generation at once; open connections finish on the one they
//! started with. A reload that fails keeps the last good generation. The poller hashes file
//! contents through their paths, so a Kubernetes Secret update (an atomic symlink swap of the
//! `..data` folder) is seen like an in-place write.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::metrics::ReloadLabels;
use crate::proxy::server::{Generation, Shared};

use crate::x509::{rfc3339_z, CertInfo, Inventory};

/// Reloads the shared state; one reload at a time.
#[derive(Debug)]
pub struct Reloader {
    shared: Arc<Shared>,
    config_path: PathBuf,
    /// The config the process started with: settings that need a restart are compared with
    /// it, so a reload keeps warning for as long as the file disagrees with what runs.
    boot: Arc<Config>,
    /// Serialises reloads, and holds the digest of the files the last reload attempt read
    /// (successful or not), so the poller reacts to each change once.
    lock: tokio::sync::Mutex<Option<[u8; 32]>>,
}

impl Reloader {
    /// A reloader for the config at `config_path`.
    pub fn new(shared: Arc<Shared>, config_path: PathBuf) -> Self {
        let boot = shared.current.load().config.clone();
        Self {
            shared,
            config_path,
            boot,
            lock: tokio::sync::Mutex::new(None),
        }
    }

    /// The files a reload would read now: those the config on disk names, or, when it does
    /// not load, those of the running config (whose first entry is the config file itself).
    fn files_on_disk(config_path: &std::path::Path, running: &Config) -> Vec<PathBuf> {
        match Config::load(config_path) {
            Ok(c) => c.watched_files(),
            Err(_) => {
                let mut files = running.watched_files();
                if let Some(first) = files.first_mut() {
                    *first = config_path.to_owned();
                }
                files
            }
        }
    }

    /// Rebuilds everything from disk and swaps it in. Errors are logged and counted; the
    /// previous generation stays in service.
    pub async fn reload(&self, cause: &str) -> Result<u64, String> {
        let mut last_digest = self.lock.lock().await;
        let current = self.shared.current.load_full();
        let path = self.config_path.clone();
        let prev = current.clone();
        let built = tokio::task::spawn_blocking(move || {
            // Digest first, read second: a file that changes while it is being read then
            // differs from the recorded digest, and the poller reloads again. (The other order
            // could record the new content after reading the old, and miss the change.)
            let digest = digest_files(&Self::files_on_disk(&path, &prev.config));
            let result = Config::load(&path)
                .map_err(|e| e.to_string())
                .and_then(|config| {
                    Generation::build(config, prev.id + 1, Some(&prev)).map_err(|e| e.to_string())
                });
            (result, digest)
        })
        .await;
        let built = match built {
            Ok((result, digest)) => {
                // Record what this attempt read, even when it failed: the poller then does not
                // retry (and re-log) the same broken content every interval, nor repeat a
                // failure that SIGHUP already reported.
                *last_digest = Some(digest);
                result
            }
            Err(e) => Err(format!("reload task failed: {e}")),
        };
        let metrics = &self.shared.metrics;
        match built {
            Err(e) => {
                metrics
                    .reloads
                    .get_or_create(&ReloadLabels { result: "failure" })
                    .inc();
                tracing::error!(cause, error = %e, generation = current.id, "reload failed; keeping the last good configuration");
                Err(e)
            }
            Ok(next) => {
                warn_restart_only(&self.boot, &next.config);
                log_changes(
                    &current.tls.inventory,
                    &next.tls.inventory,
                    &current.config,
                    &next.config,
                );
                metrics.set_inventory(&next.tls.inventory);
                let id = next.id;
                self.shared.current.store(Arc::new(next));
                metrics
                    .reloads
                    .get_or_create(&ReloadLabels { result: "success" })
                    .inc();
                tracing::info!(cause, generation = id, "reload complete");
                Ok(id)
            }
        }
    }

    /// Polls the config and every file it names; reloads when their content changes.
    ///
    /// Files are read through their paths, so symlinks are followed at each poll: a
    /// Kubernetes Secret update (a new `..2026_…` folder, then an atomic rename of the
    /// `..data` symlink) changes what the paths read, and is seen like an in-place write.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        {
            let mut d = self.lock.lock().await;
            if d.is_none() {
                let files = self.shared.current.load().config.watched_files();
                *d = tokio::task::spawn_blocking(move || digest_files(&files))
                    .await
                    .ok();
            }
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if self
                .shared
                .draining
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return;
            }
            let path = self.config_path.clone();
            let running = self.shared.current.load().config.clone();
            // A config that does not parse still gets a reload attempt when its bytes
            // change, so the failure is logged and counted once per change.
            let now = tokio::task::spawn_blocking(move || {
                digest_files(&Self::files_on_disk(&path, &running))
            })
            .await;
            let Ok(now) = now else { continue };
            // The guard is a temporary, released at the end of this statement: `reload`
            // takes the same lock.
            let changed = *self.lock.lock().await != Some(now);
            if changed {
                // `reload` records the digest of what it read, success or failure, so a
                // broken file is reported once per change, not every interval.
                let _ = self.reload("file change").await;
            }
        }
    }
}

/// SHA-256 over each file's path and content (or its read error), in order.
fn digest_files(files: &[PathBuf]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for f in files {
        ctx.update(f.as_os_str().as_encoded_bytes());
        ctx.update(&[0]);
        match std::fs::read(f) {
            Ok(bytes) => {
                ctx.update(&(bytes.len() as u64).to_le_bytes());
                ctx.update(&bytes);
            }
            Err(e) => ctx.update(format!("error:{}", e.kind()).as_bytes()),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn warn_restart_only(old: &Config, new: &Config) {
    let mut ignored = Vec::new();
    if old.listener.address != new.listener.address {
        ignored.push("listener.address");
    }
    if old.admin.as_ref().map(|a| a.address) != new.admin.as_ref().map(|a| a.address) {
        ignored.push("admin.address");
    }
    if old.listener.max_connections != new.listener.max_connections {
        ignored.push("listener.max_connections");
    }
    if old.runtime.worker_threads != new.runtime.worker_threads {
        ignored.push("runtime.worker_threads");
    }
    if old.log.level != new.log.level || old.log.format != new.log.format {
        ignored.push("log");
    }
    // The poller's period is fixed when it starts (and starting or stopping it is a restart).
    if old.reload.watch_interval != new.reload.watch_interval {
        ignored.push("reload.watch_interval");
    }
    if !ignored.is_empty() {
        tracing::warn!(keys = ?ignored, "these settings changed but need a restart; the running values stay in force");
    }
}

fn log_changes(old: &Inventory, new: &Inventory, old_cfg: &Config, new_cfg: &Config) {
    let key = |a: &CertInfo| format!("{} ({})", a.subject, &a.fingerprint[..16]);
    let before: BTreeSet<_> = old.anchors.iter().map(key).collect();
    let after: BTreeSet<_> = new.anchors.iter().map(key).collect();
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    if !added.is_empty() || !removed.is_empty() {
        tracing::info!(added = ?added, removed = ?removed, "trust anchors changed");
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
        tracing::info!(crls = ?crls, "CRLs changed");
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
