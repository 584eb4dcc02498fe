//! Sending the outbox: one job per email (`notify::JOB_EMAIL`), at least once. The row's id
//! is the provider's idempotency key, so a retry after a lost answer is not delivered twice
//! where the provider honours it (Resend); where the provider can be asked instead
//! (Postmark's message search by metadata), a retry first asks. A suppressed address is not sent to; a refusal
//! (a bad address) is final; 429, 5xx and timeouts are retried, after the provider's
//! `Retry-After` when it gave one, then dead-lettered. Without a provider (the embedded
//! defaults) each email is kept in the outbox as `unsent`, for the operator to see.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Email, EmailProvider, SendError, Stream};
use crate::clock::now_ms;
use crate::jobs::{JobError, JobHandler, JobRow};
use crate::store::{Store, on_pool};

pub struct SendJob {
    pub store: Store,
    /// `None` (`[email] provider = "none"`): emails are kept in the outbox as `unsent`.
    pub provider: Option<Arc<dyn EmailProvider>>,
    pub from: String,
    /// Until when (ms) the provider asked every send to wait (its `Retry-After`): the other
    /// jobs hold back too instead of calling it meanwhile.
    pub paused_until: std::sync::atomic::AtomicI64,
}

#[derive(Deserialize)]
struct Ref {
    id: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    to_addr: String,
    stream: String,
    subject: String,
    html: String,
    text: String,
    state: String,
}

/// Whether `address` is on the suppression list.
pub async fn suppressed(store: &Store, address: &str) -> Result<bool, crate::store::StoreError> {
    let n: i64 = on_pool!(store, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM email_suppressions WHERE address = $1")
        .bind(address.to_lowercase()).fetch_one(p).await)?;
    Ok(n > 0)
}

#[async_trait]
impl JobHandler for SendJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let r: Ref = job.parse_payload()?;
        let row: Option<Row> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT to_addr, stream, subject, html, text, state FROM email_outbox WHERE id = $1")
            .bind(&r.id).fetch_optional(p).await)?;
        let Some(row) = row else {
            return Err(JobError::Permanent(format!("no outbox email {}", r.id)));
        };
        if row.state != "queued" {
            return Ok(()); // sent (or settled) by an earlier attempt
        }
        let finish = |state: &'static str, provider_id: Option<String>, error: Option<String>| {
            let id = r.id.clone();
            let provider = self.provider.as_ref().map(|p| p.name());
            async move {
                on_pool!(&self.store, p => sqlx::query(
                    "UPDATE email_outbox SET state = $1, provider = $2, provider_id = $3, last_error = $4, \
                     attempts = attempts + 1, sent_at = $5 WHERE id = $6 AND state = 'queued'")
                    .bind(state).bind(provider).bind(provider_id).bind(error)
                    .bind((state == "sent").then(now_ms)).bind(&id)
                    .execute(p).await.map(|_| ()))
            }
        };
        if suppressed(&self.store, &row.to_addr).await? {
            finish("suppressed", None, Some("the address is suppressed".into())).await?;
            metrics::counter!("qm_email_total", "outcome" => "suppressed").increment(1);
            return Ok(());
        }
        let Some(provider) = &self.provider else {
            finish(
                "unsent",
                None,
                Some("no email provider is configured".into()),
            )
            .await?;
            return Ok(());
        };
        let paused = self.paused_until.load(std::sync::atomic::Ordering::Relaxed) - now_ms();
        if paused > 0 {
            return Err(JobError::RetryAfter(
                "the provider asked to wait".into(),
                paused as u64,
            ));
        }
        if job.attempts > 1 {
            // An earlier attempt may have been accepted with its answer lost (a timeout, a
            // crash): where the provider can say so, it is not sent again.
            match provider.find_sent(&r.id).await {
                Ok(Some(provider_id)) => {
                    finish("sent", Some(provider_id), None).await?;
                    metrics::counter!("qm_email_total", "outcome" => "found_sent").increment(1);
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(email = %r.id, error = %e, "could not ask the provider whether it was sent")
                }
            }
        }
        let email = Email {
            id: r.id.clone(),
            from: self.from.clone(),
            to: row.to_addr,
            subject: row.subject,
            html: row.html,
            text: row.text,
            stream: if row.stream == "broadcast" {
                Stream::Broadcast
            } else {
                Stream::Transactional
            },
        };
        match provider.send(&email).await {
            Ok(provider_id) => {
                finish("sent", Some(provider_id), None).await?;
                metrics::counter!("qm_email_total", "outcome" => "sent").increment(1);
                Ok(())
            }
            Err(SendError::Rejected(message)) => {
                finish("rejected", None, Some(message.clone())).await?;
                metrics::counter!("qm_email_total", "outcome" => "rejected").increment(1);
                tracing::warn!(email = %r.id, error = %message, "email refused by the provider");
                Ok(())
            }
            Err(SendError::Retry {
                message,
                retry_after_secs,
            }) => {
                let _ = on_pool!(&self.store, p => sqlx::query(
                    "UPDATE email_outbox SET attempts = attempts + 1, last_error = $1 WHERE id = $2")
                    .bind(&message).bind(&r.id).execute(p).await.map(|_| ()));
                metrics::counter!("qm_email_total", "outcome" => "retry").increment(1);
                Err(match retry_after_secs {
                    Some(s) => {
                        let wait = s.min(3600) * 1000;
                        self.paused_until.fetch_max(
                            now_ms() + wait as i64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        JobError::RetryAfter(message, wait)
                    }
                    None => JobError::Retry(message),
                })
            }
        }
    }
}
