//! Documents and retrieval: `POST /v1/documents` (JSON or multipart upload),
//! `GET /v1/documents`, `GET|DELETE /v1/documents/{id}`, `POST /v1/retrieve`. The tenant is
//! the API key's; every call stays inside it.

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiPath, ApiQuery, parse_json, read_bytes};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::rag::{
    ExtractError, Extractor, Filter, Format, IngestDoc, Metadata, Mode, Query, Rag, RagError,
};
use crate::server::AppState;

fn rag(state: &AppState) -> Result<&Arc<Rag>, ApiError> {
    state.rag.as_ref().ok_or_else(|| {
        ApiError::NotFound("retrieval is disabled on this gateway (rag.enabled = false)".into())
    })
}

/// A document in a JSON body: text, or base64 bytes of a file format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDocument {
    id: Option<String>,
    title: Option<String>,
    text: Option<String>,
    content_base64: Option<String>,
    format: Option<String>,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonBody {
    Many { documents: Vec<JsonDocument> },
    One(JsonDocument),
}

/// One item's outcome in the response list.
fn item_error(id: Option<&str>, source: Option<&str>, e: ApiError) -> Value {
    json!({
        "id": id,
        "source": source,
        "status": "failed",
        "error": e.envelope().error,
    })
}

/// [`documents_of`] on a blocking thread (PDF parsing is CPU work).
async fn extract_off_runtime(
    extractor: Extractor,
    format: Format,
    bytes: Vec<u8>,
    id: Option<String>,
    title: Option<String>,
    source: Option<String>,
    metadata: Metadata,
    max_bytes: usize,
) -> Vec<Result<IngestDoc, (Option<String>, ApiError)>> {
    let fallback_id = id.clone();
    tokio::task::spawn_blocking(move || {
        documents_of(
            &extractor, format, &bytes, id, title, source, &metadata, max_bytes,
        )
    })
    .await
    .unwrap_or_else(|e| {
        vec![Err((
            fallback_id,
            ApiError::Internal(format!("document extraction failed: {e}")),
        ))]
    })
}

/// The documents of one uploaded file or JSON item, or why there are none.
#[allow(clippy::too_many_arguments)]
fn documents_of(
    extractor: &Extractor,
    format: Format,
    bytes: &[u8],
    id: Option<String>,
    title: Option<String>,
    source: Option<String>,
    metadata: &Metadata,
    max_bytes: usize,
) -> Vec<Result<IngestDoc, (Option<String>, ApiError)>> {
    // A failure is reported under the document's id, else its file name.
    let label = id.clone().or_else(|| source.clone());
    if bytes.len() > max_bytes {
        return vec![Err((
            label,
            ApiError::Document {
                status: 413,
                code: "document_too_large",
                message: format!(
                    "the document is {} bytes; the limit is {max_bytes} (rag.max_document_bytes)",
                    bytes.len()
                ),
            },
        ))];
    }
    let single = format != Format::Jsonl;
    extractor
        .extract(format, bytes)
        .into_iter()
        .map(|r| match r {
            Ok(d) => {
                let mut meta = metadata.clone();
                for (k, v) in d.metadata {
                    meta.entry(k).or_insert(v);
                }
                let doc_id = if single { id.clone().or(d.id) } else { d.id };
                let Some(doc_id) = doc_id.or_else(|| source.clone()) else {
                    return Err((
                        None,
                        ApiError::invalid("a document needs an `id` (or a file name)", None),
                    ));
                };
                Ok(IngestDoc {
                    id: doc_id,
                    title: title.clone().or(d.title),
                    text: d.text,
                    format,
                    source: source.clone(),
                    metadata: meta,
                })
            }
            Err(e) => Err((label.clone(), RagError::from(e).into())),
        })
        .collect()
}

