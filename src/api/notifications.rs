//! The notification centre: `GET /v1/notifications` (unread first, cursor pagination),
//! `POST /v1/notifications/{id}/read` and `/unread`, `POST /v1/notifications/read-all`, and
//! `GET /v1/notifications/stream` (server-sent events as notifications arrive, through any
//! replica). An end user's credential reads its own; a tenant's key reads the tenant's, or
//! a user's with `?user=` (a backend serving its users).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extractors::{ApiPath, ApiQuery};
use super::state::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::clock::now_ms;
use crate::notify::{inbox, live};
use crate::store::Pool;

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The `next_cursor` of the previous page.
    #[schemars(extend("pattern" = "^[ur]\\.[A-Za-z0-9_]+$"))]
    cursor: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    unread: bool,
    user: Option<String>,
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    user: Option<String>,
}

/// Whose notifications: (tenant id, user or `""`).
fn recipient(p: &Principal, asked: Option<&str>) -> Result<(String, String), ApiError> {
    // A personal credential naming no user is refused (it must not read the tenant's).
    let user = match (super::tenant::end_user_of(p)?, asked) {
        (Some(me), Some(a)) if a != me => {
            return Err(ApiError::Coded {
                code: crate::error::Code::Forbidden,
                message: "an end user reads only their own notifications".into(),
            });
        }
        (Some(me), _) => me.to_string(),
        (None, a) => a.unwrap_or_default().to_string(),
    };
    if user.len() > 256 || user.chars().any(char::is_control) {
        return Err(ApiError::invalid("invalid user", Some("user".to_string())));
    }
    Ok((p.tenant.id.clone(), user))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<axum::Json<inbox::Page>, ApiError> {
    let (tenant, user) = recipient(&principal, q.user.as_deref())?;
    let page = inbox::list(
        &state.store,
        &tenant,
        &user,
        q.cursor.as_deref(),
        q.limit.unwrap_or(20),
        q.unread,
    )
    .await
    .map_err(|e| ApiError::coded(&e))?;
    Ok(axum::Json(page))
}

async fn mark(
    state: &AppState,
    principal: &Principal,
    asked: Option<&str>,
    id: &str,
    read: bool,
) -> Result<axum::Json<Value>, ApiError> {
    let (tenant, user) = recipient(principal, asked)?;
    if !inbox::mark(&state.store, &tenant, &user, id, read).await? {
        return Err(ApiError::NotFound(format!("no notification {id}")));
    }
    let unread = inbox::unread_count(&state.store, &tenant, &user).await?;
    Ok(axum::Json(
        json!({"id": id, "read": read, "unread": unread}),
    ))
}

pub async fn read(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    mark(&state, &principal, q.user.as_deref(), &id, true).await
}

pub async fn unread(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    mark(&state, &principal, q.user.as_deref(), &id, false).await
}

pub async fn read_all(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let (tenant, user) = recipient(&principal, q.user.as_deref())?;
    let marked = inbox::mark_all(&state.store, &tenant, &user).await?;
    Ok(axum::Json(json!({"marked": marked, "unread": 0})))
}

/// Each new notification as a `notification` event whose id is its creation time, so a
/// reconnecting `EventSource` (its `Last-Event-ID`) gets what it missed: at least once
/// (those of the last event's millisecond come again; their ids tell them apart).
pub async fn stream(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Response, ApiError> {
    let (tenant, user) = recipient(&principal, q.user.as_deref())?;
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(now_ms);
    // Hints arrive at once on PostgreSQL (any replica); on SQLite the timer also covers
    // other processes writing to the same file.
    let poll = match state.store.pool() {
        Pool::Postgres(_) => Duration::from_secs(15),
        _ => Duration::from_secs(1),
    };
    let shutdown = state.shutdown.clone();
    let events = live::stream(state.store.clone(), tenant, user, since, poll)
        .map(|item| {
            Ok::<_, Infallible>(
                super::sse::json(&item)
                    .event("notification")
                    .id(item.created_at.to_string()),
            )
        })
        .take_until(async move { shutdown.cancelled().await });
    Ok(super::sse::response(events))
}
