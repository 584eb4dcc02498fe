//! Hot reload: the config file is re-read when it changes (polled every
//! `server.config_poll_secs`) and on SIGHUP, validated whole, and handed to the running
//! gateway to swap in as one snapshot; a file that does not load is logged and the running
//! config kept (`qm_config_reloads_total{outcome}`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Config;
use crate::route::live::file_stamp;

/// What takes a freshly loaded config (the app: it swaps the hot-reloadable settings).
#[async_trait::async_trait]
pub trait Reload: Send + Sync {
    /// Applies `config`, or says why not (the running config stays).
    async fn apply(&self, config: Config) -> Result<(), String>;

    /// Told of every attempt's outcome, a file that did not load included (the app writes
    /// it to the audit log).
    fn reloaded(&self, _path: &Path, _outcome: &Result<(), String>) {}
}

/// Loads and validates the file, then applies it.
pub async fn reload_from(path: &Path, target: &dyn Reload) -> Result<(), String> {
    let config = Config::load(path, true).map_err(|e| e.to_string())?;
    target.apply(config).await
}

/// Watches `path` until `shutdown`: polled every `poll_secs` (0: SIGHUP only).
pub async fn watch(
    path: PathBuf,
    poll_secs: u64,
    target: impl Reload,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last = file_stamp(&path);
    loop {
        let hup_fired = async {
            #[cfg(unix)]
            if let Some(h) = hup.as_mut() {
                h.recv().await;
                return;
            }
            std::future::pending::<()>().await
        };
        let tick = async {
            if poll_secs == 0 {
                std::future::pending::<()>().await
            }
            tokio::time::sleep(Duration::from_secs(poll_secs)).await
        };
        let forced = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup_fired => true,
            _ = tick => false,
        };
        let now = file_stamp(&path);
        if !forced && now == last {
            continue;
        }
        last = now;
        let outcome = reload_from(&path, &target).await;
        target.reloaded(&path, &outcome);
        match outcome {
            Ok(()) => {
                metrics::counter!("qm_config_reloads_total", "outcome" => "applied").increment(1);
                tracing::info!(path = %path.display(), "config reloaded");
            }
            Err(e) => {
                metrics::counter!("qm_config_reloads_total", "outcome" => "rejected").increment(1);
                tracing::error!(path = %path.display(), error = %e, "config reload rejected; keeping the running config");
            }
        }
    }
}
