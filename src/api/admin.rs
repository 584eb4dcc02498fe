//! The operator API under `/admin`: the job queue (counts, listings, the dead-letter queue
//! and re-driving it), tenants' billing state, usage, routing, the cache, keys, users and
//! their deletion, the audit log. Operators authenticate with the admin key (role `admin`),
//! a scoped operator key, or an identity provider's token whose roles claim maps to an
//! operator role (`auth/roles.rs`); a role too low for the request is a 403. Every request
//! that changes state is written to the audit log with its operator and outcome.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::extractors::{ApiPath, ApiQuery};
use super::state::AppState;
use crate::api::error::ApiError;
use crate::audit::Event;
use crate::auth::console;
use crate::auth::roles::{self, Operator, Role};
use crate::store::UsageGroup;
use axum::http::Method;

pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/jobs", get(list_jobs))
        .route("/admin/jobs/stats", get(job_stats))
        .route("/admin/jobs/dead", get(list_dead))
        .route("/admin/jobs/dead/redrive", post(redrive_all))
        .route("/admin/jobs/{id}", get(get_job))
        .route("/admin/jobs/{id}/redrive", post(redrive_one))
        .route("/admin/tenants", get(list_tenants))
        .route("/admin/usage", get(usage))
        .route("/admin/routing", get(routing))
        .route("/admin/cache", get(super::cache::admin_stats))
        .route(
            "/admin/cache/invalidate",
            post(super::cache::admin_invalidate),
        )
        .merge(super::identity::router())
        .merge(super::communications::router())
        .merge(super::console::admin_router())
        .layer(middleware::from_fn_with_state(state, require_operator))
}

/// The SHA-256 of the configured admin key, if any.
pub fn admin_key_hash(config: &crate::config::Config) -> Option<[u8; 32]> {
    let key = config
        .admin
        .api_key
        .as_ref()
        .map(|k| secrecy::ExposeSecret::expose_secret(k).to_string())
        .or_else(|| {
            config
                .admin
                .api_key_env
                .as_ref()
                .and_then(|v| std::env::var(v).ok())
        })
        .filter(|k| !k.trim().is_empty())?;
    Some(Sha256::digest(key.trim().as_bytes()).into())
}

