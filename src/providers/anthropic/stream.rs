//! Anthropic's streamed events as `chat.completion.chunk`s. `message_start` gives the
//! role chunk, text deltas become `content`, a `tool_use` block's start and its
//! `input_json_delta`s become `tool_calls` deltas (indexed by the call's ordinal among the
//! message's tool calls), `message_delta`'s stop reason the finish reason, and
//! `message_stop` a last chunk with empty `choices` and the usage. `ping` and event types
//! this does not know (thinking and signature deltas, newer events) are ignored; an
//! `error` event ends the stream as a mid-stream failure.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::ProviderError;
use super::response::{AnthropicUsage, finish_reason};
use crate::types::{ChatChunk, ChunkChoice, Delta};

/// What one stream has said so far.
pub(super) struct StreamState {
    id: String,
    model: String,
    created: i64,
    usage: AnthropicUsage,
    /// Content block index -> (tool call ordinal, whether any arguments were sent).
    tools: HashMap<u64, (u32, bool)>,
    next_tool: u32,
    finished: bool,
    done: bool,
}

impl StreamState {
    pub fn new(created: i64) -> Self {
        Self {
            id: String::new(),
            model: String::new(),
            created,
            usage: AnthropicUsage::default(),
            tools: HashMap::new(),
            next_tool: 0,
            finished: false,
            done: false,
        }
    }

    /// Whether `message_stop` arrived (nothing follows it).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The chunks one SSE event (`event:` name and `data:`) makes.
    pub fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<ChatChunk>, ProviderError> {
        if data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            ProviderError::Protocol(format!("an upstream stream event is not JSON: {e}"))
        })?;
        // The data's own `type` names the event; the `event:` line says the same.
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(event);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let message = v.get("message").unwrap_or(&Value::Null);
                let field = |k: &str| message.get(k).and_then(Value::as_str).unwrap_or("");
                self.id = field("id").to_string();
                self.model = field("model").to_string();
                self.update_usage(message.get("usage"))?;
                out.push(self.chunk(
                    Delta {
                        role: Some("assistant".into()),
                        ..Default::default()
                    },
                    None,
                ));
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            out.push(self.content(text));
                        }
                    }
                    Some("tool_use") => {
                        let ordinal = self.next_tool;
                        self.next_tool += 1;
                        self.tools.insert(index_of(&v)?, (ordinal, false));
                        let call = json!({
                            "index": ordinal,
                            "id": block.get("id").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {
                                "name": block.get("name").cloned().unwrap_or(Value::Null),
                                "arguments": "",
                            },
                        });
                        out.push(self.tool_delta(call));
                    }
                    _ => {} // thinking, server tools, ...
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            out.push(self.content(text));
                        }
                    }
                    Some("input_json_delta") => {
                        let piece = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if let Some((ordinal, sent)) = self.tools.get_mut(&index_of(&v)?)
                            && !piece.is_empty()
                        {
                            *sent = true;
                            let call = json!({"index": *ordinal, "function": {"arguments": piece}});
                            out.push(self.tool_delta(call));
                        }
                    }
                    _ => {} // thinking_delta, signature_delta, citations_delta, ...
                }
            }
            "content_block_stop" => {
                // A call without arguments still gets a JSON object as its arguments.
                if let Some((ordinal, false)) = v
                    .get("index")
                    .and_then(Value::as_u64)
                    .and_then(|i| self.tools.get(&i).copied())
                {
                    let call = json!({"index": ordinal, "function": {"arguments": "{}"}});
                    out.push(self.tool_delta(call));
                }
            }
            "message_delta" => {
                self.update_usage(v.get("usage"))?;
                if let Some(stop) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    let mut chunk = self.finish(finish_reason(stop));
                    // Which stop sequence matched: OpenAI's finish reason cannot say it, a
                    // door speaking Messages can.
                    if let (Some(c), Some(seq)) = (
                        chunk.choices.first_mut(),
                        v.pointer("/delta/stop_sequence").filter(|s| s.is_string()),
                    ) {
                        c.extra.insert("stop_sequence".into(), seq.clone());
                    }
                    out.push(chunk);
                }
            }
            "message_stop" => {
                if !self.finished {
                    out.push(self.finish("stop"));
                }
                out.push(ChatChunk {
                    choices: Vec::new(),
                    usage: Some(self.usage.to_usage()),
                    ..self.chunk(Delta::default(), None)
                });
                self.done = true;
            }
            "error" => {
                let error = v.get("error").unwrap_or(&Value::Null);
                let field = |k: &str| error.get(k).and_then(Value::as_str).map(str::to_string);
                return Err(ProviderError::MidStream {
                    message: field("message").unwrap_or_else(|| "upstream stream failed".into()),
                    code: field("type"),
                });
            }
            _ => {} // ping, and whatever Anthropic adds
        }
        Ok(out)
    }

    fn update_usage(&mut self, usage: Option<&Value>) -> Result<(), ProviderError> {
        let Some(usage) = usage.filter(|u| !u.is_null()) else {
            return Ok(());
        };
        let later: AnthropicUsage = serde_json::from_value(usage.clone())
            .map_err(|e| ProviderError::Protocol(format!("upstream usage: {e}")))?;
        self.usage.update(&later);
        Ok(())
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<String>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                extra: Map::new(),
            }],
            usage: None,
            extra: Map::new(),
        }
    }

    fn content(&self, text: &str) -> ChatChunk {
        let delta = Delta {
            content: Some(text.to_string()),
            ..Default::default()
        };
        self.chunk(delta, None)
    }

    fn tool_delta(&self, call: Value) -> ChatChunk {
        let mut delta = Delta::default();
        delta.extra.insert("tool_calls".into(), json!([call]));
        self.chunk(delta, None)
    }

    fn finish(&mut self, reason: &str) -> ChatChunk {
        self.finished = true;
        self.chunk(Delta::default(), Some(reason.to_string()))
    }
}

fn index_of(event: &Value) -> Result<u64, ProviderError> {
    event.get("index").and_then(Value::as_u64).ok_or_else(|| {
        ProviderError::Protocol("an upstream content block event has no index".into())
    })
}

#[cfg(test)]
mod tests;
