//! Communications under `/admin`: where a tenant's and an end user's mail goes
//! (`PUT /admin/tenants/{name}/contact`, `PUT /admin/users/{id}/contact`), the email outbox
//! (`GET /admin/email/outbox?state=`), the suppression list (`GET /admin/email/suppressions`,
//! `DELETE /admin/email/suppressions/{address}`) and bookings (`GET /admin/bookings?tenant=`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::{delete, get, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extractors::{ApiJson, ApiPath, ApiQuery};
use super::state::AppState;
use crate::api::error::ApiError;
use crate::notify::{self, records};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/tenants/{name}/contact", put(tenant_contact))
        .route("/admin/users/{id}/contact", put(user_contact))
        .route("/admin/email/outbox", get(outbox))
        .route("/admin/email/suppressions", get(suppressions))
        .route("/admin/email/suppressions/{address}", delete(unsuppress))
        .route("/admin/bookings", get(bookings))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Contact {
    email: String,
    /// For a user: their tenant.
    #[serde(default)]
    tenant: Option<String>,
}

fn checked(email: &str) -> Result<String, ApiError> {
    let e = email.trim();
    if !notify::valid_address(e) {
        return Err(ApiError::invalid(
            "`email` is not an email address",
            Some("email".to_string()),
        ));
    }
    Ok(e.to_lowercase())
}

async fn tenant_contact(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Contact>,
) -> Result<axum::Json<Value>, ApiError> {
    let email = checked(&body.email)?;
    let tenant = state.store.ensure_tenant(&name).await?;
    notify::set_tenant_address(&state.store, &tenant.id, &email).await?;
    Ok(axum::Json(json!({"tenant": name, "email": email})))
}

async fn user_contact(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Contact>,
) -> Result<axum::Json<Value>, ApiError> {
    let email = checked(&body.email)?;
    let Some(tenant) = body.tenant.filter(|t| !t.trim().is_empty()) else {
        return Err(ApiError::invalid(
            "`tenant` is required for a user",
            Some("tenant".to_string()),
        ));
    };
    let tenant = state.store.ensure_tenant(&tenant).await?;
    notify::set_user_address(&state.store, &tenant.id, &id, &email).await?;
    Ok(axum::Json(
        json!({"tenant": tenant.name, "user": id, "email": email}),
    ))
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutboxQuery {
    state: Option<String>,
    limit: Option<i64>,
}

async fn outbox(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<OutboxQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let rows = records::outbox(&state.store, q.state.as_deref(), q.limit.unwrap_or(100)).await?;
    Ok(axum::Json(json!({"object": "list", "data": rows})))
}

async fn suppressions(State(state): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let rows = records::suppressions(&state.store).await?;
    Ok(axum::Json(json!({"object": "list", "data": rows})))
}

async fn unsuppress(
    State(state): State<Arc<AppState>>,
    ApiPath(address): ApiPath<String>,
) -> Result<axum::Json<Value>, ApiError> {
    if !records::unsuppress(&state.store, &address).await? {
        return Err(ApiError::NotFound(format!("{address} is not suppressed")));
    }
    Ok(axum::Json(json!({"address": address, "deleted": true})))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BookingsQuery {
    tenant: String,
}

async fn bookings(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<BookingsQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let rows = records::bookings(&state.store, &q.tenant).await?;
    Ok(axum::Json(json!({"object": "list", "data": rows})))
}
