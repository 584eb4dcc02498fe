//! Shared component schemas: the error shapes, and the wire formats the gateway speaks on
//! behalf of other vendors (OpenAI's chat completions, Responses and embeddings, Anthropic's
//! Messages, the AI SDK's UI messages). These follow the vendors' public formats, and are
//! open (`additionalProperties` allowed) where the gateway passes fields through.

use serde_json::{Map, Value, json};

fn string() -> Value {
    json!({"type": "string"})
}

fn nullable_string() -> Value {
    json!({"type": ["string", "null"]})
}

pub fn shared() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "Error".into(),
        json!({
            "type": "object",
            "description": "OpenAI's error envelope (every door but the Messages API).",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": string(), "type": string(),
                    "code": nullable_string(), "param": nullable_string(),
                },
            }},
        }),
    );
    m.insert(
        "AnthropicError".into(),
        json!({
            "type": "object",
            "description": "Anthropic's error envelope (the Messages API).",
            "required": ["type", "error"],
            "properties": {
                "type": {"const": "error"},
                "error": {"type": "object", "required": ["type", "message"],
                          "properties": {"type": string(), "message": string()}},
            },
        }),
    );
    let message = json!({
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool", "function"]},
            "content": {"type": ["string", "array", "null"]},
            "name": string(),
            "tool_calls": {"type": "array"},
            "tool_call_id": string(),
        },
    });
    m.insert(
        "ChatCompletionRequest".into(),
        json!({
            "type": "object",
            "description": "OpenAI's chat completion request; fields the gateway does not read are passed to the upstream.",
            "required": ["model", "messages"],
            "properties": {
                "model": {"type": "string", "description": "A served model, a routing alias (`auto`) or `rag/MODEL` for a grounded answer."},
                "messages": {"type": "array", "items": message},
                "stream": {"type": "boolean"},
                "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
                "max_tokens": {"type": "integer", "minimum": 0},
                "max_completion_tokens": {"type": "integer", "minimum": 0},
                "temperature": {"type": "number"},
                "top_p": {"type": "number"},
                "n": {"type": "integer", "minimum": 1},
                "tools": {"type": "array"},
                "tool_choice": {},
                "user": string(),
            },
        }),
    );
    m.insert(
        "ChatCompletion".into(),
        json!({
            "type": "object",
            "required": ["id", "object", "created", "model", "choices"],
            "properties": {
                "id": string(), "object": {"const": "chat.completion"},
                "created": {"type": "integer"}, "model": string(),
                "choices": {"type": "array", "items": {"type": "object", "required": ["index", "message"],
                    "properties": {"index": {"type": "integer"}, "message": {"type": "object"},
                                   "finish_reason": nullable_string()}}},
                "usage": {"type": ["object", "null"]},
                "citations": {"type": "array", "description": "A grounded answer's sources."},
            },
        }),
    );
    m.insert(
        "ResponsesRequest".into(),
        json!({
            "type": "object",
            "description": "OpenAI's Responses API request.",
            "required": ["model"],
            "properties": {
                "model": string(),
                "input": {"type": ["string", "array"]},
                "instructions": nullable_string(),
                "previous_response_id": nullable_string(),
                "stream": {"type": "boolean"},
                "store": {"type": "boolean"},
                "max_output_tokens": {"type": ["integer", "null"], "minimum": 0},
                "tools": {"type": "array"},
            },
        }),
    );
    m.insert(
        "Response".into(),
        json!({
            "type": "object",
            "required": ["id", "object", "model", "output"],
            "properties": {
                "id": string(), "object": {"const": "response"}, "model": string(),
                "status": string(), "output": {"type": "array"},
                "usage": {"type": ["object", "null"]},
            },
        }),
    );
    let anthropic_message = json!({
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"type": "string", "enum": ["user", "assistant"]},
                       "content": {"type": ["string", "array"]}},
    });
    m.insert(
        "MessagesRequest".into(),
        json!({
            "type": "object",
            "description": "Anthropic's Messages API request.",
            "required": ["model", "max_tokens", "messages"],
            "properties": {
                "model": string(),
                "max_tokens": {"type": "integer", "minimum": 1},
                "messages": {"type": "array", "items": anthropic_message},
                "system": {"type": ["string", "array"]},
                "stream": {"type": "boolean"},
                "temperature": {"type": "number"},
                "tools": {"type": "array"},
            },
        }),
    );
    m.insert(
        "CountTokensRequest".into(),
        json!({
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                "model": string(),
                "messages": {"type": "array", "items": anthropic_message},
                "system": {"type": ["string", "array"]},
                "tools": {"type": "array"},
            },
        }),
    );
    m.insert(
        "Message".into(),
        json!({
            "type": "object",
            "required": ["id", "type", "role", "content", "model"],
            "properties": {
                "id": string(), "type": {"const": "message"}, "role": {"const": "assistant"},
                "content": {"type": "array"}, "model": string(),
                "stop_reason": nullable_string(), "usage": {"type": "object"},
            },
        }),
    );
    m.insert(
        "UiChatRequest".into(),
        json!({
            "type": "object",
            "description": "The AI SDK's chat request (`useChat` with its default transport): the conversation as UI messages.",
            "required": ["messages"],
            "properties": {
                "id": string(),
                "trigger": {"type": "string", "enum": ["submit-message", "regenerate-message"]},
                "messageId": string(),
                "model": string(),
                "messages": {"type": "array", "items": {"type": "object", "required": ["role", "parts"],
                    "properties": {"id": string(), "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                                   "parts": {"type": "array", "items": {"type": "object"}}}}},
            },
        }),
    );
    m.insert(
        "EmbeddingsRequest".into(),
        json!({
            "type": "object",
            "required": ["model", "input"],
            "properties": {
                "model": string(),
                "input": {"type": ["string", "array"]},
                "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                "dimensions": {"type": "integer", "minimum": 1},
                "user": string(),
            },
        }),
    );
    m.insert(
        "EmbeddingsResponse".into(),
        json!({
            "type": "object",
            "required": ["object", "data", "model"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"],
                    "properties": {"object": {"const": "embedding"}, "index": {"type": "integer"},
                                   "embedding": {"type": ["array", "string"]}}}},
                "model": string(),
                "usage": {"type": "object"},
            },
        }),
    );
    m.insert(
        "Model".into(),
        json!({
            "type": "object",
            "required": ["id", "object", "owned_by"],
            "properties": {"id": string(), "object": {"const": "model"}, "created": {"type": "integer"},
                           "owned_by": string(), "type": string(), "display_name": string(),
                           "created_at": string()},
        }),
    );
    m.insert(
        "ModelList".into(),
        json!({
            "type": "object",
            "required": ["object", "data", "has_more"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
                "has_more": {"type": "boolean"},
                "first_id": nullable_string(), "last_id": nullable_string(),
            },
        }),
    );
    m
}
