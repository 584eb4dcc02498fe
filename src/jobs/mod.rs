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
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{Pool, Store, StoreError, now_ms, on_pool};

mod housekeeping;

pub use housekeeping::HousekeepingJob;

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

/// Runs handlers for claimed jobs until shutdown.
pub struct JobRunner {
    queue: JobQueue,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl JobRunner {
    pub fn new(queue: JobQueue) -> Self {
        Self {
            queue,
            handlers: HashMap::new(),
        }
    }

    pub fn register(&mut self, kind: &str, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind.to_string(), handler);
    }

    /// Polls and runs jobs until `shutdown`; then waits up to `grace` for running jobs
    /// (a job cut off there keeps its lease and runs again later: at least once).
    pub fn spawn(self, shutdown: CancellationToken, grace: Duration) -> JoinHandle<()> {
        tokio::spawn(async move { self.run(shutdown, grace).await })
    }

    async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let config = self.queue.config.clone();
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let handlers = Arc::new(self.handlers);
        let queue = self.queue;
        let mut tasks = tokio::task::JoinSet::new();
        let poll = Duration::from_millis(config.poll_interval_ms.max(10));
        loop {
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            let claimed = if free == 0 {
                vec![]
            } else {
                match queue.claim(free).await {
                    Ok(jobs) => jobs,
                    Err(e) => {
                        tracing::warn!(error = %e, "jobs: claim failed");
                        vec![]
                    }
                }
            };
            let full = claimed.len() == free && free > 0;
            for job in claimed {
                let permit = slots.clone().acquire_owned().await.expect("semaphore open");
                let (queue, handlers) = (queue.clone(), handlers.clone());
                tasks.spawn(async move {
                    execute(&queue, &handlers, job).await;
                    drop(permit);
                });
            }
            if full {
                // There may be more due: wait only for a free slot.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = slots.clone().acquire_owned() => {}
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = queue.notify.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                running = tasks.len(),
                "jobs: still running after the grace period; they run again after their lease"
            );
            tasks.abort_all();
        }
    }
}

