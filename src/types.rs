//! OpenAI's chat wire format, as the gateway reads and writes it. Fields the gateway does not
//! interpret are kept in `extra` and passed through untouched, so provider-specific
//! parameters and response fields survive the trip.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Everything else (tools, response_format, logprobs, user, ...), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    /// A string, an array of content parts, or null (assistant messages with tool calls).
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// One `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Present (possibly null) only when usage was requested; kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    /// Always serialized (null until the last chunk), as OpenAI does.
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A complete (non-streamed) `chat.completion`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    #[serde(default)]
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn completion_object() -> String {
    "chat.completion".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionChoice {
    #[serde(default)]
    pub index: u32,
    pub message: Value,
    #[serde(default)]
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
}

pub fn new_completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keeps_unknown_fields() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi","name":"x"}],
            "tools":[{"type":"function"}],"response_format":{"type":"json_object"}}"#;
        let req: ChatCompletionRequest = serde_json::from_str(body).unwrap();
        assert!(req.extra.contains_key("tools") && req.extra.contains_key("response_format"));
        assert_eq!(req.messages[0].extra["name"], "x");
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back["response_format"]["type"], "json_object");
    }

    #[test]
    fn validation_catches_semantic_errors() {
        let mk = |s: &str| {
            serde_json::from_str::<ChatCompletionRequest>(s)
                .unwrap()
                .validate()
        };
        assert!(mk(r#"{"model":"m","messages":[]}"#).is_err());
        assert!(mk(r#"{"model":"m","messages":[{"role":"user"}]}"#).is_err());
        assert!(
            mk(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#)
                .is_err()
        );
        assert!(mk(r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{}]}]}"#).is_ok());
        assert!(mk(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}"#).is_ok());
    }

    #[test]
    fn chunk_serializes_null_finish_reason() {
        let chunk = ChatChunk {
            id: "c".into(),
            object: chunk_object(),
            created: 1,
            model: "m".into(),
            choices: vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    content: Some("hi".into()),
                    ..Default::default()
                },
                finish_reason: None,
                extra: Map::new(),
            }],
            usage: None,
            extra: Map::new(),
        };
        let v = serde_json::to_value(&chunk).unwrap();
        assert!(v["choices"][0]["finish_reason"].is_null());
        assert!(v.get("usage").is_none());
    }
}
