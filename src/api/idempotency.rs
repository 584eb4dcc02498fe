//! `Idempotency-Key` for the gateway's POST endpoints, in the manner of Stripe's API.
//!
//! The first request with a key runs and its response (status, content type, body) is kept
//! for `idempotency.ttl_secs` (24 h). It is stored before its end is sent (a JSON body's
//! last chunk, a stream's closing event are held back until then), so a client that has the
//! whole response has a stored one. A retry with the same key and the same request (method, path,
//! body) gets the stored response back with `Idempotent-Replayed: true`; with a different
//! request: 422 `idempotency_key_reused`; while the first is still running: 409
//! `idempotency_key_in_use`. Keys are per tenant. Responses that say "try again" (429, 5xx,
//! a stream that ended in an error or was cut off) are not kept: the key is released so the
//! retry really retries. A key whose process was killed mid-request is free again after
//! `idempotency.pending_lease_secs` (15 min).

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

/// Set on a 2xx response that must not be kept for replay: a batch in which some item failed
/// in a way worth retrying (the store was down), so a retry with the same key really runs.
#[derive(Debug, Clone, Copy)]
pub struct NotKept;

/// Releases a pending key when the response is dropped before it was stored.
struct ReleaseGuard {
    store: Store,
    tenant: String,
    key: String,
    /// From `Begin::Run`: the holding this guard releases.
    taken_at: i64,
    armed: bool,
}

impl ReleaseGuard {
    /// Releases the key before the client sees the failure, so its retry really runs.
    async fn release_now(&mut self) {
        self.armed = false;
        if let Err(e) = release(&self.store, &self.tenant, &self.key, self.taken_at).await {
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
    }
}

impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (store, tenant, key, taken_at) = (
            self.store.clone(),
            std::mem::take(&mut self.tenant),
            std::mem::take(&mut self.key),
            self.taken_at,
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = release(&store, &tenant, &key, taken_at).await {
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
    let lease_ms = state.config.idempotency.pending_lease_secs as i64 * 1000;
    let taken_at = match begin(&store, &tenant, &key, &hash, ttl_ms, lease_ms).await {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(Begin::Mismatch) => return ApiError::IdempotencyKeyReused.into_response(),
        Ok(Begin::InUse) => return ApiError::IdempotencyKeyInUse.into_response(),
        Ok(Begin::Replay {
            status,
            content_type,
            body,
        }) => return replayed(status, content_type, body),
        Ok(Begin::Run { taken_at }) => taken_at,
    };
    let mut guard = ReleaseGuard {
        store,
        tenant,
        key,
        taken_at,
        armed: true,
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || response.extensions().get::<NotKept>().is_some()
    {
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

/// Passes the body through as it is produced, keeping a copy, and stores it once complete,
/// before its end goes out: a body's chunk is held back until the next one arrives, but a
/// stream's deltas pass at once (only the chunk with its closing event waits), so holding
/// back costs a stream no latency. A stream that carries an error event,
/// or is cut off, releases the key instead.
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
        // The latest chunk: sent when the next one arrives, or once the response is stored.
        let mut held: Option<axum::body::Bytes> = None;
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
                    if let Some(previous) = held.take() {
                        yield Ok::<_, axum::Error>(previous);
                    }
                    if is_sse && !has_closing_event(&bytes) {
                        yield Ok(bytes);
                    } else {
                        held = Some(bytes);
                    }
                }
                Err(e) => {
                    if let Some(last) = held.take() {
                        yield Ok(last);
                    }
                    yield Err(e);
                    return; // the guard releases the key
                }
            }
        }
        if !failed_stream {
            let (store, tenant, key) = (guard.store.clone(), guard.tenant.clone(), guard.key.clone());
            match finish(&store, &tenant, &key, guard.taken_at, status.as_u16(), content_type.as_deref(), &copy).await {
                Ok(()) => guard.armed = false,
                Err(e) => tracing::warn!(error = %e, "could not store an idempotent response"),
            }
        }
        drop(guard); // if not stored, this releases the key
        if let Some(last) = held {
            yield Ok(last);
        }
    };
    Response::from_parts(parts, Body::from_stream(tee))
}

