//! Digests: low-priority notifications are not emailed one by one; once per
//! `[notifications] digest_period_secs` a job gathers each recipient's undigested ones into
//! one email (the `digest` template, broadcast stream). The email and the "digested" marks
//! commit together, so a retried job neither loses nor repeats a digest.

use async_trait::async_trait;
use serde_json::json;

use crate::clock::now_ms;
use crate::jobs::{JobError, JobHandler, JobQueue, JobRow, NewJob};
use crate::notify::{self, Notice, Priority};
use crate::store::{Store, StoreError, on_pool};

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
    read_at: Option<i64>,
}

#[async_trait]
impl JobHandler for DigestJob {
    async fn run(&self, _job: &JobRow) -> Result<(), JobError> {
        let recipients: Vec<(String, String)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT DISTINCT tenant_id, user_id FROM notifications WHERE priority = 'low' AND digested_at IS NULL")
            .fetch_all(p).await)?;
        let attempts = self.queue.default_attempts();
        let mut sent = 0;
        for (tenant_id, user_id) in recipients {
            let address = notify::address(&self.store, &tenant_id, Some(&user_id)).await?;
            let tenant = self.store.tenant_name(&tenant_id).await?;
            let items: Vec<Pending> = on_pool!(&self.store, p => sqlx::query_as(
                "SELECT id, subject, body, read_at FROM notifications WHERE tenant_id = $1 AND user_id = $2 \
                 AND priority = 'low' AND digested_at IS NULL ORDER BY id LIMIT $3")
                .bind(&tenant_id).bind(&user_id).bind(PER_DIGEST).fetch_all(p).await)?;
            let Some(first) = items.first().map(|i| i.id.clone()) else {
                continue;
            };
            // Those already read in the app are not mailed (but are digested all the same).
            let unread: Vec<&Pending> = items.iter().filter(|i| i.read_at.is_none()).collect();
            let notice = match &address {
                Some(to) if !unread.is_empty() => {
                    let ctx = json!({
                        "tenant": tenant.unwrap_or_default(), "count": unread.len(),
                        "items": unread.iter().map(|i| json!({"subject": i.subject, "body": i.body})).collect::<Vec<_>>(),
                    });
                    // Keyed by its first notification: a second run over the same ones (a
                    // retried job beside the next period's) cannot make a second digest.
                    let mut n = Notice::render(
                        "digest",
                        &tenant_id,
                        format!("digest:{tenant_id}:{user_id}:{first}"),
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
                // No address (or nothing unread): they stay in the app, and are not looked
                // at again.
                _ => None,
            };
            let ids: Vec<String> = items.into_iter().map(|i| i.id).collect();
            let now = now_ms();
            // The marks first: if another run marked any of them meanwhile, this one backs off.
            let r: Result<bool, sqlx::Error> = on_pool!(&self.store, p => async {
                let mut tx = p.begin().await?;
                let mut marked = 0;
                for id in &ids {
                    marked += sqlx::query("UPDATE notifications SET digested_at = $1 WHERE id = $2 AND digested_at IS NULL")
                        .bind(now).bind(id).execute(&mut *tx).await?.rows_affected();
                }
                if marked != ids.len() as u64 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                if let Some(n) = &notice {
                    notify::insert_notice!(tx, n, attempts)?;
                }
                tx.commit().await?;
                Ok(true)
            }.await);
            if r? {
                sent += notice.is_some() as usize;
            }
        }
        if sent > 0 {
            self.queue.wake();
            tracing::info!(digests = sent, "digests queued");
        }
        Ok(())
    }
}
