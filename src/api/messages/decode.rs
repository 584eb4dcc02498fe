//! A Messages request into the pipeline's canonical chat request. `system` becomes a system
//! message; each user turn's `tool_result` blocks become `tool` messages (first, as chat
//! requires them right after the calls) and its other blocks one user message; an assistant
//! turn's `tool_use` blocks become `tool_calls`; tools, `tool_choice`, `stop_sequences` and
//! `metadata.user_id` take chat's shapes. `cache_control` stays on the part (or tool) that
//! carries it, so a translated request keeps prompt caching; the whole body is also kept as
//! the request's native form, which an Anthropic upstream receives untranslated.
//!
//! Problems are reported at Anthropic's dotted paths (`messages.0.content.1.type`).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::api::error::ApiError;
use crate::types::{ChatCompletionRequest, Native};

fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message, Some(param.into()))
}

/// The Messages request `body` as the canonical chat request. `count_only`: the body of
/// `count_tokens`, which has no `max_tokens`.
pub fn to_chat(
    body: Map<String, Value>,
    count_only: bool,
) -> Result<ChatCompletionRequest, ApiError> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        Some(Value::String(_)) => return Err(invalid("model", "model: must not be empty")),
        Some(_) => return Err(invalid("model", "model: Input should be a valid string")),
        None => return Err(invalid("model", "model: Field required")),
    };
    let mut chat = Map::new();
    chat.insert("model".into(), json!(model));
    match body.get("max_tokens") {
        Some(v)
            if v.as_u64()
                .is_some_and(|n| n >= 1 && n <= u64::from(u32::MAX)) =>
        {
            chat.insert("max_tokens".into(), v.clone());
        }
        Some(_) => {
            return Err(invalid(
                "max_tokens",
                "max_tokens: Input should be an integer of at least 1",
            ));
        }
        None if count_only => {}
        None => return Err(invalid("max_tokens", "max_tokens: Field required")),
    }
    let mut messages = Vec::new();
    if let Some(system) = body.get("system") {
        messages.push(system_message(system)?);
    }
    let Some(turns) = body.get("messages").and_then(Value::as_array) else {
        return Err(invalid(
            "messages",
            if body.contains_key("messages") {
                "messages: Input should be a valid list"
            } else {
                "messages: Field required"
            },
        ));
    };
    if turns.is_empty() {
        return Err(invalid(
            "messages",
            "messages: at least one message is required",
        ));
    }
    for (i, turn) in turns.iter().enumerate() {
        translate_turn(turn, i, &mut messages)?;
    }
    chat.insert("messages".into(), Value::Array(messages));
    for (from, to) in [("temperature", "temperature"), ("top_p", "top_p")] {
        if let Some(v) = body.get(from).filter(|v| !v.is_null()) {
            if !v.is_number() {
                return Err(invalid(
                    from,
                    format!("{from}: Input should be a valid number"),
                ));
            }
            chat.insert(to.into(), v.clone());
        }
    }
    if let Some(t) = body.get("temperature").and_then(Value::as_f64)
        && !(0.0..=1.0).contains(&t)
    {
        return Err(invalid(
            "temperature",
            "temperature: Input should be less than or equal to 1",
        ));
    }
    if let Some(k) = body.get("top_k").filter(|v| !v.is_null()) {
        if !k.is_u64() {
            return Err(invalid("top_k", "top_k: Input should be a valid integer"));
        }
        chat.insert("top_k".into(), k.clone());
    }
    if let Some(stops) = body.get("stop_sequences").filter(|v| !v.is_null()) {
        let valid = stops
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string));
        if !valid {
            return Err(invalid(
                "stop_sequences",
                "stop_sequences: Input should be a list of strings",
            ));
        }
        if !stops.as_array().is_some_and(Vec::is_empty) {
            chat.insert("stop".into(), stops.clone());
        }
    }
    match body.get("stream") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            chat.insert("stream".into(), json!(b));
        }
        Some(_) => return Err(invalid("stream", "stream: Input should be a valid boolean")),
    }
    if let Some(user) = body
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        chat.insert("user".into(), json!(user));
    }
    if let Some(tools) = body.get("tools").filter(|v| !v.is_null()) {
        chat.insert("tools".into(), translate_tools(tools)?);
    }
    if let Some(choice) = body.get("tool_choice").filter(|v| !v.is_null()) {
        let (choice, parallel) = translate_tool_choice(choice)?;
        chat.insert("tool_choice".into(), choice);
        if parallel == Some(false) {
            chat.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    let mut request: ChatCompletionRequest = serde_json::from_value(Value::Object(chat))
        .map_err(|e| invalid("messages", format!("messages: {e}")))?;
    request.native = Some(Native::Anthropic(Arc::new(body)));
    Ok(request)
}

/// `system`: a string, or text blocks (kept as parts so their `cache_control` survives).
fn system_message(system: &Value) -> Result<Value, ApiError> {
    match system {
        Value::String(s) => Ok(json!({"role": "system", "content": s})),
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (j, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(invalid(
                        format!("system.{j}.type"),
                        format!("system.{j}.type: system blocks must be text"),
                    ));
                }
                parts.push(text_part(b, &format!("system.{j}"))?);
            }
            Ok(json!({"role": "system", "content": parts}))
        }
        _ => Err(invalid(
            "system",
            "system: Input should be a valid string or a list of text blocks",
        )),
    }
}

