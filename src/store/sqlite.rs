//! SQLite specifics: a pooled connection is never handed out again while it is inside a
//! transaction.
//!
//! When SQLite fails a statement or a COMMIT with a storage error (disk full, I/O), it may
//! or may not have rolled the transaction back itself, and sqlx's own count of open
//! transactions can then disagree with SQLite's: the connection goes back to the pool still
//! inside a write transaction (holding the write lock, so every other connection gets
//! "database is locked"), or counted as inside one when it is not (so the next `BEGIN`
//! becomes a `SAVEPOINT` and the next "commit" only releases it). Either way writes are
//! lost or blocked long after the disk has space again. The check below closes such a
//! connection on release (closing rolls back whatever it held) and the pool opens a fresh
//! one: the store heals itself once the cause is gone.

use std::path::PathBuf;

use sqlx::{Connection, SqliteConnection, SqlitePool};

/// `Ok(true)` to keep the connection, `Ok(false)` to close it.
pub(super) async fn release_check(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    if conn.is_in_transaction() {
        tracing::warn!("store: a connection came back inside a transaction; closing it");
        metrics::counter!("qm_store_connections_reset_total").increment(1);
        return Ok(false);
    }
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is locked for us and valid while `handle` lives; the call only
    // reads the connection's autocommit flag.
    let autocommit =
        unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) } != 0;
    if !autocommit {
        tracing::warn!("store: a connection was left inside a transaction; closing it");
        metrics::counter!("qm_store_connections_reset_total").increment(1);
    }
    Ok(autocommit)
}

/// The database file; `None` in memory.
pub(super) fn database_file(pool: &SqlitePool) -> Option<PathBuf> {
    let file = pool.connect_options().get_filename().to_path_buf();
    let name = file.to_string_lossy();
    if name.is_empty() || name.starts_with(":memory:") || name.starts_with("file::memory") {
        return None;
    }
    Some(file)
}

/// The folder holding the database file (for free-space checks); `None` in memory.
pub(super) fn database_dir(pool: &SqlitePool) -> Option<PathBuf> {
    let dir = database_file(pool)?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    Some(if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    })
}
