//! A Responses API request into the pipeline's canonical chat request: `instructions` as a
//! system message, `input` (a string, or message / `function_call` / `function_call_output`
//! items) as chat messages after the stored conversation of `previous_response_id`, function
//! tools and `tool_choice` in chat's shape, `max_output_tokens` as `max_tokens`, `text.format`
//! as `response_format`. Fields the gateway does not read pass through to the upstream.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::error::ApiError;
use crate::types::ChatCompletionRequest;

/// `POST /v1/responses`, as OpenAI documents it (the fields the gateway reads).
#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    #[serde(default)]
    pub input: Option<Input>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub text: Option<Value>,
    /// Whether the response is kept for `previous_response_id` and `GET` (default true).
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
    /// Everything else (`reasoning`, `truncation`, `include`, ...), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Value>),
}

/// Fields of a Responses request that are the door's own, never sent upstream.
const OWN_FIELDS: &[&str] = &["include", "truncation", "background", "service_tier"];

impl ResponsesRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn stores(&self) -> bool {
        self.store.unwrap_or(true)
    }

    /// This request's input as items (a string is one user message), each with an id.
    pub fn input_items(&self) -> Result<Vec<Value>, ApiError> {
        let items = match &self.input {
            None => {
                return Err(ApiError::invalid(
                    "`input` is required",
                    Some("input".to_string()),
                ));
            }
            Some(Input::Text(t)) => vec![json!({
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": t}],
            })],
            Some(Input::Items(items)) => items.clone(),
        };
        if items.is_empty() {
            return Err(ApiError::invalid(
                "`input` must contain at least one item",
                Some("input".to_string()),
            ));
        }
        Ok(items
            .into_iter()
            .map(|mut item| {
                if let Value::Object(m) = &mut item {
                    if !m.contains_key("type") && m.contains_key("role") {
                        m.insert("type".into(), Value::from("message"));
                    }
                    if !m.contains_key("id") {
                        let prefix = match m.get("type").and_then(Value::as_str) {
                            Some("function_call") => "fc",
                            Some("function_call_output") => "fco",
                            _ => "msg",
                        };
                        m.insert("id".into(), Value::from(super::new_id(prefix)));
                    }
                }
                item
            })
            .collect())
    }

    /// The canonical chat request: `history` (the stored conversation, chat messages) then
    /// this request's items.
    pub fn to_chat(
        &self,
        history: Vec<Value>,
        items: &[Value],
    ) -> Result<ChatCompletionRequest, ApiError> {
        let mut messages = Vec::new();
        if let Some(i) = &self.instructions {
            messages.push(json!({"role": "system", "content": i}));
        }
        messages.extend(history);
        messages.extend(items_to_messages(items)?);
        let mut chat = Map::new();
        chat.insert("model".into(), Value::from(self.model.clone()));
        chat.insert("messages".into(), Value::Array(messages));
        if self.is_stream() {
            chat.insert("stream".into(), Value::Bool(true));
            chat.insert("stream_options".into(), json!({"include_usage": true}));
        }
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                chat.insert(k.into(), v);
            }
        };
        put("temperature", self.temperature.map(Value::from));
        put("top_p", self.top_p.map(Value::from));
        put("max_tokens", self.max_output_tokens.map(Value::from));
        put(
            "parallel_tool_calls",
            self.parallel_tool_calls.map(Value::from),
        );
        put("user", self.user.clone().map(Value::from));
        put(
            "tools",
            self.tools.as_deref().map(tools_to_chat).transpose()?,
        );
        put(
            "tool_choice",
            self.tool_choice
                .as_ref()
                .map(tool_choice_to_chat)
                .transpose()?,
        );
        put(
            "response_format",
            self.text
                .as_ref()
                .map(text_format_to_chat)
                .transpose()?
                .flatten(),
        );
        for (k, v) in &self.extra {
            if !OWN_FIELDS.contains(&k.as_str()) && !chat.contains_key(k) {
                chat.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(Value::Object(chat))
            .map_err(|e| ApiError::invalid(format!("invalid request: {e}"), None))
    }
}

fn invalid_at(param: String, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message, Some(param))
}

