//! The request log's writer task: it takes records from the channel, writes them in
//! batches, and through an outage keeps them in memory and the spill file (see the module
//! docs in `mod.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::insert::insert_with_timeout;
use super::spill::Spill;
use super::{RequestLogOptions, Row, Shared};
use crate::store::{Store, StoreError};

/// Retry delays while the database does not take rows.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// After shutdown, how long a failing database gets before the rest is spilled.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(2);
/// A batch the database refuses for a reason other than an outage (a bad row) is dropped
/// after this many attempts.
const MAX_REJECTIONS: u32 = 5;

/// What the writer's loop does after a step.
#[derive(Debug, PartialEq)]
enum Step {
    /// Go round again: publish the state and look at the queue anew.
    Again,
    /// Write what is queued.
    Write,
    /// Everything is written or spilled: the task ends.
    Done,
}

/// The writer task's state, owned by the task alone.
pub(super) struct Writer {
    /// Rows received, not yet written, oldest first.
    queue: VecDeque<Row>,
    spill: Option<Spill>,
    shared: Arc<Shared>,
    options: RequestLogOptions,
    rx: mpsc::Receiver<Row>,
    /// `recv_many`'s buffer, kept to reuse its allocation.
    incoming: Vec<Row>,
    /// `options.batch_size`, at least 1.
    batch_size: usize,
    /// Every sender is gone and the channel drained: nothing more will come.
    closed: bool,
    /// The next retry delay while the database is down.
    delay: Duration,
    /// Attempts so far at a batch the database refuses (not an outage).
    rejections: u32,
}

impl Writer {
    pub(super) fn new(
        rx: mpsc::Receiver<Row>,
        shared: Arc<Shared>,
        options: RequestLogOptions,
    ) -> Self {
        let batch_size = options.batch_size.max(1);
        Self {
            queue: VecDeque::new(),
            spill: None,
            shared,
            options,
            rx,
            incoming: Vec::with_capacity(batch_size),
            batch_size,
            closed: false,
            delay: RETRY_MIN,
            rejections: 0,
        }
    }

