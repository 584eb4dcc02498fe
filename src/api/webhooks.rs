//! `POST /webhooks/stripe`: no API key, the signature is the authentication. The raw body
//! goes to the Stripe integration untouched (signatures are over exact bytes).

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::extractors::RawBody;
use super::state::AppState;
use crate::api::error::ApiError;
use crate::integrations::stripe::webhook;

pub async fn stripe(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::Json<Value>, ApiError> {
    // A header that is not visible ASCII cannot be a valid signature; NUL marks it so.
    let signature = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let receipt =
        webhook::receive(&state.store, &state.jobs, &state.billing, signature, &body).await?;
    Ok(axum::Json(json!({
        "received": true,
        "id": receipt.id,
        "duplicate": receipt.duplicate,
        "handled": receipt.handled,
    })))
}
