//! Identity under `/admin`: API keys (list, create with the secret shown once, revoke),
//! end users' deletion (`DELETE /admin/users/{id}`, its state at
//! `GET /admin/users/{id}/deletion`), and the audit log (`GET /admin/audit`, filtered, as
//! JSON or JSON lines). Key and user changes are written to the audit log by name, beside
//! the admin middleware's own record of the request.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extractors::{ApiJson, ApiPath, ApiQuery};
use super::state::AppState;
use crate::api::error::ApiError;
use crate::audit::Event;
use crate::auth::roles::Operator;
use crate::integrations::identity::deletion;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/keys", get(list_keys).post(create_key))
        .route("/admin/keys/{id}", delete(revoke_key))
        .route("/admin/users/{id}", delete(delete_user))
        .route("/admin/users/{id}/deletion", get(user_deletion))
        .route("/admin/audit", get(audit))
}

async fn list_keys(State(state): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let keys = state.store.list_keys().await?;
    Ok(axum::Json(json!({"object": "list", "data": keys})))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKey {
    tenant: String,
    #[serde(default = "default_key_name")]
    name: String,
    /// Issues a personal key to this end user of the tenant.
    #[serde(default)]
    user: Option<String>,
}

fn default_key_name() -> String {
    "default".into()
}

/// `POST /admin/keys`: a key for a tenant (created if new); the secret is in this answer
/// only.
async fn create_key(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<axum::Json<Value>, ApiError> {
    if body.tenant.trim().is_empty() || body.tenant.len() > 200 || body.name.len() > 200 {
        return Err(ApiError::invalid(
            "`tenant` (and `name`) must be 1 to 200 characters",
            Some("tenant".to_string()),
        ));
    }
    let user = body.user.as_deref().map(str::trim);
    if user.is_some_and(|u| u.is_empty() || u.len() > 256) {
        return Err(ApiError::invalid(
            "`user` must be 1 to 256 characters",
            Some("user".to_string()),
        ));
    }
    let created =
        crate::auth::create_user_key(&state.store, body.tenant.trim(), &body.name, user).await?;
    // Its notification's email job is queued: send it now rather than at the next poll.
    state.jobs.wake();
    state
        .audit
        .append(Event::new(
            operator.actor,
            "key.create",
            Some(created.id.clone()),
            json!({"tenant": created.tenant.name, "name": body.name, "user": user}),
        ))
        .await?;
    Ok(axum::Json(
        json!({"object": "api_key", "id": created.id, "secret": created.secret,
        "tenant": created.tenant.name, "name": body.name, "user": user}),
    ))
}

/// `DELETE /admin/keys/{id}`: revokes a key (by id or its shown prefix).
async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let revoked = state.store.revoke_key(&id).await?;
    state
        .audit
        .append(Event::new(
            operator.actor,
            "key.revoke",
            Some(revoked.clone()),
            Value::Null,
        ))
        .await?;
    Ok(axum::Json(
        json!({"object": "api_key", "id": revoked, "revoked": true}),
    ))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserQuery {
    /// The tenant, by name or id.
    tenant: String,
    /// The user's email, for the email provider's contact removal.
    #[serde(default)]
    email: Option<String>,
}

async fn tenant_id(state: &AppState, tenant: &str) -> Result<String, ApiError> {
    state
        .store
        .find_tenant_id(tenant)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no tenant `{tenant}`")))
}

/// `DELETE /admin/users/{id}?tenant=...`: starts the user's deletion (202); asking again
/// returns the same deletion.
async fn delete_user(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Response, ApiError> {
    let tenant = tenant_id(&state, &q.tenant).await?;
    let d = deletion::request(
        &state.store,
        &state.jobs,
        &state.audit,
        &tenant,
        &user,
        q.email.as_deref(),
        &operator.actor,
    )
    .await?;
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(d)).into_response())
}

/// `GET /admin/users/{id}/deletion?tenant=...`: the deletion and each step's state.
async fn user_deletion(
    State(state): State<Arc<AppState>>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<axum::Json<deletion::Deletion>, ApiError> {
    let tenant = tenant_id(&state, &q.tenant).await?;
    deletion::find(&state.store, &tenant, &user)
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound(format!("no deletion of user `{user}`")))
}

/// `GET /admin/audit?since_ms=&until_ms=&actor=&action=&after=&limit=&format=jsonl`.
async fn audit(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<crate::audit::Query>,
) -> Result<Response, ApiError> {
    if q.order
        .as_deref()
        .is_some_and(|o| o != "asc" && o != "desc")
    {
        return Err(ApiError::invalid(
            "order must be asc or desc",
            Some("order".to_string()),
        ));
    }
    let rows = state.audit.read(&q).await?;
    if q.format.as_deref() == Some("jsonl") {
        let body: String = rows
            .iter()
            .map(|r| serde_json::to_string(r).expect("rows serialize") + "\n")
            .collect();
        let mut response = body.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        return Ok(response);
    }
    Ok(axum::Json(json!({"object": "list", "data": rows})).into_response())
}
