//! Pipeline events as the AI SDK's UI message stream (protocol v1, what `useChat` reads):
//! `start`, the route decision and cache hit as `data-*` parts, a `source-document` per
//! citation (and a `source-url` when its document has a `url`), `start-step`, text as `text-start` / `text-delta` / `text-end`, tool calls as
//! `tool-input-start` / `tool-input-delta` / `tool-input-available`, `finish-step`,
//! `message-metadata` (model, usage), `finish` with the reason; a failure is an `error` part.
//! The SSE framing (`data: ...`, then `[DONE]`) is the caller's.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::chat::{CacheOutcome, ChatEvent, EventStream, Meta};

/// A tool call being streamed.
struct Call {
    id: String,
    name: String,
    input: String,
}

/// The UI parts, as JSON text, for one answer.
pub fn parts(
    meta: Meta,
    message_id: String,
    mut events: EventStream,
) -> impl Stream<Item = String> + Send + 'static {
    async_stream::stream! {
        yield json!({"type": "start", "messageId": message_id}).to_string();
        for p in meta_parts(&meta) {
            yield p.to_string();
        }
        yield json!({"type": "start-step"}).to_string();
        let mut text_open = false;
        let mut calls: BTreeMap<u32, Call> = BTreeMap::new();
        let mut finish: Option<String> = None;
        let mut metadata = json!({"model": meta.answered_by});
        while let Some(event) = events.next().await {
            match event {
                ChatEvent::Delta(d) => {
                    for c in d.choices.into_iter().filter(|c| c.index == 0) {
                        if let Some(t) = c.text.filter(|t| !t.is_empty()) {
                            if !text_open {
                                text_open = true;
                                yield json!({"type": "text-start", "id": "text-0"}).to_string();
                            }
                            yield json!({"type": "text-delta", "id": "text-0", "delta": t}).to_string();
                        }
                        for t in c.tool_calls {
                            if !calls.contains_key(&t.index) {
                                if text_open {
                                    text_open = false;
                                    yield json!({"type": "text-end", "id": "text-0"}).to_string();
                                }
                                let id = t.id.clone().unwrap_or_else(|| super::super::responses::new_id("call"));
                                let name = t.name.clone().unwrap_or_default();
                                yield json!({"type": "tool-input-start", "toolCallId": id, "toolName": name}).to_string();
                                calls.insert(t.index, Call { id, name, input: String::new() });
                            }
                            if let Some(a) = t.arguments.filter(|a| !a.is_empty()) {
                                let call = calls.get_mut(&t.index).expect("inserted above");
                                call.input.push_str(&a);
                                yield json!({"type": "tool-input-delta", "toolCallId": call.id, "inputTextDelta": a}).to_string();
                            }
                        }
                        if let Some(f) = c.finish_reason {
                            finish = Some(f);
                        }
                    }
                }
                ChatEvent::Usage { usage, model } => {
                    if let Some(m) = model {
                        metadata["model"] = json!(m);
                    }
                    metadata["usage"] = json!({
                        "inputTokens": usage.prompt_tokens,
                        "outputTokens": usage.completion_tokens,
                        "totalTokens": usage.total_tokens,
                        "cachedInputTokens": usage.cached_tokens(),
                    });
                }
                ChatEvent::Error(e) => {
                    let e = ApiError::from(e);
                    yield json!({"type": "error", "errorText": e.envelope().error.message}).to_string();
                    return;
                }
            }
        }
        if text_open {
            yield json!({"type": "text-end", "id": "text-0"}).to_string();
        }
        for (_, c) in calls {
            let input: Value = serde_json::from_str(&c.input).unwrap_or(Value::String(c.input));
            yield json!({"type": "tool-input-available", "toolCallId": c.id, "toolName": c.name, "input": input}).to_string();
        }
        yield json!({"type": "finish-step"}).to_string();
        yield json!({"type": "message-metadata", "messageMetadata": metadata}).to_string();
        yield json!({"type": "finish", "finishReason": finish_reason(finish.as_deref())}).to_string();
    }
}

/// Chat's finish reasons in the AI SDK's words.
fn finish_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("stop") => "stop",
        Some("length") => "length",
        Some("tool_calls") => "tool-calls",
        Some("content_filter") => "content-filter",
        None => "unknown",
        Some(_) => "other",
    }
}

/// What the pipeline reports beside the answer: the route (`data-route`), the cache's part
/// (`data-cache`), and the grounded answer's sources.
fn meta_parts(meta: &Meta) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(route) = &meta.route {
        out.push(json!({"type": "data-route", "data": {
            "tier": route.tier, "reason": route.reason, "models": route.models,
        }}));
    }
    let cache = match &meta.cache {
        CacheOutcome::Hit {
            kind,
            similarity,
            entry_id,
        } => {
            json!({"hit": true, "kind": kind.as_str(), "similarity": similarity, "entry": entry_id})
        }
        CacheOutcome::Miss => json!({"hit": false}),
        CacheOutcome::Bypass => json!({"hit": false, "bypass": true}),
    };
    out.push(json!({"type": "data-cache", "data": cache}));
    if let Some(Value::Array(cites)) = &meta.citations {
        for c in cites {
            let document = c
                .get("document_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let title = c.get("title").and_then(Value::as_str).unwrap_or(document);
            let source_id = c
                .get("chunk_id")
                .and_then(Value::as_str)
                .unwrap_or(document);
            out.push(
                json!({"type": "source-document", "sourceId": source_id, "mediaType": "text/plain",
                "title": title, "filename": document}),
            );
            if let Some(url) = c.get("url").and_then(Value::as_str) {
                out.push(json!({"type": "source-url", "sourceId": source_id, "url": url, "title": title}));
            }
        }
    }
    out
}