/// Whether an SSE chunk carries a stream's closing event, in any door's shape: chat
/// completions' and the UI message stream's `data: [DONE]`, the Responses API's
/// `response.completed` / `response.incomplete`, the Messages API's `message_stop`, the UI
/// message stream's `finish` part.
fn has_closing_event(body: &[u8]) -> bool {
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    // `[DONE]` only as a whole event line: a delta whose text quotes it is not one.
    let done_line = body.starts_with(b"data: [DONE]") || contains(b"\ndata: [DONE]");
    done_line
        || contains(b"\"type\":\"response.completed\"")
        || contains(b"\"type\":\"response.incomplete\"")
        || contains(b"\"type\":\"message_stop\"")
        || contains(b"\"type\":\"finish\"")
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
    fn closing_events_are_recognised() {
        assert!(has_closing_event(b"data: [DONE]\n\n"));
        assert!(has_closing_event(b"data: {\"a\":1}\n\ndata: [DONE]\n\n"));
        assert!(has_closing_event(
            b"event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n"
        ));
        assert!(has_closing_event(
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        ));
        assert!(has_closing_event(b"data: {\"type\":\"finish\"}\n\n"));
        // A delta quoting them is not one; nor is the UI stream's step end.
        assert!(!has_closing_event(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"data: [DONE]\"}}]}\n\n"
        ));
        assert!(!has_closing_event(
            b"data: {\"delta\":\"{\\\"type\\\":\\\"finish\\\"}\",\"type\":\"text-delta\"}\n\n"
        ));
        assert!(!has_closing_event(b"data: {\"type\":\"finish-step\"}\n\n"));
    }

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

    const TTL: i64 = 60_000;

    type Chunk = Result<axum::body::Bytes, std::io::Error>;

    fn chunks_of(chunks: &[&'static [u8]]) -> impl futures::Stream<Item = Chunk> + Send + 'static {
        let items: Vec<Chunk> = chunks
            .iter()
            .map(|c| Ok(axum::body::Bytes::from_static(c)))
            .collect();
        futures::stream::iter(items)
    }

    /// A response of this type and body, through the tee, for a key taken with hash `h`.
    async fn teed(
        content_type: &'static str,
        upstream: impl futures::Stream<Item = Chunk> + Send + 'static,
    ) -> (tempfile::TempDir, Store, Body) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("i.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let taken_at = match begin(&store, "t", "k", "h", TTL, TTL).await.unwrap() {
            Begin::Run { taken_at } => taken_at,
            _ => panic!("expected Run"),
        };
        let mut response = Response::new(Body::from_stream(upstream));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        let guard = ReleaseGuard {
            store: store.clone(),
            tenant: "t".into(),
            key: "k".into(),
            taken_at,
            armed: true,
        };
        (dir, store, keep_when_complete(response, guard).into_body())
    }

    async fn stored(store: &Store) -> bool {
        matches!(
            begin(store, "t", "k", "h", TTL, TTL).await.unwrap(),
            Begin::Replay { .. }
        )
    }

    #[tokio::test]
    async fn a_json_body_ends_only_once_stored() {
        let chunks: [&'static [u8]; 2] = [b"{\"a\":", b"1}"];
        let (_dir, store, body) = teed("application/json", chunks_of(&chunks)).await;
        let mut body = body.into_data_stream();
        let first = body.next().await.unwrap().unwrap();
        assert_eq!(&first[..], chunks[0]);
        assert!(!stored(&store).await);
        let last = body.next().await.unwrap().unwrap();
        assert_eq!(&last[..], chunks[1]);
        assert!(stored(&store).await, "the last chunk came before the store");
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_delta_is_not_held_back() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Chunk>();
        let (_dir, store, body) = teed("text/event-stream", rx).await;
        let mut body = body.into_data_stream();
        let delta: &'static [u8] = b"data: {\"choices\":[]}\n\n";
        tx.unbounded_send(Ok(axum::body::Bytes::from_static(delta)))
            .unwrap();
        // Out before the upstream sends anything more.
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
            .await
            .expect("the delta was held back")
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], delta);
        assert!(!stored(&store).await);
        tx.unbounded_send(Ok(axum::body::Bytes::from_static(b"data: [DONE]\n\n")))
            .unwrap();
        drop(tx);
        let done = body.next().await.unwrap().unwrap();
        assert_eq!(&done[..], b"data: [DONE]\n\n");
        assert!(stored(&store).await);
    }

    #[tokio::test]
    async fn the_response_is_stored_before_its_last_chunk_is_sent() {
        let chunks: [&'static [u8]; 3] = [
            b"data: {\"a\":1}\n\n",
            b"data: {\"a\":2}\n\n",
            b"data: [DONE]\n\n",
        ];
        let (_dir, store, body) = teed("text/event-stream", chunks_of(&chunks)).await;
        let mut body = body.into_data_stream();
        for (i, expected) in chunks.iter().enumerate() {
            let got = body.next().await.unwrap().unwrap();
            assert_eq!(&got[..], *expected, "chunk {i}");
            // Stored exactly when the client has it all: not before the last chunk.
            let stored = matches!(
                begin(&store, "t", "k", "h", TTL, TTL).await.unwrap(),
                Begin::Replay { .. }
            );
            assert_eq!(stored, i == chunks.len() - 1, "stored after chunk {i}");
        }
        assert!(body.next().await.is_none());
        match begin(&store, "t", "k", "h", TTL, TTL).await.unwrap() {
            Begin::Replay {
                status,
                content_type,
                body,
            } => {
                assert_eq!(status, 200);
                assert_eq!(content_type.as_deref(), Some("text/event-stream"));
                assert_eq!(body, chunks.concat());
            }
            _ => panic!("expected a replay"),
        }
    }

    #[tokio::test]
    async fn an_error_event_releases_the_key_before_the_client_sees_it() {
        let chunks: [&'static [u8]; 3] = [
            b"data: {\"a\":1}\n\n",
            b"data: {\"error\":{\"message\":\"x\"}}\n\n",
            b": trailing\n\n",
        ];
        let (_dir, store, body) = teed("text/event-stream", chunks_of(&chunks)).await;
        let mut body = body.into_data_stream();
        let first = body.next().await.unwrap().unwrap();
        assert_eq!(&first[..], chunks[0]);
        let error = body.next().await.unwrap().unwrap();
        assert_eq!(&error[..], chunks[1]);
        // Already free: the retry runs (and now holds the key).
        assert!(matches!(
            begin(&store, "t", "k", "h", TTL, TTL).await.unwrap(),
            Begin::Run { .. }
        ));
        let last = body.next().await.unwrap().unwrap();
        assert_eq!(&last[..], chunks[2]);
        assert!(body.next().await.is_none());
        // The failed stream stored nothing over the retry's key.
        assert!(matches!(
            begin(&store, "t", "k", "h", TTL, TTL).await.unwrap(),
            Begin::InUse
        ));
    }
}
