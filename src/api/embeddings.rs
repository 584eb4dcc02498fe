//! `POST /v1/embeddings`, OpenAI-compatible, answered by the local embedder.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extractors::ApiJson;
use super::state::AppState;
use crate::api::error::ApiError;
use crate::embed::{EmbedError, TokenEncoding};

/// OpenAI's per-request input limit.
const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Value,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<usize>,
}

/// What `input` holds: texts, or token-id arrays (OpenAI accepts both, never mixed).
enum Inputs {
    Texts(Vec<String>),
    Ids(Vec<Vec<u32>>),
}

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param.to_string()))
}

/// One token-id array: every item a non-negative integer below 2^32.
fn ids(items: Vec<Value>, param: &str) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(j, v)| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    invalid(
                        format!("{param}[{j}] must be a token id (a non-negative integer)"),
                        param,
                    )
                })
        })
        .collect()
}

fn inputs(input: Value) -> Result<Inputs, ApiError> {
    let shape = "`input` must be a string, an array of strings, or token-id arrays";
    let parsed = match input {
        Value::String(s) => Inputs::Texts(vec![s]),
        Value::Array(items) => match items.first() {
            // One input as token ids: `[9906, 1917]`.
            Some(Value::Number(_)) => Inputs::Ids(vec![ids(items, "input")?]),
            Some(Value::Array(_)) => {
                let mut all = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let param = format!("input[{i}]");
                    match item {
                        Value::Array(inner) => all.push(ids(inner, &param)?),
                        _ => {
                            return Err(invalid(
                                format!("{param} must be a token-id array like the others"),
                                &param,
                            ));
                        }
                    }
                }
                Inputs::Ids(all)
            }
            _ => {
                let mut texts = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) => texts.push(s),
                        _ => {
                            let param = format!("input[{i}]");
                            return Err(invalid(format!("{param} must be a string"), &param));
                        }
                    }
                }
                Inputs::Texts(texts)
            }
        },
        _ => return Err(invalid(shape, "input")),
    };
    let count = match &parsed {
        Inputs::Texts(t) => t.len(),
        Inputs::Ids(i) => i.len(),
    };
    if count == 0 {
        return Err(invalid("`input` must not be empty", "input"));
    }
    if count > MAX_INPUTS {
        return Err(invalid(
            format!("`input` may hold at most {MAX_INPUTS} items"),
            "input",
        ));
    }
    let empty = match &parsed {
        Inputs::Texts(t) => t.iter().position(|t| t.trim().is_empty()),
        Inputs::Ids(i) => i.iter().position(Vec::is_empty),
    };
    if let Some(i) = empty {
        return Err(invalid(format!("input[{i}] is empty"), "input"));
    }
    Ok(parsed)
}

/// The texts to embed: token ids decoded with the embedder's encoding (off the async
/// threads: the first use builds the encoding's tables).
async fn texts(inputs: Inputs, encoding: TokenEncoding) -> Result<Vec<String>, ApiError> {
    let all = match inputs {
        Inputs::Texts(texts) => return Ok(texts),
        Inputs::Ids(all) => all,
    };
    let decoded = tokio::task::spawn_blocking(move || {
        all.iter()
            .enumerate()
            .map(|(i, ids)| encoding.decode(ids).map_err(|id| (i, id)))
            .collect::<Result<Vec<String>, _>>()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("decoding token ids: {e}")))?;
    decoded.map_err(|(i, id)| {
        invalid(
            format!(
                "input[{i}] holds token id {id}, which {} does not have",
                encoding.name()
            ),
            "input",
        )
    })
}

pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let Some(embedder) = state
        .chat
        .embedder
        .as_ref()
        .filter(|e| e.model_name == req.model)
    else {
        return Err(ApiError::ModelNotFound(req.model));
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("encoding_format must be \"float\" or \"base64\", not {other:?}"),
                Some("encoding_format".to_string()),
            ));
        }
    };
    if req.dimensions.is_some_and(|d| d != embedder.dimensions) {
        return Err(ApiError::invalid(
            format!(
                "{} produces {} dimensions and cannot shorten them",
                embedder.model_name, embedder.dimensions
            ),
            Some("dimensions".to_string()),
        ));
    }
    let texts = texts(inputs(req.input)?, embedder.token_encoding).await?;
    let priority = embedder.priority_for(&texts);
    let results = embedder
        .embed_for(&principal.tenant.id, priority, texts)
        .await
        .map_err(|e| match e {
            EmbedError::Overloaded => ApiError::Overloaded {
                message: "the embedding queue is full; retry shortly".into(),
                retry_after_secs: 1,
            },
            other => ApiError::Internal(other.to_string()),
        })?;
    let tokens: usize = results.iter().map(|r| r.tokens).sum();
    let truncated = results.iter().filter(|r| r.truncated).count();
    metrics::counter!("qm_embed_inputs_total").increment(results.len() as u64);
    metrics::counter!("qm_embed_tokens_total").increment(tokens as u64);
    let data: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = r.vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(r.vector)
            };
            let mut item = json!({"object": "embedding", "index": index, "embedding": embedding});
            if r.truncated {
                // Not silent: the item says so, as does the response header.
                item["truncated"] = json!(true);
            }
            item
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": embedder.model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(
        "x-quartermaster-truncated-inputs",
        HeaderValue::from(truncated),
    );
    Ok(response)
}