/// Authenticates the operator, checks their role against the request, and writes every
/// request that changes state (and its outcome) to the audit log.
async fn require_operator(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = crate::auth::bearer_of(req.headers()).map(str::to_string);
    let operator = match operator(&state, token.as_deref()).await {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    // An operator enrolled in TOTP uses the admin API through a console session; their
    // raw credential only signs in (with a code).
    let signing_in = req.method() == Method::POST && req.uri().path() == "/admin/session";
    if !signing_in && !token.as_deref().is_some_and(console::is_session_token) {
        if let Err(e) = console::require_no_second_factor(&state.store, &operator.actor).await {
            return ApiError::coded(&e).into_response();
        }
    }
    let needed = roles::required(req.method(), req.uri().path());
    if operator.role < needed {
        return ApiError::Coded {
            code: crate::error::Code::Forbidden,
            message: format!(
                "this needs the `{}` role; `{}` has `{}`",
                needed.as_str(),
                operator.actor,
                operator.role.as_str()
            ),
        }
        .into_response();
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    req.extensions_mut().insert(operator.clone());
    let response = next.run(req).await;
    if changes {
        // Written before the answer goes out (a change is never acknowledged unaudited unless
        // the audit log itself fails, which is logged).
        state
            .audit
            .append_logged(Event::new(
                operator.actor,
                &format!("admin.{}", method.to_lowercase()),
                Some(path),
                json!({"status": response.status().as_u16(), "role": operator.role.as_str()}),
            ))
            .await;
    }
    response
}

/// Who is operating: the admin key, an operator key, or an identity provider's token whose
/// roles map to an operator role.
async fn operator(state: &AppState, token: Option<&str>) -> Result<Operator, ApiError> {
    let by_token =
        !state.config.auth.operator_roles.is_empty() && state.identities.accepts_tokens();
    if state.admin_key.is_none() && state.operator_keys.is_empty() && !by_token {
        return Err(ApiError::AdminDisabled);
    }
    let Some(token) = token else {
        return Err(ApiError::AdminUnauthorized);
    };
    if console::is_session_token(token) {
        let session = console::session(&state.store, token)
            .await?
            .ok_or(ApiError::AdminUnauthorized)?;
        return still_operator(state, session).ok_or(ApiError::AdminUnauthorized);
    }
    // Comparing digests: equal-length, and a timing difference says nothing about the key.
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if state.admin_key == Some(digest) {
        return Ok(Operator {
            actor: "admin-key".into(),
            role: Role::Admin,
        });
    }
    if let Some((_, o)) = state.operator_keys.iter().find(|(d, _)| *d == digest) {
        return Ok(o.clone());
    }
    if by_token && crate::auth::jwt::JwtVerifier::looks_like_jwt(token) {
        let principal = state.identities.token(token).await.map_err(|e| {
            state.audit.failed_auth(None, e.kind());
            ApiError::AdminUnauthorized
        })?;
        // The actor names the person: a token naming no user cannot be an operator (its
        // second factor would be everyone's).
        if principal.user.as_deref().is_none_or(str::is_empty) {
            state.audit.failed_auth(None, "operator_token_without_user");
            return Err(ApiError::AdminUnauthorized);
        }
        if let Some(role) = roles::role_of(&principal.roles, &state.config.auth.operator_roles) {
            return Ok(Operator {
                actor: format!(
                    "user:{}:{}",
                    principal.key_id,
                    principal.user.unwrap_or_default()
                ),
                role,
            });
        }
    }
    state.audit.failed_auth(None, "invalid_admin_key");
    Err(ApiError::AdminUnauthorized)
}

/// A session's operator as the configuration stands now: the admin key's sessions end when
/// the admin key is removed, an operator key's when its entry is, and a role lowered since
/// the sign-in applies at once. (An identity user's role is the one their token had.)
fn still_operator(state: &AppState, session: Operator) -> Option<Operator> {
    if session.actor == "admin-key" {
        return state.admin_key.is_some().then_some(session);
    }
    if session.actor.starts_with("operator:") {
        let (_, now) = state
            .operator_keys
            .iter()
            .find(|(_, o)| o.actor == session.actor)?;
        return Some(Operator {
            role: session.role.min(now.role),
            actor: session.actor,
        });
    }
    Some(session)
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct ListQuery {
    /// `queued`, `running`, `done` or `dead`.
    #[serde(default = "default_status")]
    #[schemars(extend("enum" = ["queued", "running", "done", "dead"]))]
    status: String,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_status() -> String {
    "dead".into()
}
fn default_limit() -> i64 {
    100
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

async fn list_jobs(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    if !matches!(q.status.as_str(), "queued" | "running" | "done" | "dead") {
        return Err(ApiError::invalid(
            "status must be one of queued, running, done, dead",
            Some("status".to_string()),
        ));
    }
    let jobs = state
        .jobs
        .list(&q.status, q.limit.clamp(1, 1000))
        .await
        .map_err(internal)?;
    Ok(axum::Json(json!({"object": "list", "data": jobs})))
}

async fn list_dead(State(state): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let jobs = state.jobs.list("dead", 1000).await.map_err(internal)?;
    Ok(axum::Json(json!({"object": "list", "data": jobs})))
}

async fn job_stats(State(state): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let counts = state.jobs.counts().await.map_err(internal)?;
    Ok(axum::Json(json!({"counts": counts})))
}

async fn get_job(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Value>, ApiError> {
    match state.jobs.get(&id).await.map_err(internal)? {
        Some(job) => Ok(axum::Json(json!(job))),
        None => Err(ApiError::NotFound(format!("no job `{id}`"))),
    }
}

async fn redrive_one(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let n = state.jobs.redrive(Some(&id)).await.map_err(internal)?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("no dead job `{id}`")));
    }
    Ok(axum::Json(json!({"redriven": n})))
}

async fn redrive_all(State(state): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let n = state.jobs.redrive(None).await.map_err(internal)?;
    Ok(axum::Json(json!({"redriven": n})))
}

/// Tenants with their plan and billing state, their limits and budgets (configured), and
/// what they spent today and this month (UTC, the budgets' windows).
async fn list_tenants(State(state): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let tenants = state.store.list_tenants().await?;
    let (day_start, month_start) = crate::usage::budget_windows(crate::clock::now_ms());
    let spend = state.store.tenant_spend(day_start, month_start).await?;
    let live = state.chat.live.load();
    let data: Vec<Value> = tenants
        .into_iter()
        .map(|t| {
            let mut v = json!(t);
            v["limits"] = json!(live.limits.for_tenant(&t.name));
            let (today, month) = spend.get(&t.id).copied().unwrap_or_default();
            v["spend_today_usd"] = json!(today);
            v["spend_month_usd"] = json!(month);
            v
        })
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})))
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct UsageQuery {
    /// `tenant`, `key`, `model`, `user` or `day`.
    #[serde(default = "default_by")]
    #[schemars(extend("enum" = ["tenant", "key", "model", "user", "day"]))]
    by: String,
    /// Only requests at or after this time (ms since the epoch); default: all.
    #[serde(default)]
    since_ms: i64,
    /// Only requests before this time.
    #[serde(default)]
    until_ms: Option<i64>,
    /// Only this tenant's requests (its name or id).
    #[serde(default)]
    tenant: Option<String>,
}