/// A text block as a chat text part, with its other keys (`cache_control`, `citations`).
fn text_part(block: &Value, path: &str) -> Result<Value, ApiError> {
    let Some(text) = block.get("text").and_then(Value::as_str) else {
        return Err(invalid(
            format!("{path}.text"),
            format!("{path}.text: Field required"),
        ));
    };
    let mut part = block.as_object().cloned().unwrap_or_default();
    part.insert("type".into(), json!("text"));
    part.insert("text".into(), json!(text));
    part.remove("citations");
    Ok(Value::Object(part))
}

/// An image block as an `image_url` part (a data URL for base64 sources).
fn image_part(block: &Value, path: &str) -> Result<Value, ApiError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source.get("media_type").and_then(Value::as_str);
            let data = source.get("data").and_then(Value::as_str);
            match (media, data) {
                (Some(m), Some(d)) => format!("data:{m};base64,{d}"),
                _ => {
                    return Err(invalid(
                        format!("{path}.source"),
                        format!("{path}.source: a base64 source needs media_type and data"),
                    ));
                }
            }
        }
        Some("url") => match source.get("url").and_then(Value::as_str) {
            Some(u) => u.to_string(),
            None => {
                return Err(invalid(
                    format!("{path}.source.url"),
                    format!("{path}.source.url: Field required"),
                ));
            }
        },
        _ => {
            return Err(invalid(
                format!("{path}.source.type"),
                format!("{path}.source.type: expected base64 or url"),
            ));
        }
    };
    let mut part = Map::new();
    part.insert("type".into(), json!("image_url"));
    part.insert("image_url".into(), json!({ "url": url }));
    if let Some(cc) = block.get("cache_control") {
        part.insert("cache_control".into(), cc.clone());
    }
    Ok(Value::Object(part))
}

/// One Messages turn as chat messages.
fn translate_turn(turn: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let path = format!("messages.{i}");
    let role = match turn.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant")) => r,
        Some(other) => {
            return Err(invalid(
                format!("{path}.role"),
                format!("{path}.role: Input should be 'user' or 'assistant' (got '{other}')"),
            ));
        }
        None => {
            return Err(invalid(
                format!("{path}.role"),
                format!("{path}.role: Field required"),
            ));
        }
    };
    let blocks = match turn.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        Some(_) => {
            return Err(invalid(
                format!("{path}.content"),
                format!("{path}.content: Input should be a valid string or list of blocks"),
            ));
        }
        None => {
            return Err(invalid(
                format!("{path}.content"),
                format!("{path}.content: Field required"),
            ));
        }
    };
    if role == "assistant" {
        out.push(assistant_message(blocks, &path)?);
        return Ok(());
    }
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bpath = format!("{path}.content.{j}");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(text_part(b, &bpath)?),
            Some("image") => parts.push(image_part(b, &bpath)?),
            Some("tool_result") => out.push(tool_message(b, &bpath)?),
            Some(_) => {
                // Documents, search results and newer blocks: kept as a part of their own
                // type, for an upstream that knows it.
                parts.push(b.clone());
            }
            None => {
                return Err(invalid(
                    format!("{bpath}.type"),
                    format!("{bpath}.type: Field required"),
                ));
            }
        }
    }
    if !parts.is_empty() || blocks.is_empty() {
        out.push(json!({"role": "user", "content": collapse(parts)}));
    }
    Ok(())
}