/// Input items as chat messages; consecutive `function_call`s become one assistant message
/// with several tool calls, as chat completions expect.
pub fn items_to_messages(items: &[Value]) -> Result<Vec<Value>, ApiError> {
    let mut out: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("input[{i}]{f}");
        let Value::Object(m) = item else {
            return Err(invalid_at(at(""), "an input item must be an object"));
        };
        let kind = m.get("type").and_then(Value::as_str).unwrap_or("message");
        match kind {
            "message" => out.push(message_item(m, &at)?),
            "function_call" => {
                let field = |f: &str| {
                    m.get(f).and_then(Value::as_str).ok_or_else(|| {
                        invalid_at(at(&format!(".{f}")), format!("`{f}` is required"))
                    })
                };
                let call = json!({
                    "id": field("call_id")?, "type": "function",
                    "function": {"name": field("name")?, "arguments": field("arguments")?},
                });
                // Calls of one turn join the assistant message before them (its text, or
                // the calls before them).
                let joins = out.last().is_some_and(|last| last["role"] == "assistant");
                if joins {
                    let last = out.last_mut().expect("checked above");
                    if !last["tool_calls"].is_array() {
                        last["tool_calls"] = json!([]);
                    }
                    last["tool_calls"]
                        .as_array_mut()
                        .expect("made above")
                        .push(call);
                } else {
                    out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
                }
            }
            "function_call_output" => {
                let call_id = m
                    .get("call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid_at(at(".call_id"), "`call_id` is required"))?;
                let output = match m.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts_text(parts),
                    _ => return Err(invalid_at(at(".output"), "`output` must be a string")),
                };
                out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            // Reasoning summaries of an earlier turn are not sent upstream again.
            "reasoning" => {}
            other => {
                return Err(invalid_at(
                    at(".type"),
                    format!(
                        "input items of type `{other}` are not supported (message, function_call, function_call_output)"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// The text of `input_text` / `output_text` parts, joined.
fn parts_text(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("")
}

/// One message item as a chat message (text parts; images as `image_url` parts).
fn message_item(m: &Map<String, Value>, at: &dyn Fn(&str) -> String) -> Result<Value, ApiError> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant" | "system" | "developer")) => r,
        _ => {
            return Err(invalid_at(
                at(".role"),
                "`role` must be one of user, assistant, system, developer",
            ));
        }
    };
    let content = match m.get("content") {
        Some(Value::String(s)) => Value::from(s.clone()),
        Some(Value::Array(parts)) => {
            let mut chat_parts = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "input_text" | "output_text" | "text" => {
                        let text = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                            invalid_at(at(&format!(".content[{j}].text")), "`text` is required")
                        })?;
                        chat_parts.push(json!({"type": "text", "text": text}));
                    }
                    "input_image" => {
                        let url = p.get("image_url").and_then(Value::as_str).ok_or_else(|| {
                            invalid_at(
                                at(&format!(".content[{j}].image_url")),
                                "an `input_image` part needs an `image_url`",
                            )
                        })?;
                        let mut image = json!({"url": url});
                        if let Some(d) = p.get("detail") {
                            image["detail"] = d.clone();
                        }
                        chat_parts.push(json!({"type": "image_url", "image_url": image}));
                    }
                    // A model's refusal of an earlier turn, sent back as text.
                    "refusal" => {
                        let text = p.get("refusal").and_then(Value::as_str).unwrap_or("");
                        chat_parts.push(json!({"type": "text", "text": text}));
                    }
                    other => {
                        return Err(invalid_at(
                            at(&format!(".content[{j}].type")),
                            format!(
                                "content parts of type `{other}` are not supported (input_text, output_text, input_image)"
                            ),
                        ));
                    }
                }
            }
            // Assistant turns and text-only content are sent as one string.
            if role == "assistant" || chat_parts.iter().all(|p| p["type"] == "text") {
                Value::from(parts_text(&chat_parts))
            } else {
                Value::Array(chat_parts)
            }
        }
        _ => {
            return Err(invalid_at(
                at(".content"),
                "`content` must be a string or a list of content parts",
            ));
        }
    };
    Ok(json!({"role": role, "content": content}))
}

/// Responses' flat function tools (`{"type": "function", "name", ...}`) in chat's nested
/// shape; other tool types (web search, file search, ...) are not something a chat upstream
/// can run.
fn tools_to_chat(tools: &[Value]) -> Result<Value, ApiError> {
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {
                let Some(name) = t.get("name").and_then(Value::as_str) else {
                    return Err(invalid_at(
                        format!("tools[{i}].name"),
                        "a function tool needs a `name`",
                    ));
                };
                let mut f = Map::new();
                f.insert("name".into(), Value::from(name));
                for k in ["description", "parameters", "strict"] {
                    if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                        f.insert(k.into(), v.clone());
                    }
                }
                out.push(json!({"type": "function", "function": f}));
            }
            other => {
                return Err(invalid_at(
                    format!("tools[{i}].type"),
                    format!(
                        "tools of type `{}` are not supported by this gateway (function tools are)",
                        other.unwrap_or("(none)")
                    ),
                ));
            }
        }
    }
    Ok(Value::Array(out))
}

/// `"auto"`, `"none"`, `"required"`, or `{"type": "function", "name"}` in chat's shape.
fn tool_choice_to_chat(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(m) if m.get("type").and_then(Value::as_str) == Some("function") => {
            match m.get("name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
                None => Err(invalid_at("tool_choice.name".into(), "`name` is required")),
            }
        }
        _ => Err(invalid_at(
            "tool_choice".into(),
            "`tool_choice` must be auto, none, required, or {\"type\": \"function\", \"name\": ...}",
        )),
    }
}

/// `text.format` as chat's `response_format` (`None` for plain text).
fn text_format_to_chat(text: &Value) -> Result<Option<Value>, ApiError> {
    let Some(format) = text.get("format") else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(k).filter(|v| !v.is_null()) {
                    schema.insert(k.into(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(other) => Err(invalid_at(
            "text.format.type".into(),
            format!("`{other}` is not a text format (text, json_object, json_schema)"),
        )),
    }
}
