//! A chat completion request as a Messages request. System and developer messages become
//! `system`; tool calls become `tool_use` blocks and tool messages `tool_result` blocks in a
//! user turn; consecutive turns of one role are merged (Anthropic requires user and
//! assistant to alternate). Unknown keys of a content part (`cache_control` above all) are
//! copied onto its block unchanged, and a message's own `cache_control` goes on its last
//! block, so prompt caching survives the translation.

use serde_json::{Map, Value, json};

use super::ProviderError;
use crate::types::{ChatCompletionRequest, ChatMessage, ContentPart, MessageContent, Native, Role};

/// `max_tokens` when the request sets none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The client's request was wrong in a way only this translation notices.
pub(super) fn invalid(message: String) -> ProviderError {
    ProviderError::Status {
        status: 400,
        message,
        code: Some("invalid_request_error".into()),
        retry_after_secs: None,
    }
}

/// The Messages request body for `request` (`"stream": true` when `stream`). A request
/// that came in as a Messages request is sent as the client wrote it (`cache_control`,
/// `thinking` and every other field byte for byte), only its model and `stream` set.
pub(super) fn messages_request(
    request: &ChatCompletionRequest,
    stream: bool,
) -> Result<Value, ProviderError> {
    if let Some(Native::Anthropic(native)) = &request.native {
        let mut body = (**native).clone();
        body.insert("model".into(), json!(request.model));
        if stream {
            body.insert("stream".into(), json!(true));
        } else {
            body.remove("stream");
        }
        return Ok(Value::Object(body));
    }
    if request.n.is_some_and(|n| n > 1) {
        return Err(invalid(
            "`n` greater than 1 is not supported by this model's provider".into(),
        ));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("max_tokens".into(), json!(max_tokens));
    let (system, messages) = translate_messages(&request.messages)?;
    if let Some(system) = system {
        body.insert("system".into(), system);
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(k) = request.extra.get("top_k").filter(|k| !k.is_null()) {
        body.insert("top_k".into(), k.clone());
    }
    if let Some(stop) = &request.stop {
        let stops = stop.as_vec();
        if !stops.is_empty() {
            body.insert("stop_sequences".into(), json!(stops));
        }
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(user) = request.extra.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({ "user_id": user }));
    }
    let tools = translate_tools(request.extra.get("tools"));
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
        let parallel = request
            .extra
            .get("parallel_tool_calls")
            .and_then(Value::as_bool);
        if let Some(choice) = translate_tool_choice(request.extra.get("tool_choice"), parallel) {
            body.insert("tool_choice".into(), choice);
        }
    }
    Ok(Value::Object(body))
}

/// OpenAI's function tools as Anthropic tools; other tools (Anthropic's own server tools,
/// `{"type":"web_search_20250305",...}`) pass through as given.
fn translate_tools(tools: Option<&Value>) -> Vec<Value> {
    let Some(tools) = tools.and_then(Value::as_array) else {
        return Vec::new();
    };
    tools
        .iter()
        .map(|tool| {
            let Some(function) = tool
                .get("function")
                .filter(|_| tool.get("type").and_then(Value::as_str) == Some("function"))
            else {
                return tool.clone();
            };
            let mut out = Map::new();
            out.insert(
                "name".into(),
                function.get("name").cloned().unwrap_or(json!("")),
            );
            if let Some(d) = function.get("description").filter(|d| !d.is_null()) {
                out.insert("description".into(), d.clone());
            }
            let schema = function
                .get("parameters")
                .filter(|p| !p.is_null())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            out.insert("input_schema".into(), schema);
            if let Some(cc) = tool
                .get("cache_control")
                .or_else(|| function.get("cache_control"))
            {
                out.insert("cache_control".into(), cc.clone());
            }
            Value::Object(out)
        })
        .collect()
}

/// OpenAI's `tool_choice` (and `parallel_tool_calls: false`) as Anthropic's.
fn translate_tool_choice(choice: Option<&Value>, parallel: Option<bool>) -> Option<Value> {
    let mut out = match choice {
        None | Some(Value::Null) => json!({"type": "auto"}),
        Some(Value::String(s)) => match s.as_str() {
            "required" => json!({"type": "any"}),
            "none" => return Some(json!({"type": "none"})),
            _ => json!({"type": "auto"}),
        },
        Some(v) => match v.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = v.pointer("/function/name").cloned().unwrap_or(json!(""));
                json!({"type": "tool", "name": name})
            }
            // Already Anthropic's shape (`auto`, `any`, `tool`, `none`).
            _ => v.clone(),
        },
    };
    if parallel == Some(false) && out.get("type").and_then(Value::as_str) != Some("none") {
        out["disable_parallel_tool_use"] = json!(true);
    } else if choice.is_none() || choice == Some(&Value::Null) {
        return None; // Anthropic's default is `auto` already.
    }
    Some(out)
}

/// One user or assistant turn being built.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// `system` (a string, or text blocks when any part carries more than text) and the
/// alternating user/assistant messages.
fn translate_messages(
    messages: &[ChatMessage],
) -> Result<(Option<Value>, Vec<Value>), ProviderError> {
    let mut system: Vec<&ChatMessage> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let (role, mut blocks) = match m.role {
            Role::System | Role::Developer => {
                system.push(m);
                continue;
            }
            Role::User => ("user", content_blocks(m.content.as_ref(), i)?),
            Role::Assistant => ("assistant", assistant_blocks(m, i)?),
            Role::Tool => ("user", vec![tool_result(m, i)?]),
            Role::Function => {
                return Err(invalid(format!(
                    "messages[{i}]: `function` messages are not supported by this model's \
                     provider; use `tool` messages"
                )));
            }
        };
        apply_message_cache_control(m, &mut blocks);
        match turns.last_mut() {
            Some(last) if last.role == role => last.blocks.append(&mut blocks),
            _ => turns.push(Turn { role, blocks }),
        }
    }
    let messages = turns
        .into_iter()
        .map(|t| json!({"role": t.role, "content": collapse(t.blocks)}))
        .collect();
    Ok((translate_system(&system)?, messages))
}

