//! OpenAI's chat wire format, as the gateway reads and writes it. Fields the gateway does not
//! interpret are kept in `extra` and passed through untouched, so provider-specific
//! parameters and response fields survive the trip.

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

fn chunk_object() -> String {
    "chat.completion.chunk".into()
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

fn completion_object() -> String {
    "chat.completion".into()
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

/// The UTC date (year, month 1-12, day 1-31) of a day index since 1970-01-01, by Howard
/// Hinnant's civil-from-days algorithm (no time zone database needed).
pub fn civil_from_days(day: i64) -> (i64, u32, u32) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A day number (days since the epoch) as `YYYY-MM-DD`.
pub fn day_name(day: i64) -> String {
    rfc3339(day * 86_400)[..10].to_string()
}

/// A Unix time as RFC 3339 in UTC (`2026-12-06T11:15:00Z`).
pub fn rfc3339(unix_secs: i64) -> String {
    let (y, m, d) = civil_from_days(unix_secs.div_euclid(86_400));
    let s = unix_secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
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

// Deserialization. The open structs above keep unknown fields in `extra`; serde's
// `#[serde(flatten)]` does that by buffering each unknown field, key and value, into its
// private `Content` tree and then reading them again into the map, and `#[serde(untagged)]`
// buffers the whole message content before trying each variant: on every request, response
// and stream chunk. `open_struct!` writes the visitor by hand instead: unknown fields go
// straight into `Value`s, keys are borrowed from the input where they can be. Missing,
// duplicate and mistyped fields give serde's own errors; a bad content part is reported at
// its own path (`messages[0].content[1].type`), not as "did not match any variant".

/// A map key, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    fn into_string(self) -> String {
        match self {
            Key::Borrowed(s) => s.to_owned(),
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The JSON name of a field: its Rust name unless given.
macro_rules! wire_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident, $wire:literal) => {
        $wire
    };
}

/// The value of a field the object did not have: `required` (serde's "missing field"
/// error), `default`, or an expression.
macro_rules! when_missing {
    (required, $name:expr) => {
        return Err(serde::de::Error::missing_field($name))
    };
    (default, $name:expr) => {
        Default::default()
    };
    (($value:expr), $name:expr) => {
        $value
    };
}

/// `Deserialize` for a struct of named fields plus `extra: Map<String, Value>` that takes
/// every other field: `open_struct!(Type, "what it is", { field [as "json name"]: FieldType
/// => required | default | (expression), ... } [, skip(field, ...)])`; skipped fields are
/// not read from the wire and start at their default.
macro_rules! open_struct {
    ($ty:ident, $expecting:literal, {
        $($field:ident $(as $wire:literal)? : $fty:ty => $missing:tt),* $(,)?
    } $(, skip($($skip:ident),*))?) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct OpenVisitor;
                impl<'de> serde::de::Visitor<'de> for OpenVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        $(let mut $field: Option<$fty> = None;)*
                        let mut extra = Map::new();
                        while let Some(key) = map.next_key::<Key<'de>>()? {
                            match key.as_str() {
                                $(wire_name!($field $(, $wire)?) => {
                                    if $field.is_some() {
                                        return Err(serde::de::Error::duplicate_field(
                                            wire_name!($field $(, $wire)?),
                                        ));
                                    }
                                    $field = Some(map.next_value()?);
                                })*
                                _ => {
                                    let value: Value = map.next_value()?;
                                    extra.insert(key.into_string(), value);
                                }
                            }
                        }
                        Ok($ty {
                            $($field: match $field {
                                Some(v) => v,
                                None => when_missing!($missing, wire_name!($field $(, $wire)?)),
                            },)*
                            $($($skip: Default::default(),)*)?
                            extra,
                        })
                    }
                }
                deserializer.deserialize_map(OpenVisitor)
            }
        }
    };
}

open_struct!(ChatCompletionRequest, "a chat completion request object", {
    model: String => required,
    messages: Vec<ChatMessage> => required,
    stream: Option<bool> => default,
    stream_options: Option<StreamOptions> => default,
    temperature: Option<f64> => default,
    top_p: Option<f64> => default,
    max_tokens: Option<u32> => default,
    max_completion_tokens: Option<u32> => default,
    n: Option<u32> => default,
    stop: Option<Stop> => default,
    seed: Option<i64> => default,
}, skip(native));

