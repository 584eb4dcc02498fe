//! Receiving a Stripe webhook: the raw body's signature is verified before anything is
//! parsed, then the event is stored (unique on its id) and its job enqueued in one
//! transaction, and only then acknowledged: a 2xx tells Stripe the event is ours.

use serde_json::{Value, json};

use super::{Billing, JOB_EVENT, signature};
use crate::clock::now_ms;
use crate::jobs::{JobQueue, NewJob, enqueue_job};
use crate::store::{Store, StoreError, on_pool};

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "Stripe webhooks are not configured (set stripe.webhook_secrets or STRIPE_WEBHOOK_SECRET)"
    )]
    Disabled,
    #[error("{0}")]
    Signature(String),
    #[error("{0}")]
    Json(String),
    #[error("the body is not UTF-8")]
    Utf8,
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<&'static str>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the acknowledgement says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub id: String,
    /// The event was stored by an earlier delivery.
    pub duplicate: bool,
    /// The event's type has a handler (a job was enqueued).
    pub handled: bool,
}

/// Verifies, stores and enqueues one delivery (`signature`: the `Stripe-Signature` header).
pub async fn receive(
    store: &Store,
    jobs: &JobQueue,
    billing: &Billing,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Receipt, WebhookError> {
    if !billing.webhooks_enabled() {
        return Err(WebhookError::Disabled);
    }
    signature::verify(
        body,
        signature,
        &billing.secrets,
        billing.stripe.webhook_tolerance_secs,
        now_ms() / 1000,
    )
    .map_err(|e| {
        metrics::counter!("qm_stripe_webhooks_total", "outcome" => "bad_signature").increment(1);
        WebhookError::Signature(e.to_string())
    })?;
    let event: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Json(e.to_string()))?;
    let (id, kind) = id_and_type(&event)?;
    let payload = std::str::from_utf8(body).map_err(|_| WebhookError::Utf8)?;
    let handled = is_handled(kind);
    let now = now_ms();
    let (processed_at, outcome) = if handled {
        (None, None)
    } else {
        (Some(now), Some("ignored: unhandled event type"))
    };
    // The job's dedupe key keeps a duplicate delivery to one job.
    let job = handled
        .then(|| NewJob::new(JOB_EVENT, &json!({"event_id": id})).dedupe(format!("stripe:{id}")));
    let event = StoredEvent {
        id,
        kind,
        payload,
        now,
        processed_at,
        outcome,
    };
    let inserted = store_with_job(store, &event, job.as_ref(), jobs.default_attempts()).await?;
    if job.is_some() {
        jobs.wake();
    } else if inserted {
        tracing::info!(
            event_id = id,
            event_type = kind,
            "Stripe event acknowledged; type not handled"
        );
    }
    let outcome = match (inserted, handled) {
        (false, _) => "duplicate",
        (true, true) => "accepted",
        (true, false) => "ignored",
    };
    metrics::counter!("qm_stripe_webhooks_total", "outcome" => outcome).increment(1);
    Ok(Receipt {
        id: id.to_string(),
        duplicate: !inserted,
        handled,
    })
}

/// The event's `id` and `type`, checked (the id is the primary key of `stripe_events`).
fn id_and_type(event: &Value) -> Result<(&str, &str), WebhookError> {
    let (Some(id), Some(kind)) = (
        event.get("id").and_then(Value::as_str),
        event.get("type").and_then(Value::as_str),
    ) else {
        return Err(WebhookError::Invalid {
            message: "a Stripe event needs string `id` and `type` fields".into(),
            param: None,
        });
    };
    if id.is_empty() || id.len() > 255 || id.contains('\0') || kind.contains('\0') {
        return Err(WebhookError::Invalid {
            message: "a Stripe event's `id` must be 1 to 255 characters, and neither it nor `type` may contain NUL".into(),
            param: Some("id"),
        });
    }
    Ok((id, kind))
}

/// One delivery's row in `stripe_events`.
struct StoredEvent<'a> {
    id: &'a str,
    kind: &'a str,
    payload: &'a str,
    now: i64,
    processed_at: Option<i64>,
    outcome: Option<&'a str>,
}

/// Stores the event and its job in one transaction: a 2xx means both are committed, and a
/// duplicate delivery (the event already stored) adds neither. True if the event was new.
async fn store_with_job(
    store: &Store,
    e: &StoredEvent<'_>,
    job: Option<&NewJob>,
    attempts: i64,
) -> Result<bool, StoreError> {
    let stored: Result<bool, sqlx::Error> = on_pool!(store, p => async {
        let mut tx = p.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO stripe_events (id, type, payload, received_at, processed_at, outcome) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO NOTHING")
            .bind(e.id).bind(e.kind).bind(e.payload).bind(e.now).bind(e.processed_at).bind(e.outcome)
            .execute(&mut *tx).await?.rows_affected() == 1;
        if let Some(job) = job {
            enqueue_job!(&mut *tx, job, attempts)?;
        }
        tx.commit().await?;
        Ok(inserted)
    }.await);
    store.observe(stored.map_err(StoreError::from))
}

fn is_handled(kind: &str) -> bool {
    matches!(
        kind,
        "checkout.session.completed"
            | "checkout.session.async_payment_succeeded"
            | "invoice.payment_failed"
            | "invoice.paid"
            | "payment_intent.succeeded"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
    )
}
