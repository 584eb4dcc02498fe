//! Operational endpoints: liveness, readiness, Prometheus metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::state::AppState;

/// The process is up.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(json!({"status": "ok"})))
}

/// The process can serve: the store answers and takes writes (as its health probe and the
/// last real writes found), and shutdown has not begun. The body says what is degraded.
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "shutting_down"})),
        );
    }
    let store = state.store.health().report();
    let request_log = state.request_log.status();
    let body = json!({
        "status": if store.writable { "ready" } else if store.reachable { "store_not_writable" } else { "store_unavailable" },
        "store": state.store.backend(),
        "store_health": store,
        "request_log": request_log,
    });
    let status = if store.writable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
