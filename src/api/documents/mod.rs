//! Documents and retrieval: `POST /v1/documents` (JSON or multipart upload),
//! `GET /v1/documents`, `GET|DELETE /v1/documents/{id}`, `POST /v1/retrieve`. The tenant is
//! the API key's; every call stays inside it. Decoding uploads is `decode.rs`.

mod decode;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extractors::{ApiPath, ApiQuery};
use super::idempotency::NotKept;
use super::state::AppState;
use crate::api::error::{ApiError, Code};
use crate::auth::Principal;
use crate::rag::{Filter, IngestDoc, Metadata, Mode, Query, Rag, RagError};

fn rag(state: &AppState) -> Result<&Arc<Rag>, ApiError> {
    state.chat.rag.as_ref().ok_or_else(|| {
        ApiError::NotFound("retrieval is disabled on this gateway (rag.enabled = false)".into())
    })
}

/// One decoded document, or why it could not be (under its id or file name).
type Item = Result<IngestDoc, (Option<String>, ApiError)>;

/// One item's outcome in the response list.
fn item_error(id: Option<&str>, source: Option<&str>, e: ApiError) -> Value {
    json!({
        "id": id,
        "source": source,
        "status": "failed",
        "error": e.envelope().error,
    })
}

/// `POST /v1/documents`: ingests every document it can; each gets its own result. A
/// request with one document that fails is that document's error.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let rag = rag(&state)?.clone();
    // This route's body limit is the upload limit (413s state it).
    req.extensions_mut()
        .insert(super::extractors::BodyLimit(rag.config.max_upload_bytes));
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let items = if content_type.starts_with("multipart/form-data") {
        decode::multipart_items(req, &state, &rag).await?
    } else if super::extractors::is_json_media_type(&content_type) {
        decode::json_items(req, &rag).await?
    } else {
        return Err(ApiError::Coded {
            code: Code::UnsupportedMediaType,
            message: "POST /v1/documents takes application/json or multipart/form-data".into(),
        });
    };
    let single = items.len() == 1;
    // Ingestion runs in its own task: a client that disconnects does not cut a document's
    // write (or the store's memory update after it) in half.
    let outcome = tokio::spawn(ingest_all(rag.clone(), principal.tenant.id.clone(), items))
        .await
        .map_err(|e| ApiError::Internal(format!("ingestion task: {e}")))?;
    if single && outcome.failed == 1 {
        if let Some(e) = outcome.only_error {
            return Err(e);
        }
    }
    let mut response = Json(json!({
        "object": "list",
        "data": outcome.results,
        "ingested": outcome.results.len() - outcome.failed,
        "failed": outcome.failed,
        "store": rag.store_name(),
    }))
    .into_response();
    if outcome.retryable {
        response.extensions_mut().insert(NotKept);
    }
    Ok(response)
}

/// Every item's result, in order.
struct Ingested {
    results: Vec<Value>,
    failed: usize,
    /// The last failure (the response when the request had one document).
    only_error: Option<ApiError>,
    /// Some item failed in a way a retry may mend (5xx, 429): the answer is not kept for an
    /// `Idempotency-Key` replay.
    retryable: bool,
}

async fn ingest_all(rag: Arc<Rag>, tenant: String, items: Vec<Item>) -> Ingested {
    let mut out = Ingested {
        results: Vec::with_capacity(items.len()),
        failed: 0,
        only_error: None,
        retryable: false,
    };
    for item in items {
        let (id, source, e) = match item {
            Ok(doc) => {
                let (id, source) = (doc.id.clone(), doc.source.clone());
                match rag.ingest(&tenant, doc).await {
                    Ok(o) => {
                        out.results
                            .push(serde_json::to_value(&o).unwrap_or_default());
                        continue;
                    }
                    Err(e) => (Some(id), source, ApiError::from(e)),
                }
            }
            Err((id, e)) => (id, None, e),
        };
        out.failed += 1;
        let status = e.status();
        out.retryable |= status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        out.results
            .push(item_error(id.as_deref(), source.as_deref(), e.copied()));
        out.only_error = Some(e);
    }
    out
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListParams {
    limit: Option<usize>,
    after: Option<String>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let rag = rag(&state)?;
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let docs = rag
        .store()
        .list(&principal.tenant.id, limit, params.after.as_deref())
        .await
        .map_err(RagError::from)?;
    let has_more = docs.len() == limit;
    Ok(Json(json!({ "object": "list", "data": docs, "has_more": has_more })).into_response())
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let rag = rag(&state)?;
    match rag
        .store()
        .document(&principal.tenant.id, &id)
        .await
        .map_err(RagError::from)?
    {
        Some(d) => Ok(Json(d).into_response()),
        None => Err(ApiError::NotFound(format!("no document `{id}`"))),
    }
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let rag = rag(&state)?;
    if rag.delete(&principal.tenant.id, &id).await? {
        Ok(Json(json!({ "id": id, "object": "document", "deleted": true })).into_response())
    } else {
        Err(ApiError::NotFound(format!("no document `{id}`")))
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrieveRequest {
    query: String,
    top_k: Option<usize>,
    #[serde(default)]
    filter: Metadata,
    mode: Option<Mode>,
}

/// `POST /v1/retrieve`: chunks with scores and document ids, best first.
pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    super::extractors::ApiJson(req): super::extractors::ApiJson<RetrieveRequest>,
) -> Result<Response, ApiError> {
    let rag = rag(&state)?;
    if req.query.trim().is_empty() {
        return Err(ApiError::invalid(
            "`query` is empty",
            Some("query".to_string()),
        ));
    }
    let max = rag.config.retrieval.max_top_k;
    let top_k = req.top_k.unwrap_or(rag.config.retrieval.top_k);
    if top_k == 0 || top_k > max {
        return Err(ApiError::invalid(
            format!("`top_k` must be between 1 and {max}"),
            Some("top_k".to_string()),
        ));
    }
    let mode = req.mode.unwrap_or(rag.config.retrieval.mode);
    let hits = rag
        .retrieve(
            &principal.tenant.id,
            &Query {
                text: req.query,
                top_k,
                filter: Filter(req.filter),
                mode,
            },
            None,
        )
        .await?;
    Ok(Json(json!({
        "object": "list",
        "data": hits,
        "mode": mode,
        "store": rag.store_name(),
    }))
    .into_response())
}
