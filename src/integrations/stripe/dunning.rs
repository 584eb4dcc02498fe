//! Dunning: reminders while a tenant is past due, then limiting it after the grace period.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::jobs::{JobError, JobHandler, JobRow};
use crate::store::{Store, now_ms, on_pool};

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
        let subject = format!("Payment failed for {name}: reminder {}", r.n + 1);
        let body = format!(
            "The last invoice for {name} could not be charged. Please update the payment method; \
             service is limited to the cheaper models if it stays unpaid."
        );
        let dedupe = format!("dunning:{}:{}:r{}", r.tenant_id, r.since, r.n);
        on_pool!(&self.store, p => sqlx::query(
            "INSERT INTO notifications (id, tenant_id, kind, subject, body, dedupe_key, created_at) \
             VALUES ($1, $2, 'dunning_reminder', $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING")
            .bind(format!("ntf_{}", uuid::Uuid::now_v7().simple())).bind(&r.tenant_id)
            .bind(&subject).bind(&body).bind(&dedupe).bind(now_ms())
            .execute(p).await.map(|_| ()))?;
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
