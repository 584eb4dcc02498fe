//! Operational endpoints: liveness, readiness, Prometheus metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::server::AppState;

/// The process is up.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(json!({"status": "ok"})))
}

/// The process can serve: the store answers and shutdown has not begun.
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "shutting_down"})),
        );
    }
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(json!({"status": "ready", "store": state.store.backend()})),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "store_unavailable"})),
            )
        }
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
