//! The request log, written off the hot path: handlers hand a record to a bounded channel,
//! one writer task inserts them in batches. On shutdown the channel is closed and drained,
//! so every record handed over before that is written.
//!
//! The writer waits `flush_interval` after the first record of a batch for more to arrive:
//! at 1,000 requests/s that is one transaction per ~50 rows instead of one per row, which
//! takes the database (and its thread's wake-ups) off the request path's CPU. It writes on
//! a connection of its own, whose page cache and prepared statements stay warm.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Store, StoreError, on_pool};

/// One finished (or failed, or abandoned) request.
#[derive(Debug, Clone)]
pub struct RequestLogRecord {
    pub request_id: String,
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    pub model: String,
    pub provider: Option<String>,
    pub stream: bool,
    /// `ok`, `error`, `client_disconnected`.
    pub status: &'static str,
    pub http_status: u16,
    pub error_code: Option<String>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub created_at: i64,
    /// What the request cost at the configured prices.
    pub cost_usd: f64,
    /// What a cache hit saved (0 otherwise).
    pub saved_usd: f64,
    pub route_tier: Option<String>,
    pub route_reason: Option<&'static str>,
}

/// The sending side; cheap to clone.
#[derive(Clone, Debug)]
pub struct RequestLogWriter {
    tx: mpsc::Sender<RequestLogRecord>,
}

impl RequestLogWriter {
    /// Starts the writer task. The task ends once every sender is dropped or `close` was
    /// called and the channel is drained.
    pub fn spawn(
        store: Store,
        capacity: usize,
        batch_size: usize,
        flush_interval: Duration,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        let handle = tokio::spawn(run_writer(store, rx, batch_size, flush_interval));
        (Self { tx }, handle)
    }

    /// Hands a record to the writer, waiting for room when the channel is full (back-pressure
    /// instead of loss). Fails only after shutdown closed the channel.
    pub async fn send(&self, record: RequestLogRecord) {
        metrics::gauge!("qm_request_log_queue_depth")
            .set((self.tx.max_capacity() - self.tx.capacity()) as f64);
        if self.tx.send(record).await.is_err() {
            tracing::error!("request log record after shutdown: dropped");
            metrics::counter!("qm_request_log_dropped_total").increment(1);
        }
    }

    /// For code that cannot await (drop guards): sends from a spawned task.
    pub fn send_detached(&self, record: RequestLogRecord) {
        let this = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { this.send(record).await });
            }
            Err(_) => {
                let _ = self.tx.try_send(record);
            }
        }
    }
}

async fn run_writer(
    store: Store,
    mut rx: mpsc::Receiver<RequestLogRecord>,
    batch_size: usize,
    flush_interval: Duration,
) {
    // The writer's own connection (see `Store::dedicated`); the shared pool if it cannot
    // be opened, which works the same, only slower.
    let own = store
        .dedicated()
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "request log: no connection of its own; writing through the shared pool"))
        .ok();
    let store = own.as_ref().unwrap_or(&store);
    let mut batch = Vec::with_capacity(batch_size);
    loop {
        batch.clear();
        if rx.recv_many(&mut batch, batch_size).await == 0 {
            break; // every sender gone and the channel drained
        }
        // Let more rows gather for this transaction. The writer sleeps rather than waiting
        // on the channel, so the rows that arrive meanwhile do not wake it one by one (a
        // wake-up per request on the gateway's worker threads). Once the channel is closed
        // (shutdown) nothing more can come: the rest is written without waiting.
        if batch.len() < batch_size && !flush_interval.is_zero() && !rx.is_closed() {
            tokio::time::sleep(flush_interval).await;
        }
        // Then write what is queued, a transaction per `batch_size` rows, for as long as
        // full batches are waiting (a backlog). A partial rest waits for the next interval:
        // chasing the few rows that arrived during a write would commit them one or two at
        // a time, each commit rewriting the same pages.
        loop {
            while batch.len() < batch_size {
                match rx.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            write_with_retries(store, &batch).await;
            if rx.len() < batch_size {
                break;
            }
            batch.clear();
        }
    }
    if let Some(own) = own {
        own.close().await;
    }
    tracing::debug!("request log writer drained");
}

