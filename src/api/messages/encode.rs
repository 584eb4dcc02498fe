//! The pipeline's answer as a Messages `message`, or as Anthropic's event stream:
//! `message_start`, `ping`, per content block `content_block_start`, its `text_delta`s or
//! `input_json_delta`s and `content_block_stop`, then `message_delta` (stop reason, stop
//! sequence, usage) and `message_stop`; a failure after the stream began is an `error`
//! event. Every event has its `event:` line, as Anthropic sends it.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::response::sse::Event;
use futures::StreamExt;
use serde_json::{Value, json};

use super::error;
use crate::api::error::ApiError;
use crate::chat::{ChatEvent, ChoiceDelta, EventStream};
use crate::types::{ChatCompletion, Usage};

/// An id in Anthropic's style: `msg_...`, `toolu_...`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Anthropic's stop reason for a chat finish reason (`stop_sequence` when the upstream said
/// which sequence matched).
fn stop_reason(finish: Option<&str>, stop_sequence: Option<&Value>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ if stop_sequence.is_some_and(Value::is_string) => "stop_sequence",
        _ => "end_turn",
    }
}

/// Anthropic's usage: `input_tokens` without the tokens read from or written to the cache.
pub fn usage_json(usage: &Usage) -> Value {
    let read = usage.cached_tokens();
    let write = usage.cache_write_tokens();
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(read + write),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
    })
}

/// A tool call's JSON arguments as a `tool_use` input (an object; arguments that are not one
/// are kept as a string under `arguments`, never dropped).
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({ "arguments": arguments }),
    }
}

/// A whole completion as a `message`.
pub fn message(completion: &ChatCompletion, model: &str, citations: Option<&Value>) -> Value {
    let choice = completion.choices.first();
    let reply = choice.map(|c| &c.message);
    let mut content = Vec::new();
    if let Some(text) = reply
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in reply
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|i| !i.is_empty())
            .map_or_else(|| new_id("toolu"), str::to_string);
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        content.push(json!({"type": "tool_use", "id": id,
            "name": call.pointer("/function/name").cloned().unwrap_or(json!("")),
            "input": tool_input(arguments)}));
    }
    let stop_sequence = choice.and_then(|c| c.extra.get("stop_sequence"));
    let usage = completion.usage.unwrap_or_default();
    let mut m = json!({
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": if completion.model.is_empty() { model } else { &completion.model },
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.finish_reason.as_deref()), stop_sequence),
        "stop_sequence": stop_sequence.filter(|s| s.is_string()).cloned().unwrap_or(Value::Null),
        "usage": usage_json(&usage),
    });
    if let Some(c) = citations {
        m["citations"] = c.clone();
    }
    m
}

/// The open content block.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    None,
    Text(u32),
    Tool(u32),
}

/// Pipeline events as Anthropic's stream.
pub struct StreamEncoder {
    id: String,
    model: String,
    citations: Option<Value>,
    started: bool,
    next_block: u32,
    open: Open,
    /// A tool call's position among the choice's calls -> its content block.
    tools: HashMap<u32, u32>,
    finish: Option<String>,
    stop_sequence: Option<Value>,
}

