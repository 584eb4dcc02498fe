//! The operator console: its built files at `/console/` (a single-page app; unknown paths
//! under it get its `index.html`), and the admin API it signs in with: console sessions
//! (`/admin/session`), the operator's own second factor (`/admin/mfa/*`, `/admin/me`), an
//! admin resetting someone's (`DELETE /admin/operators/{actor}/mfa`), and the overview's
//! figures over time (`/admin/overview`). Every other page calls the same admin API as curl.

use std::path::Path;
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::services::{ServeDir, ServeFile};

use super::extractors::{ApiJson, ApiPath, ApiQuery, RawBody, parse_json};
use super::state::AppState;
use crate::api::error::ApiError;
use crate::auth::console;
use crate::auth::roles::Operator;
use crate::clock::now_ms;
use crate::error::ErrorCode;
use crate::usage::overview;

/// The admin routes (behind the operator middleware).
pub fn admin_router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/session", post(sign_in).delete(sign_out))
        .route("/admin/me", get(me))
        .route("/admin/mfa/enroll", post(enroll))
        .route("/admin/mfa/confirm", post(confirm))
        .route("/admin/operators", get(operators))
        .route("/admin/operators/{actor}/mfa", delete(reset))
        .route("/admin/overview", get(overview_figures))
}

/// The console's files, from `admin.console_dir`.
pub fn files(dir: &Path) -> Router<Arc<AppState>> {
    let index = dir.join("index.html");
    if !index.is_file() {
        return Router::new()
            .route("/console", get(not_built))
            .route("/console/", get(not_built))
            .route("/console/{*rest}", get(not_built));
    }
    let serve = ServeDir::new(dir).fallback(ServeFile::new(index));
    Router::new().nest_service("/console", serve)
}

async fn not_built() -> Response {
    ApiError::NotFound(
        "the console is not built here: run scripts/setup.sh (it builds console/ into admin.console_dir)"
            .into(),
    )
    .into_response()
}

/// Answers holding a secret (a session token, a TOTP secret) are kept by no cache.
const NO_STORE: [(header::HeaderName, &str); 1] = [(header::CACHE_CONTROL, "no-store")];

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    /// The current TOTP code, for an enrolled operator.
    #[serde(default)]
    code: Option<String>,
}

/// Exchanges the credential the request was authenticated with for a console session.
async fn sign_in(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    headers: HeaderMap,
    RawBody(raw): RawBody,
) -> Result<Response, ApiError> {
    if crate::auth::bearer_of(&headers).is_some_and(console::is_session_token) {
        return Err(ApiError::invalid(
            "sign in with a key or an identity token, not a console session",
            None,
        ));
    }
    // The body is optional: a key alone signs in an operator without a second factor.
    let body: SignIn = if raw.iter().all(u8::is_ascii_whitespace) {
        SignIn::default()
    } else {
        parse_json(&raw)?
    };
    let ttl = state.config.admin.session_ttl_secs.max(60);
    let session = console::sign_in(&state.store, &operator, body.code.as_deref(), ttl)
        .await
        .map_err(|e| {
            state.audit.failed_auth(None, e.error_code().name());
            ApiError::coded(&e)
        })?;
    let mfa = console::mfa_state(&state.store, &operator.actor).await?;
    let mut value = json!(session);
    value["mfa"] = json!(mfa);
    Ok((StatusCode::OK, NO_STORE, axum::Json(value)).into_response())
}

async fn sign_out(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    match crate::auth::bearer_of(&headers) {
        Some(token) if console::is_session_token(token) => {
            console::sign_out(&state.store, token).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::invalid("only a console session signs out", None)),
    }
}

async fn me(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
) -> Result<axum::Json<Value>, ApiError> {
    let mfa = console::mfa_state(&state.store, &operator.actor).await?;
    Ok(axum::Json(json!({
        "actor": operator.actor, "role": operator.role.as_str(), "mfa": mfa,
    })))
}