/// `POST /v1/documents`: ingests every document it can; each gets its own result. A
/// request with one document that fails is that document's error.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let rag = rag(&state)?.clone();
    let max = rag.config.max_document_bytes;
    // This route's body limit is the upload limit (413s state it).
    req.extensions_mut()
        .insert(super::extract::BodyLimit(rag.config.max_upload_bytes));
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let mut items: Vec<Result<IngestDoc, (Option<String>, ApiError)>> = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let limit = rag.config.max_upload_bytes;
        let mut form = Multipart::from_request(req, &state).await.map_err(|e| {
            ApiError::invalid(format!("invalid multipart body: {}", e.body_text()), None)
        })?;
        let mut metadata = Metadata::new();
        let mut id: Option<String> = None;
        let mut files: Vec<(String, Option<String>, Vec<u8>)> = Vec::new();
        loop {
            let field = match form.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(ApiError::BodyTooLarge { limit });
                }
                Err(e) => {
                    return Err(ApiError::invalid(
                        format!("invalid multipart body: {}", e.body_text()),
                        None,
                    ));
                }
            };
            let name = field.name().unwrap_or_default().to_string();
            let file_name = field.file_name().map(str::to_string);
            let mime = field.content_type().map(str::to_string);
            let data = field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::BodyTooLarge { limit }
                } else {
                    ApiError::invalid(format!("invalid multipart body: {}", e.body_text()), None)
                }
            })?;
            match (name.as_str(), file_name) {
                (_, Some(f)) => files.push((f, mime, data.to_vec())),
                ("metadata", None) => {
                    metadata = match serde_json::from_slice(&data) {
                        Ok(Value::Object(m)) => m,
                        _ => {
                            return Err(ApiError::invalid(
                                "the `metadata` field must be a JSON object",
                                Some("metadata".to_string()),
                            ));
                        }
                    }
                }
                ("id", None) => id = Some(String::from_utf8_lossy(&data).trim().to_string()),
                (other, None) => {
                    return Err(ApiError::invalid(
                        format!(
                            "unknown form field `{other}` (expected file parts, `metadata` or `id`)"
                        ),
                        Some(other.to_string()),
                    ));
                }
            }
        }
        if files.is_empty() {
            return Err(ApiError::invalid("the upload has no file parts", None));
        }
        if id.is_some() && files.len() > 1 {
            return Err(ApiError::invalid(
                "`id` names one document: upload one file with it, or let file names be ids",
                Some("id".to_string()),
            ));
        }
        for (file_name, mime, data) in files {
            let format = Format::from_path(std::path::Path::new(&file_name))
                .or_else(|| mime.as_deref().and_then(Format::from_name));
            match format {
                Some(f) => items.extend(
                    extract_off_runtime(
                        rag.extractor().clone(),
                        f,
                        data,
                        id.clone(),
                        None,
                        Some(file_name),
                        metadata.clone(),
                        max,
                    )
                    .await,
                ),
                None => items.push(Err((
                    Some(file_name.clone()),
                    RagError::from(ExtractError::Unsupported(file_name)).into(),
                ))),
            }
        }
    } else if super::extract::is_json_media_type(&content_type) {
        let body: JsonBody = parse_json(&read_bytes(req).await?)?;
        let docs = match body {
            JsonBody::Many { documents } => documents,
            JsonBody::One(d) => vec![d],
        };
        if docs.is_empty() {
            return Err(ApiError::invalid(
                "`documents` is empty",
                Some("documents".to_string()),
            ));
        }
        for (i, d) in docs.into_iter().enumerate() {
            let declared = d.format.as_deref().map(|f| (f, Format::from_name(f)));
            let bytes = match (d.text, d.content_base64) {
                (Some(t), None) => Ok(t.into_bytes()),
                (None, Some(b)) => base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| {
                        ApiError::invalid(
                            format!("content_base64 is not base64: {e}"),
                            Some(format!("documents[{i}].content_base64")),
                        )
                    }),
                _ => Err(ApiError::invalid(
                    "a document needs exactly one of `text` and `content_base64`",
                    Some(format!("documents[{i}]")),
                )),
            };
            let format = match declared {
                None => Ok(Format::Text),
                Some((_, Some(f))) => Ok(f),
                Some((name, None)) => {
                    Err(RagError::from(ExtractError::Unsupported(name.to_string())).into())
                }
            };
            match (bytes, format) {
                (Ok(b), Ok(f)) => {
                    // A JSON item without an id gets one from its content: posting the same
                    // text again is then "unchanged", not a duplicate.
                    let id = d.id.clone().or_else(|| {
                        (f != Format::Jsonl).then(|| format!("doc_{}", &crate::rag::content_id(&b)))
                    });
                    items.extend(
                        extract_off_runtime(
                            rag.extractor().clone(),
                            f,
                            b,
                            id,
                            d.title,
                            None,
                            d.metadata,
                            max,
                        )
                        .await,
                    );
                }
                (Err(e), _) | (_, Err(e)) => items.push(Err((d.id, e))),
            }
        }
    } else {
        return Err(ApiError::Document {
            status: 415,
            code: "unsupported_media_type",
            message: "POST /v1/documents takes application/json or multipart/form-data".into(),
        });
    }

    let tenant = principal.tenant.id.clone();
    let single = items.len() == 1;
    // Ingestion runs in its own task: a client that disconnects does not cut a document's
    // write (or the store's memory update after it) in half.
    let store_rag = rag.clone();
    let (results, failed, only_error) = tokio::spawn(async move {
        let mut results = Vec::with_capacity(items.len());
        let mut failed = 0;
        let mut only_error = None;
        for item in items {
            match item {
                Ok(doc) => {
                    let (id, source) = (doc.id.clone(), doc.source.clone());
                    match store_rag.ingest(&tenant, doc).await {
                        Ok(o) => results.push(serde_json::to_value(&o).unwrap_or_default()),
                        Err(e) => {
                            failed += 1;
                            let e = ApiError::from(e);
                            results.push(item_error(Some(&id), source.as_deref(), clone_error(&e)));
                            only_error = Some(e);
                        }
                    }
                }
                Err((id, e)) => {
                    failed += 1;
                    results.push(item_error(id.as_deref(), None, clone_error(&e)));
                    only_error = Some(e);
                }
            }
        }
        (results, failed, only_error)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("ingestion task: {e}")))?;
    if single && failed == 1 {
        if let Some(e) = only_error {
            return Err(e);
        }
    }
    Ok(Json(json!({
        "object": "list",
        "data": results,
        "ingested": results.len() - failed,
        "failed": failed,
        "store": rag.store_name(),
    }))
    .into_response())
}

/// ApiError is not Clone (it wraps sources); an item's copy keeps status, code and text.
fn clone_error(e: &ApiError) -> ApiError {
    let env = e.envelope().error;
    ApiError::Document {
        status: e.status().as_u16(),
        code: e.code(),
        message: env.message,
    }
}

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
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
    super::extract::ApiJson(req): super::extract::ApiJson<RetrieveRequest>,
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
