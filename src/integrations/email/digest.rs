//! Digests: low-priority notifications are not emailed one by one; once per
//! `[notifications] digest_period_secs` a job gathers each recipient's undigested ones into
//! one email (the `digest` template, broadcast stream). The email and the "digested" marks
//! commit together, so a retried job neither loses nor repeats a digest.

use async_trait::async_trait;
use serde_json::json;

use crate::jobs::{JobError, JobHandler, JobQueue, JobRow, NewJob};
use crate::notify::{self, Notice, Priority};
use crate::store::{Store, StoreError, now_ms, on_pool};

/// At most this many notifications in one digest (the rest wait for the next).
const PER_DIGEST: i64 = 50;

pub struct DigestJob {
    pub store: Store,
    pub queue: JobQueue,
}

/// Enqueues this period's digest (once per period, whichever replica is first).
pub async fn schedule(queue: &JobQueue, period_secs: u64) -> Result<(), StoreError> {
    let slot = now_ms() / (period_secs.max(1) as i64 * 1000);
    queue
        .enqueue(
            NewJob::new(notify::JOB_DIGEST, &json!({"slot": slot}))
                .dedupe(format!("digest:{slot}")),
        )
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Pending {
    id: String,
    subject: String,
    body: String,
}

#[async_trait]
impl JobHandler for DigestJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let slot = job.parse_payload::<serde_json::Value>()?["slot"]
            .as_i64()
            .unwrap_or_default();
        let recipients: Vec<(String, String)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT DISTINCT tenant_id, user_id FROM notifications WHERE priority = 'low' AND digested_at IS NULL")
            .fetch_all(p).await)?;
        let attempts = self.queue.default_attempts();
        let mut sent = 0;
        for (tenant_id, user_id) in recipients {
            let address = notify::address(&self.store, &tenant_id, Some(&user_id)).await?;
            let tenant: Option<String> = on_pool!(&self.store, p => sqlx::query_scalar(
                "SELECT name FROM tenants WHERE id = $1").bind(&tenant_id).fetch_optional(p).await)?;
            let items: Vec<Pending> = on_pool!(&self.store, p => sqlx::query_as(
                "SELECT id, subject, body FROM notifications WHERE tenant_id = $1 AND user_id = $2 \
                 AND priority = 'low' AND digested_at IS NULL ORDER BY id LIMIT $3")
                .bind(&tenant_id).bind(&user_id).bind(PER_DIGEST).fetch_all(p).await)?;
            if items.is_empty() {
                continue;
            }
            let notice = match &address {
                Some(to) => {
                    let ctx = json!({
                        "tenant": tenant.unwrap_or_default(), "count": items.len(),
                        "items": items.iter().map(|i| json!({"subject": i.subject, "body": i.body})).collect::<Vec<_>>(),
                    });
                    let mut n = Notice::render(
                        "digest",
                        &tenant_id,
                        format!("digest:{tenant_id}:{user_id}:{slot}:{}", items[0].id),
                        ctx,
                    )
                    .map_err(|e| JobError::Permanent(e.to_string()))?
                    .priority(Priority::Normal)
                    .email_only()
                    .email(Some(to));
                    if let Some(m) = &mut n.mail {
                        m.stream = "broadcast";
                    }
                    Some(n)
                }
                // No address: they stay in the app, and are not looked at again.
                None => None,
            };
            let ids: Vec<String> = items.into_iter().map(|i| i.id).collect();
            let now = now_ms();
            let r: Result<(), sqlx::Error> = on_pool!(&self.store, p => async {
                let mut tx = p.begin().await?;
                if let Some(n) = &notice {
                    notify::insert_notice!(tx, n, attempts)?;
                }
                for id in &ids {
                    sqlx::query("UPDATE notifications SET digested_at = $1 WHERE id = $2 AND digested_at IS NULL")
                        .bind(now).bind(id).execute(&mut *tx).await?;
                }
                tx.commit().await
            }.await);
            r?;
            sent += notice.is_some() as usize;
        }
        if sent > 0 {
            self.queue.wake();
            tracing::info!(digests = sent, "digests queued");
        }
        Ok(())
    }
}
