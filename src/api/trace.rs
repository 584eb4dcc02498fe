//! Request spans: each request gets a server span (continuing an incoming `traceparent`),
//! named by its route template, with its method, route and status; handlers take it with
//! the [`RequestSpan`] extractor and hand it to the pipeline, whose steps are its children.
//! With tracing off this is a lookup of an empty handle.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use super::state::AppState;
use crate::telemetry::genai;
use crate::telemetry::trace::{Kind, Span, SpanContext};

/// The request's span (empty when tracing is off or the trace is not sampled).
#[derive(Clone, Default)]
pub struct RequestSpan(pub Span);

impl<S: Send + Sync> FromRequestParts<S> for RequestSpan {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<RequestSpan>()
            .cloned()
            .unwrap_or_default())
    }
}

pub async fn trace_requests(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !state.tracer.enabled() {
        return next.run(req).await;
    }
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(SpanContext::from_traceparent);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let name = match &route {
        Some(r) => format!("{method} {r}"),
        None => method.clone(),
    };
    let span = state.tracer.root(name, Kind::Server, parent);
    if span.is_recording() {
        span.set(genai::HTTP_METHOD, method);
        span.set(genai::URL_PATH, req.uri().path());
        if let Some(r) = route {
            span.set(genai::HTTP_ROUTE, r);
        }
        if let Some(id) = req
            .headers()
            .get(&super::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
        {
            span.set(genai::REQUEST_ID, id);
        }
    }
    req.extensions_mut().insert(RequestSpan(span.clone()));
    let response = next.run(req).await;
    let status = response.status().as_u16();
    span.set(genai::HTTP_STATUS, i64::from(status));
    if status >= 500 {
        span.error(&status.to_string(), format!("HTTP {status}"));
    }
    // A streamed answer holds its own handle: the span ends with the stream.
    response
}
