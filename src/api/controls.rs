//! The gateway's own request and response headers (`x-quartermaster-*`): the pipeline's
//! controls read from a request, and what the pipeline reports written onto a response.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::error::ApiError;
use crate::cache::{
    CACHE_HEADER, ControlText, ENTRY_HEADER, KIND_HEADER, SIMILARITY_HEADER, TAGS_HEADER,
    THRESHOLD_HEADER, TTL_HEADER,
};
use crate::chat::{CacheOutcome, Controls, Meta, RAG_HEADER, RAG_TOP_K_HEADER, TIER_HEADER};
use crate::route::{MODEL_HEADER, ROUTE_HEADER};

/// Request header: the end user's analytics consent (`granted` / `denied`), as the app
/// knows it.
pub const CONSENT_HEADER: &str = "x-quartermaster-analytics-consent";

/// Response header: how many retrieved chunks a grounded answer was given.
pub const GROUNDED_HEADER: &str = "x-quartermaster-grounded";

/// A header's text; a value that is not text is a 400, never ignored.
fn text(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
            ApiError::invalid(
                format!("header {name} is not valid text"),
                Some(name.to_string()),
            )
        }),
    }
}

/// The pipeline's request for a body a door has decoded: the controls and the request id
/// from the headers, the request's span, started now.
pub fn chat_request(
    headers: &HeaderMap,
    principal: crate::auth::Principal,
    trace: crate::telemetry::trace::Span,
    body: crate::types::ChatCompletionRequest,
) -> Result<crate::chat::ChatRequest, ApiError> {
    Ok(crate::chat::ChatRequest {
        trace,
        controls: from_headers(headers)?,
        request_id: headers
            .get(&super::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        started: std::time::Instant::now(),
        principal,
        body,
    })
}

/// The pipeline's controls, as the request's headers carry them.
pub fn from_headers(headers: &HeaderMap) -> Result<Controls, ApiError> {
    Ok(Controls {
        cache: ControlText {
            mode: text(headers, CACHE_HEADER)?,
            ttl: text(headers, TTL_HEADER)?,
            threshold: text(headers, THRESHOLD_HEADER)?,
            tags: text(headers, TAGS_HEADER)?,
        },
        rag: text(headers, RAG_HEADER)?,
        rag_top_k: text(headers, RAG_TOP_K_HEADER)?,
        tier: text(headers, TIER_HEADER)?,
        consent: text(headers, CONSENT_HEADER)?,
        internal: false,
    })
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// What the pipeline reports, as response headers: the model that answered, the routing
/// decision, the cache's part, how many chunks grounded the answer.
pub fn write(meta: &Meta, headers: &mut HeaderMap) {
    match &meta.cache {
        CacheOutcome::Hit {
            kind,
            similarity,
            entry_id,
        } => {
            set(headers, CACHE_HEADER, "hit");
            set(headers, KIND_HEADER, kind.as_str());
            set(headers, SIMILARITY_HEADER, &format!("{similarity:.4}"));
            set(headers, ENTRY_HEADER, entry_id);
        }
        CacheOutcome::Miss => set(headers, CACHE_HEADER, "miss"),
        CacheOutcome::Bypass => set(headers, CACHE_HEADER, "bypass"),
    }
    if let Some(n) = meta.grounded {
        headers.insert(
            HeaderName::from_static(GROUNDED_HEADER),
            HeaderValue::from(n),
        );
    }
    if let Some(route) = &meta.route {
        set(headers, ROUTE_HEADER, &route.header_value());
    }
    set(headers, MODEL_HEADER, &meta.answered_by);
}
