//! Receiving an identity provider's webhook (`POST /webhooks/identity/NAME`): the raw body
//! verified as a Standard Webhooks delivery before anything parses it; a `user.deleted`
//! event (Clerk's `{"type": "user.deleted", "data": {"id"}}`, or a Supabase database webhook
//! deleting from `auth.users`) starts that user's deletion; each delivery is acted on once
//! (by its `webhook-id`); the 2xx is sent only once the deletion is recorded.

use serde_json::Value;

use super::WebhookSource;
use super::deletion;
use crate::audit::AuditLog;
use crate::clock::now_ms;
use crate::integrations::signatures::standard_webhooks;
use crate::jobs::JobQueue;
use crate::store::{Store, StoreError, on_pool};

/// An identity provider's delivery refused (the shared webhook error).
pub type IdentityWebhookError = crate::integrations::signatures::WebhookError;

/// What a delivery did.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Received {
    pub id: String,
    /// Seen before: acknowledged, nothing done again.
    pub duplicate: bool,
    /// The deletion a `user.deleted` event started.
    pub deletion: Option<String>,
}

/// The user a deletion event names, with their email when the event carries it.
fn deleted_user(event: &Value) -> Option<(String, Option<String>)> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    match event.get("type").and_then(Value::as_str) {
        Some("user.deleted") => {
            let data = event.get("data")?;
            Some((text(data.get("id")?)?, data.get("email").and_then(text)))
        }
        // A Supabase database webhook on auth.users.
        Some("DELETE") if event.get("table").and_then(Value::as_str) == Some("users") => {
            let old = event.get("old_record")?;
            Some((text(old.get("id")?)?, old.get("email").and_then(text)))
        }
        _ => None,
    }
}

pub struct Context<'a> {
    pub store: &'a Store,
    pub queue: &'a JobQueue,
    pub audit: &'a AuditLog,
}

pub async fn receive(
    ctx: Context<'_>,
    name: &str,
    source: &WebhookSource,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Received, IdentityWebhookError> {
    let keys = source.keys().map_err(IdentityWebhookError::Signature)?;
    let delivery =
        standard_webhooks::verify(headers, body, &keys, source.tolerance_secs, now_ms() / 1000)
            .map_err(|e| IdentityWebhookError::Signature(e.to_string()))?;
    let event: Value =
        serde_json::from_slice(body).map_err(|e| IdentityWebhookError::Json(e.to_string()))?;
    let key = format!("{name}:{}", delivery.id);
    let seen: Option<String> = on_pool!(ctx.store, p => sqlx::query_scalar(
        "SELECT id FROM identity_webhooks WHERE id = $1").bind(&key).fetch_optional(p).await)
    .map_err(StoreError::from)?;
    if seen.is_some() {
        return Ok(Received {
            id: delivery.id,
            duplicate: true,
            deletion: None,
        });
    }
    let mut deletion = None;
    if let Some((user, email)) = deleted_user(&event) {
        let tenant = ctx.store.ensure_tenant(&source.tenant).await?;
        let d = deletion::request(
            ctx.store,
            ctx.queue,
            ctx.audit,
            &tenant.id,
            &user,
            email.as_deref(),
            &format!("webhook:{name}"),
        )
        .await?;
        deletion = Some(d.id);
    }
    // Recorded last: a crash before this line leaves a redelivery to do it again, and the
    // deletion it would request already exists.
    on_pool!(ctx.store, p => sqlx::query(
        "INSERT INTO identity_webhooks (id, source, received_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
        .bind(&key).bind(name).bind(now_ms()).execute(p).await.map(|_| ()))
        .map_err(StoreError::from)?;
    Ok(Received {
        id: delivery.id,
        duplicate: false,
        deletion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deletion_events_of_clerk_and_supabase() {
        let clerk = json!({"type": "user.deleted", "data": {"id": "user_1", "deleted": true}});
        assert_eq!(deleted_user(&clerk), Some(("user_1".into(), None)));
        let supa = json!({"type": "DELETE", "table": "users", "schema": "auth",
            "old_record": {"id": "uuid-1", "email": "a@b.c"}, "record": null});
        assert_eq!(
            deleted_user(&supa),
            Some(("uuid-1".into(), Some("a@b.c".into())))
        );
        assert_eq!(
            deleted_user(&json!({"type": "user.created", "data": {"id": "x"}})),
            None
        );
        assert_eq!(
            deleted_user(&json!({"type": "DELETE", "table": "posts", "old_record": {"id": "p"}})),
            None
        );
    }
}