async fn execute(queue: &JobQueue, handlers: &HashMap<String, Arc<dyn JobHandler>>, job: JobRow) {
    let started = std::time::Instant::now();
    let span = tracing::info_span!("job", id = %job.id, kind = %job.kind, attempt = job.attempts);
    let outcome = match handlers.get(&job.kind) {
        None => Err(JobError::Permanent(format!(
            "no handler for job kind `{}`",
            job.kind
        ))),
        // Claimed once more than allowed: the process died while running its last attempt.
        Some(_) if job.attempts > job.max_attempts => Err(JobError::Permanent(format!(
            "lease lapsed on the last of {} attempts (the process died while running it)",
            job.max_attempts
        ))),
        Some(handler) => {
            // Renew the lease while the handler runs.
            let renew_every = Duration::from_millis((queue.config.lease_ms / 3).max(10));
            let run = handler.run(&job);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = tokio::time::sleep(renew_every) => {
                        match queue.renew(&job.id).await {
                            Ok(true) => {}
                            Ok(false) => tracing::warn!(parent: &span, "jobs: lease lost to another worker"),
                            Err(e) => tracing::warn!(parent: &span, error = %e, "jobs: lease renewal failed"),
                        }
                    }
                }
            }
        }
    };
    let kind = job.kind.clone();
    match outcome {
        Ok(()) => {
            if let Err(e) = queue.complete(&job.id).await {
                tracing::error!(parent: &span, error = %e, "jobs: could not mark done; it will run again");
            }
            metrics::counter!("qm_jobs_total", "kind" => kind, "outcome" => "done").increment(1);
            tracing::info!(parent: &span, ms = started.elapsed().as_millis() as u64, "job done");
        }
        Err(error) => match queue.fail(&job, &error).await {
            Ok(status) => {
                metrics::counter!("qm_jobs_total", "kind" => kind, "outcome" => if status == "dead" { "dead" } else { "retry" })
                    .increment(1);
                if status == "dead" {
                    tracing::error!(parent: &span, error = %error, "job moved to the dead-letter queue");
                } else {
                    tracing::warn!(parent: &span, error = %error, "job failed; will retry");
                }
            }
            Err(e) => {
                tracing::error!(parent: &span, error = %e, job_error = %error, "jobs: could not record failure")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn queue(config: JobsConfig) -> (tempfile::TempDir, JobQueue) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("q.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        (dir, JobQueue::new(store, config))
    }

    #[tokio::test]
    async fn backoff_is_bounded_and_grows() {
        let q = JobQueue {
            store: Store::from_pool(crate::store::Pool::Sqlite(
                sqlx::sqlite::SqlitePool::connect_lazy("sqlite::memory:").unwrap(),
            )),
            config: Arc::new(JobsConfig {
                backoff_base_ms: 100,
                backoff_max_ms: 1_000,
                ..Default::default()
            }),
            notify: Arc::new(Notify::new()),
            worker_id: "w".into(),
        };
        for attempt in 1..50 {
            let cap = (100u64 << (attempt - 1).min(40)).min(1_000);
            for _ in 0..20 {
                assert!(q.backoff_ms(attempt) <= cap);
            }
        }
        // Jitter: not always the same value.
        let draws: std::collections::HashSet<u64> = (0..50).map(|_| q.backoff_ms(5)).collect();
        assert!(draws.len() > 5);
    }

    #[tokio::test]
    async fn dedupe_delay_claim_retry_dead_and_redrive() {
        let (_dir, q) = queue(JobsConfig {
            backoff_base_ms: 1,
            backoff_max_ms: 1,
            max_attempts: 2,
            ..Default::default()
        })
        .await;
        assert!(q.enqueue(NewJob::new("k", &1).dedupe("a")).await.unwrap());
        assert!(!q.enqueue(NewJob::new("k", &2).dedupe("a")).await.unwrap());
        assert!(
            q.enqueue(NewJob::new("k", &3).delay_ms(60_000))
                .await
                .unwrap()
        );
        let claimed = q.claim(10).await.unwrap();
        assert_eq!(claimed.len(), 1, "the delayed job is not due");
        assert_eq!(claimed[0].payload, "1");
        assert_eq!(claimed[0].attempts, 1);
        assert!(
            q.claim(10).await.unwrap().is_empty(),
            "running jobs are not claimed twice"
        );
        assert_eq!(
            q.fail(&claimed[0], &JobError::Retry("x".into()))
                .await
                .unwrap(),
            "queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let again = q.claim(10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 2);
        assert_eq!(
            q.fail(&again[0], &JobError::Retry("boom".into()))
                .await
                .unwrap(),
            "dead"
        );
        let dead = q.list("dead", 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].last_error.as_deref(), Some("boom"));
        assert_eq!(q.redrive(Some(&dead[0].id)).await.unwrap(), 1);
        let redriven = q.claim(10).await.unwrap();
        assert_eq!(redriven.len(), 1);
        assert_eq!(
            redriven[0].attempts, 1,
            "a re-driven job gets fresh attempts"
        );
        q.complete(&redriven[0].id).await.unwrap();
        assert_eq!(
            q.get(&redriven[0].id).await.unwrap().unwrap().status,
            "done"
        );
    }

    #[tokio::test]
    async fn permanent_errors_skip_retries() {
        let (_dir, q) = queue(JobsConfig::default()).await;
        q.enqueue(NewJob::new("k", &"x")).await.unwrap();
        let job = q.claim(1).await.unwrap().remove(0);
        assert_eq!(
            q.fail(&job, &JobError::Permanent("bad".into()))
                .await
                .unwrap(),
            "dead"
        );
    }

    #[tokio::test]
    async fn lapsed_lease_is_claimed_again() {
        let (_dir, q) = queue(JobsConfig {
            lease_ms: 20,
            ..Default::default()
        })
        .await;
        q.enqueue(NewJob::new("k", &"x")).await.unwrap();
        let first = q.claim(1).await.unwrap();
        assert_eq!(first.len(), 1);
        tokio::time::sleep(Duration::from_millis(40)).await;
        // Another worker (a restarted process) takes it over.
        let other = JobQueue::new(q.store.clone(), (*q.config).clone());
        let second = other.claim(1).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].attempts, 2);
        // The first worker's late completion does not count: it no longer holds the job.
        q.complete(&first[0].id).await.unwrap();
        assert_eq!(
            q.get(&first[0].id).await.unwrap().unwrap().status,
            "running"
        );
    }
}
