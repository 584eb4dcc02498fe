//! A tenant's own views, for its apps and internal agents: its usage (`GET /v1/usage`, the
//! admin view's dimensions limited to the caller's tenant) and its end users' analytics
//! consent (`PUT`/`GET /v1/users/{id}/consent`).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extractors::{ApiJson, ApiPath, ApiQuery};
use super::state::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::integrations::analytics::consent;
use crate::store::UsageGroup;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// `model`, `key`, `user` or `day`.
    #[serde(default = "default_by")]
    #[schemars(extend("enum" = ["model", "key", "user", "day"]))]
    by: String,
    #[serde(default)]
    since_ms: i64,
    #[serde(default)]
    until_ms: Option<i64>,
}

fn default_by() -> String {
    "model".into()
}

/// `GET /v1/usage?by=model|key|user|day&since_ms=&until_ms=`: requests, tokens, spend, cache
/// hits and savings of the caller's tenant. An end user's credential sees its own usage only
/// (`by=user` then has one row).
pub async fn usage(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let by = match UsageGroup::parse(&q.by) {
        Some(UsageGroup::Tenant) | None => {
            return Err(ApiError::invalid(
                "by must be one of model, key, user, day",
                Some("by".to_string()),
            ));
        }
        Some(by) => by,
    };
    let end_user = end_user_of(&principal)?;
    let rows = state
        .store
        .usage_report(
            by,
            q.since_ms,
            q.until_ms,
            Some(&principal.tenant.id),
            end_user,
        )
        .await?;
    Ok(axum::Json(json!({
        "object": "list",
        "tenant": principal.tenant.name,
        "by": q.by,
        "data": super::admin::usage_rows(&q.by, rows),
    })))
}

/// The end user a credential is limited to: a token's, a session's or a personal key's
/// (a tenant's API key speaks for the whole tenant). A personal credential without a user
/// may see nothing.
pub(super) fn end_user_of(p: &Principal) -> Result<Option<&str>, ApiError> {
    match (p.personal, p.user.as_deref()) {
        (false, _) => Ok(None),
        (true, Some(u)) => Ok(Some(u)),
        (true, None) => Err(ApiError::Coded {
            code: crate::error::Code::Forbidden,
            message: "this credential names no end user".into(),
        }),
    }
}

/// An end user may read and set only their own consent; the tenant's keys, any of its users'.
fn may_speak_for(p: &Principal, user: &str) -> Result<(), ApiError> {
    match end_user_of(p)? {
        Some(me) if me != user => Err(ApiError::Coded {
            code: crate::error::Code::Forbidden,
            message: "an end user may set only their own consent".into(),
        }),
        _ => Ok(()),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    analytics: bool,
}

/// `PUT /v1/users/{id}/consent` `{"analytics": bool}`.
pub async fn set_consent(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<ConsentBody>,
) -> Result<axum::Json<Value>, ApiError> {
    may_speak_for(&principal, &user)?;
    consent::set(&state.store, &principal.tenant.id, &user, body.analytics).await?;
    Ok(axum::Json(
        json!({"object": "consent", "user": user, "analytics": body.analytics}),
    ))
}

/// `GET /v1/users/{id}/consent`: `analytics` is null when the user never said.
pub async fn get_consent(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(user): ApiPath<String>,
) -> Result<axum::Json<Value>, ApiError> {
    may_speak_for(&principal, &user)?;
    let v = consent::stored(&state.store, &principal.tenant.id, &user).await?;
    Ok(axum::Json(
        json!({"object": "consent", "user": user, "analytics": v}),
    ))
}
