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
use crate::embed::EmbedError;

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

fn inputs(input: Value) -> Result<Vec<String>, ApiError> {
    let texts = match input {
        Value::String(s) => vec![s],
        Value::Array(items) => {
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => texts.push(s),
                    Value::Number(_) | Value::Array(_) => {
                        return Err(ApiError::invalid(
                            "token arrays are not supported: send the text itself",
                            Some("input".to_string()),
                        ));
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            format!("input[{i}] must be a string"),
                            Some(format!("input[{i}]")),
                        ));
                    }
                }
            }
            texts
        }
        _ => {
            return Err(ApiError::invalid(
                "`input` must be a string or an array of strings",
                Some("input".to_string()),
            ));
        }
    };
    if texts.is_empty() {
        return Err(ApiError::invalid(
            "`input` must not be empty",
            Some("input".to_string()),
        ));
    }
    if texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            format!("`input` may hold at most {MAX_INPUTS} items"),
            Some("input".to_string()),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid(
            format!("input[{i}] is empty"),
            Some("input".to_string()),
        ));
    }
    Ok(texts)
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
    let texts = inputs(req.input)?;
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
