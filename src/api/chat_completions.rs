//! `POST /v1/chat/completions` and `GET /v1/models` (also readable by Anthropic's SDKs):
//! OpenAI's wire format exactly, streamed
//! or not. The door decodes the request (the body is already the pipeline's canonical form),
//! runs the pipeline, and encodes its answer: a `chat.completion`, or `chat.completion.chunk`
//! events with one id and `created` for the whole stream, `finish_reason` null until the
//! last content chunk, a usage chunk when `stream_options.include_usage` is set, then
//! `[DONE]`; an error after the stream began is one `data: {"error":...}` event.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;

use super::error::ApiError;
use super::extractors::{ApiJson, ApiPath};
use super::state::{AppState, Chat};
use crate::auth::Principal;
use crate::chat::{ChatBody, ChatEvent, ChoiceDelta};
use crate::clock::unix_now;
use crate::types::{ChatChunk, ChatCompletionRequest, ModelObject, new_completion_id};

fn model_object(state: &AppState, id: &str, owned_by: &str) -> ModelObject {
    ModelObject {
        id: id.to_string(),
        object: "model",
        created: state.started_at,
        owned_by: owned_by.to_string(),
        kind: "model",
        display_name: id.to_string(),
        created_at: crate::clock::rfc3339(state.started_at),
    }
}

/// `GET /v1/models`: the served models and the embedding model.
pub async fn list_models(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut data: Vec<ModelObject> = state
        .chat
        .models
        .iter()
        .map(|m| model_object(&state, &m.name, m.provider.name()))
        .collect();
    if let Some(e) = &state.chat.embedder {
        data.push(model_object(&state, &e.model_name, "quartermaster"));
    }
    // OpenAI's list, with the fields of Anthropic's page (one page: `has_more` false).
    let first = data.first().map(|m| m.id.clone());
    let last = data.last().map(|m| m.id.clone());
    axum::Json(json!({"object": "list", "data": data, "has_more": false,
        "first_id": first, "last_id": last}))
}

/// `GET /v1/models/{id}`: one of them, or a routing alias (`auto`, a tier), which frameworks
/// ask for to validate a model name.
pub async fn retrieve_model(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<ModelObject>, ApiError> {
    if let Some(m) = state.chat.models.get(&id) {
        return Ok(axum::Json(model_object(&state, &m.name, m.provider.name())));
    }
    let embedder = state
        .chat
        .embedder
        .as_ref()
        .is_some_and(|e| e.model_name == id);
    if embedder || state.chat.live.load().is_alias(&id) {
        return Ok(axum::Json(model_object(&state, &id, "quartermaster")));
    }
    Err(ApiError::ModelNotFound(id))
}

pub async fn chat_completions(
    State(Chat(pipeline)): State<Chat>,
    Extension(principal): Extension<Principal>,
    crate::api::trace::RequestSpan(trace): crate::api::trace::RequestSpan,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let request = super::controls::chat_request(&headers, principal, trace, body)?;
    let stream = request.body.is_stream();
    let include_usage = request.body.include_usage();
    let answer = pipeline.run(request).await?;
    let meta = answer.meta;
    let mut response = match answer.body {
        ChatBody::Whole(mut completion) => {
            completion.id = new_completion_id();
            if completion.created == 0 {
                completion.created = unix_now();
            }
            if completion.model.is_empty() {
                completion.model.clone_from(&meta.requested_model);
            }
            if let Some(c) = &meta.citations {
                completion.extra.insert("citations".into(), c.clone());
            }
            axum::Json(completion).into_response()
        }
        ChatBody::Stream(events) => {
            debug_assert!(stream);
            let encoder = Encoder {
                id: new_completion_id(),
                created: unix_now(),
                model: meta.requested_model.clone(),
                citations: meta.citations.clone(),
                include_usage,
            };
            super::sse::response(encoder.encode(events))
        }
    };
    super::controls::write(&meta, response.headers_mut());
    Ok(response)
}

/// Pipeline events as `chat.completion.chunk`s.
struct Encoder {
    id: String,
    created: i64,
    /// The model the chunks name: the requested one until the upstream names its own.
    model: String,
    /// Ride on the first chunk the client sees.
    citations: Option<serde_json::Value>,
    include_usage: bool,
}

impl Encoder {
    fn chunk(&self, choices: Vec<crate::types::ChunkChoice>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: None,
            extra: Default::default(),
        }
    }

    fn encode(
        mut self,
        mut events: crate::chat::EventStream,
    ) -> impl futures::Stream<Item = Result<Event, Infallible>> + Send + 'static {
        async_stream::stream! {
            while let Some(event) = events.next().await {
                match event {
                    ChatEvent::Delta(delta) => {
                        if let Some(m) = delta.model {
                            self.model = m;
                        }
                        let mut chunk = self.chunk(delta.choices.into_iter().map(ChoiceDelta::into_openai).collect());
                        chunk.extra = delta.extra;
                        if let Some(c) = self.citations.take() {
                            chunk.extra.insert("citations".into(), c);
                        }
                        yield Ok(super::sse::json(&chunk));
                    }
                    ChatEvent::Usage { usage, model } => {
                        if let Some(m) = model {
                            self.model = m;
                        }
                        if self.include_usage {
                            let mut chunk = self.chunk(vec![]);
                            chunk.usage = Some(usage);
                            yield Ok(super::sse::json(&chunk));
                        }
                    }
                    ChatEvent::Error(e) => {
                        yield Ok(Event::default().data(ApiError::from(e).to_json()));
                        return;
                    }
                }
            }
            yield Ok(Event::default().data("[DONE]"));
        }
    }
}