async fn enroll(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
) -> Result<Response, ApiError> {
    let (secret, uri) = console::enroll(&state.store, &operator.actor)
        .await
        .map_err(|e| ApiError::coded(&e))?;
    Ok((
        NO_STORE,
        axum::Json(json!({"secret": secret, "otpauth_uri": uri})),
    )
        .into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Confirm {
    code: String,
}

async fn confirm(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Confirm>,
) -> Result<axum::Json<Value>, ApiError> {
    console::confirm(
        &state.store,
        &operator.actor,
        &body.code,
        crate::auth::bearer_of(&headers),
    )
    .await
    .map_err(|e| ApiError::coded(&e))?;
    Ok(axum::Json(json!({"enrolled": true})))
}

/// The operators: the admin key and the operator keys (with their roles), and identity
/// users who enrolled a second factor; each with its enrolment state.
async fn operators(State(state): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let enrolled: std::collections::BTreeMap<String, bool> =
        state.store.mfa_enrolments().await?.into_iter().collect();
    let mut data = vec![];
    let mut keyed: Vec<(String, Option<&str>)> = vec![];
    if state.admin_key.is_some() {
        keyed.push(("admin-key".into(), Some("admin")));
    }
    for (_, o) in &state.operator_keys {
        keyed.push((o.actor.clone(), Some(o.role.as_str())));
    }
    for (actor, _) in &enrolled {
        if !keyed.iter().any(|(a, _)| a == actor) {
            keyed.push((actor.clone(), None));
        }
    }
    for (actor, role) in keyed {
        let mfa = match enrolled.get(&actor) {
            Some(true) => "enrolled",
            Some(false) => "pending",
            None => "none",
        };
        data.push(json!({"actor": actor, "role": role, "mfa": mfa}));
    }
    Ok(axum::Json(json!({"object": "list", "data": data})))
}

async fn reset(
    State(state): State<Arc<AppState>>,
    ApiPath(actor): ApiPath<String>,
) -> Result<axum::Json<Value>, ApiError> {
    if !console::reset(&state.store, &actor).await? {
        return Err(ApiError::NotFound(format!(
            "`{actor}` has no second factor"
        )));
    }
    Ok(axum::Json(json!({"actor": actor, "reset": true})))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OverviewQuery {
    #[serde(default)]
    since_ms: Option<i64>,
    #[serde(default)]
    until_ms: Option<i64>,
    #[serde(default)]
    bucket_ms: Option<i64>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

/// The most requests one overview reads (the newest; `truncated` says when there were more).
const MAX_SAMPLES: i64 = 200_000;

/// Requests, errors, spend, cache hits and savings, and latency percentiles over time and
/// per tenant, model and route (default: the last 24 hours in at most 60 buckets).
async fn overview_figures(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<OverviewQuery>,
) -> Result<axum::Json<overview::Overview>, ApiError> {
    // Clamped so that window arithmetic cannot overflow, whatever the query says.
    const LATEST: i64 = i64::MAX / 4;
    let until = q.until_ms.unwrap_or_else(|| now_ms() + 1).clamp(0, LATEST);
    let since = q
        .since_ms
        .unwrap_or(until - 24 * 3_600_000)
        .clamp(0, LATEST);
    if since >= until {
        return Err(ApiError::invalid(
            "since_ms must be before until_ms",
            Some("since_ms".to_string()),
        ));
    }
    let bucket = match q.bucket_ms {
        Some(b) if b >= 1_000 && b <= until - since && (until - since) / b <= 1_000 => b,
        Some(_) => {
            return Err(ApiError::invalid(
                "bucket_ms must be at least 1000, at most the window, and give at most 1000 buckets",
                Some("bucket_ms".to_string()),
            ));
        }
        None => overview::bucket_for(until - since, 60),
    };
    let samples = state
        .store
        .request_samples(
            since,
            until,
            q.tenant.as_deref().unwrap_or(""),
            q.model.as_deref().unwrap_or(""),
            MAX_SAMPLES + 1,
        )
        .await?;
    let truncated = samples.len() as i64 > MAX_SAMPLES;
    let samples = &samples[..samples.len().min(MAX_SAMPLES as usize)];
    Ok(axum::Json(overview::overview(
        samples, since, until, bucket, truncated,
    )))
}