    /// The task: writes until every sender is gone and every row is written (or spilled).
    pub(super) async fn run(mut self, store: Store) {
        // The writer's own connection (see `Store::dedicated`); the shared pool if it cannot
        // be opened, which works the same, only slower.
        let own = store
            .dedicated()
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "request log: no connection of its own; writing through the shared pool"))
            .ok();
        let store = own.as_ref().unwrap_or(&store);
        self.open_spill();
        loop {
            self.publish();
            if self.queue.is_empty() {
                match self.wait_for_rows(store).await {
                    Step::Again => continue,
                    Step::Done => break,
                    Step::Write => {}
                }
            }
            if self.write_batch(store).await == Step::Done {
                break;
            }
        }
        self.publish();
        if let Some(own) = own {
            own.close().await;
        }
        tracing::debug!("request log writer drained");
    }

    /// Opens this process's spill file, if a folder is configured; rows an earlier run left
    /// there are replayed once the loop finds the database up.
    fn open_spill(&mut self) {
        let Some(dir) = self.options.spill_dir.clone() else {
            return;
        };
        match Spill::open_in(&dir) {
            Ok(s) => {
                if s.rows > 0 {
                    tracing::info!(rows = s.rows, dir = %dir.display(), "request log: rows kept from an earlier outage; replaying them");
                }
                self.spill = Some(s);
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %dir.display(), "request log: cannot open a spill file; rows past the memory backlog will be dropped in an outage")
            }
        }
    }

    /// With nothing queued: replays the spill file if the database is up, or else waits for
    /// rows and lets more gather for one transaction. `Write` once rows are queued.
    async fn wait_for_rows(&mut self, store: &Store) -> Step {
        let spilled = self.spill.as_ref().is_some_and(|s| s.rows > 0);
        if spilled && !self.shared.failing.load(Ordering::Relaxed) {
            self.replay(store).await;
            return Step::Again;
        }
        if self.closed {
            return Step::Done; // what is left (if anything) waits in the spill file
        }
        self.incoming.clear();
        let receive = self.rx.recv_many(&mut self.incoming, self.batch_size);
        let got = if spilled {
            // Spilled rows wait for the database: try them again after a while even if no
            // new row comes.
            match tokio::time::timeout(self.delay, receive).await {
                Ok(n) => n,
                Err(_) => {
                    self.shared.failing.store(false, Ordering::Relaxed);
                    self.delay = (self.delay * 2).min(RETRY_MAX);
                    return Step::Again;
                }
            }
        } else {
            receive.await
        };
        if got == 0 {
            self.closed = true; // every sender gone and the channel drained
            return Step::Again;
        }
        self.take_incoming();
        // Let more rows gather for this transaction. The writer sleeps rather than waiting
        // on the channel, so the rows that arrive meanwhile do not wake it one by one (a
        // wake-up per request on the gateway's worker threads). Once the channel is closed
        // (shutdown) nothing more can come: no waiting.
        let flush = self.options.flush_interval;
        if self.queue.len() < self.batch_size && !flush.is_zero() && !self.rx.is_closed() {
            tokio::time::sleep(flush).await;
        }
        Step::Write
    }

    /// Writes the oldest `batch_size` queued rows in one transaction and deals with the
    /// outcome: on success a partial rest waits for the next interval, on an outage the
    /// writer backs off, a batch the database keeps refusing is dropped.
    async fn write_batch(&mut self, store: &Store) -> Step {
        self.drain();
        // Write what is queued, a transaction per `batch_size` rows, for as long as full
        // batches are waiting. A partial rest waits for the next interval: chasing the few
        // rows that arrived during a write would commit them one or two at a time, each
        // commit rewriting the same pages.
        let n = self.queue.len().min(self.batch_size);
        let batch: Vec<Row> = self.queue.drain(..n).collect();
        let result = self.insert_receiving(store, &batch).await;
        if result.is_err() {
            // Back to the front, in order; what memory cannot hold goes to the spill file.
            for row in batch.into_iter().rev() {
                self.queue.push_front(row);
            }
            self.take(std::iter::empty());
        } else {
            self.journal_done(&batch);
        }
        match result {
            Ok(()) => {
                metrics::counter!("qm_request_log_written_total").increment(n as u64);
                self.recovered();
                if !self.queue.is_empty() && self.queue.len() < self.batch_size && !self.closed {
                    // The partial rest goes with the next interval's rows.
                    self.hold_rest().await;
                }
            }
            Err(e) if e.is_outage() => {
                if !self.shared.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "request log: the database does not take rows; keeping them until it does");
                }
                if self.closed && self.give_up_at_shutdown(store).await {
                    return Step::Done;
                }
                self.back_off().await;
            }
            Err(e) => self.rejected(e, n).await,
        }
        Step::Again
    }

    /// Inserts `batch` while taking the rows that keep coming (a database that hangs must
    /// not stall the handlers behind a full channel).
    async fn insert_receiving(&mut self, store: &Store, batch: &[Row]) -> Result<(), StoreError> {
        let insert = insert_with_timeout(store, batch);
        tokio::pin!(insert);
        loop {
            tokio::select! {
                r = &mut insert => break r,
                got = self.rx.recv_many(&mut self.incoming, self.batch_size), if !self.closed => {
                    self.received(got);
                }
            }
        }
    }

    /// Waits out the retry delay after an outage, still taking rows so handlers never block
    /// on it, then doubles the delay.
    async fn back_off(&mut self) {
        let until = tokio::time::Instant::now() + self.delay;
        while !self.closed {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                got = self.rx.recv_many(&mut self.incoming, self.batch_size) => self.received(got),
            }
        }
        if self.closed {
            tokio::time::sleep_until(until).await;
        }
        self.delay = (self.delay * 2).min(RETRY_MAX);
    }

    /// A batch the database refused (not an outage): retried a few times, since the cause
    /// may pass, then dropped so one bad row cannot hold up the log for good.
    async fn rejected(&mut self, e: StoreError, n: usize) {
        self.rejections += 1;
        if self.rejections >= MAX_REJECTIONS {
            tracing::error!(error = %e, rows = n, "request log: the database refuses these rows; dropped");
            metrics::counter!("qm_request_log_dropped_total").increment(n as u64);
            let dropped: Vec<Row> = self.queue.drain(..n.min(self.queue.len())).collect();
            self.journal_done(&dropped);
            self.rejections = 0;
        } else {
            tracing::warn!(error = %e, attempt = self.rejections, "request log insert failed; retrying");
            tokio::time::sleep(Duration::from_millis(100 << self.rejections)).await;
        }
    }

    /// Queues what a `recv_many` into `incoming` returned; it returns 0 only once every
    /// sender is gone and the channel drained.
    fn received(&mut self, got: usize) {
        if got == 0 {
            self.closed = true;
        }
        self.take_incoming();
    }

    /// Moves `incoming` into the queue, keeping the buffer's allocation for the next receive.
    fn take_incoming(&mut self) {
        let mut incoming = std::mem::take(&mut self.incoming);
        self.take(incoming.drain(..));
        self.incoming = incoming;
    }

    /// Receives what is waiting in the channel without blocking, noting when it is closed.
    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(r) => self.take(std::iter::once(r)),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// Waits out the flush interval with a partial batch, taking what arrives meanwhile.
    async fn hold_rest(&mut self) {
        let flush = self.options.flush_interval;
        if !flush.is_zero() && !self.rx.is_closed() {
            tokio::time::sleep(flush).await;
        }
        self.drain();
    }

    /// Queues received records, moving the oldest overflow past `memory_rows` to the spill
    /// file.
    fn take(&mut self, rows: impl Iterator<Item = Row>) {
        self.queue.extend(rows);
        let limit = self.options.memory_rows.max(self.options.batch_size);
        if self.queue.len() > limit {
            let overflow: Vec<Row> = self.queue.drain(..self.queue.len() - limit).collect();
            self.spill_rows(overflow);
        }
    }

    /// Appends rows to the spill file; without one (or when it cannot be written) they are
    /// dropped, and counted.
    fn spill_rows(&mut self, rows: Vec<Row>) {
        let n = rows.len() as u64;
        let kept = match self.spill.as_mut() {
            Some(spill) => match spill.append(&rows) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, path = %spill.path().display(), rows = n, "request log: cannot write the spill file; rows dropped");
                    false
                }
            },
            None => false,
        };
        // Kept in the spill file, or dropped: the journal need not keep them either way.
        self.journal_done(&rows);
        if kept {
            metrics::counter!("qm_request_log_spilled_total").increment(n);
        } else {
            if self.spill.is_none() {
                tracing::error!(
                    rows = n,
                    "request log: memory backlog full and no spill file; rows dropped"
                );
            }
            metrics::counter!("qm_request_log_dropped_total").increment(n);
        }
    }

    /// Writes the spill file's rows to the database, then empties it.
    async fn replay(&mut self, store: &Store) {
        let Some(spill) = self.spill.as_mut() else {
            return;
        };
        if spill.rows == 0 {
            return;
        }
        let (rows, bad) = match spill.read_all() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "request log: cannot read the spill file");
                return;
            }
        };
        if bad > 0 {
            tracing::warn!(
                lines = bad,
                "request log: unreadable lines in the spill file skipped"
            );
        }
        for batch in rows.chunks(self.options.batch_size.max(1)) {
            if let Err(e) = insert_with_timeout(store, batch).await {
                tracing::warn!(error = %e, "request log: replaying the spill file failed; retrying later");
                self.shared.failing.store(e.is_outage(), Ordering::Relaxed);
                if !e.is_outage() {
                    // Not an outage: retrying cannot help; keep the file for an operator.
                    self.spill = None;
                    self.shared.spilled.store(0, Ordering::Relaxed);
                }
                tokio::time::sleep(RETRY_MIN).await;
                return;
            }
        }
        if let Err(e) = spill.clear() {
            tracing::error!(error = %e, "request log: cannot empty the replayed spill file");
        }
        tracing::info!(rows = rows.len(), "request log: spilled rows written");
        metrics::counter!("qm_request_log_written_total").increment(rows.len() as u64);
    }

    /// After shutdown with the database failing: once the patience is spent, everything
    /// still queued goes to the spill file. True when the writer should stop.
    async fn give_up_at_shutdown(&mut self, store: &Store) -> bool {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_PATIENCE;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if store.ping().await.is_ok() {
                return false;
            }
        }
        let rest: Vec<Row> = self.queue.drain(..).collect();
        tracing::warn!(
            rows = rest.len(),
            "request log: the database is down at shutdown; keeping the rest in the spill file"
        );
        self.spill_rows(rest);
        true
    }

    /// Rows the journal no longer needs to keep (written, spilled or dropped).
    fn journal_done(&self, rows: &[Row]) {
        if let Some(j) = &self.shared.journal {
            j.done(rows);
        }
    }

    /// A write went through: clears the failing state and resets the retry backoff.
    fn recovered(&mut self) {
        if self.shared.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("request log: the database takes rows again");
        }
        self.delay = RETRY_MIN;
        self.rejections = 0;
    }

    /// Publishes the backlog for `/readyz` (`RequestLogWriter::status`) and metrics.
    fn publish(&self) {
        let spilled = self.spill.as_ref().map_or(0, |s| s.rows);
        self.shared.spilled.store(spilled, Ordering::Relaxed);
        self.shared
            .backlog
            .store(self.queue.len() as u64 + spilled, Ordering::Relaxed);
        metrics::gauge!("qm_request_log_backlog").set((self.queue.len() as u64 + spilled) as f64);
    }
}