fn default_by() -> String {
    "tenant".into()
}

/// Requests, tokens, spend, cache hits and savings, grouped by tenant, key, model or end
/// user (`tenant/user`), of every tenant or one (`tenant=`).
async fn usage(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let Some(by) = UsageGroup::parse(&q.by) else {
        return Err(ApiError::invalid(
            "by must be one of tenant, key, model, user, day",
            Some("by".to_string()),
        ));
    };
    let tenant = match &q.tenant {
        Some(t) => Some(
            state
                .store
                .find_tenant_id(t)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no tenant `{t}`")))?,
        ),
        None => None,
    };
    let rows = state
        .store
        .usage_report(by, q.since_ms, q.until_ms, tenant.as_deref(), None)
        .await?;
    let data = usage_rows(&q.by, rows);
    Ok(axum::Json(
        json!({"object": "list", "by": q.by, "data": data}),
    ))
}

/// A usage report's rows as JSON, named by what they group.
pub(super) fn usage_rows(by: &str, rows: Vec<crate::store::UsageRow>) -> Vec<Value> {
    rows.into_iter()
        .map(|r| {
            json!({by: r.group, "requests": r.requests, "succeeded": r.succeeded,
                   "tokens_in": r.tokens_in, "tokens_out": r.tokens_out, "spend_usd": r.spend_usd,
                   "cache_hits": r.cache_hits, "savings_usd": r.savings_usd})
        })
        .collect()
}

/// How many requests each routing decision (tier, reason) sent where.
async fn routing(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let data = state.store.routing_report(q.since_ms).await?;
    let live = state.chat.live.load();
    Ok(axum::Json(json!({
        "object": "list",
        "data": data,
        "classifier_ready": live.classifier.is_some(),
        "threshold": live.routing.threshold,
        "tiers": live.tiers.iter().map(|(name, t)| json!({
            "name": name, "models": t.models, "fallback": t.fallback,
        })).collect::<Vec<_>>(),
        "curve": live.classifier.as_ref().and_then(|c| c.evaluation.as_ref()),
    })))
}
