//! Hot reload: on SIGHUP, on a change of the config or rule files (debounced), or on `POST /-/reload`,
//! the whole configuration is loaded and validated again; only a configuration that compiles, with
//! channels that build, replaces the running one. Otherwise the old one keeps running and the errors
//! are logged, counted and returned.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use crate::channel;
use crate::metrics::Metrics;
use crate::runtime::{Runtime, Shared};
use crate::settings::Config;

/// File events closer together than this are one change (editors write files in several steps).
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// What a successful reload loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Loaded {
    /// Rules now active.
    pub rules: usize,
    /// Channels now configured.
    pub channels: usize,
    /// Settings that changed but only apply after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Reloads the configuration a relay was started with.
pub struct Reloader {
    path: Option<PathBuf>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    /// One reload at a time; also the last failure, for `/readyz`.
    last_error: tokio::sync::Mutex<Option<String>>,
}

impl Reloader {
    /// A reloader for the config at `path` (`None`: the built-in one).
    pub fn new(path: Option<PathBuf>, shared: Arc<Shared>, metrics: Arc<Metrics>) -> Reloader {
        Reloader {
            path,
            shared,
            metrics,
            last_error: tokio::sync::Mutex::new(None),
        }
    }

    /// The error of the last reload attempt, if it failed.
    pub async fn last_error(&self) -> Option<String> {
        self.last_error.lock().await.clone()
    }

    /// Loads, validates and swaps in the configuration. `trigger` names the cause in the log.
    pub async fn reload(&self, trigger: &str) -> Result<Loaded, String> {
        let mut last_error = self.last_error.lock().await;
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(path.as_deref()))
            .await
            .map_err(|e| format!("reload task failed: {e}"))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .and_then(|config| {
                let channels = channel::build_all(&config.channels).map_err(|e| e.to_string())?;
                Ok(Runtime { config, channels })
            });
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        match loaded {
            Ok(rt) => {
                let old = self.shared.get();
                let (a, b) = (&old.config, &rt.config);
                let mut needs_restart = Vec::new();
                if a.listen != b.listen {
                    needs_restart.push("listen");
                }
                if a.ingest.path != b.ingest.path {
                    needs_restart.push("ingest.path");
                }
                if a.ingest.positions_path != b.ingest.positions_path {
                    needs_restart.push("ingest.positions_path");
                }
                if a.storage.data_dir != b.storage.data_dir {
                    needs_restart.push("storage.data_dir");
                }
                if a.delivery.workers != b.delivery.workers {
                    needs_restart.push("delivery.workers");
                }
                let summary = Loaded {
                    rules: b.rules.rules().len(),
                    channels: b.channels.len(),
                    needs_restart,
                };
                self.shared.replace(rt);
                drop(old);
                crate::runtime::release_freed_memory();
                self.metrics.reload(true, now);
                *last_error = None;
                tracing::info!(
                    trigger,
                    rules = summary.rules,
                    channels = summary.channels,
                    "configuration reloaded"
                );
                if !summary.needs_restart.is_empty() {
                    tracing::warn!(settings = ?summary.needs_restart, "changed settings apply after a restart");
                }
                Ok(summary)
            }
            Err(e) => {
                self.metrics.reload(false, now);
                tracing::error!(trigger, error = %e, "configuration reload failed; the previous configuration keeps running");
                *last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Reloads on SIGHUP and on changes of the config file and the rule files/folders, until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        // Watch the folders, not the files: editors replace files by renaming, which ends a file watch.
        let watcher = self.path.as_ref().and_then(|p| {
            let tx = tx.clone();
            let config_name = p.file_name().map(|n| n.to_os_string());
            // Only YAML files and the config itself count: the database may live in a watched folder.
            let relevant = move |path: &std::path::Path| {
                matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                ) || path.file_name().map(|n| n.to_os_string()) == config_name
            };
            let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
                if ev.is_ok_and(|e| !e.kind.is_access() && e.paths.iter().any(|p| relevant(p))) {
                    let _ = tx.send(());
                }
            })
            .map_err(
                |e| tracing::warn!(error = %e, "cannot watch the config files; reload with SIGHUP"),
            )
            .ok()?;
            let rt = self.shared.get();
            let mut dirs: Vec<PathBuf> = vec![p.parent().map(PathBuf::from).unwrap_or_default()];
            dirs.extend(
                rt.config
                    .rule_files
                    .iter()
                    .filter_map(|f| f.parent().map(PathBuf::from)),
            );
            dirs.iter_mut().for_each(|d| {
                if d.as_os_str().is_empty() {
                    *d = PathBuf::from(".");
                }
            });
            dirs.sort();
            dirs.dedup();
            for d in &dirs {
                if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch");
                }
            }
            Some(Mutex::new(w))
        });
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hup_recv = async {
                match hup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup_recv = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = hup_recv => { let _ = self.reload("SIGHUP").await; }
                Some(()) = rx.recv() => {
                    // Debounce: wait until the files have been quiet for a moment.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                    let _ = self.reload("file change").await;
                }
            }
        }
        drop(watcher);
    }
}
