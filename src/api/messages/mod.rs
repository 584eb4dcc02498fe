//! Anthropic's Messages API on the chat pipeline: `POST /v1/messages` (streamed or not) and
//! `POST /v1/messages/count_tokens`, so Anthropic's SDKs and the tools built on them talk to
//! the gateway as to Anthropic. The door decodes a Messages request into the canonical chat
//! request (`decode.rs`; the cache keys it as the equivalent chat request, any upstream can
//! answer it, an Anthropic upstream gets the body untranslated), runs the pipeline, and
//! encodes the answer as a `message` or Anthropic's event stream (`encode.rs`). Every error,
//! the shared middleware's included, is in Anthropic's shape (`error.rs`). Keys come as
//! `x-api-key` or `Authorization: Bearer`; `anthropic-version` is accepted.

mod decode;
mod encode;
pub mod error;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::extractors::ApiJson;
use super::state::Chat;
use crate::auth::Principal;
use crate::chat::ChatBody;

/// `POST /v1/messages`.
pub async fn create(
    State(Chat(pipeline)): State<Chat>,
    Extension(principal): Extension<Principal>,
    crate::api::trace::RequestSpan(trace): crate::api::trace::RequestSpan,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let chat = decode::to_chat(body, false)?;
    let request = super::controls::chat_request(&headers, principal, trace, chat)?;
    let answer = pipeline.run(request).await?;
    let meta = answer.meta;
    let mut response = match answer.body {
        ChatBody::Whole(completion) => Json(encode::message(
            &completion,
            &meta.requested_model,
            meta.citations.as_ref(),
        ))
        .into_response(),
        ChatBody::Stream(events) => super::sse::response(
            encode::StreamEncoder::new(meta.requested_model.clone(), meta.citations.clone())
                .encode(events),
        ),
    };
    super::controls::write(&meta, response.headers_mut());
    Ok(response)
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, as the model's upstream counts
/// them (Anthropic's) or estimated with `cl100k_base` (others, aliases).
pub async fn count_tokens(
    State(Chat(pipeline)): State<Chat>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let chat = decode::to_chat(body, true)?;
    let n = pipeline.count_tokens(&chat).await?;
    Ok(Json(json!({ "input_tokens": n })))
}
