//! A Messages answer as a chat completion: text blocks joined into `content`, `tool_use`
//! blocks as `tool_calls`, the stop reason as a finish reason, and usage in OpenAI's
//! meaning (`prompt_tokens` counting cache reads and writes, the details saying how many).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::types::{ChatCompletion, CompletionChoice, PromptTokensDetails, Usage};

/// The parts of a Messages answer the gateway reads.
#[derive(Debug, Deserialize)]
pub(super) struct Message {
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub content: Vec<Value>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// The stop sequence that ended the answer (`stop_reason: "stop_sequence"`).
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: AnthropicUsage,
}

/// Anthropic's usage: `input_tokens` excludes the tokens read from or written to the cache.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(super) struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Takes the counts `later` reports (a stream's `message_delta` restates some).
    pub fn update(&mut self, later: &AnthropicUsage) {
        let take = |mine: &mut Option<u64>, theirs: Option<u64>| {
            if theirs.is_some() {
                *mine = theirs;
            }
        };
        take(&mut self.input_tokens, later.input_tokens);
        take(&mut self.output_tokens, later.output_tokens);
        take(
            &mut self.cache_creation_input_tokens,
            later.cache_creation_input_tokens,
        );
        take(
            &mut self.cache_read_input_tokens,
            later.cache_read_input_tokens,
        );
    }

    pub fn to_usage(self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        let mut usage = Usage::new(
            self.input_tokens.unwrap_or(0) + read + write,
            self.output_tokens.unwrap_or(0),
        );
        // Reported (even as 0): the client learns the prompt cache was consulted, as
        // OpenAI's `cached_tokens: 0` says.
        if self.cache_read_input_tokens.is_some() || self.cache_creation_input_tokens.is_some() {
            usage.prompt_tokens_details = Some(PromptTokensDetails {
                cached_tokens: read,
                cache_write_tokens: write,
            });
        }
        usage
    }
}

/// OpenAI's finish reason for Anthropic's stop reason.
pub(super) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn, and any newer reason.
        _ => "stop",
    }
}

pub(super) fn completion(message: Message) -> ChatCompletion {
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in &message.content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text
                .get_or_insert_with(String::new)
                .push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": block.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": input.to_string(),
                    },
                }));
            }
            // thinking, redacted_thinking, server tool blocks: not part of OpenAI's answer.
            _ => {}
        }
    }
    let mut reply = json!({"role": "assistant", "content": text});
    if !tool_calls.is_empty() {
        reply["tool_calls"] = Value::Array(tool_calls);
    }
    let finish = message.stop_reason.as_deref().map_or("stop", finish_reason);
    let mut choice_extra = Map::new();
    if let Some(seq) = message.stop_sequence.filter(|s| !s.is_empty()) {
        choice_extra.insert("stop_sequence".into(), Value::String(seq));
    }
    ChatCompletion {
        id: message.id,
        object: "chat.completion".into(),
        created: crate::clock::unix_now(),
        model: message.model,
        choices: vec![CompletionChoice {
            index: 0,
            message: reply,
            finish_reason: Some(finish.to_string()),
            extra: choice_extra,
        }],
        usage: Some(message.usage.to_usage()),
        extra: Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(v: Value) -> ChatCompletion {
        completion(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn text_answer_with_cache_usage() {
        let c = complete(json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Hello"}, {"type": "text", "text": " there."}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 4, "cache_creation_input_tokens": 2,
                "cache_read_input_tokens": 3, "service_tier": "standard"},
        }));
        assert_eq!(
            (c.id.as_str(), c.model.as_str()),
            ("msg_01", "claude-sonnet-4-5")
        );
        assert_eq!(c.object, "chat.completion");
        assert_eq!(
            c.choices[0].message,
            json!({"role": "assistant", "content": "Hello there."})
        );
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));
        let u = c.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (15, 4, 19)
        );
        assert_eq!(
            u.prompt_tokens_details,
            Some(PromptTokensDetails {
                cached_tokens: 3,
                cache_write_tokens: 2
            })
        );
    }

    #[test]
    fn tool_use_answer() {
        let c = complete(json!({
            "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Berlin"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 20, "output_tokens": 7, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0},
        }));
        let m = &c.choices[0].message;
        assert!(m["content"].is_null());
        assert_eq!(
            m["tool_calls"],
            json!([
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Berlin\"}"}},
            ])
        );
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        // Cache counts reported as 0 are reported: the details say 0.
        let mut want = Usage::new(20, 7);
        want.prompt_tokens_details = Some(PromptTokensDetails::default());
        assert_eq!(c.usage.unwrap(), want);
    }

    #[test]
    fn stop_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("something_new", "stop"),
        ] {
            assert_eq!(finish_reason(stop), finish);
        }
    }
}
