//! Receiving a CMS's webhook: the raw body verified before anything parses it; the
//! delivery stored once (by the sender's delivery id) with its job in one transaction, then
//! acknowledged; a bad signature a 400 that stores nothing.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{CmsSource, Kind, at, revision_key};
use crate::clock::now_ms;
use crate::integrations::signatures::{canonical_request, timestamped_hmac};
use crate::jobs::{JobQueue, NewJob, enqueue_job};
use crate::store::{Store, StoreError, on_pool};

pub const JOB_APPLY: &str = "cms.apply";

/// A CMS delivery refused (the shared webhook error).
pub type CmsWebhookError = crate::integrations::signatures::WebhookError;

/// What a delivery was.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub duplicate: bool,
    pub document: String,
    /// `upsert` or `delete`.
    pub operation: &'static str,
    pub revision: String,
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"))
}

/// Verifies a delivery; the headers its signature covers (none for schemes that sign only
/// the body).
fn verify(
    source: &CmsSource,
    path: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Vec<String>, CmsWebhookError> {
    let secrets = source.secrets();
    if secrets.is_empty() {
        return Err(CmsWebhookError::Signature(
            "no secret configured for this source".into(),
        ));
    }
    match source.kind {
        Kind::Sanity => timestamped_hmac::verify(
            header(headers, "sanity-webhook-signature"),
            body,
            &secrets,
            source.tolerance_secs.saturating_mul(1000),
            now_ms(),
        )
        .map(|_| vec![])
        .map_err(|e| CmsWebhookError::Signature(e.to_string())),
        Kind::Contentful => canonical_request::verify(
            "POST",
            path,
            headers,
            body,
            &secrets,
            source.tolerance_secs.saturating_mul(1000),
            now_ms(),
        )
        .map(|v| v.signed_headers)
        .map_err(|e| CmsWebhookError::Signature(e.to_string())),
        Kind::SharedSecret => {
            let given = header(headers, &source.secret_header)
                .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).as_bytes().to_vec())
                .ok_or_else(|| {
                    CmsWebhookError::Signature(format!("missing header {}", source.secret_header))
                })?;
            if secrets
                .iter()
                .any(|s| crate::auth::constant_time_eq(s, &given))
            {
                Ok(vec![])
            } else {
                Err(CmsWebhookError::Signature(
                    "the secret does not match".into(),
                ))
            }
        }
    }
}

/// Upsert or delete, from the sender's own words.
fn operation(
    source: &CmsSource,
    headers: &http::HeaderMap,
    signed_headers: &[String],
    body: &Value,
) -> &'static str {
    // The signed body's word first (a Sanity projection with `"operation":
    // delta::operation()`, Strapi's `event`); the headers, which no signature covers, only
    // when the body says nothing.
    let said = body
        .get("operation")
        .and_then(Value::as_str)
        .or_else(|| body.get("event").and_then(Value::as_str))
        .or_else(|| header(headers, "sanity-operation"))
        .or_else(|| header(headers, "x-cms-operation"))
        .unwrap_or("update");
    let deleted = (source.kind == Kind::Sanity && body.get("_deleted") == Some(&Value::Bool(true)))
        // Contentful: a deleted entry's body is a `DeletedEntry`; unpublish and archive are
        // in the (signed) topic header.
        || body.pointer("/sys/type").and_then(Value::as_str).is_some_and(|t| t.starts_with("Deleted"))
        || (signed_headers.iter().any(|h| h == "x-contentful-topic")
            && header(headers, "x-contentful-topic").is_some_and(|t| {
                [".unpublish", ".delete", ".archive"]
                    .iter()
                    .any(|s| t.ends_with(s))
            }));
    if deleted
        || matches!(
            said,
            "delete" | "entry.delete" | "entry.unpublish" | "unpublish"
        )
    {
        "delete"
    } else {
        "upsert"
    }
}

pub async fn receive(
    store: &Store,
    queue: &JobQueue,
    name: &str,
    source: &CmsSource,
    path: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Received, CmsWebhookError> {
    let signed_headers = verify(source, path, headers, body)?;
    let event: Value =
        serde_json::from_slice(body).map_err(|e| CmsWebhookError::Json(e.to_string()))?;
    let doc = at(&event, &source.document_path).ok_or_else(|| {
        CmsWebhookError::Invalid(format!("no document at `{}`", source.document_path))
    })?;
    let doc_id = match at(doc, &source.id_field) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => match header(headers, "sanity-document-id") {
            Some(id) if !id.is_empty() && id.len() <= 256 => id.to_string(),
            _ => {
                return Err(CmsWebhookError::Invalid(format!(
                    "the document has no `{}`",
                    source.id_field
                )));
            }
        },
    };
    if doc_id.chars().any(char::is_control) {
        return Err(CmsWebhookError::Invalid(
            "a document id must not contain control characters".into(),
        ));
    }
    let op = operation(source, headers, &signed_headers, &event);
    let mut revision = revision_key(at(doc, &source.revision_field));
    // The sender's delivery id, bound to the body's hash (the header is not signed: a new
    // id on a replayed body must not make it a new delivery), else the hash alone.
    let hash = hex::encode(&Sha256::digest(body)[..16]);
    let delivery = header(headers, "idempotency-key")
        .filter(|k| !k.is_empty() && k.len() <= 200 && !k.contains('\0'))
        .map(str::to_string)
        .unwrap_or_else(|| hash.clone());
    let id = format!("{name}:{hash}:{delivery}");
    let tenant = store.ensure_tenant(&source.tenant).await?;
    if op == "delete" && revision.is_empty() {
        // A delete that names no revision is of the newest one stored.
        let newest: Option<String> = on_pool!(store, p => sqlx::query_scalar(
            "SELECT MAX(revision) FROM cms_events WHERE source = $1 AND tenant_id = $2 AND doc_id = $3")
            .bind(name).bind(&tenant.id).bind(&doc_id).fetch_one(p).await)
        .map_err(StoreError::from)?;
        revision = newest.unwrap_or_default();
    }
    let job = NewJob::new(JOB_APPLY, &json!({"event": id}));
    let payload = String::from_utf8_lossy(body).replace('\0', "");
    let now = now_ms();
    let attempts = queue.default_attempts();
    let inserted: Result<bool, sqlx::Error> = on_pool!(store, p => async {
        let mut tx = p.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO cms_events (id, source, tenant_id, doc_id, revision, operation, payload, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING")
            .bind(&id).bind(name).bind(&tenant.id).bind(&doc_id).bind(&revision).bind(op)
            .bind(&payload).bind(now)
            .execute(&mut *tx).await?.rows_affected() == 1;
        if inserted {
            enqueue_job!(&mut *tx, &job, attempts)?;
        }
        tx.commit().await?;
        Ok(inserted)
    }.await);
    let inserted = store.observe(inserted.map_err(StoreError::from))?;
    if inserted {
        queue.wake();
    }
    metrics::counter!("qm_cms_webhooks_total", "source" => name.to_string(), "duplicate" => if inserted { "false" } else { "true" })
        .increment(1);
    Ok(Received {
        id: delivery,
        duplicate: !inserted,
        document: doc_id,
        operation: op,
        revision,
    })
}
