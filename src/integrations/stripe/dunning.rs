//! Dunning: reminders (in the app, and emailed to the tenant's contact) while a tenant is past due, then limiting it after the grace period.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use serde_json::json;

use crate::jobs::{JobError, JobHandler, JobRow};
use crate::notify::{self, Notice, Priority};
use crate::store::{Store, on_pool};

#[derive(Serialize, Deserialize)]
struct DunningRef {
    tenant_id: String,
    since: i64,
    #[serde(default)]
    n: usize,
}

/// A reminder while a tenant is past due (written to the notification outbox).
pub struct ReminderJob {
    pub store: Store,
    pub queue: crate::jobs::JobQueue,
}

#[async_trait]
impl JobHandler for ReminderJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let r: DunningRef = job.parse_payload()?;
        let row: Option<(String, String, Option<i64>)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT name, billing_status, past_due_since FROM tenants WHERE id = $1")
            .bind(&r.tenant_id).fetch_optional(p).await)?;
        let Some((name, status, since)) = row else {
            return Ok(());
        };
        if status == "active" || since != Some(r.since) {
            return Ok(()); // paid in the meantime, or a newer dunning cycle owns it
        }
        let to = notify::address(&self.store, &r.tenant_id, None).await?;
        let notice = Notice::render(
            "dunning_reminder",
            &r.tenant_id,
            format!("dunning:{}:{}:r{}", r.tenant_id, r.since, r.n),
            json!({"tenant": name, "n": r.n + 1}),
        )
        .map_err(|e| JobError::Permanent(e.to_string()))?
        .priority(Priority::High)
        .email(to.as_deref());
        notify::send(&self.store, &self.queue, &[notice]).await?;
        tracing::info!(tenant = %name, reminder = r.n + 1, "dunning reminder queued");
        Ok(())
    }
}

/// At the end of the grace period: a tenant still past due is limited.
pub struct EnforceJob {
    pub store: Store,
}

#[async_trait]
impl JobHandler for EnforceJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let r: DunningRef = job.parse_payload()?;
        let n = on_pool!(&self.store, p => sqlx::query(
            "UPDATE tenants SET billing_status = 'limited' WHERE id = $1 AND billing_status = 'past_due' AND past_due_since = $2")
            .bind(&r.tenant_id).bind(r.since).execute(p).await.map(|r| r.rows_affected()))?;
        if n == 1 {
            tracing::warn!(tenant_id = %r.tenant_id, "grace period over: tenant limited");
        }
        Ok(())
    }
}
