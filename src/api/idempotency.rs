//! `Idempotency-Key` for the gateway's POST endpoints, in the manner of Stripe's API.
//!
//! The first request with a key runs and its response (status, content type, body; a stream
//! is stored once it has finished) is kept for `idempotency.ttl_secs` (24 h). A retry with
//! the same key and the same request (method, path, body) gets the stored response back
//! with `Idempotent-Replayed: true`; with a different request: 422
//! `idempotency_key_reused`; while the first is still running: 409 `idempotency_key_in_use`.
//! Keys are per tenant. Responses that say "try again" (429, 5xx, a stream that ended in an
//! error or was cut off) are not kept: the key is released so the retry really retries.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::server::AppState;
use crate::store::{Store, StoreError, now_ms, on_pool};

use super::extract::read_bytes;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
const MAX_KEY_LEN: usize = 255;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    pub enabled: bool,
    /// How long a key (and its stored response) lives.
    pub ttl_secs: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_secs: 86_400,
        }
    }
}

enum Begin {
    /// The key is new: run the request.
    Run,
    Replay {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
    InUse,
    Mismatch,
}

async fn begin(
    store: &Store,
    tenant: &str,
    key: &str,
    hash: &str,
    ttl_ms: i64,
) -> Result<Begin, StoreError> {
    let now = now_ms();
    // New, or expired (then taken over as new): one statement either way.
    let inserted = on_pool!(store, p => sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, idem_key, request_hash, state, created_at) VALUES ($1, $2, $3, 'pending', $4) \
         ON CONFLICT (tenant_id, idem_key) DO UPDATE SET request_hash = excluded.request_hash, state = 'pending', \
         status_code = NULL, content_type = NULL, body = NULL, created_at = excluded.created_at \
         WHERE idempotency_keys.created_at < $5")
        .bind(tenant).bind(key).bind(hash).bind(now).bind(now - ttl_ms)
        .execute(p).await.map(|r| r.rows_affected() == 1))?;
    if inserted {
        return Ok(Begin::Run);
    }
    type Row = (String, String, Option<i64>, Option<String>, Option<Vec<u8>>);
    let row: Option<Row> = on_pool!(store, p => sqlx::query_as(
        "SELECT request_hash, state, status_code, content_type, body FROM idempotency_keys WHERE tenant_id = $1 AND idem_key = $2")
        .bind(tenant).bind(key).fetch_optional(p).await)?;
    Ok(match row {
        // Released between our insert and select: treat as in use; the client retries.
        None => Begin::InUse,
        Some((stored_hash, _, _, _, _)) if stored_hash != hash => Begin::Mismatch,
        Some((_, state, Some(status), content_type, Some(body))) if state == "done" => {
            Begin::Replay {
                status: status as u16,
                content_type,
                body,
            }
        }
        Some(_) => Begin::InUse,
    })
}

async fn finish(
    store: &Store,
    tenant: &str,
    key: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), StoreError> {
    on_pool!(store, p => sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', status_code = $1, content_type = $2, body = $3 \
         WHERE tenant_id = $4 AND idem_key = $5 AND state = 'pending'")
        .bind(i64::from(status)).bind(content_type).bind(body).bind(tenant).bind(key)
        .execute(p).await.map(|_| ()))?;
    Ok(())
}

async fn release(store: &Store, tenant: &str, key: &str) -> Result<(), StoreError> {
    on_pool!(store, p => sqlx::query(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND idem_key = $2 AND state = 'pending'")
        .bind(tenant).bind(key).execute(p).await.map(|_| ()))?;
    Ok(())
}

/// Deletes keys older than the TTL (run by the housekeeping job).
pub async fn purge_expired(store: &Store, ttl_secs: u64) -> Result<u64, StoreError> {
    let before = now_ms() - ttl_secs as i64 * 1000;
    Ok(
        on_pool!(store, p => sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(before).execute(p).await.map(|r| r.rows_affected()))?,
    )
}

/// Releases a pending key when the response is dropped before it was stored.
struct ReleaseGuard {
    store: Store,
    tenant: String,
    key: String,
    armed: bool,
}

impl ReleaseGuard {
    /// Releases the key before the client sees the failure, so its retry really runs.
    async fn release_now(&mut self) {
        self.armed = false;
        if let Err(e) = release(&self.store, &self.tenant, &self.key).await {
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
    }
}

impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (store, tenant, key) = (
            self.store.clone(),
            std::mem::take(&mut self.tenant),
            std::mem::take(&mut self.key),
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = release(&store, &tenant, &key).await {
                    tracing::warn!(error = %e, "could not release an idempotency key");
                }
            });
        }
    }
}

