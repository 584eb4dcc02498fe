use super::*;

fn decode(v: Value) -> Result<ChatCompletionRequest, ApiError> {
    to_chat(v.as_object().unwrap().clone(), false)
}

fn chat_json(r: &ChatCompletionRequest) -> Value {
    serde_json::to_value(r).unwrap()
}

#[test]
fn a_full_request() {
    let r = decode(json!({
            "model": "claude-x", "max_tokens": 100, "temperature": 0.5, "top_k": 5,
            "stop_sequences": ["END"], "stream": true, "metadata": {"user_id": "u1"},
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "text", "text": "And tomorrow?", "cache_control": {"type": "ephemeral"}}]}
            ]
        }))
        .unwrap();
    let v = chat_json(&r);
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["max_tokens"], 100);
    assert_eq!(v["top_k"], 5);
    assert_eq!(v["stop"], json!(["END"]));
    assert_eq!(v["user"], "u1");
    assert_eq!(v["tool_choice"], "required");
    assert_eq!(v["parallel_tool_calls"], false);
    assert!(
        v.get("thinking").is_none(),
        "Anthropic-only fields stay native"
    );
    assert_eq!(
        v["tools"][0],
        json!({"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object"}}, "cache_control": {"type": "ephemeral"}})
    );
    let m = &v["messages"];
    assert_eq!(
        m[0],
        json!({"role": "system", "content": [{"type": "text", "text": "Be brief.",
                "cache_control": {"type": "ephemeral"}}]})
    );
    assert_eq!(
        m[1],
        json!({"role": "user", "content": "Weather in Paris?"})
    );
    assert_eq!(m[2]["content"], "Let me look.");
    assert_eq!(m[2]["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(
        m[2]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
    );
    assert_eq!(
        m[4]["content"][0],
        json!({"type": "text", "text": "And tomorrow?", "cache_control": {"type": "ephemeral"}})
    );
    match &r.native {
        Some(Native::Anthropic(body)) => assert_eq!(body["thinking"]["budget_tokens"], 1024),
        None => panic!("the native body is kept"),
    }
}

#[test]
fn images_and_errors_in_tool_results() {
    let r = decode(json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "text", "text": "What is this?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": true,
                "content": [{"type": "text", "text": "boom"}]}]}
        ]}))
        .unwrap();
    let v = chat_json(&r);
    assert_eq!(
        v["messages"][0]["content"][0]["image_url"]["url"],
        "data:image/png;base64,iVBOR"
    );
    assert_eq!(
        v["messages"][0]["content"][1]["image_url"]["url"],
        "https://example.com/a.png"
    );
    assert!(v["messages"][1]["content"].is_null());
    assert_eq!(v["messages"][2]["content"], "Error: boom");
}

#[test]
fn bad_requests_name_their_path() {
    let cases = [
        (json!({"max_tokens": 5, "messages": []}), "model"),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": []}),
            "messages",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
            "messages.0.role",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"text": "x"}]}]}),
            "messages.0.content.0.type",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}),
            "messages.0.content.0.tool_use_id",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]}),
            "temperature",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "tools": [{"name": "f"}], "messages": [{"role": "user", "content": "x"}]}),
            "tools.0.input_schema",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "tool_choice": {"type": "tool"}, "messages": [{"role": "user", "content": "x"}]}),
            "tool_choice.name",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "stop_sequences": "x", "messages": [{"role": "user", "content": "x"}]}),
            "stop_sequences",
        ),
    ];
    for (body, param) in cases {
        match decode(body.clone()) {
            Err(ApiError::InvalidRequest {
                param: Some(p),
                message,
            }) => {
                assert_eq!(p, param, "{body}: {message}");
                assert!(message.starts_with(param), "{message}");
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    // count_tokens has no max_tokens.
    assert!(
        to_chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})
                .as_object()
                .unwrap()
                .clone(),
            true
        )
        .is_ok()
    );
}
