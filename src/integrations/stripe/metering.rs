//! Usage metering: each linked tenant's tokens per closed window pushed to Stripe Billing
//! meter events, recorded as pending before the push so a retry sends exactly what was
//! recorded (and Stripe's idempotency makes a repeat harmless).

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use secrecy::{ExposeSecret, SecretString};

use super::Billing;
use crate::clock::now_ms;
use crate::jobs::{JobError, JobHandler, JobRow};
use crate::store::{Store, on_pool};

/// Pushes each tenant's token usage since its last push to Stripe meter events.
pub struct MeterJob {
    pub store: Store,
    pub billing: Arc<Billing>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct MeterRef {
    pub(super) window_end: i64,
}

#[async_trait]
impl JobHandler for MeterJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let r: MeterRef = job.parse_payload()?;
        let Some(key) = &self.billing.secret_key else {
            return Err(JobError::Permanent(
                "no Stripe secret key configured".into(),
            ));
        };
        let tenants: Vec<(String, String)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT id, stripe_customer_id FROM tenants WHERE stripe_customer_id IS NOT NULL ORDER BY id")
            .fetch_all(p).await)?;
        let mut failures = vec![];
        for (tenant_id, customer) in tenants {
            if let Err(e) = self
                .push_tenant(key, &tenant_id, &customer, r.window_end)
                .await
            {
                failures.push(format!("{tenant_id}: {e}"));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            // Tenants pushed already are skipped on the retry (their cursor moved).
            Err(JobError::Retry(failures.join("; ")))
        }
    }
}

impl MeterJob {
    /// Pushes the tenant's usage up to `to`. A push is recorded as `pending` before the POST
    /// and retried exactly as recorded (same value, same identifier) until Stripe accepts
    /// it: a push that may have reached Stripe before a crash is never merged into a
    /// differently-windowed one, so Stripe's de-duplication by identifier makes it count
    /// once.
    async fn push_tenant(
        &self,
        key: &SecretString,
        tenant_id: &str,
        customer: &str,
        to: i64,
    ) -> Result<(), JobError> {
        loop {
            let pending: Option<(i64, i64, i64, String)> = on_pool!(&self.store, p => sqlx::query_as(
                "SELECT window_start, window_end, tokens, identifier FROM meter_pushes \
                 WHERE tenant_id = $1 AND state = 'pending' ORDER BY window_start LIMIT 1")
                .bind(tenant_id).fetch_optional(p).await)?;
            if let Some((start, end, tokens, identifier)) = pending {
                self.post(key, customer, tokens, &identifier, end).await?;
                on_pool!(&self.store, p => sqlx::query(
                    "UPDATE meter_pushes SET state = 'sent', pushed_at = $1 WHERE tenant_id = $2 AND window_start = $3")
                    .bind(now_ms()).bind(tenant_id).bind(start).execute(p).await.map(|_| ()))?;
                continue;
            }
            let from: i64 = on_pool!(&self.store, p => sqlx::query_scalar(
                "SELECT CAST(COALESCE(MAX(window_end), 0) AS BIGINT) FROM meter_pushes WHERE tenant_id = $1")
                .bind(tenant_id).fetch_one(p).await)?;
            if from >= to {
                return Ok(());
            }
            let tokens: i64 = on_pool!(&self.store, p => sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(tokens_in + tokens_out), 0) AS BIGINT) FROM request_log \
                 WHERE tenant_id = $1 AND logged_at >= $2 AND logged_at < $3")
                .bind(tenant_id).bind(from).bind(to).fetch_one(p).await)?;
            if tokens == 0 {
                return Ok(()); // nothing to push; the next window starts from `from` again
            }
            let identifier = format!("qm_{tenant_id}_{from}_{to}");
            // Another worker may record the same window at once: the primary key keeps
            // one, and the loop pushes whichever is pending.
            on_pool!(&self.store, p => sqlx::query(
                "INSERT INTO meter_pushes (tenant_id, window_start, window_end, tokens, identifier, state, pushed_at) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6) ON CONFLICT (tenant_id, window_start) DO NOTHING")
                .bind(tenant_id).bind(from).bind(to).bind(tokens).bind(&identifier).bind(now_ms())
                .execute(p).await.map(|_| ()))?;
        }
    }

    async fn post(
        &self,
        key: &SecretString,
        customer: &str,
        tokens: i64,
        identifier: &str,
        window_end: i64,
    ) -> Result<(), JobError> {
        let url = format!(
            "{}/v1/billing/meter_events",
            self.billing.stripe.api_base.trim_end_matches('/')
        );
        let form = [
            ("event_name", self.billing.stripe.meter_event_name.clone()),
            ("payload[stripe_customer_id]", customer.to_string()),
            ("payload[value]", tokens.to_string()),
            ("identifier", identifier.to_string()),
            ("timestamp", ((window_end - 1) / 1000).to_string()),
        ];
        let response = self
            .billing
            .http
            .post(&url)
            .bearer_auth(key.expose_secret())
            .header("Idempotency-Key", identifier)
            .form(&form)
            .send()
            .await
            .map_err(|e| JobError::Retry(format!("Stripe unreachable: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let body: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect();
            return Err(JobError::Retry(format!("Stripe answered {status}: {body}")));
        }
        metrics::counter!("qm_stripe_meter_tokens_total").increment(tokens as u64);
        Ok(())
    }
}
