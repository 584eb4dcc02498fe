//! `POST /v1/documents` bodies into documents: multipart uploads (file parts, `metadata`,
//! `id`) and JSON (one document or `documents: [...]`, text or base64), each extracted on a
//! blocking thread.

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::StatusCode;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::Item;
use crate::api::error::{ApiError, Code};
use crate::api::extractors::{parse_json, read_bytes};
use crate::api::state::AppState;
use crate::rag::{ExtractError, Extractor, Format, IngestDoc, Metadata, Rag, RagError};

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

/// A multipart upload's parts.
#[derive(Default)]
struct Form {
    metadata: Metadata,
    id: Option<String>,
    /// (file name, declared content type, bytes)
    files: Vec<(String, Option<String>, Vec<u8>)>,
}

fn invalid_multipart(text: String) -> ApiError {
    ApiError::invalid(format!("invalid multipart body: {text}"), None)
}

async fn read_form(req: Request, state: &Arc<AppState>, limit: usize) -> Result<Form, ApiError> {
    let mut multipart = Multipart::from_request(req, state)
        .await
        .map_err(|e| invalid_multipart(e.body_text()))?;
    let mut form = Form::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::BodyTooLarge { limit });
            }
            Err(e) => return Err(invalid_multipart(e.body_text())),
        };
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let mime = field.content_type().map(str::to_string);
        let data = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge { limit }
            } else {
                invalid_multipart(e.body_text())
            }
        })?;
        match (name.as_str(), file_name) {
            (_, Some(f)) => form.files.push((f, mime, data.to_vec())),
            ("metadata", None) => {
                form.metadata = match serde_json::from_slice(&data) {
                    Ok(Value::Object(m)) => m,
                    _ => {
                        return Err(ApiError::invalid(
                            "the `metadata` field must be a JSON object",
                            Some("metadata".to_string()),
                        ));
                    }
                }
            }
            ("id", None) => form.id = Some(String::from_utf8_lossy(&data).trim().to_string()),
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
    Ok(form)
}

/// A multipart upload's documents (a file's format from its name, else its content type).
pub(super) async fn multipart_items(
    req: Request,
    state: &Arc<AppState>,
    rag: &Rag,
) -> Result<Vec<Item>, ApiError> {
    let form = read_form(req, state, rag.config.max_upload_bytes).await?;
    if form.files.is_empty() {
        return Err(ApiError::invalid("the upload has no file parts", None));
    }
    if form.id.is_some() && form.files.len() > 1 {
        return Err(ApiError::invalid(
            "`id` names one document: upload one file with it, or let file names be ids",
            Some("id".to_string()),
        ));
    }
    let mut items = Vec::new();
    for (file_name, mime, data) in form.files {
        let format = Format::from_path(std::path::Path::new(&file_name))
            .or_else(|| mime.as_deref().and_then(Format::from_name));
        let Some(format) = format else {
            items.push(Err((
                Some(file_name.clone()),
                RagError::from(ExtractError::Unsupported(file_name)).into(),
            )));
            continue;
        };
        let source = Source {
            id: form.id.clone(),
            title: None,
            source: Some(file_name),
            metadata: form.metadata.clone(),
        };
        items.extend(extract_off_runtime(rag, format, data, source).await);
    }
    Ok(items)
}

/// A JSON body's documents.
pub(super) async fn json_items(req: Request, rag: &Rag) -> Result<Vec<Item>, ApiError> {
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
    let mut items = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        let (bytes, format) = match json_content(i, &d) {
            Ok(v) => v,
            Err(e) => {
                items.push(Err((d.id, e)));
                continue;
            }
        };
        // A JSON item without an id gets one from its content: posting the same text again
        // is then "unchanged", not a duplicate.
        let id = d.id.clone().or_else(|| {
            (format != Format::Jsonl).then(|| format!("doc_{}", &crate::rag::content_id(&bytes)))
        });
        let source = Source {
            id,
            title: d.title,
            source: None,
            metadata: d.metadata,
        };
        items.extend(extract_off_runtime(rag, format, bytes, source).await);
    }
    Ok(items)
}

/// A JSON item's bytes (text, or decoded base64) and format (text unless declared).
fn json_content(i: usize, d: &JsonDocument) -> Result<(Vec<u8>, Format), ApiError> {
    let bytes = match (&d.text, &d.content_base64) {
        (Some(t), None) => t.clone().into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| {
                ApiError::invalid(
                    format!("content_base64 is not base64: {e}"),
                    Some(format!("documents[{i}].content_base64")),
                )
            })?,
        _ => {
            return Err(ApiError::invalid(
                "a document needs exactly one of `text` and `content_base64`",
                Some(format!("documents[{i}]")),
            ));
        }
    };
    let format = match d.format.as_deref() {
        None => Format::Text,
        Some(name) => Format::from_name(name).ok_or_else(|| {
            ApiError::from(RagError::from(ExtractError::Unsupported(name.to_string())))
        })?,
    };
    Ok((bytes, format))
}

/// What the request says of a file beside its bytes.
struct Source {
    id: Option<String>,
    title: Option<String>,
    /// The uploaded file's name.
    source: Option<String>,
    metadata: Metadata,
}

/// [`documents_of`] on a blocking thread (PDF parsing is CPU work).
async fn extract_off_runtime(
    rag: &Rag,
    format: Format,
    bytes: Vec<u8>,
    source: Source,
) -> Vec<Item> {
    let extractor = rag.extractor().clone();
    let max_bytes = rag.config.max_document_bytes;
    let fallback_id = source.id.clone();
    tokio::task::spawn_blocking(move || documents_of(&extractor, format, &bytes, source, max_bytes))
        .await
        .unwrap_or_else(|e| {
            vec![Err((
                fallback_id,
                ApiError::Internal(format!("document extraction failed: {e}")),
            ))]
        })
}

/// The documents of one uploaded file or JSON item, or why there are none.
fn documents_of(
    extractor: &Extractor,
    format: Format,
    bytes: &[u8],
    from: Source,
    max_bytes: usize,
) -> Vec<Item> {
    let Source {
        id,
        title,
        source,
        metadata,
    } = from;
    // A failure is reported under the document's id, else its file name.
    let label = id.clone().or_else(|| source.clone());
    if bytes.len() > max_bytes {
        return vec![Err((
            label,
            ApiError::Coded {
                code: Code::DocumentTooLarge,
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
