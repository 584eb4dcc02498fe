//! Daily housekeeping: finished jobs and expired idempotency keys.

use async_trait::async_trait;

use super::{JobError, JobHandler, JobQueue, JobRow};

/// Daily clean-up: finished jobs and expired idempotency keys.
pub struct HousekeepingJob {
    pub queue: JobQueue,
    pub idempotency_ttl_secs: u64,
}

#[async_trait]
impl JobHandler for HousekeepingJob {
    async fn run(&self, _job: &JobRow) -> Result<(), JobError> {
        let jobs = self.queue.purge_done().await?;
        let keys = crate::idempotency::purge_expired(self.queue.store(), self.idempotency_ttl_secs)
            .await?;
        tracing::info!(jobs, idempotency_keys = keys, "housekeeping done");
        Ok(())
    }
}