/// A failed insert is retried a few times so a locked or restarting database does not lose
/// the batch; after that it is logged with its size.
async fn write_with_retries(store: &Store, batch: &[RequestLogRecord]) {
    let mut attempt = 0;
    loop {
        match insert_batch(store, batch).await {
            Ok(()) => {
                metrics::counter!("qm_request_log_written_total").increment(batch.len() as u64);
                return;
            }
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "request log insert failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, rows = batch.len(), "request log insert failed; rows dropped");
                metrics::counter!("qm_request_log_dropped_total").increment(batch.len() as u64);
                return;
            }
        }
    }
}

async fn insert_batch(store: &Store, batch: &[RequestLogRecord]) -> Result<(), StoreError> {
    // Multi-row INSERTs: a round trip to the database (for SQLite, a hop to its connection
    // thread and back) per statement of up to 64 rows instead of one per row.
    const HEAD: &str = "INSERT INTO request_log (id, request_id, tenant_id, key_id, model, provider, stream, status, \
        http_status, error_code, tokens_in, tokens_out, latency_ms, ttft_ms, created_at, logged_at, cost_usd, saved_usd, route_tier, route_reason) ";
    // `logged_at` is when the row is written (one writer, so it only grows): usage metering
    // reads by it, so a long stream that started in an earlier window is still counted.
    let logged_at = super::now_ms();
    on_pool!(store, pool => {
        // A batch is all or nothing: when it takes more than one statement they share a
        // transaction.
        let mut tx = if statement_chunks(batch).nth(1).is_some() {
            Some(pool.begin().await?)
        } else {
            None
        };
        for rows in statement_chunks(batch) {
            let mut insert = sqlx::QueryBuilder::new(HEAD);
            insert.push_values(rows, |mut row, r| {
                row.push_bind(format!("log_{}", uuid::Uuid::now_v7().simple()))
                    .push_bind(r.request_id.clone())
                    .push_bind(r.tenant_id.clone())
                    .push_bind(r.key_id.clone())
                    .push_bind(r.model.clone())
                    .push_bind(r.provider.clone())
                    .push_bind(r.stream)
                    .push_bind(r.status)
                    .push_bind(r.http_status as i32)
                    .push_bind(r.error_code.clone())
                    .push_bind(r.tokens_in as i64)
                    .push_bind(r.tokens_out as i64)
                    .push_bind(r.latency_ms)
                    .push_bind(r.ttft_ms)
                    .push_bind(r.created_at)
                    .push_bind(logged_at)
                    .push_bind(r.cost_usd)
                    .push_bind(r.saved_usd)
                    .push_bind(r.route_tier.clone())
                    .push_bind(r.route_reason);
            });
            // Kept prepared: statements come in a few sizes only (see `statement_chunks`), so
            // each connection caches at most a handful of them, and SQLite does not parse the
            // SQL again for every batch (parsing cost as much as inserting).
            let query = insert.build();
            match tx.as_mut() {
                Some(tx) => query.execute(&mut **tx).await?,
                None => query.execute(pool).await?,
            };
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
    });
    Ok(())
}

/// The rows of each INSERT statement for a batch, in order: each the largest power of two
/// up to `MAX_ROWS_PER_INSERT` that is left. Any batch is then written with statements of
/// only log2(MAX_ROWS_PER_INSERT) + 1 distinct shapes, which stay prepared; one statement
/// per batch size would fill each connection's statement cache with large INSERTs (tens of
/// MiB).
fn statement_chunks<T>(mut rest: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let n = rest.len().min(MAX_ROWS_PER_INSERT);
        let (rows, tail) = rest.split_at(if n == 0 { 0 } else { 1 << n.ilog2() });
        rest = tail;
        (!rows.is_empty()).then_some(rows)
    })
}

