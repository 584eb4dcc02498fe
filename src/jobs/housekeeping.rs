//! Daily housekeeping: finished jobs, expired idempotency keys, stored responses past
//! their retention, and console sessions that ended.

use async_trait::async_trait;

use super::{JobError, JobHandler, JobQueue, JobRow};

/// Daily clean-up: finished jobs, expired idempotency keys, old stored responses.
pub struct HousekeepingJob {
    pub queue: JobQueue,
    pub idempotency_ttl_secs: u64,
    pub responses_retention_days: u64,
}

#[async_trait]
impl JobHandler for HousekeepingJob {
    async fn run(&self, _job: &JobRow) -> Result<(), JobError> {
        let jobs = self.queue.purge_done().await?;
        let keys = crate::idempotency::purge_expired(self.queue.store(), self.idempotency_ttl_secs)
            .await?;
        let before = crate::clock::now_ms() - (self.responses_retention_days * 86_400_000) as i64;
        let responses = self.queue.store().purge_responses(before).await?;
        let sessions = self
            .queue
            .store()
            .purge_sessions(crate::clock::now_ms() - 86_400_000)
            .await?;
        tracing::info!(
            jobs,
            idempotency_keys = keys,
            responses,
            sessions,
            "housekeeping done"
        );
        Ok(())
    }
}
