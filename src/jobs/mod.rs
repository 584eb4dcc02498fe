//! A durable job queue in the store: enqueue (optionally delayed, optionally de-duplicated),
//! at-least-once execution under a lease, exponential backoff with full jitter, and a
//! dead-letter queue once `max_attempts` is spent.
//!
//! A worker claims due jobs in one statement (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so
//! replicas never claim the same row; SQLite: the single writer serialises claims), marks
//! them `running` with `locked_until = now + lease` and renews the lease while the job runs.
//! A process killed mid-job stops renewing: once the lease lapses the job is claimed again.
//! Handlers must therefore be idempotent (the Stripe handlers commit their effects in one
//! transaction with a "processed" mark; outbound calls carry idempotency keys).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::store::{Pool, Store, StoreError, on_pool};

mod housekeeping;
mod runner;

pub use housekeeping::HousekeepingJob;
pub use runner::JobRunner;

/// The daily clean-up job's kind.
pub const JOB_HOUSEKEEPING: &str = "housekeeping";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    pub enabled: bool,
    /// Jobs run at the same time by this process.
    pub concurrency: usize,
    /// How often the queue is polled when nothing wakes it.
    pub poll_interval_ms: u64,
    /// A running job is re-run by any worker once its lease lapses without renewal.
    pub lease_ms: u64,
    pub max_attempts: u32,
    /// Backoff before attempt n+1: a random delay in [0, min(max, base * 2^(n-1))].
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Finished jobs are kept this long (they de-duplicate re-enqueues), then purged.
    pub keep_done_secs: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 4,
            poll_interval_ms: 500,
            lease_ms: 30_000,
            max_attempts: 8,
            backoff_base_ms: 1_000,
            backoff_max_ms: 3_600_000,
            keep_done_secs: 7 * 86_400,
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub kind: String,
    pub payload: String,
    pub max_attempts: i64,
    pub run_at: i64,
    /// At most one job with this key exists (queued, running, done or dead).
    pub dedupe_key: Option<String>,
    pub created_at: i64,
}

impl NewJob {
    pub fn new(kind: &str, payload: &impl Serialize) -> Self {
        let now = now_ms();
        Self {
            id: format!("job_{}", uuid::Uuid::now_v7().simple()),
            kind: kind.to_string(),
            payload: serde_json::to_string(payload).expect("job payloads serialize"),
            max_attempts: 0,
            run_at: now,
            dedupe_key: None,
            created_at: now,
        }
    }

    pub fn delay_ms(mut self, ms: i64) -> Self {
        self.run_at = self.created_at + ms.max(0);
        self
    }

    pub fn at(mut self, run_at_ms: i64) -> Self {
        self.run_at = run_at_ms;
        self
    }

    pub fn dedupe(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn max_attempts(mut self, n: i64) -> Self {
        self.max_attempts = n;
        self
    }
}

/// The insert, shared by [`JobQueue::enqueue`] and [`enqueue_job!`] (inside a caller's
/// transaction). `max_attempts = 0` means the configured default, filled in by the caller.
pub const INSERT_SQL: &str = "INSERT INTO jobs (id, kind, payload, status, attempts, max_attempts, run_at, dedupe_key, created_at, updated_at) \
     VALUES ($1, $2, $3, 'queued', 0, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING";

/// Enqueues a [`NewJob`] on any executor (a pool or `&mut *tx`) of either dialect; evaluates
/// to `Result<bool, sqlx::Error>` (false: a job with the same dedupe key exists).
#[macro_export]
macro_rules! enqueue_job {
    ($exec:expr, $job:expr, $default_attempts:expr) => {{
        let job: &$crate::jobs::NewJob = $job;
        let attempts = if job.max_attempts > 0 {
            job.max_attempts
        } else {
            $default_attempts
        };
        sqlx::query($crate::jobs::INSERT_SQL)
            .bind(&job.id)
            .bind(&job.kind)
            .bind(&job.payload)
            .bind(attempts)
            .bind(job.run_at)
            .bind(&job.dedupe_key)
            .bind(job.created_at)
            .execute($exec)
            .await
            .map(|r| r.rows_affected() == 1)
    }};
}
pub use enqueue_job;

/// A job as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub last_error: Option<String>,
    pub dedupe_key: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl JobRow {
    /// The payload as `T`; a payload that does not parse will never run: a permanent error.
    pub fn parse_payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_str(&self.payload)
            .map_err(|e| JobError::Permanent(format!("bad payload for `{}`: {e}", self.kind)))
    }
}

const COLUMNS: &str = "id, kind, payload, status, attempts, max_attempts, run_at, last_error, dedupe_key, created_at, updated_at";

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (network, 5xx, lock contention).
    #[error("{0}")]
    Retry(String),
    /// Worth another attempt, not before this many milliseconds (a provider's Retry-After).
    #[error("{0}")]
    RetryAfter(String, u64),
    /// Will never succeed (malformed payload): straight to the dead-letter queue.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        JobError::Retry(format!("store: {e}"))
    }
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Retry(format!("store: {e}"))
    }
}

#[async_trait]
pub trait JobHandler: Send + Sync {
    async fn run(&self, job: &JobRow) -> Result<(), JobError>;
}

/// Enqueue, claim, finish; the dead-letter queue.
#[derive(Clone)]
pub struct JobQueue {
    store: Store,
    config: Arc<JobsConfig>,
    notify: Arc<Notify>,
    worker_id: Arc<str>,
}

