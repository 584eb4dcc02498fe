//! What is known of the database right now, for readiness, metrics and failing fast.
//!
//! A probe (a ping and a one-row upsert, every `database.health_interval_ms`) tells whether
//! the database answers and takes writes; real writes report their outcome too
//! ([`super::Store::observe`]), since a one-row probe can succeed where a large write no
//! longer fits. For SQLite the free space of the file's filesystem is watched as well. While
//! the database is unreachable, paths that would each wait out the pool's acquire timeout
//! refuse at once instead ([`super::Store::check_up`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A write failure keeps the store "not writable" at least this long, unless a real write
/// succeeds sooner: a one-row probe that fits is no proof that a document will.
const WRITE_FAILURE_HOLD: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct StoreHealth {
    /// The SQLite file's folder (free-space checks); `None` for PostgreSQL.
    dir: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Why the last probe could not reach the database.
    unreachable: Option<String>,
    /// The last failed write and when; cleared by a successful real write.
    write_failure: Option<(Instant, String)>,
    /// Free bytes below the configured minimum (SQLite), with the amount.
    low_space: Option<u64>,
}

/// A snapshot for `/readyz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthReport {
    pub reachable: bool,
    pub writable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
}

impl StoreHealth {
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            state: Mutex::new(State::default()),
        }
    }

    /// Why the database cannot be used at all right now, if it cannot.
    pub fn down_reason(&self) -> Option<String> {
        self.state.lock().unreachable.clone()
    }

    pub fn report(&self) -> HealthReport {
        let state = self.state.lock();
        let writable = state.unreachable.is_none()
            && state.write_failure.is_none()
            && state.low_space.is_none();
        let error = state
            .unreachable
            .clone()
            .or_else(|| state.write_failure.as_ref().map(|(_, e)| e.clone()))
            .or_else(|| {
                state
                    .low_space
                    .map(|b| format!("only {b} bytes free on the database's filesystem"))
            });
        HealthReport {
            reachable: state.unreachable.is_none(),
            writable,
            error,
            free_bytes: self.dir.as_ref().and_then(|d| free_bytes(d)),
        }
    }

    /// Ready to serve: reachable and taking writes.
    pub fn is_ready(&self) -> bool {
        self.report().writable
    }

    pub(super) fn write_ok(&self) {
        let mut state = self.state.lock();
        if state.write_failure.take().is_some() {
            tracing::info!("store: writes succeed again");
        }
    }

    pub(super) fn write_failed(&self, error: &str) {
        let mut state = self.state.lock();
        if state.write_failure.is_none() {
            tracing::error!(%error, "store: a write failed; not ready until writes succeed");
        }
        state.write_failure = Some((Instant::now(), error.to_string()));
        metrics::counter!("qm_store_write_failures_total").increment(1);
    }

    /// Records one probe: whether the database answered, whether the probe's write took,
    /// and the free space left for SQLite.
    pub(super) fn probed(
        &self,
        reached: Result<(), String>,
        wrote: Result<(), String>,
        min_free_bytes: u64,
    ) {
        let free = self.dir.as_ref().and_then(|d| free_bytes(d));
        let mut state = self.state.lock();
        match (&reached, &state.unreachable) {
            (Err(e), None) => tracing::error!(error = %e, "store: the database is unreachable"),
            (Ok(()), Some(_)) => tracing::info!("store: the database is reachable again"),
            _ => {}
        }
        state.unreachable = reached.err();
        match wrote {
            Err(e) if state.unreachable.is_none() => {
                state.write_failure = Some((Instant::now(), e));
            }
            Ok(()) => {
                if state
                    .write_failure
                    .as_ref()
                    .is_some_and(|(at, _)| at.elapsed() >= WRITE_FAILURE_HOLD)
                {
                    state.write_failure = None;
                    tracing::info!("store: writes succeed again");
                }
            }
            Err(_) => {}
        }
        state.low_space = free.filter(|&f| f < min_free_bytes);
        metrics::gauge!("qm_store_up").set(if state.unreachable.is_none() {
            1.0
        } else {
            0.0
        });
        let writable = state.unreachable.is_none()
            && state.write_failure.is_none()
            && state.low_space.is_none();
        metrics::gauge!("qm_store_writable").set(if writable { 1.0 } else { 0.0 });
        if let Some(f) = free {
            metrics::gauge!("qm_store_free_bytes").set(f as f64);
        }
    }
}

/// Free bytes (for unprivileged users) on the filesystem holding `dir`.
#[cfg(unix)]
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed struct to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes(_: &std::path::Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_failure_holds_until_a_real_write_succeeds() {
        let health = StoreHealth::new(None);
        assert!(health.is_ready());
        health.write_failed("database or disk is full");
        assert!(!health.is_ready());
        // A probe that fits does not clear it within the hold time...
        health.probed(Ok(()), Ok(()), 0);
        assert!(!health.is_ready());
        assert_eq!(
            health.report().error.as_deref(),
            Some("database or disk is full")
        );
        // ...a real write does.
        health.write_ok();
        assert!(health.is_ready());
    }

    #[test]
    fn unreachable_until_a_probe_reaches_it() {
        let health = StoreHealth::new(None);
        health.probed(Err("connection refused".into()), Err("x".into()), 0);
        assert_eq!(health.down_reason().as_deref(), Some("connection refused"));
        assert!(!health.report().reachable);
        health.probed(Ok(()), Ok(()), 0);
        assert!(health.down_reason().is_none());
        assert!(health.is_ready());
    }
}
