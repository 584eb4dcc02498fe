//! Limit counters shared by every replica on one PostgreSQL database: per scope, kind and
//! window, what is used (spent, plus allowances replicas hold). A replica takes allowance in
//! leases (`lease`) and gives back what it did not use (`give_back`); each is one statement
//! that locks the counter's row, so concurrent replicas never take more than is left but for
//! the one lease that crosses the limit, which is at most what its request needs.

use super::{Pool, Store, StoreError};
use crate::clock::now_ms;

/// One counter: a scope (`tenant:ID`, `key:ID`), a kind of limit and its window.
#[derive(Debug, Clone, Copy)]
pub struct CounterKey<'a> {
    pub scope: &'a str,
    /// `requests`, `tokens`, `usd_day`, `usd_month`.
    pub kind: &'static str,
    /// The minute, day or month index.
    pub window: i64,
}

/// What a counter starts at in a new window: zero, or the spend the request log holds for
/// the scope since `since_ms` (a budget's day or month).
#[derive(Debug, Clone, Copy)]
pub enum CounterStart<'a> {
    Zero,
    LoggedSpend {
        /// `tenant_id`, `key_id` or `user_id`.
        column: &'static str,
        id: &'a str,
        /// For a user: the tenant whose user it is.
        within_tenant: Option<&'a str>,
        since_ms: i64,
    },
}

/// A lease asked for: at least `need`, up to `chunk`, under `limit`.
#[derive(Debug, Clone, Copy)]
pub struct LeaseAsk {
    pub limit: f64,
    pub need: f64,
    pub chunk: f64,
}

/// The answer: what was granted (0: the limit is used up), and the counter after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lease {
    pub granted: f64,
    pub used: f64,
}

fn postgres(store: &Store) -> Result<&sqlx::PgPool, StoreError> {
    match store.pool() {
        Pool::Postgres(p) => Ok(p),
        Pool::Sqlite(_) => Err(StoreError::Conflict(
            "shared limit counters need PostgreSQL".into(),
        )),
    }
}

impl Store {
    /// Makes the counter exist (once per window; racing replicas make it once).
    pub async fn start_counter(
        &self,
        key: CounterKey<'_>,
        start: CounterStart<'_>,
    ) -> Result<(), StoreError> {
        let pool = postgres(self)?;
        self.check_up()?;
        let now = now_ms();
        match start {
            CounterStart::Zero => {
                sqlx::query(
                    "INSERT INTO limit_counters (scope, kind, window_start, used, updated_at) \
                     VALUES ($1, $2, $3, 0, $4) ON CONFLICT DO NOTHING",
                )
                .bind(key.scope)
                .bind(key.kind)
                .bind(key.window)
                .bind(now)
                .execute(pool)
                .await?;
            }
            CounterStart::LoggedSpend {
                column,
                id,
                within_tenant,
                since_ms,
            } => {
                debug_assert!(matches!(column, "tenant_id" | "key_id" | "user_id"));
                let sql = format!(
                    "INSERT INTO limit_counters (scope, kind, window_start, used, updated_at) \
                     SELECT $1, $2, $3, CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION), $4 \
                     FROM request_log WHERE {column} = $5 AND created_at >= $6 AND ($7 = '' OR tenant_id = $7) \
                     ON CONFLICT DO NOTHING"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(key.scope)
                    .bind(key.kind)
                    .bind(key.window)
                    .bind(now)
                    .bind(id)
                    .bind(since_ms)
                    .bind(within_tenant.unwrap_or(""))
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Takes a lease: `max(need, min(chunk, (limit - used) / 4))` while `used < limit`, so
    /// leases shrink as the limit nears and the last one is only what its request needs.
    /// `None`: the counter does not exist yet (call [`Store::start_counter`]).
    pub async fn lease(
        &self,
        key: CounterKey<'_>,
        ask: LeaseAsk,
    ) -> Result<Option<Lease>, StoreError> {
        let pool = postgres(self)?;
        self.check_up()?;
        let row: Option<(f64, f64)> = sqlx::query_as(
            "WITH cur AS (SELECT used FROM limit_counters \
                 WHERE scope = $1 AND kind = $2 AND window_start = $3 FOR UPDATE), \
             g AS (SELECT CASE WHEN cur.used < $4 \
                 THEN GREATEST($5, LEAST($6, ($4 - cur.used) / 4)) ELSE 0 END AS grant_ FROM cur) \
             UPDATE limit_counters c SET used = c.used + g.grant_, updated_at = $7 FROM g \
             WHERE c.scope = $1 AND c.kind = $2 AND c.window_start = $3 \
             RETURNING g.grant_, c.used",
        )
        .bind(key.scope)
        .bind(key.kind)
        .bind(key.window)
        .bind(ask.limit)
        .bind(ask.need)
        .bind(ask.chunk)
        .bind(now_ms())
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|(granted, used)| Lease { granted, used }))
    }

    /// Gives back an unused allowance (a negative `amount`: spend beyond what was leased).
    pub async fn give_back(&self, key: CounterKey<'_>, amount: f64) -> Result<(), StoreError> {
        let pool = postgres(self)?;
        self.check_up()?;
        sqlx::query(
            "UPDATE limit_counters SET used = GREATEST(used - $4, 0), updated_at = $5 \
             WHERE scope = $1 AND kind = $2 AND window_start = $3",
        )
        .bind(key.scope)
        .bind(key.kind)
        .bind(key.window)
        .bind(amount)
        .bind(now_ms())
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Deletes counters whose windows are long over: a minute's after an hour untouched, a
    /// day's after two days, a month's after 62 days.
    pub async fn purge_counters(&self) -> Result<u64, StoreError> {
        let pool = postgres(self)?;
        let now = now_ms();
        let done = sqlx::query(
            "DELETE FROM limit_counters WHERE              (kind IN ('requests', 'tokens') AND updated_at < $1)              OR (kind = 'usd_day' AND updated_at < $2) OR (kind = 'usd_month' AND updated_at < $3)",
        )
        .bind(now - 3_600_000)
        .bind(now - 2 * 86_400_000)
        .bind(now - 62 * 86_400_000)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    }
}
