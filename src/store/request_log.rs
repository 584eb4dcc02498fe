//! The request log, written off the hot path: handlers hand a record to a bounded channel,
//! one writer task inserts them in batches. On shutdown the channel is closed and drained,
//! so every record handed over before that is written.

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
    pub fn spawn(store: Store, capacity: usize, batch_size: usize) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        let handle = tokio::spawn(run_writer(store, rx, batch_size));
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

async fn run_writer(store: Store, mut rx: mpsc::Receiver<RequestLogRecord>, batch_size: usize) {
    let mut batch = Vec::with_capacity(batch_size);
    loop {
        batch.clear();
        if rx.recv_many(&mut batch, batch_size).await == 0 {
            break; // every sender gone and the channel drained
        }
        // A failed insert is retried a few times so a locked or restarting database does not
        // lose the batch; after that it is logged with its size.
        let mut attempt = 0;
        loop {
            match insert_batch(&store, &batch).await {
                Ok(()) => {
                    metrics::counter!("qm_request_log_written_total").increment(batch.len() as u64);
                    break;
                }
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "request log insert failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = batch.len(), "request log insert failed; rows dropped");
                    metrics::counter!("qm_request_log_dropped_total").increment(batch.len() as u64);
                    break;
                }
            }
        }
    }
    tracing::debug!("request log writer drained");
}

async fn insert_batch(store: &Store, batch: &[RequestLogRecord]) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO request_log (id, request_id, tenant_id, key_id, model, provider, stream, status, \
        http_status, error_code, tokens_in, tokens_out, latency_ms, ttft_ms, created_at, logged_at, cost_usd, saved_usd, route_tier, route_reason) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)";
    // `logged_at` is when the row is written (one writer, so it only grows): usage metering
    // reads by it, so a long stream that started in an earlier window is still counted.
    let logged_at = super::now_ms();
    on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        for r in batch {
            sqlx::query(SQL)
                .bind(format!("log_{}", uuid::Uuid::now_v7().simple()))
                .bind(&r.request_id)
                .bind(&r.tenant_id)
                .bind(&r.key_id)
                .bind(&r.model)
                .bind(&r.provider)
                .bind(r.stream)
                .bind(r.status)
                .bind(r.http_status as i32)
                .bind(&r.error_code)
                .bind(r.tokens_in as i64)
                .bind(r.tokens_out as i64)
                .bind(r.latency_ms)
                .bind(r.ttft_ms)
                .bind(r.created_at)
                .bind(logged_at)
                .bind(r.cost_usd)
                .bind(r.saved_usd)
                .bind(&r.route_tier)
                .bind(r.route_reason)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    });
    Ok(())
}
