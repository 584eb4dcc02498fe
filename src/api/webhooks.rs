//! Webhooks: no API key, the signature is the authentication, and the raw body goes to the
//! integration untouched (signatures are over exact bytes). `POST /webhooks/stripe`,
//! `POST /webhooks/identity/{source}` (Clerk, Supabase), `POST /webhooks/cms/{source}` and
//! `POST /webhooks/sanity` (headless CMSs), `POST /webhooks/email/{provider}` (delivery
//! events), `POST /webhooks/cal` and `/webhooks/cal/{source}` (Cal.com bookings).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
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

/// `POST /webhooks/identity/{source}`: an identity provider's Standard Webhooks delivery
/// (Clerk, Supabase); a `user.deleted` event starts that user's deletion.
pub async fn identity(
    State(state): State<Arc<AppState>>,
    super::extractors::ApiPath(source): super::extractors::ApiPath<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::Json<Value>, ApiError> {
    use crate::integrations::identity::webhook::{Context, receive};
    let Some(config) = state.config.identity.webhooks.get(&source) else {
        return Err(ApiError::NotFound(format!(
            "no identity webhook `{source}` is configured"
        )));
    };
    let ctx = Context {
        store: &state.store,
        queue: &state.jobs,
        audit: &state.audit,
    };
    let received = receive(ctx, &source, config, &headers, &body)
        .await
        .map_err(|e| ApiError::coded(&e))?;
    Ok(axum::Json(json!({
        "received": true,
        "id": received.id,
        "duplicate": received.duplicate,
        "deletion": received.deletion,
    })))
}

/// `POST /webhooks/cms/{source}`: a headless CMS's publish, update or delete.
pub async fn cms(
    State(state): State<Arc<AppState>>,
    super::extractors::ApiPath(source): super::extractors::ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::Json<Value>, ApiError> {
    cms_source(&state, &source, &uri, &headers, &body).await
}

/// `POST /webhooks/sanity`: the CMS source named `sanity`.
pub async fn sanity(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::Json<Value>, ApiError> {
    cms_source(&state, "sanity", &uri, &headers, &body).await
}

/// `POST /webhooks/contentful`: the CMS source named `contentful`.
pub async fn contentful(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::Json<Value>, ApiError> {
    cms_source(&state, "contentful", &uri, &headers, &body).await
}

async fn cms_source(
    state: &AppState,
    source: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<axum::Json<Value>, ApiError> {
    use crate::integrations::cms::webhook::receive;
    let Some(config) = state.config.cms.sources.get(source) else {
        return Err(ApiError::NotFound(format!(
            "no CMS webhook `{source}` is configured"
        )));
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let received = receive(
        &state.store,
        &state.jobs,
        source,
        config,
        path,
        headers,
        body,
    )
    .await
    .map_err(|e| ApiError::coded(&e))?;
    Ok(axum::Json(json!({
        "received": true,
        "id": received.id,
        "duplicate": received.duplicate,
        "document": received.document,
        "operation": received.operation,
        "revision": received.revision,
    })))
}

/// `POST /webhooks/email/{provider}`: delivery events (Resend, Postmark, SendGrid).
pub async fn email(
    State(state): State<Arc<AppState>>,
    super::extractors::ApiPath(provider): super::extractors::ApiPath<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::Json<Value>, ApiError> {
    use crate::integrations::email::events::receive;
    let r = receive(
        &state.store,
        &provider,
        &state.config.email.webhooks,
        &headers,
        &body,
    )
    .await
    .map_err(|e| ApiError::coded(&e))?;
    Ok(axum::Json(json!({
        "received": true,
        "events": r.events,
        "new": r.new,
        "suppressed": r.suppressed,
    })))
}

/// `POST /webhooks/cal`: the Cal.com source named `cal`.
pub async fn cal(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::Json<Value>, ApiError> {
    cal_delivery(&state, "cal", &headers, &body).await
}

/// `POST /webhooks/cal/{source}`: a Cal.com booking event.
pub async fn cal_source(
    State(state): State<Arc<AppState>>,
    super::extractors::ApiPath(source): super::extractors::ApiPath<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::Json<Value>, ApiError> {
    cal_delivery(&state, &source, &headers, &body).await
}

async fn cal_delivery(
    state: &AppState,
    source: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<axum::Json<Value>, ApiError> {
    let Some(config) = state.config.cal.sources.get(source) else {
        return Err(ApiError::NotFound(format!(
            "no Cal.com webhook `{source}` is configured"
        )));
    };
    let r = crate::integrations::cal::receive(&state.store, &state.jobs, config, headers, body)
        .await
        .map_err(|e| ApiError::coded(&e))?;
    Ok(axum::Json(json!({
        "received": true,
        "id": r.id,
        "duplicate": r.duplicate,
        "handled": r.handled,
        "booking": r.booking,
    })))
}
