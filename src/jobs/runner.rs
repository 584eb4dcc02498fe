//! The worker that runs the queue's jobs. It claims due jobs up to `concurrency`, renews each
//! lease while its handler runs, records success, a retry with backoff or the dead-letter
//! queue, and drains on shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{JobError, JobHandler, JobQueue, JobRow};

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