/// One event: its name (the `event:` line) and data.
type Out = (&'static str, Value);

fn event(name: &'static str, data: &Value) -> Out {
    (name, data.clone())
}

fn sse(out: Out) -> Event {
    Event::default()
        .event(out.0)
        .data(serde_json::to_string(&out.1).expect("events serialize"))
}

impl StreamEncoder {
    pub fn new(model: String, citations: Option<Value>) -> Self {
        Self {
            id: new_id("msg"),
            model,
            citations,
            started: false,
            next_block: 0,
            open: Open::None,
            tools: HashMap::new(),
            finish: None,
            stop_sequence: None,
        }
    }

    /// `message_start` and a `ping`, once, before anything else.
    fn start(&mut self, out: &mut Vec<Out>) {
        if self.started {
            return;
        }
        self.started = true;
        let mut message = json!({"id": self.id, "type": "message", "role": "assistant",
            "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}});
        if let Some(c) = self.citations.take() {
            message["citations"] = c;
        }
        out.push(event(
            "message_start",
            &json!({"type": "message_start", "message": message}),
        ));
        out.push(event("ping", &json!({"type": "ping"})));
    }

    fn close(&mut self, out: &mut Vec<Out>) {
        if let Open::Text(i) | Open::Tool(i) = self.open {
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}),
            ));
        }
        self.open = Open::None;
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<Out>) -> u32 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    /// One choice's delta (the Messages API has one choice: others are not sent).
    fn delta(&mut self, d: ChoiceDelta, out: &mut Vec<Out>) {
        if d.index != 0 {
            return;
        }
        if let Some(text) = d.text.filter(|t| !t.is_empty()) {
            let index = match self.open {
                Open::Text(i) => i,
                _ => {
                    let i = self.open_block(json!({"type": "text", "text": ""}), out);
                    self.open = Open::Text(i);
                    i
                }
            };
            out.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        for call in d.tool_calls {
            let index = match self.tools.get(&call.index) {
                Some(&i) => i,
                None => {
                    let id = call
                        .id
                        .clone()
                        .filter(|i| !i.is_empty())
                        .unwrap_or_else(|| new_id("toolu"));
                    let name = call.name.clone().unwrap_or_default();
                    let i = self.open_block(
                        json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                        out,
                    );
                    self.open = Open::Tool(i);
                    self.tools.insert(call.index, i);
                    i
                }
            };
            if let Some(args) = call.arguments.filter(|a| !a.is_empty()) {
                out.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": args}}),
                ));
            }
        }
        if let Some(f) = d.finish_reason {
            self.close(out);
            self.finish = Some(f);
            if let Some(s) = d.choice_extra.get("stop_sequence") {
                self.stop_sequence = Some(s.clone());
            }
        }
    }

    /// `message_delta` and `message_stop`.
    fn end(&mut self, usage: &Usage, out: &mut Vec<Out>) {
        self.start(out);
        self.close(out);
        let reason = stop_reason(self.finish.as_deref(), self.stop_sequence.as_ref());
        out.push(event(
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": reason,
                    "stop_sequence": self.stop_sequence.clone().filter(Value::is_string).unwrap_or(Value::Null)},
                "usage": usage_json(usage)}),
        ));
        out.push(event("message_stop", &json!({"type": "message_stop"})));
    }

    pub fn encode(
        mut self,
        mut events: EventStream,
    ) -> impl futures::Stream<Item = Result<Event, Infallible>> + Send + 'static {
        async_stream::stream! {
            let mut ended = false;
            while let Some(e) = events.next().await {
                let mut out = Vec::new();
                match e {
                    ChatEvent::Delta(delta) => {
                        if !self.started && let Some(m) = &delta.model {
                            self.model.clone_from(m);
                        }
                        self.start(&mut out);
                        for c in delta.choices {
                            self.delta(c, &mut out);
                        }
                    }
                    ChatEvent::Usage { usage, .. } => {
                        self.end(&usage, &mut out);
                        ended = true;
                    }
                    ChatEvent::Error(err) => {
                        self.start(&mut out);
                        let err = ApiError::from(err);
                        err.record();
                        out.push(event("error", &error::body(&err.rendered())));
                        for e in out {
                            yield Ok(sse(e));
                        }
                        return;
                    }
                }
                for e in out {
                    yield Ok(sse(e));
                }
            }
            if !ended {
                // The pipeline always reports usage after an answer that finished; without
                // it the stream still ends in the grammar's own way.
                let mut out = Vec::new();
                self.end(&Usage::default(), &mut out);
                for e in out {
                    yield Ok(sse(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolCallDelta;
    use crate::types::{CompletionChoice, PromptTokensDetails};
    use serde_json::Map;

    #[test]
    fn whole_message() {
        let completion = ChatCompletion {
            id: "x".into(),
            object: "chat.completion".into(),
            created: 1,
            model: "up-model".into(),
            choices: vec![CompletionChoice {
                index: 0,
                message: json!({"role": "assistant", "content": "Hi", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                    {"id": "", "type": "function", "function": {"name": "g", "arguments": "not json"}}]}),
                finish_reason: Some("tool_calls".into()),
                extra: Map::new(),
            }],
            usage: Some(Usage {
                prompt_tokens: 20,
                completion_tokens: 5,
                total_tokens: 25,
                prompt_tokens_details: Some(PromptTokensDetails {
                    cached_tokens: 3,
                    cache_write_tokens: 2,
                }),
            }),
            extra: Map::new(),
        };
        let m = message(&completion, "asked", None);
        assert!(m["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(m["model"], "up-model");
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["content"][0], json!({"type": "text", "text": "Hi"}));
        assert_eq!(
            m["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}})
        );
        assert!(
            m["content"][2]["id"]
                .as_str()
                .unwrap()
                .starts_with("toolu_")
        );
        assert_eq!(m["content"][2]["input"], json!({"arguments": "not json"}));
        assert_eq!(
            m["usage"],
            json!({"input_tokens": 15, "output_tokens": 5, "cache_creation_input_tokens": 2,
                "cache_read_input_tokens": 3})
        );
        assert_eq!(
            stop_reason(Some("stop"), Some(&json!("END"))),
            "stop_sequence"
        );
        assert_eq!(stop_reason(Some("stop"), None), "end_turn");
        assert_eq!(stop_reason(Some("length"), None), "max_tokens");
    }

    fn names(events: &[Out]) -> Vec<&'static str> {
        events.iter().map(|e| e.0).collect()
    }

    #[test]
    fn grammar_of_text_then_two_tools() {
        let mut enc = StreamEncoder::new("m".into(), None);
        let mut out = Vec::new();
        enc.start(&mut out);
        enc.delta(
            ChoiceDelta {
                role: Some("assistant".into()),
                text: Some("Hi".into()),
                ..Default::default()
            },
            &mut out,
        );
        for (i, id) in [(0, "call_a"), (1, "call_b")] {
            enc.delta(
                ChoiceDelta {
                    tool_calls: vec![ToolCallDelta {
                        index: i,
                        id: Some(id.into()),
                        name: Some("f".into()),
                        arguments: Some(String::new()),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                &mut out,
            );
            enc.delta(
                ChoiceDelta {
                    tool_calls: vec![ToolCallDelta {
                        index: i,
                        arguments: Some("{}".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                &mut out,
            );
        }
        enc.delta(
            ChoiceDelta {
                finish_reason: Some("tool_calls".into()),
                ..Default::default()
            },
            &mut out,
        );
        enc.end(&Usage::new(3, 4), &mut out);
        assert_eq!(out[4].1["index"], 0);
        assert_eq!(out[5].1["content_block"]["id"], "call_a");
        assert_eq!(out[6].1["delta"]["partial_json"], "{}");
        assert_eq!(out[11].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(out[11].1["usage"]["output_tokens"], 4);
        assert_eq!(
            names(&out),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }
}