/// Most rows in one INSERT statement, a power of two (20 parameters each; SQLite allows
/// 32,766, PostgreSQL 65,535).
const MAX_ROWS_PER_INSERT: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> RequestLogRecord {
        RequestLogRecord {
            request_id: format!("req_{i}"),
            tenant_id: None,
            key_id: None,
            model: "m".into(),
            provider: None,
            stream: false,
            status: "ok",
            http_status: 200,
            error_code: None,
            tokens_in: 1,
            tokens_out: 1,
            latency_ms: 1.0,
            ttft_ms: None,
            created_at: 0,
            cost_usd: 0.0,
            saved_usd: 0.0,
            route_tier: None,
            route_reason: None,
        }
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("log.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        (dir, store)
    }

    /// Waits (up to 20 s) until the table holds `n` rows.
    async fn wait_for_rows(store: &Store, n: i64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.count_request_log().await.unwrap() < n {
            assert!(std::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rows sent during the interval are held and then written together; closing the
    /// channel drains every row.
    #[tokio::test]
    async fn waits_for_a_batch_then_writes_and_drains_at_close() {
        let (_dir, store) = store().await;
        let (writer, task) =
            RequestLogWriter::spawn(store.clone(), 64, 256, Duration::from_millis(1500));
        for i in 0..5 {
            writer.send(record(i)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            store.count_request_log().await.unwrap(),
            0,
            "rows are held during the interval"
        );
        wait_for_rows(&store, 5).await;
        writer.send(record(5)).await;
        drop(writer);
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the writer ended after draining")
            .unwrap();
        assert_eq!(store.count_request_log().await.unwrap(), 6);
    }

    /// Sends `n` rows through a writer, closes it, and returns how many rows were written.
    async fn write_through(batch_size: usize, interval: Duration, n: usize) -> i64 {
        let (_dir, store) = store().await;
        let (writer, task) = RequestLogWriter::spawn(store.clone(), 2048, batch_size, interval);
        for i in 0..n {
            writer.send(record(i)).await;
        }
        drop(writer);
        task.await.unwrap();
        store.count_request_log().await.unwrap()
    }

    /// More rows than one batch are written in several transactions, all of them.
    #[tokio::test]
    async fn a_backlog_is_written_in_batches() {
        assert_eq!(write_through(4, Duration::ZERO, 11).await, 11);
    }

    /// After a full batch, the few rows left over are not written at once in a transaction
    /// of their own: they wait the interval for more (only full batches go back to back).
    #[tokio::test]
    async fn a_partial_rest_waits_for_the_next_interval() {
        let (_dir, store) = store().await;
        let interval = Duration::from_millis(300);
        let (writer, _task) = RequestLogWriter::spawn(store.clone(), 64, 8, interval);
        // Queued before the writer first runs (a current-thread runtime): one full batch
        // and a rest of three.
        for i in 0..11 {
            writer.send(record(i)).await;
        }
        wait_for_rows(&store, 11).await;
        // One `logged_at` per transaction.
        let batches: Vec<(i64, i64)> = crate::store::on_pool!(&store, p => sqlx::query_as(
            "SELECT logged_at, COUNT(*) FROM request_log GROUP BY logged_at ORDER BY logged_at")
            .fetch_all(p).await.unwrap());
        let sizes: Vec<i64> = batches.iter().map(|b| b.1).collect();
        assert_eq!(sizes, [8, 3], "{batches:?}");
        assert!(
            batches[1].0 - batches[0].0 >= interval.as_millis() as i64,
            "the rest was written without waiting: {batches:?}"
        );
    }

    /// A batch larger than one INSERT statement takes is written whole.
    #[tokio::test]
    async fn a_batch_over_one_statement_is_written_whole() {
        assert_eq!(
            write_through(1200, Duration::from_millis(300), 1100).await,
            1100
        );
    }

    /// Any batch is written with statements of the few prepared sizes, covering it exactly.
    #[test]
    fn statements_come_in_power_of_two_sizes() {
        let sizes = |n: usize| {
            let rows = vec![(); n];
            statement_chunks(&rows).map(<[()]>::len).collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(3), [2, 1]);
        assert_eq!(sizes(50), [32, 16, 2]);
        assert_eq!(sizes(64), [64]);
        assert_eq!(sizes(130), [64, 64, 2]);
        assert_eq!(sizes(1000)[0], MAX_ROWS_PER_INSERT);
        let mut shapes = std::collections::BTreeSet::new();
        for n in 1..=1000 {
            let chunks = sizes(n);
            assert_eq!(chunks.iter().sum::<usize>(), n);
            shapes.extend(chunks);
        }
        assert_eq!(shapes.len(), MAX_ROWS_PER_INSERT.ilog2() as usize + 1);
    }
}