/// The middleware (on the authenticated POST routes).
pub async fn idempotency(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    if !state.config.idempotency.enabled {
        return next.run(req).await;
    }
    let key = match raw.to_str() {
        Ok(k)
            if !k.is_empty()
                && k.len() <= MAX_KEY_LEN
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            k.to_string()
        }
        _ => {
            return ApiError::invalid(
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
                Some("Idempotency-Key".into()),
            )
            .into_response();
        }
    };
    let Some(tenant) = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.tenant.id.clone())
    else {
        return ApiError::Internal("idempotency before authentication".into()).into_response();
    };
    let (parts, body) = req.into_parts();
    let bytes = match read_bytes(Request::from_parts(parts.clone(), body)).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(parts.uri.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let hash = hex::encode(hasher.finalize());
    let store = state.store.clone();
    let ttl_ms = state.config.idempotency.ttl_secs as i64 * 1000;
    match begin(&store, &tenant, &key, &hash, ttl_ms).await {
        Err(e) => return ApiError::Internal(format!("idempotency store: {e}")).into_response(),
        Ok(Begin::Mismatch) => return ApiError::IdempotencyKeyReused.into_response(),
        Ok(Begin::InUse) => return ApiError::IdempotencyKeyInUse.into_response(),
        Ok(Begin::Replay {
            status,
            content_type,
            body,
        }) => {
            metrics::counter!("qm_idempotent_replays_total").increment(1);
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            return response;
        }
        Ok(Begin::Run) => {}
    }
    let mut guard = ReleaseGuard {
        store: store.clone(),
        tenant: tenant.clone(),
        key: key.clone(),
        armed: true,
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        guard.release_now().await;
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_sse = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert(REPLAYED, HeaderValue::from_static("false"));
    // Pass the body through as it is produced, keeping a copy; store it once complete.
    let tee = async_stream::stream! {
        let mut upstream = body.into_data_stream();
        let mut copy: Vec<u8> = Vec::new();
        let mut failed_stream = false;
        while let Some(chunk) = upstream.next().await {
            match chunk {
                Ok(bytes) => {
                    // A stream that carries an error event is a failure the client may
                    // retry: release the key before the client sees the error.
                    if is_sse && !failed_stream && has_error_event(&bytes) {
                        failed_stream = true;
                        guard.release_now().await;
                    }
                    copy.extend_from_slice(&bytes);
                    yield Ok::<_, axum::Error>(bytes);
                }
                Err(e) => {
                    yield Err(e);
                    return; // the guard releases the key
                }
            }
        }
        if !failed_stream {
            match finish(&store, &tenant, &key, status.as_u16(), content_type.as_deref(), &copy).await {
                Ok(()) => guard.armed = false,
                Err(e) => tracing::warn!(error = %e, "could not store an idempotent response"),
            }
        }
        drop(guard);
    };
    Response::from_parts(parts, Body::from_stream(tee))
}

/// Whether an SSE body carries an error event (`data: {"error": ...}`).
fn has_error_event(body: &[u8]) -> bool {
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    contains(b"data: {\"error\":") || contains(b"data:{\"error\":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_events_are_recognised() {
        assert!(has_error_event(
            b"data: {\"a\":1}\n\ndata: {\"error\":{}}\n\n"
        ));
        assert!(!has_error_event(b"data: {\"a\":1}\n\ndata: [DONE]\n\n"));
    }

    #[tokio::test]
    async fn begin_finish_replay_mismatch_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("i.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let ttl = 60_000;
        assert!(matches!(
            begin(&store, "t", "k", "h1", ttl).await.unwrap(),
            Begin::Run
        ));
        assert!(matches!(
            begin(&store, "t", "k", "h1", ttl).await.unwrap(),
            Begin::InUse
        ));
        assert!(matches!(
            begin(&store, "t", "k", "h2", ttl).await.unwrap(),
            Begin::Mismatch
        ));
        // Another tenant's key of the same name is unrelated.
        assert!(matches!(
            begin(&store, "u", "k", "h2", ttl).await.unwrap(),
            Begin::Run
        ));
        finish(&store, "t", "k", 200, Some("application/json"), b"{}")
            .await
            .unwrap();
        match begin(&store, "t", "k", "h1", ttl).await.unwrap() {
            Begin::Replay { status, body, .. } => {
                assert_eq!(status, 200);
                assert_eq!(body, b"{}");
            }
            _ => panic!("expected a replay"),
        }
        release(&store, "u", "k").await.unwrap();
        assert!(matches!(
            begin(&store, "u", "k", "h3", ttl).await.unwrap(),
            Begin::Run
        ));
        // Past the TTL the key is free for a different request.
        assert!(matches!(
            begin(&store, "t", "k", "h9", -1).await.unwrap(),
            Begin::Run
        ));
        purge_expired(&store, 3600).await.unwrap();
    }
}