fn translate_system(system: &[&ChatMessage]) -> Result<Option<Value>, ProviderError> {
    if system.is_empty() {
        return Ok(None);
    }
    let plain = system.iter().all(|m| {
        !matches!(m.content, Some(MessageContent::Parts(_)))
            && !m.extra.contains_key("cache_control")
    });
    if plain {
        let text = system
            .iter()
            .map(|m| m.text())
            .collect::<Vec<_>>()
            .join("\n\n");
        return Ok(Some(Value::String(text)));
    }
    let mut blocks = Vec::new();
    for m in system {
        let mut own = content_blocks(m.content.as_ref(), 0)?;
        apply_message_cache_control(m, &mut own);
        blocks.append(&mut own);
    }
    Ok(Some(Value::Array(blocks)))
}

/// A message-level `cache_control` marks the message's last block.
fn apply_message_cache_control(m: &ChatMessage, blocks: &mut [Value]) {
    if let (Some(cc), Some(Value::Object(last))) = (m.extra.get("cache_control"), blocks.last_mut())
    {
        last.insert("cache_control".into(), cc.clone());
    }
}

/// A single plain text block is sent as a string.
fn collapse(blocks: Vec<Value>) -> Value {
    match blocks.as_slice() {
        [Value::Object(b)] if b.len() == 2 && b.get("type") == Some(&json!("text")) => {
            b["text"].clone()
        }
        _ => Value::Array(blocks),
    }
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// A message's content as Anthropic blocks.
fn content_blocks(content: Option<&MessageContent>, i: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(s)) => Ok(vec![text_block(s)]),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| part_block(p, i, j))
            .collect(),
    }
}

/// One content part as a block, its unknown keys (`cache_control`) copied as they are.
/// Part types other than `text` and `image_url` (Anthropic's own `document`, say) pass
/// through unchanged.
fn part_block(part: &ContentPart, i: usize, j: usize) -> Result<Value, ProviderError> {
    let mut block = Map::new();
    match part.kind.as_str() {
        "text" => {
            block.insert("type".into(), json!("text"));
            block.insert("text".into(), json!(part.text.as_deref().unwrap_or("")));
            block.extend(part.extra.clone());
        }
        "image_url" => {
            let url = match part.extra.get("image_url") {
                Some(Value::String(u)) => Some(u.as_str()),
                Some(v) => v.get("url").and_then(Value::as_str),
                None => None,
            }
            .ok_or_else(|| {
                invalid(format!(
                    "messages[{i}].content[{j}].image_url.url is required"
                ))
            })?;
            block.insert("type".into(), json!("image"));
            block.insert("source".into(), image_source(url, i, j)?);
            block.extend(
                part.extra
                    .iter()
                    .filter(|(k, _)| k.as_str() != "image_url")
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        other => {
            block.insert("type".into(), json!(other));
            if let Some(t) = &part.text {
                block.insert("text".into(), json!(t));
            }
            block.extend(part.extra.clone());
        }
    }
    Ok(Value::Object(block))
}

/// `data:image/png;base64,...` as a base64 source, an http(s) URL as a URL source.
fn image_source(url: &str, i: usize, j: usize) -> Result<Value, ProviderError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
        let media_type = meta.strip_suffix(";base64").filter(|m| !m.is_empty());
        return match media_type {
            Some(media_type) if !data.is_empty() => Ok(json!({
                "type": "base64", "media_type": media_type, "data": data,
            })),
            _ => Err(invalid(format!(
                "messages[{i}].content[{j}]: an image data URL must be `data:<type>;base64,<data>`"
            ))),
        };
    }
    Ok(json!({"type": "url", "url": url}))
}

/// An assistant message: its text, then its tool calls as `tool_use` blocks.
fn assistant_blocks(m: &ChatMessage, i: usize) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = content_blocks(m.content.as_ref(), i)?;
    // Anthropic refuses empty text blocks; `content: ""` beside tool calls is common.
    blocks.retain(|b| {
        !(b["type"] == "text" && b["text"] == "" && b.as_object().is_some_and(|o| o.len() == 2))
    });
    let calls = match m.extra.get("tool_calls") {
        Some(Value::Array(calls)) => calls.as_slice(),
        _ => &[],
    };
    for call in calls {
        let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
        let name = call.pointer("/function/name").cloned().unwrap_or(json!(""));
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        let input = if arguments.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str::<Value>(arguments) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return Err(invalid(format!(
                        "tool call {id} has arguments that are not a JSON object"
                    )));
                }
                Err(_) => {
                    return Err(invalid(format!(
                        "tool call {id} has arguments that are not JSON"
                    )));
                }
            }
        };
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    if blocks.is_empty() {
        // An assistant turn with nothing in it: keep the turn, as text.
        blocks.push(text_block(""));
    }
    Ok(blocks)
}

/// A `tool` message as a `tool_result` block (its parts, if it has parts, as the result's
/// content blocks).
fn tool_result(m: &ChatMessage, i: usize) -> Result<Value, ProviderError> {
    let id = m
        .extra
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("messages[{i}].tool_call_id is required")))?;
    let content = match &m.content {
        Some(MessageContent::Parts(_)) => Value::Array(content_blocks(m.content.as_ref(), i)?),
        _ => Value::String(m.text()),
    };
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}

#[cfg(test)]
mod tests;
