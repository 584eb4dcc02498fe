//! Durable state through sqlx: a SQLite file by default, PostgreSQL when the URL says so.
//! Both dialects share the SQL below (`$n` placeholders, portable types: text ids, integer
//! milliseconds since the epoch); each has its own migrations folder for what differs.

mod request_log;

pub use request_log::{RequestLogRecord, RequestLogWriter};

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

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
}

/// A pool of either backend. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same query code against whichever pool this is: the body is compiled once per
/// backend with `$pool` bound to that backend's pool.
#[macro_export]
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}
pub use on_pool;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub name: String,
    pub key_prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Store::Postgres(pool)
        } else {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // WAL + NORMAL: a committed transaction survives a process crash; only an OS
                // crash can lose the last commits.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                // 1 MiB page cache per pooled connection (SQLite's default is 2 MiB): bounds
                // the store's memory at `max_connections` MiB however large the tables grow.
                .pragma("cache_size", "-1024");
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .connect_with(options)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Store::Sqlite(pool)
        };
        Ok(store)
    }

    /// A pool of one connection to the same database, for a single busy writer: its page
    /// cache stays warm (SQLite drops a connection's cache whenever another connection has
    /// committed, so rotating through a shared pool re-reads the pages it appends to) and
    /// its prepared statements stay with it. SQLite keeps this connection's statement
    /// journals in memory: a multi-row INSERT in a transaction would otherwise write one to
    /// a temporary file each time. Close it when done ([`Store::close`]).
    pub async fn dedicated(&self) -> Result<Store, StoreError> {
        // The pool's own settings (timeouts), one connection.
        Ok(match self {
            Store::Sqlite(pool) => Store::Sqlite(
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
            Store::Postgres(pool) => Store::Postgres(
                pool.options()
                    .clone()
                    .max_connections(1)
                    .min_connections(0)
                    .connect_with((*pool.connect_options()).clone())
                    .await?,
            ),
        })
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// Returns the tenant with this name, creating it if needed.
    pub async fn ensure_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        let id = format!("ten_{}", uuid::Uuid::now_v7().simple());
        on_pool!(self, p => sqlx::query(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(&id).bind(name).bind(now_ms()).execute(p).await.map(|_| ()))?;
        let id: String = on_pool!(self, p => sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
            .bind(name).fetch_one(p).await)?;
        Ok(Tenant {
            id,
            name: name.to_string(),
        })
    }

    /// The id of the tenant with this name, if there is one.
    pub async fn tenant_id_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            on_pool!(self, p => sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
            .bind(name).fetch_optional(p).await)?,
        )
    }

    pub async fn insert_key(
        &self,
        id: &str,
        tenant_id: &str,
        name: &str,
        key_hash: &str,
        key_prefix: &str,
    ) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, key_prefix, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id).bind(tenant_id).bind(name).bind(key_hash).bind(key_prefix).bind(now_ms())
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// The active (not revoked) key with this hash, with its tenant and the tenant's
    /// billing status (`active`, `past_due`, `limited`).
    pub async fn find_active_key(
        &self,
        key_hash: &str,
    ) -> Result<Option<(String, Tenant, String)>, StoreError> {
        const SQL: &str = "SELECT k.id, t.id, t.name, t.billing_status FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
                           WHERE k.key_hash = $1 AND k.revoked_at IS NULL";
        let row: Option<(String, String, String, String)> =
            on_pool!(self, p => sqlx::query_as(SQL).bind(key_hash).fetch_optional(p).await)?;
        Ok(row.map(|(key_id, id, name, status)| (key_id, Tenant { id, name }, status)))
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        const SQL: &str = "SELECT k.id, k.tenant_id, t.name AS tenant_name, k.name, k.key_prefix, k.created_at, k.revoked_at \
                           FROM api_keys k JOIN tenants t ON t.id = k.tenant_id ORDER BY k.created_at, k.id";
        type KeyTuple = (String, String, String, String, String, i64, Option<i64>);
        let rows: Vec<KeyTuple> = on_pool!(self, p => sqlx::query_as(SQL).fetch_all(p).await)?;
        let rows = rows
            .into_iter()
            .map(
                |(id, tenant_id, tenant_name, name, key_prefix, created_at, revoked_at)| {
                    ApiKeyRow {
                        id,
                        tenant_id,
                        tenant_name,
                        name,
                        key_prefix,
                        created_at,
                        revoked_at,
                    }
                },
            )
            .collect();
        Ok(rows)
    }

    /// Revokes a key by id or by its displayed prefix. Revoking twice is not an error.
    pub async fn revoke_key(&self, id_or_prefix: &str) -> Result<String, StoreError> {
        let found: Vec<String> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT id FROM api_keys WHERE id = $1 OR key_prefix = $1")
            .bind(id_or_prefix).fetch_all(p).await)?;
        let id = match found.as_slice() {
            [id] => id.clone(),
            [] => {
                return Err(StoreError::NotFound(format!(
                    "no API key with id or prefix `{id_or_prefix}`"
                )));
            }
            _ => {
                return Err(StoreError::Conflict(format!(
                    "`{id_or_prefix}` matches several keys; use the key id"
                )));
            }
        };
        on_pool!(self, p => sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms()).bind(&id).execute(p).await.map(|_| ()))?;
        Ok(id)
    }

    pub async fn count_request_log(&self) -> Result<i64, StoreError> {
        Ok(
            on_pool!(self, p => sqlx::query_scalar("SELECT COUNT(*) FROM request_log").fetch_one(p).await)?,
        )
    }
}
