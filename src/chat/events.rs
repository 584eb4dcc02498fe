//! What the pipeline says while it answers, whatever door the request came in by: deltas
//! of text and tool calls per choice, a finish reason, final usage, or an error. A provider's
//! stream is turned into these events as it arrives; a cache hit is replayed as the same
//! events; each door encodes them in its own wire format.
//!
//! Vocabulary: roles and finish reasons are OpenAI's (`stop`, `length`, `tool_calls`,
//! `content_filter`), the gateway's canonical form; other doors translate. Fields the
//! gateway does not interpret ride along in the `extra` maps so that a door speaking the
//! upstream's own protocol can pass them through untouched.

use std::pin::Pin;

use futures::Stream;
use serde_json::{Map, Value};

use super::ChatError;
use crate::types::{ChatChunk, ChunkChoice, Delta, Usage};

/// A stream of events; it ends after the last event (a failed one with `Error`).
pub type EventStream = Pin<Box<dyn Stream<Item = ChatEvent> + Send>>;

#[derive(Debug)]
pub enum ChatEvent {
    /// Output for one or more choices.
    Delta(DeltaEvent),
    /// The answer's token counts: once, after the last delta of an answer that finished
    /// (with the model's final name, when the upstream gave one).
    Usage { usage: Usage, model: Option<String> },
    /// The answer failed after output began; nothing follows.
    Error(ChatError),
}

#[derive(Debug, Clone, Default)]
pub struct DeltaEvent {
    /// The model as the upstream named it (`None`: unchanged).
    pub model: Option<String>,
    pub choices: Vec<ChoiceDelta>,
    /// Top-level fields of the upstream's chunk the gateway does not read.
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default)]
pub struct ChoiceDelta {
    pub index: u32,
    pub role: Option<String>,
    pub text: Option<String>,
    pub tool_calls: Vec<ToolCallDelta>,
    /// Set on the choice's last delta.
    pub finish_reason: Option<String>,
    /// Other fields of the delta (`refusal`, ...).
    pub extra: Map<String, Value>,
    /// Other fields of the choice (`logprobs`, ...).
    pub choice_extra: Map<String, Value>,
}

/// A piece of a tool call: the first piece of a call carries its `id` and `name`, later
/// ones more of its JSON `arguments`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolCallDelta {
    /// The call's position among the choice's tool calls.
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
    /// Other fields of the call (`type`, ...).
    pub extra: Map<String, Value>,
}

impl ChoiceDelta {
    /// Only text (or nothing) and no tool calls or other delta fields.
    pub fn is_text_only(&self) -> bool {
        self.tool_calls.is_empty() && self.extra.values().all(Value::is_null)
    }
}

impl ToolCallDelta {
    /// Reads OpenAI's `{"index", "id", "type", "function": {"name", "arguments"}}`.
    fn from_openai(v: Value) -> Option<Self> {
        let Value::Object(mut call) = v else {
            return None;
        };
        let index = call.remove("index")?.as_u64()? as u32;
        let id = take_string(&mut call, "id");
        // A call in another shape (fields of `function` the gateway does not know) is not
        // read: the caller passes the whole list through instead.
        let (name, arguments) = match call.remove("function") {
            Some(Value::Object(mut f)) => {
                let name = take_string(&mut f, "name");
                let arguments = take_string(&mut f, "arguments");
                if !f.is_empty() {
                    return None;
                }
                (name, arguments)
            }
            Some(_) => return None,
            None => (None, None),
        };
        Some(Self {
            index,
            id,
            name,
            arguments,
            extra: call,
        })
    }

    /// Writes OpenAI's shape back.
    pub fn to_openai(&self) -> Value {
        let mut call = self.extra.clone();
        call.insert("index".into(), Value::from(self.index));
        if let Some(id) = &self.id {
            call.insert("id".into(), Value::String(id.clone()));
        }
        let mut function = Map::new();
        if let Some(n) = &self.name {
            function.insert("name".into(), Value::String(n.clone()));
        }
        if let Some(a) = &self.arguments {
            function.insert("arguments".into(), Value::String(a.clone()));
        }
        if !function.is_empty() {
            call.insert("function".into(), Value::Object(function));
        }
        Value::Object(call)
    }
}

fn take_string(map: &mut Map<String, Value>, key: &str) -> Option<String> {
    match map.remove(key) {
        Some(Value::String(s)) => Some(s),
        Some(Value::Null) | None => None,
        Some(other) => {
            map.insert(key.to_string(), other);
            None
        }
    }
}

