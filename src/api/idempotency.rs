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

use super::state::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::idempotency::{Begin, begin, finish, release};
use crate::store::Store;

use super::extractors::read_bytes;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
const MAX_KEY_LEN: usize = 255;

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
    if req.method() != axum::http::Method::POST || !state.config.idempotency.enabled {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match parse_key(raw) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
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
    let hash = request_hash(&parts, &bytes);
    let store = state.store.clone();
    let ttl_ms = state.config.idempotency.ttl_secs as i64 * 1000;
    match begin(&store, &tenant, &key, &hash, ttl_ms).await {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(Begin::Mismatch) => return ApiError::IdempotencyKeyReused.into_response(),
        Ok(Begin::InUse) => return ApiError::IdempotencyKeyInUse.into_response(),
        Ok(Begin::Replay {
            status,
            content_type,
            body,
        }) => return replayed(status, content_type, body),
        Ok(Begin::Run) => {}
    }
    let mut guard = ReleaseGuard {
        store,
        tenant,
        key,
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
    keep_when_complete(response, guard)
}

/// The key as sent, if it is 1 to 255 visible ASCII characters.
fn parse_key(raw: &HeaderValue) -> Result<String, ApiError> {
    match raw.to_str() {
        Ok(k)
            if !k.is_empty()
                && k.len() <= MAX_KEY_LEN
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(k.to_string())
        }
        _ => Err(ApiError::invalid(
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            Some("Idempotency-Key".into()),
        )),
    }
}

/// What makes two requests the same: method, path and body.
fn request_hash(parts: &axum::http::request::Parts, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(parts.uri.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// A stored response, sent again.
fn replayed(status: u16, content_type: Option<String>, body: Vec<u8>) -> Response {
    metrics::counter!("qm_idempotent_replays_total").increment(1);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Passes the body through as it is produced, keeping a copy, and stores it once complete.
/// A stream that carries an error event, or is cut off, releases the key instead.
fn keep_when_complete(response: Response, mut guard: ReleaseGuard) -> Response {
    let status = response.status();
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
            let (store, tenant, key) = (guard.store.clone(), guard.tenant.clone(), guard.key.clone());
            match finish(&store, &tenant, &key, status.as_u16(), content_type.as_deref(), &copy).await {
                Ok(()) => guard.armed = false,
                Err(e) => tracing::warn!(error = %e, "could not store an idempotent response"),
            }
        }
        drop(guard);
    };
    Response::from_parts(parts, Body::from_stream(tee))
}

/// Whether an SSE body carries an error event, in any door's shape: chat completions'
/// `data: {"error": ...}`, the Responses API's `event: error`, the UI message stream's
/// `{"type": "error", ...}` part. (A `"type":"error"` inside a text delta is escaped, so it
/// cannot match.)
fn has_error_event(body: &[u8]) -> bool {
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    contains(b"data: {\"error\":")
        || contains(b"data:{\"error\":")
        || contains(b"event: error\n")
        || contains(b"\"type\":\"error\"")
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
        // The Responses API's error event; an `error` word in text is not one.
        assert!(has_error_event(
            b"event: error\ndata: {\"type\":\"error\",\"sequence_number\":7}\n\n"
        ));
        assert!(!has_error_event(
            b"event: response.output_text.delta\ndata: {\"delta\":\"event: error\"}\n\n"
        ));
        // The UI message stream's error part; the same words escaped in a text delta are not.
        assert!(has_error_event(
            b"data: {\"errorText\":\"upstream failed\",\"type\":\"error\"}\n\n"
        ));
        assert!(!has_error_event(
            b"data: {\"delta\":\"{\\\"type\\\":\\\"error\\\"}\",\"type\":\"text-delta\"}\n\n"
        ));
    }
}