impl JobQueue {
    pub fn new(store: Store, config: JobsConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
            notify: Arc::new(Notify::new()),
            worker_id: format!("wrk_{}", uuid::Uuid::now_v7().simple()).into(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn default_attempts(&self) -> i64 {
        i64::from(self.config.max_attempts.max(1))
    }

    /// Returns false when a job with the same dedupe key already exists.
    pub async fn enqueue(&self, job: NewJob) -> Result<bool, StoreError> {
        let attempts = self.default_attempts();
        let inserted = on_pool!(&self.store, p => enqueue_job!(p, &job, attempts))?;
        if inserted {
            metrics::counter!("qm_jobs_enqueued_total", "kind" => job.kind.clone()).increment(1);
            self.notify.notify_one();
        }
        Ok(inserted)
    }

    /// Wakes the workers (after a job was enqueued inside another transaction).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Claims up to `n` due jobs (queued and due, or running with a lapsed lease).
    pub async fn claim(&self, n: usize) -> Result<Vec<JobRow>, StoreError> {
        let now = now_ms();
        let until = now + self.config.lease_ms as i64;
        // Replicas on PostgreSQL skip rows another worker is claiming; SQLite has one writer.
        let lock = match self.store.pool() {
            Pool::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Pool::Sqlite(_) => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = $1, locked_until = $2, updated_at = $3 \
             WHERE id IN (SELECT id FROM jobs WHERE (status = 'queued' AND run_at <= $3) OR (status = 'running' AND locked_until < $3) \
                          ORDER BY run_at LIMIT $4{lock}) \
             RETURNING {COLUMNS}"
        );
        let rows: Vec<JobRow> = on_pool!(&self.store, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(&*self.worker_id)
            .bind(until)
            .bind(now)
            .bind(n as i64)
            .fetch_all(p)
            .await)?;
        Ok(rows)
    }

    /// Extends the lease of a job this worker runs; false if it is no longer ours.
    pub async fn renew(&self, id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let until = now + self.config.lease_ms as i64;
        let n = on_pool!(&self.store, p => sqlx::query(
            "UPDATE jobs SET locked_until = $1, updated_at = $2 WHERE id = $3 AND locked_by = $4 AND status = 'running'")
            .bind(until).bind(now).bind(id).bind(&*self.worker_id)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    pub async fn complete(&self, id: &str) -> Result<(), StoreError> {
        let now = now_ms();
        on_pool!(&self.store, p => sqlx::query(
            "UPDATE jobs SET status = 'done', locked_by = NULL, locked_until = NULL, last_error = NULL, updated_at = $1 \
             WHERE id = $2 AND locked_by = $3")
            .bind(now).bind(id).bind(&*self.worker_id)
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Schedules a retry with backoff, or moves the job to the dead-letter queue.
    pub async fn fail(&self, job: &JobRow, error: &JobError) -> Result<&'static str, StoreError> {
        let now = now_ms();
        let message: String = error.to_string().chars().take(2000).collect();
        let dead = matches!(error, JobError::Permanent(_)) || job.attempts >= job.max_attempts;
        let (status, run_at) = if dead {
            ("dead", job.run_at)
        } else {
            let wait = match error {
                JobError::RetryAfter(_, ms) => self.backoff_ms(job.attempts).max(*ms),
                _ => self.backoff_ms(job.attempts),
            };
            ("queued", now + wait as i64)
        };
        on_pool!(&self.store, p => sqlx::query(
            "UPDATE jobs SET status = $1, run_at = $2, last_error = $3, locked_by = NULL, locked_until = NULL, updated_at = $4 \
             WHERE id = $5 AND locked_by = $6")
            .bind(status).bind(run_at).bind(&message).bind(now).bind(&job.id).bind(&*self.worker_id)
            .execute(p).await.map(|_| ()))?;
        Ok(status)
    }

    /// Full jitter: uniform in [0, min(max, base * 2^(attempt-1))].
    pub fn backoff_ms(&self, attempt: i64) -> u64 {
        let exp = attempt.clamp(1, 40) as u32 - 1;
        let cap = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << exp.min(40))
            .min(self.config.backoff_max_ms);
        rand::random_range(0..=cap)
    }

    pub async fn get(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
        Ok(
            on_pool!(&self.store, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_optional(p).await)?,
        )
    }

    pub async fn list(&self, status: &str, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE status = $1 ORDER BY updated_at DESC, id LIMIT $2"
        );
        Ok(
            on_pool!(&self.store, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(status).bind(limit).fetch_all(p).await)?,
        )
    }

    /// Puts dead jobs (one, or all when `id` is None) back in the queue with fresh attempts.
    pub async fn redrive(&self, id: Option<&str>) -> Result<u64, StoreError> {
        let now = now_ms();
        let n = match id {
            Some(id) => on_pool!(&self.store, p => sqlx::query(
                "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $1, updated_at = $1 WHERE id = $2 AND status = 'dead'")
                .bind(now).bind(id).execute(p).await.map(|r| r.rows_affected()))?,
            None => on_pool!(&self.store, p => sqlx::query(
                "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $1, updated_at = $1 WHERE status = 'dead'")
                .bind(now).execute(p).await.map(|r| r.rows_affected()))?,
        };
        if n > 0 {
            self.notify.notify_one();
        }
        Ok(n)
    }

    /// Deletes finished jobs older than `keep_done_secs`.
    pub async fn purge_done(&self) -> Result<u64, StoreError> {
        let before = now_ms() - self.config.keep_done_secs as i64 * 1000;
        Ok(on_pool!(&self.store, p => sqlx::query(
            "DELETE FROM jobs WHERE status = 'done' AND updated_at < $1")
            .bind(before).execute(p).await.map(|r| r.rows_affected()))?)
    }

    pub async fn counts(&self) -> Result<HashMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT status, COUNT(*) FROM jobs GROUP BY status").fetch_all(p).await)?;
        Ok(rows.into_iter().collect())
    }
}

#[cfg(test)]
mod tests;