/// `tool_calls` of an OpenAI delta as pieces; `None` (and the field left where it is) when
/// any piece is not in the expected shape.
fn tool_calls_of(extra: &mut Map<String, Value>) -> Vec<ToolCallDelta> {
    let Some(Value::Array(calls)) = extra.get("tool_calls") else {
        return Vec::new();
    };
    let parsed: Option<Vec<ToolCallDelta>> = calls
        .iter()
        .cloned()
        .map(ToolCallDelta::from_openai)
        .collect();
    match parsed {
        Some(p) => {
            extra.remove("tool_calls");
            p
        }
        None => Vec::new(),
    }
}

impl DeltaEvent {
    /// An OpenAI chunk's choices as deltas (the chunk's usage is read separately).
    pub fn from_chunk(chunk: ChatChunk) -> Self {
        let choices = chunk
            .choices
            .into_iter()
            .map(|c| {
                let mut extra = c.delta.extra;
                let tool_calls = tool_calls_of(&mut extra);
                ChoiceDelta {
                    index: c.index,
                    role: c.delta.role,
                    text: c.delta.content,
                    tool_calls,
                    finish_reason: c.finish_reason,
                    extra,
                    choice_extra: c.extra,
                }
            })
            .collect();
        DeltaEvent {
            model: (!chunk.model.is_empty()).then_some(chunk.model),
            choices,
            extra: chunk.extra,
        }
    }

    /// One choice's delta.
    pub fn single(delta: ChoiceDelta) -> Self {
        DeltaEvent {
            model: None,
            choices: vec![delta],
            extra: Map::new(),
        }
    }
}

impl ChoiceDelta {
    /// OpenAI's chunk choice for this delta.
    pub fn to_openai(&self) -> ChunkChoice {
        self.clone().into_openai()
    }

    /// As [`Self::to_openai`], consuming the delta (the streaming path: nothing is copied).
    pub fn into_openai(self) -> ChunkChoice {
        let mut extra = self.extra;
        if !self.tool_calls.is_empty() {
            extra.insert(
                "tool_calls".into(),
                Value::Array(
                    self.tool_calls
                        .iter()
                        .map(ToolCallDelta::to_openai)
                        .collect(),
                ),
            );
        }
        ChunkChoice {
            index: self.index,
            delta: Delta {
                role: self.role,
                content: self.text,
                extra,
            },
            finish_reason: self.finish_reason,
            extra: self.choice_extra,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(delta: Value, finish: Value) -> ChatChunk {
        serde_json::from_value(json!({
            "id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]
        }))
        .unwrap()
    }

    #[test]
    fn tool_calls_are_read_and_written_back_unchanged() {
        let delta = json!({"role": "assistant", "content": null, "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
            {"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\""}}
        ]});
        let event = DeltaEvent::from_chunk(chunk(delta.clone(), Value::Null));
        let c = &event.choices[0];
        assert_eq!(c.tool_calls.len(), 2);
        assert_eq!(c.tool_calls[1].id.as_deref(), Some("call_2"));
        assert_eq!(c.tool_calls[1].name.as_deref(), Some("get_time"));
        assert_eq!(c.tool_calls[1].arguments.as_deref(), Some("{\"tz\""));
        assert!(!c.is_text_only());
        assert_eq!(event.extra["system_fingerprint"], "fp_1");
        // Written back as the gateway always forwarded deltas: a null `content` is left out.
        let back = serde_json::to_value(c.to_openai()).unwrap();
        let mut expected = delta.clone();
        expected.as_object_mut().unwrap().remove("content");
        assert_eq!(back["delta"], expected);
        assert_eq!(back["logprobs"], Value::Null);
    }

    #[test]
    fn an_argument_piece_has_no_id_or_name() {
        let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": "ris\"}"}}]});
        let event = DeltaEvent::from_chunk(chunk(delta.clone(), Value::Null));
        let t = &event.choices[0].tool_calls[0];
        assert_eq!((t.id.as_deref(), t.name.as_deref()), (None, None));
        assert_eq!(t.arguments.as_deref(), Some("ris\"}"));
        assert_eq!(
            serde_json::to_value(event.choices[0].to_openai()).unwrap()["delta"],
            delta
        );
    }

    #[test]
    fn an_unexpected_tool_call_shape_passes_through() {
        let delta =
            json!({"tool_calls": [{"index": 0, "function": {"name": "x", "strict": true}}]});
        let event = DeltaEvent::from_chunk(chunk(delta.clone(), Value::Null));
        assert!(event.choices[0].tool_calls.is_empty());
        assert_eq!(
            serde_json::to_value(event.choices[0].to_openai()).unwrap()["delta"],
            delta
        );
    }

    #[test]
    fn text_deltas_are_text_only() {
        let event = DeltaEvent::from_chunk(chunk(json!({"content": "hi"}), json!("stop")));
        let c = &event.choices[0];
        assert!(c.is_text_only());
        assert_eq!(c.text.as_deref(), Some("hi"));
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        assert_eq!(event.model.as_deref(), Some("m"));
    }
}
