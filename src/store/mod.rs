//! Durable state through sqlx: a SQLite file by default, PostgreSQL when the URL says so.
//! Both dialects share the SQL below (`$n` placeholders, portable types: text ids, integer
//! milliseconds since the epoch); each has its own migrations folder for what differs.

mod health;
pub mod limits;
mod operators;
mod reports;
mod request_log;
mod responses;
mod sqlite;
mod tenants;

pub use health::StoreHealth;
pub use operators::{MfaRow, SessionRow};
pub use reports::{RequestSample, RouteCount, UsageGroup, UsageRow};
pub use request_log::{RequestLogOptions, RequestLogRecord, RequestLogStatus, RequestLogWriter};
pub use responses::{ResponseSaver, StoredResponse};
pub use tenants::{ApiKeyRow, Tenant, TenantRow};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::clock::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The store is known to be unreachable or failing writes right now: refused without
    /// waiting for a connection.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The database could not be reached or could not write (as opposed to a constraint
    /// or a missing row): a retry later may well succeed.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Db(e) => is_outage(e),
            _ => false,
        }
    }
}

/// Connection failures, pool timeouts and storage errors (disk full, I/O, a locked
/// database), not a query's own fault.
fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // SQLite: SQLITE_FULL (13), SQLITE_IOERR (10 and extended), SQLITE_BUSY (5),
            // SQLITE_LOCKED (6), SQLITE_CANTOPEN (14), SQLITE_READONLY (8). PostgreSQL:
            // class 08 (connection), 53 (insufficient resources), 57P (operator
            // intervention: shutdown), 58 (system error).
            let code = db.code().unwrap_or_default();
            let primary = code.parse::<i64>().ok().map(|c| c & 0xff);
            matches!(primary, Some(5 | 6 | 8 | 10 | 13 | 14))
                || ["08", "53", "57P", "58"]
                    .iter()
                    .any(|p| code.starts_with(p))
        }
        _ => false,
    }
}

/// A pool of either backend.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The database: a pool of either backend and what is known of its health. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    health: Arc<StoreHealth>,
}

/// Runs the same query code against whichever pool this is: the body is compiled once per
/// backend with `$pool` bound to that backend's pool.
#[macro_export]
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.pool() {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub use on_pool;

/// How the store connects (`[database]`).
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    /// Longest a query waits for a pooled connection before failing.
    pub acquire_timeout: Duration,
}

impl ConnectOptions {
    pub fn new(max_connections: u32) -> Self {
        Self {
            max_connections,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_with(url, &ConnectOptions::new(max_connections)).await
    }

    pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Self, StoreError> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect(url)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Pool::Postgres(pool)
        } else {
            let connect = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // WAL + NORMAL: a committed transaction survives a process crash; only an OS
                // crash can lose the last commits.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                // 1 MiB page cache per pooled connection (SQLite's default is 2 MiB): bounds
                // the store's memory at `max_connections` MiB however large the tables grow.
                .pragma("cache_size", "-1024");
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .after_release(|conn, _| Box::pin(sqlite::release_check(conn)))
                .connect_with(connect)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Pool::Sqlite(pool)
        };
        let health = Arc::new(StoreHealth::new(match &pool {
            Pool::Sqlite(p) => sqlite::database_dir(p),
            Pool::Postgres(_) => None,
        }));
        Ok(Store { pool, health })
    }

    /// A store over an existing pool (tests, tools).
    pub fn from_pool(pool: Pool) -> Self {
        let dir = match &pool {
            Pool::Sqlite(p) => sqlite::database_dir(p),
            Pool::Postgres(_) => None,
        };
        Store {
            pool,
            health: Arc::new(StoreHealth::new(dir)),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The SQLite database file (`None` for PostgreSQL or an in-memory database).
    pub fn file(&self) -> Option<std::path::PathBuf> {
        match &self.pool {
            Pool::Sqlite(p) => sqlite::database_file(p),
            Pool::Postgres(_) => None,
        }
    }

    /// What is known of the database's health (kept current by [`Store::watch_health`]).
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// Refuses at once, without waiting for a connection, while the database is known to be
    /// down; for paths that would otherwise each wait out the pool's acquire timeout.
    pub fn check_up(&self) -> Result<(), StoreError> {
        match self.health.down_reason() {
            None => Ok(()),
            Some(why) => Err(StoreError::Unavailable(why)),
        }
    }

    /// Notes the outcome of a write: a failed one marks the store as failing writes (and
    /// so not ready) until a later write or probe succeeds.
    pub fn observe<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.health.write_ok(),
            Err(e) if e.is_outage() => self.health.write_failed(&e.to_string()),
            Err(_) => {}
        }
        result
    }

    /// A pool of one connection to the same database, for a single busy writer: its page
    /// cache stays warm (SQLite drops a connection's cache whenever another connection has
    /// committed, so rotating through a shared pool re-reads the pages it appends to) and
    /// its prepared statements stay with it. SQLite keeps this connection's statement
    /// journals in memory: a multi-row INSERT in a transaction would otherwise write one to
    /// a temporary file each time. Close it when done ([`Store::close`]). It shares this
    /// store's health.
    pub async fn dedicated(&self) -> Result<Store, StoreError> {
        // The pool's own settings (timeouts, the release check), one connection.
        let pool = match &self.pool {
            Pool::Sqlite(pool) => Pool::Sqlite(
                pool.options()
                    .clone()
                    .max_connections(1)
                    .min_connections(0)
                    .connect_with(
                        (*pool.connect_options())
                            .clone()
                            .pragma("temp_store", "memory"),
                    )
                    .await?,
            ),
            Pool::Postgres(pool) => Pool::Postgres(
                pool.options()
                    .clone()
                    .max_connections(1)
                    .min_connections(0)
                    .connect_with((*pool.connect_options()).clone())
                    .await?,
            ),
        };
        Ok(Store {
            pool,
            health: self.health.clone(),
        })
    }

    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// A real write (an upsert of one row), as the health probe makes it.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO store_probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = excluded.at")
            .bind(now_ms()).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// Probes the database every `interval` until `shutdown`, keeping [`Store::health`]
    /// current (and the `qm_store_*` gauges).
    pub async fn watch_health(
        self,
        interval: Duration,
        min_free_bytes: u64,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let patience = interval.max(Duration::from_millis(500));
        loop {
            let reached = match tokio::time::timeout(patience, self.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {} ms", patience.as_millis())),
            };
            let wrote = match &reached {
                Ok(()) => match tokio::time::timeout(patience, self.probe_write()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("a write took over {} ms", patience.as_millis())),
                },
                Err(e) => Err(e.clone()),
            };
            self.health.probed(reached, wrote, min_free_bytes);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    pub async fn count_request_log(&self) -> Result<i64, StoreError> {
        Ok(
            on_pool!(self, p => sqlx::query_scalar("SELECT COUNT(*) FROM request_log").fetch_one(p).await)?,
        )
    }
}
