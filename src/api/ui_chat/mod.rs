//! `POST /api/chat`, the AI SDK's UI message stream protocol, so `useChat` (whose default
//! endpoint this is) talks to the gateway with no server route of its own: the body
//! `DefaultChatTransport` sends (`id`, `messages` as UI messages with `parts`, `trigger`,
//! `messageId`, plus body fields such as `model`, default `auto`) is decoded into the
//! canonical chat request; the answer is encoded as UI message parts (`encode.rs`) over SSE
//! with `x-vercel-ai-ui-message-stream: v1`. Each answer runs in its own task
//! (`resume.rs`), so `GET /api/chat/{id}/stream` resumes one still running (204 when none
//! is). Errors before the stream are JSON with their status; after it began, an `error` part.

mod encode;
pub mod resume;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::extractors::{ApiJson, ApiPath};
use super::state::AppState;
use crate::auth::Principal;
use crate::chat::ChatBody;

/// The header that tells the AI SDK this is a UI message stream.
const PROTOCOL_HEADER: &str = "x-vercel-ai-ui-message-stream";

/// What `DefaultChatTransport` posts.
#[derive(Debug, Deserialize)]
pub struct UiChatRequest {
    /// The chat's id (what a resume asks for).
    pub id: String,
    pub messages: Vec<Value>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default, alias = "maxOutputTokens")]
    pub max_tokens: Option<u32>,
    /// Function tools the model may call, in chat completions' shape (the client runs them
    /// and sends their results back as tool parts).
    #[serde(default)]
    pub tools: Option<Value>,
    #[serde(default, alias = "toolChoice")]
    pub tool_choice: Option<Value>,
    // `trigger` (`submit-message` or `regenerate-message`: the messages sent are already
    // the ones to answer), `messageId` and any other body field are not read.
}

fn invalid(param: String, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message, Some(param))
}

/// UI messages as chat messages: text parts joined, image files as image parts, and each
/// step's tool calls with their results (calls without a result yet are left out: a chat
/// upstream refuses a call with no answer).
fn to_chat_messages(messages: &[Value]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some(r @ ("system" | "user" | "assistant")) => r,
            _ => {
                return Err(invalid(
                    format!("messages[{i}].role"),
                    "`role` must be system, user or assistant",
                ));
            }
        };
        let Some(parts) = m.get("parts").and_then(Value::as_array) else {
            return Err(invalid(
                format!("messages[{i}].parts"),
                "a UI message needs `parts`",
            ));
        };
        if role == "assistant" {
            assistant_steps(parts, &mut out);
            continue;
        }
        let mut content = Vec::new();
        for p in parts {
            match p.get("type").and_then(Value::as_str) {
                Some("text") => content.push(json!({"type": "text", "text": p.get("text").and_then(Value::as_str).unwrap_or("")})),
                Some("file") if p.get("mediaType").and_then(Value::as_str).is_some_and(|t| t.starts_with("image/")) => {
                    content.push(json!({"type": "image_url", "image_url": {"url": p.get("url").cloned().unwrap_or_default()}}));
                }
                _ => {}
            }
        }
        let text_only = content.iter().all(|c| c["type"] == "text");
        let content = if text_only {
            Value::from(
                content
                    .iter()
                    .filter_map(|c| c["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(""),
            )
        } else {
            Value::Array(content)
        };
        out.push(json!({"role": role, "content": content}));
    }
    if out.is_empty() {
        return Err(invalid(
            "messages".into(),
            "`messages` must contain at least one message",
        ));
    }
    Ok(out)
}

/// An assistant UI message: per step (`step-start` separates them), its text and the tool
/// calls that have a result, then those results.
fn assistant_steps(parts: &[Value], out: &mut Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut results = Vec::new();
    let flush = |text: &mut String,
                 calls: &mut Vec<Value>,
                 results: &mut Vec<Value>,
                 out: &mut Vec<Value>| {
        if text.is_empty() && calls.is_empty() {
            return;
        }
        let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::from(std::mem::take(text)) }});
        if !calls.is_empty() {
            m["tool_calls"] = Value::Array(std::mem::take(calls));
        }
        out.push(m);
        out.append(results);
    };
    for p in parts {
        let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == "step-start" {
            flush(&mut text, &mut calls, &mut results, out);
        } else if kind == "text" {
            text.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""));
        } else if kind.starts_with("tool-") || kind == "dynamic-tool" {
            let name = if kind == "dynamic-tool" {
                p.get("toolName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            } else {
                kind["tool-".len()..].to_string()
            };
            let id = p
                .get("toolCallId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let output = match p.get("state").and_then(Value::as_str) {
                Some("output-available") => p.get("output").map(|o| match o {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
                Some("output-error") => p
                    .get("errorText")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            };
            if let Some(output) = output {
                let input = p.get("input").cloned().unwrap_or(json!({}));
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}));
                results.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
            }
        }
    }
    flush(&mut text, &mut calls, &mut results, out);
}

/// `POST /api/chat`.
pub async fn chat(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    crate::api::trace::RequestSpan(trace): crate::api::trace::RequestSpan,
    headers: HeaderMap,
    ApiJson(req): ApiJson<UiChatRequest>,
) -> Result<Response, ApiError> {
    let mut body = Map::new();
    body.insert(
        "model".into(),
        json!(req.model.clone().unwrap_or_else(|| "auto".into())),
    );
    body.insert(
        "messages".into(),
        Value::Array(to_chat_messages(&req.messages)?),
    );
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    for (k, v) in [
        ("temperature", req.temperature.map(Value::from)),
        ("top_p", req.top_p.map(Value::from)),
        ("max_tokens", req.max_tokens.map(Value::from)),
        ("tools", req.tools.clone().filter(|t| !t.is_null())),
        (
            "tool_choice",
            req.tool_choice.clone().filter(|t| !t.is_null()),
        ),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    }
    let body = serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::invalid(format!("invalid request: {e}"), None))?;
    let tenant = principal.tenant.id.clone();
    let request = super::controls::chat_request(&headers, principal, trace, body)?;
    let answer = state.chat.run(request).await?;
    let ChatBody::Stream(events) = answer.body else {
        return Err(ApiError::Internal(
            "the pipeline answered a streamed request whole".into(),
        ));
    };
    let mut meta_headers = HeaderMap::new();
    super::controls::write(&answer.meta, &mut meta_headers);
    let parts = encode::parts(answer.meta, super::responses::new_id("msg"), events);
    let running = state.ui_streams.start(&tenant, &req.id, parts);
    let mut response = sse(running);
    response.headers_mut().extend(meta_headers);
    Ok(response)
}

/// `GET /api/chat/{id}/stream`: the chat's answer still running, from its first part; 204
/// when there is none.
pub async fn resume(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Response {
    match state.ui_streams.get(&principal.tenant.id, &id) {
        Some(running) => sse(running),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// The parts as SSE `data:` events, then `[DONE]`, with the protocol header.
fn sse(running: Arc<resume::Running>) -> Response {
    let events = running
        .follow()
        .map(|p| Ok::<_, Infallible>(Event::default().data(p)))
        .chain(futures::stream::once(async {
            Ok(Event::default().data("[DONE]"))
        }));
    let mut response = super::sse::response(events);
    response
        .headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from_static("v1"));
    response
}