/// Parts as chat content: a plain string when they are only text with nothing else on them.
fn collapse(parts: Vec<Value>) -> Value {
    let plain = parts.iter().all(|p| {
        p.as_object()
            .is_some_and(|o| o.len() == 2 && o.get("type") == Some(&json!("text")))
    });
    if plain {
        let text: String = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n");
        Value::String(text)
    } else {
        Value::Array(parts)
    }
}

/// A `tool_result` block as a `tool` message (an error result says so in its text).
fn tool_message(block: &Value, path: &str) -> Result<Value, ApiError> {
    let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
        return Err(invalid(
            format!("{path}.tool_use_id"),
            format!("{path}.tool_use_id: Field required"),
        ));
    };
    let mut content = match block.get("content") {
        None | Some(Value::Null) => Value::String(String::new()),
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(inner)) => {
            let mut parts = Vec::new();
            for (k, b) in inner.iter().enumerate() {
                let p = format!("{path}.content.{k}");
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => parts.push(text_part(b, &p)?),
                    Some("image") => parts.push(image_part(b, &p)?),
                    _ => parts.push(b.clone()),
                }
            }
            collapse(parts)
        }
        Some(_) => {
            return Err(invalid(
                format!("{path}.content"),
                format!("{path}.content: Input should be a valid string or list of blocks"),
            ));
        }
    };
    if block.get("is_error").and_then(Value::as_bool) == Some(true)
        && let Value::String(s) = &content
    {
        content = Value::String(format!("Error: {s}"));
    }
    let mut message = json!({"role": "tool", "tool_call_id": id, "content": content});
    if let Some(cc) = block.get("cache_control") {
        message["cache_control"] = cc.clone();
    }
    Ok(message)
}

/// An assistant turn: its text, and its `tool_use` blocks as `tool_calls`. Thinking blocks
/// have no place in a chat request (an Anthropic upstream gets them in the native body).
fn assistant_message(blocks: &[Value], path: &str) -> Result<Value, ApiError> {
    let mut text: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bpath = format!("{path}.content.{j}");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let (Some(id), Some(name)) = (
                    b.get("id").and_then(Value::as_str),
                    b.get("name").and_then(Value::as_str),
                ) else {
                    return Err(invalid(
                        bpath.clone(),
                        format!("{bpath}: a tool_use block needs id and name"),
                    ));
                };
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}));
            }
            Some(_) => {}
            None => {
                return Err(invalid(
                    format!("{bpath}.type"),
                    format!("{bpath}.type: Field required"),
                ));
            }
        }
    }
    let content = if text.is_empty() {
        Value::Null
    } else {
        Value::String(text.concat())
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    } else if message["content"].is_null() {
        message["content"] = json!("");
    }
    Ok(message)
}

/// Anthropic tools as chat function tools (`cache_control` kept on the tool); Anthropic's
/// own server tools (`web_search_20250305`, ...) as they are.
fn translate_tools(tools: &Value) -> Result<Value, ApiError> {
    let Some(list) = tools.as_array() else {
        return Err(invalid("tools", "tools: Input should be a valid list"));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let custom = matches!(t.get("type").and_then(Value::as_str), None | Some("custom"));
        if !custom {
            out.push(t.clone());
            continue;
        }
        let Some(name) = t.get("name").and_then(Value::as_str) else {
            return Err(invalid(
                format!("tools.{i}.name"),
                format!("tools.{i}.name: Field required"),
            ));
        };
        let Some(schema) = t.get("input_schema").filter(|s| s.is_object()) else {
            return Err(invalid(
                format!("tools.{i}.input_schema"),
                format!("tools.{i}.input_schema: Field required"),
            ));
        };
        let mut function = json!({"name": name, "parameters": schema});
        if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
            function["description"] = d.clone();
        }
        let mut tool = json!({"type": "function", "function": function});
        if let Some(cc) = t.get("cache_control") {
            tool["cache_control"] = cc.clone();
        }
        out.push(tool);
    }
    Ok(Value::Array(out))
}

/// `tool_choice` (`auto`, `any`, `tool`, `none`) as chat's, with whether parallel calls are
/// allowed (`disable_parallel_tool_use`).
fn translate_tool_choice(choice: &Value) -> Result<(Value, Option<bool>), ApiError> {
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|d| !d);
    let chat = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => {
                return Err(invalid(
                    "tool_choice.name",
                    "tool_choice.name: Field required",
                ));
            }
        },
        _ => {
            return Err(invalid(
                "tool_choice.type",
                "tool_choice.type: expected auto, any, tool or none",
            ));
        }
    };
    Ok((chat, parallel))
}

#[cfg(test)]
mod tests;