open_struct!(StreamOptions, "a stream options object", {
    include_usage: Option<bool> => default,
});

open_struct!(ChatMessage, "a message object", {
    role: Role => required,
    content: Option<MessageContent> => default,
});

open_struct!(ContentPart, "a content part object", {
    kind as "type": String => required,
    text: Option<String> => default,
});

open_struct!(ChatChunk, "a chat completion chunk object", {
    id: String => default,
    object: String => (chunk_object()),
    created: i64 => default,
    model: String => default,
    choices: Vec<ChunkChoice> => default,
    usage: Option<Usage> => default,
});

open_struct!(ChunkChoice, "a chunk choice object", {
    index: u32 => default,
    delta: Delta => default,
    finish_reason: Option<String> => default,
});

open_struct!(Delta, "a delta object", {
    role: Option<String> => default,
    content: Option<String> => default,
});

open_struct!(ChatCompletion, "a chat completion object", {
    id: String => default,
    object: String => (completion_object()),
    created: i64 => default,
    model: String => default,
    choices: Vec<CompletionChoice> => required,
    usage: Option<Usage> => default,
});

open_struct!(CompletionChoice, "a choice object", {
    index: u32 => default,
    message: Value => required,
    finish_reason: Option<String> => default,
});

/// A string, or an array of content parts (untagged, without buffering the value first).
impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> serde::de::Visitor<'de> for ContentVisitor {
            type Value = MessageContent;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E>(self, v: &str) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<MessageContent, A::Error> {
                Vec::<ContentPart>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(MessageContent::Parts)
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
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

    /// The hand-written deserializers: escaped keys, responses and chunks with unknown
    /// fields, defaults, and serde's errors for missing, duplicate and mistyped fields.
    #[test]
    fn open_structs_deserialize_like_serde_derive() {
        let req: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a","x\u0041":1}]}],"us\u0065r":"u"}"#,
        )
        .unwrap();
        assert_eq!(req.extra["user"], "u");
        match &req.messages[0].content {
            Some(MessageContent::Parts(p)) => {
                assert_eq!(
                    (p[0].kind.as_str(), p[0].text.as_deref()),
                    ("text", Some("a"))
                );
                assert_eq!(p[0].extra["xA"], 1);
            }
            other => panic!("{other:?}"),
        }
        let err = |s: &str| {
            serde_json::from_str::<ChatCompletionRequest>(s)
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"messages":[]}"#).starts_with("missing field `model`"));
        assert!(
            err(r#"{"model":"a","model":"b","messages":[]}"#)
                .starts_with("duplicate field `model`")
        );
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":5}]}"#)
                .contains("expected a string or an array of content parts")
        );
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":[{"text":"a"}]}]}"#)
                .starts_with("missing field `type`")
        );
        assert!(err(r#"[1]"#).contains("expected a chat completion request object"));

        let chunk: ChatChunk = serde_json::from_str(
            r#"{"choices":[{"delta":{"content":"hi","tool_calls":[]},"logprobs":null}],"system_fingerprint":"f"}"#,
        )
        .unwrap();
        assert_eq!(
            (chunk.object.as_str(), chunk.created, chunk.id.as_str()),
            ("chat.completion.chunk", 0, "")
        );
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("hi"));
        assert!(chunk.choices[0].delta.extra.contains_key("tool_calls"));
        assert!(chunk.choices[0].extra.contains_key("logprobs"));
        assert_eq!(chunk.extra["system_fingerprint"], "f");
        let failed: ChatChunk = serde_json::from_str(r#"{"error":{"message":"boom"}}"#).unwrap();
        assert_eq!(failed.extra["error"]["message"], "boom");

        let done: ChatCompletion = serde_json::from_value(serde_json::json!({
            "id": "x", "created": 7, "model": "m", "service_tier": "default",
            "choices": [{"message": {"role": "assistant", "content": "hey"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        }))
        .unwrap();
        assert_eq!(done.object, "chat.completion");
        assert_eq!(done.choices[0].message["content"], "hey");
        assert_eq!(done.usage.unwrap().total_tokens, 3);
        assert_eq!(done.extra["service_tier"], "default");
        assert!(
            serde_json::from_str::<ChatCompletion>(r#"{"id":"x"}"#)
                .unwrap_err()
                .to_string()
                .starts_with("missing field `choices`")
        );
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
