//! The cache's API: a tenant manages its own entries under `/v1/cache` (look up, delete,
//! invalidate by tag, and say whether a hit was right: `POST /v1/cache/feedback`); the
//! operator can invalidate any tenant's (or every tenant's, by tag) and read each tenant's
//! false-hit estimate under `/admin/cache`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extractors::{ApiJson, ApiPath};
use super::state::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::cache::Cache;

fn cache(state: &AppState) -> Result<&Arc<Cache>, ApiError> {
    state.chat.cache.as_ref().ok_or_else(|| {
        ApiError::NotFound("the response cache is disabled ([cache] enabled = false)".into())
    })
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

pub async fn get_entry(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Value>, ApiError> {
    match cache(&state)?
        .entry_info(&principal.tenant.id, &id)
        .await
        .map_err(internal)?
    {
        Some(info) => Ok(axum::Json(json!(info))),
        None => Err(ApiError::NotFound(format!("no cache entry `{id}`"))),
    }
}

pub async fn delete_entry(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Value>, ApiError> {
    if cache(&state)?
        .invalidate_entry(&principal.tenant.id, &id)
        .await
        .map_err(internal)?
    {
        Ok(axum::Json(
            json!({"id": id, "object": "cache.entry", "deleted": true}),
        ))
    } else {
        Err(ApiError::NotFound(format!("no cache entry `{id}`")))
    }
}

/// `POST /v1/cache/feedback`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The entry that answered (`x-quartermaster-cache-entry`).
    entry: String,
    /// The request it answered (`x-request-id`): one verdict per request, a later one
    /// replaces it.
    #[serde(default)]
    request_id: Option<String>,
    /// Whether the answer was right for the question asked.
    correct: bool,
}

/// `POST /v1/cache/feedback`: a verdict on a hit; a wrong one demotes the entry from
/// semantic matching and counts in the tenant's false-hit estimate.
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<FeedbackRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    if body.entry.is_empty() || body.entry.len() > 200 {
        return Err(ApiError::invalid(
            "`entry` must be a cache entry id",
            Some("entry".to_string()),
        ));
    }
    if body
        .request_id
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > 200)
    {
        return Err(ApiError::invalid(
            "`request_id` must be a request id",
            Some("request_id".to_string()),
        ));
    }
    let recorded = cache(&state)?
        .feedback(
            &principal.tenant.id,
            &body.entry,
            body.request_id.as_deref(),
            body.correct,
            crate::cache::feedback::Source::User,
        )
        .await?;
    if !recorded {
        return Err(ApiError::NotFound(format!(
            "no cache entry `{}`",
            body.entry
        )));
    }
    Ok(axum::Json(
        json!({"object": "cache.feedback", "entry": body.entry,
        "correct": body.correct, "demoted": !body.correct}),
    ))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    /// Entries carrying any of these tags.
    #[serde(default)]
    tags: Vec<String>,
    /// Every entry of the tenant.
    #[serde(default)]
    all: bool,
    /// Admin only: the tenant, by name or id. Without it, tags apply to every tenant.
    #[serde(default)]
    tenant: Option<String>,
}

impl InvalidateRequest {
    fn check(&self) -> Result<(), ApiError> {
        if self.all == !self.tags.is_empty() {
            return Err(ApiError::invalid(
                "give either `tags` (a non-empty list) or `all: true`",
                None,
            ));
        }
        if self.tags.len() > crate::cache::MAX_TAGS {
            return Err(ApiError::invalid(
                format!(
                    "at most {} tags per request (send several requests for more)",
                    crate::cache::MAX_TAGS
                ),
                Some("tags".to_string()),
            ));
        }
        if self
            .tags
            .iter()
            .any(|t| t.is_empty() || t.len() > 128 || t.contains('\0'))
        {
            return Err(ApiError::invalid(
                "tags must be 1 to 128 characters, without NUL",
                Some("tags".to_string()),
            ));
        }
        Ok(())
    }
}

/// `POST /v1/cache/invalidate`: the caller's own tenant.
pub async fn invalidate(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<InvalidateRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    body.check()?;
    if body.tenant.is_some() {
        return Err(ApiError::invalid(
            "`tenant` is only accepted on /admin/cache/invalidate",
            Some("tenant".to_string()),
        ));
    }
    let cache = cache(&state)?;
    let tenant = principal.tenant.id.as_str();
    let deleted = if body.all {
        cache.invalidate_tenant(tenant).await
    } else {
        cache.invalidate_tags(Some(tenant), &body.tags).await
    }
    .map_err(internal)?;
    Ok(axum::Json(
        json!({"object": "cache.invalidation", "deleted": deleted}),
    ))
}

/// `POST /admin/cache/invalidate`: any tenant, or (by tag) all of them.
pub async fn admin_invalidate(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<InvalidateRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    body.check()?;
    let cache = cache(&state)?;
    let tenant_id = match &body.tenant {
        None => None,
        Some(t) => {
            let id = state.store.find_tenant_id(t).await?;
            // Unauthenticated gateways cache under the tenant id "default", which has no row.
            Some(id.unwrap_or_else(|| t.clone()))
        }
    };
    let deleted = match (&tenant_id, body.all) {
        (Some(t), true) => cache.invalidate_tenant(t).await,
        (None, true) => {
            return Err(ApiError::invalid(
                "`all: true` needs a `tenant`",
                Some("tenant".to_string()),
            ));
        }
        (t, false) => cache.invalidate_tags(t.as_deref(), &body.tags).await,
    }
    .map_err(internal)?;
    Ok(axum::Json(
        json!({"object": "cache.invalidation", "deleted": deleted}),
    ))
}

/// `GET /admin/cache`: entries per tenant and the index's state.
pub async fn admin_stats(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<Value>, ApiError> {
    let cache = cache(&state)?;
    let counts = cache.counts().await.map_err(internal)?;
    let (live, tombstones) = cache.index_stats();
    // The false-hit estimate per tenant over the last 30 days.
    let since = crate::clock::now_ms() - 30 * 86_400_000;
    let mut tenants = Vec::with_capacity(counts.len());
    for (t, n) in counts {
        let estimate = cache.false_hit_estimate(&t, since).await?;
        // The bound its semantic hits are held to on this replica now (stricter than
        // configured while its observed rate over 7 days is over it) and what that asks of a
        // candidate: what its lookups use, refreshed as theirs are.
        let held = cache.in_force_now(&t);
        tenants.push(json!({
            "tenant_id": t, "entries": n, "false_hits_30d": estimate,
            "bound_in_force": held.bound, "tightened": held.tightened,
            "threshold_in_force": held.threshold, "cross_bar_in_force": held.cross_bar,
        }));
    }
    Ok(axum::Json(json!({
        "object": "cache.stats",
        "index": cache.index_name(),
        "index_loaded": cache.is_loaded(),
        "indexed_entries": live,
        "tombstones": tombstones,
        "snapshot_tenants_loaded": cache.snapshot_tenants(),
        "threshold": cache.config.effective_threshold(),
        "max_false_hit_rate": cache.config.max_false_hit_rate,
        "verifier": cache.config.verifier,
        "reask_share": cache.config.reask_share,
        "tenants": tenants,
    })))
}
