//! OpenAI's chat wire format, as the gateway reads and writes it. Fields the gateway does not
//! interpret are kept in `extra` and passed through untouched, so provider-specific
//! parameters and response fields survive the trip.
//!
//! The open structs (those with `extra`) derive only `Serialize`; their `Deserialize` is
//! written by hand in `de.rs`, which says why.

mod de;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Everything else (tools, response_format, logprobs, user, ...), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// The request as the client sent it in an upstream's own protocol, for a provider of
    /// that protocol to send untranslated (never serialized: the cache keys and other
    /// providers see the canonical fields only). A step that changes the request's meaning
    /// (grounding) clears it.
    #[serde(skip)]
    pub native: Option<Native>,
}

/// A request body in a protocol other than chat completions, kept whole.
#[derive(Debug, Clone)]
pub enum Native {
    /// An Anthropic Messages request (`POST /v1/messages`), as the client sent it.
    Anthropic(std::sync::Arc<Map<String, Value>>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn as_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    pub role: Role,
    /// A string, an array of content parts, or null (assistant messages with tool calls).
    pub content: Option<MessageContent>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Serialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// The message's text: the string, or its text parts joined by newlines.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(MessageContent::Text(s)) => s.clone(),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

impl ChatCompletionRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// Whether answering needs a model that can call tools: tools are offered and
    /// `tool_choice` is not `none`.
    pub fn needs_tools(&self) -> bool {
        let offered = self
            .extra
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty());
        offered && self.extra.get("tool_choice").and_then(Value::as_str) != Some("none")
    }

    /// Checks what serde cannot: returns `(message, param)` for the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.model.trim().is_empty() {
            return Err(("`model` must not be empty".into(), "model".into()));
        }
        if self.messages.is_empty() {
            return Err((
                "`messages` must contain at least one message".into(),
                "messages".into(),
            ));
        }
        for (i, m) in self.messages.iter().enumerate() {
            let has_tool_calls = m.extra.get("tool_calls").is_some_and(|v| !v.is_null());
            if m.content.is_none() && !(m.role == Role::Assistant && has_tool_calls) {
                return Err((
                    format!("messages[{i}].content is required"),
                    format!("messages[{i}].content"),
                ));
            }
        }
        let range = |v: Option<f64>, lo: f64, hi: f64, name: &str| match v {
            Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err((
                format!("`{name}` must be between {lo} and {hi}"),
                name.to_string(),
            )),
            _ => Ok(()),
        };
        range(self.temperature, 0.0, 2.0, "temperature")?;
        range(self.top_p, 0.0, 1.0, "top_p")?;
        if self.n.is_some_and(|n| n == 0 || n > 128) {
            return Err(("`n` must be between 1 and 128".into(), "n".into()));
        }
        if self.max_tokens == Some(0) || self.max_completion_tokens == Some(0) {
            return Err((
                "`max_tokens` must be at least 1".into(),
                "max_tokens".into(),
            ));
        }
        Ok(())
    }

    /// Rough prompt size when an upstream reports no usage: about 4 characters a token.
    pub fn estimate_prompt_tokens(&self) -> u64 {
        let chars: usize = self.messages.iter().map(|m| m.text().len() + 4).sum();
        (chars as u64).div_ceil(4)
    }
}

/// Token counts in OpenAI's meaning: `prompt_tokens` counts every input token, those read
/// from or written to the upstream's prompt cache included; the details say how many were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// How much of the prompt the upstream's prompt cache served or stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Input tokens read from the cache (OpenAI's `cached_tokens`, Anthropic's
    /// `cache_read_input_tokens`).
    #[serde(default)]
    pub cached_tokens: u64,
    /// Input tokens written to the cache (Anthropic's `cache_creation_input_tokens`; OpenAI
    /// reports none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: None,
        }
    }

    /// Input tokens read from the upstream's prompt cache.
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
    }

    /// Input tokens written to the upstream's prompt cache.
    pub fn cache_write_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .map_or(0, |d| d.cache_write_tokens)
    }
}

/// One `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Present (possibly null) only when usage was requested; kept as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    /// Always serialized (null until the last chunk), as OpenAI does.
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A complete (non-streamed) `chat.completion`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub message: Value,
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /v1/models` entry.
#[derive(Debug, Clone, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: String,
    /// Anthropic's model fields beside OpenAI's, so both SDKs read the same object.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub display_name: String,
    /// `created` as RFC 3339.
    pub created_at: String,
}

pub fn new_completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests;
