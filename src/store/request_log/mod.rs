//! The request log, written off the hot path: handlers hand a record to a bounded channel,
//! one writer task inserts them in batches. On shutdown the channel is closed and drained,
//! so every record handed over before that is written (or, with the database down, kept in
//! the spill file for the next start).
//!
//! The writer waits `flush_interval` after the first record of a batch for more to arrive:
//! at 1,000 requests/s that is one transaction per ~50 rows instead of one per row, which
//! takes the database (and its thread's wake-ups) off the request path's CPU. It writes on
//! a connection of its own, whose page cache and prepared statements stay warm.
//!
//! Through an outage the writer keeps taking rows (handlers never wait on a dead database):
//! it holds up to `memory_rows` in memory, retrying with backoff, and appends the rest to
//! the spill file (`spill.rs`), which it replays once the database answers again (and at
//! the next start). Every row has its id from the moment it is received, and inserts skip
//! ids already present, so a retry after a lost acknowledgement writes nothing twice.
//!
//! Here the records and the sending side; the task is in `writer.rs`, its SQL in
//! `insert.rs`, the spill file in `spill.rs`.

mod insert;
mod journal;
mod spill;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Store;
use writer::Writer;

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
    /// The end user the request was made for, when known.
    pub user_id: Option<String>,
}

/// A record as the writer keeps it: with its row id, owned, and serializable (the spill
/// file holds these).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Row {
    id: String,
    request_id: String,
    tenant_id: Option<String>,
    key_id: Option<String>,
    model: String,
    provider: Option<String>,
    stream: bool,
    status: String,
    http_status: u16,
    error_code: Option<String>,
    tokens_in: u64,
    tokens_out: u64,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    created_at: i64,
    cost_usd: f64,
    saved_usd: f64,
    route_tier: Option<String>,
    route_reason: Option<String>,
    /// Absent from spill files written before end users were recorded.
    #[serde(default)]
    user_id: Option<String>,
    /// The journal segment holding the row, until it is written.
    #[serde(skip)]
    segment: Option<u64>,
}

impl From<RequestLogRecord> for Row {
    fn from(r: RequestLogRecord) -> Self {
        Row {
            id: format!("log_{}", uuid::Uuid::now_v7().simple()),
            request_id: r.request_id,
            tenant_id: r.tenant_id,
            key_id: r.key_id,
            model: r.model,
            provider: r.provider,
            stream: r.stream,
            status: r.status.to_string(),
            http_status: r.http_status,
            error_code: r.error_code,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            created_at: r.created_at,
            cost_usd: r.cost_usd,
            saved_usd: r.saved_usd,
            route_tier: r.route_tier,
            route_reason: r.route_reason.map(str::to_string),
            user_id: r.user_id,
            segment: None,
        }
    }
}

/// How the writer batches and what it keeps through an outage (`[request_log]`).
#[derive(Debug, Clone)]
pub struct RequestLogOptions {
    pub channel_capacity: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Rows held in memory while the database is down; the rest go to the spill file.
    pub memory_rows: usize,
    /// The folder where rows beyond `memory_rows` are kept until the database is back
    /// (`None`: they are dropped, and counted).
    pub spill_dir: Option<PathBuf>,
    /// Journal every row in `spill_dir` as it is handed over (`journal.rs`).
    pub journal: bool,
}

impl RequestLogOptions {
    /// In-memory batching only (tests, tools).
    pub fn new(channel_capacity: usize, batch_size: usize, flush_interval: Duration) -> Self {
        Self {
            channel_capacity,
            batch_size,
            flush_interval,
            memory_rows: 100_000,
            spill_dir: None,
            journal: false,
        }
    }
}

/// What the writer is doing, for `/readyz` and metrics.
#[derive(Debug, Default)]
struct Shared {
    /// Rows received and not yet written (memory + spill file).
    backlog: AtomicU64,
    spilled: AtomicU64,
    failing: AtomicBool,
    journal: Option<journal::Journal>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestLogStatus {
    /// `ok`, or `retrying` while the database does not take the rows.
    pub state: &'static str,
    /// Rows not yet in the database.
    pub backlog: u64,
    /// Of which in the spill file.
    pub spilled: u64,
}

/// The sending side; cheap to clone.
#[derive(Clone, Debug)]
pub struct RequestLogWriter {
    tx: mpsc::Sender<Row>,
    shared: Arc<Shared>,
}

impl RequestLogWriter {
    /// Starts the writer task. The task ends once every sender is dropped and the channel
    /// is drained (written, or spilled when the database is down).
    pub fn spawn(store: Store, options: RequestLogOptions) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(options.channel_capacity.max(1));
        let journal = match (&options.spill_dir, options.journal) {
            (Some(dir), true) => journal::Journal::open(dir)
                .inspect_err(|e| tracing::error!(error = %e, dir = %dir.display(), "request log: no journal; rows in memory are lost if the process is killed"))
                .ok(),
            _ => None,
        };
        let shared = Arc::new(Shared {
            journal,
            ..Default::default()
        });
        let handle = tokio::spawn(Writer::new(rx, shared.clone(), options).run(store));
        (Self { tx, shared }, handle)
    }

    /// Hands a record to the writer, waiting for room when the channel is full (back-pressure
    /// instead of loss; the writer drains the channel even while the database is down).
    /// Fails only after shutdown closed the channel.
    pub async fn send(&self, record: RequestLogRecord) {
        metrics::gauge!("qm_request_log_queue_depth")
            .set((self.tx.max_capacity() - self.tx.capacity()) as f64);
        let row = self.journaled(record);
        if self.tx.send(row).await.is_err() {
            tracing::error!("request log record after shutdown: dropped");
            metrics::counter!("qm_request_log_dropped_total").increment(1);
        }
    }

    /// For code that cannot await (drop guards): journals the record at once, sends it from
    /// a spawned task.
    pub fn send_detached(&self, record: RequestLogRecord) {
        let row = self.journaled(record);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let tx = self.tx.clone();
                handle.spawn(async move {
                    if tx.send(row).await.is_err() {
                        metrics::counter!("qm_request_log_dropped_total").increment(1);
                    }
                });
            }
            Err(_) => {
                let _ = self.tx.try_send(row);
            }
        }
    }

    /// The record as a row with its id, appended to the journal when there is one.
    fn journaled(&self, record: RequestLogRecord) -> Row {
        let mut row = Row::from(record);
        if let Some(j) = &self.shared.journal
            && let Err(e) = j.append(&mut row)
        {
            metrics::counter!("qm_request_log_journal_errors_total").increment(1);
            tracing::warn!(error = %e, "request log: row not journaled");
        }
        row
    }

    pub fn status(&self) -> RequestLogStatus {
        RequestLogStatus {
            state: if self.shared.failing.load(Ordering::Relaxed) {
                "retrying"
            } else {
                "ok"
            },
            backlog: self.shared.backlog.load(Ordering::Relaxed),
            spilled: self.shared.spilled.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
