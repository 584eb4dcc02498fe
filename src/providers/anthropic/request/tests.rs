use super::*;

fn translate(body: Value) -> Value {
    let req: ChatCompletionRequest = serde_json::from_value(body).unwrap();
    messages_request(&req, false).unwrap()
}

fn error_of(body: Value) -> String {
    let req: ChatCompletionRequest = serde_json::from_value(body).unwrap();
    match messages_request(&req, false).unwrap_err() {
        ProviderError::Status {
            status: 400,
            message,
            code: Some(code),
            ..
        } if code == "invalid_request_error" => message,
        other => panic!("{other:?}"),
    }
}

#[test]
fn parameters_and_system_strings() {
    let out = translate(json!({
        "model": "claude-x", "temperature": 1.7, "top_p": 0.9, "top_k": 40,
        "max_tokens": 100, "stop": "END", "user": "u-1", "seed": 7,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": "Use French."},
        ],
    }));
    assert_eq!(
        out,
        json!({
            "model": "claude-x", "max_tokens": 100, "system": "Be brief.\n\nUse French.",
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 1.0, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"},
        })
    );
    let out = translate(
        json!({"model": "m", "max_tokens": 5, "max_completion_tokens": 9,
            "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(out["max_tokens"], 9);
    assert!(out.get("system").is_none() && out.get("stream").is_none());
    let req: ChatCompletionRequest = serde_json::from_value(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    )
    .unwrap();
    let out = messages_request(&req, true).unwrap();
    assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(out["stream"], true);
    assert!(
        error_of(json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}))
            .contains("`n`")
    );
}

/// Parts in a system message send `system` as blocks, with their `cache_control`, and a
/// message-level `cache_control` lands on the message's last block.
#[test]
fn system_blocks_keep_cache_control() {
    let out = translate(json!({"model": "m", "messages": [
        {"role": "system", "content": "Rules."},
        {"role": "system", "content": [{"type": "text", "text": "Long manual", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
        {"role": "user", "content": "q", "cache_control": {"type": "ephemeral"}},
    ]}));
    assert_eq!(
        out["system"],
        json!([
            {"type": "text", "text": "Rules."},
            {"type": "text", "text": "Long manual", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ])
    );
    assert_eq!(
        out["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "q", "cache_control": {"type": "ephemeral"}}]}])
    );
}

/// The exact JSON of every unknown key on a part reaches the block (same `Value`, so the
/// same bytes), images included.
#[test]
fn cache_control_and_images_preserved_byte_for_byte() {
    let cc = r#"{"type":"ephemeral","ttl":"5m","x_vendor":[1,{"b":2,"a":null}]}"#;
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":[
                {{"type":"text","text":"see","cache_control":{cc},"citations":{{"enabled":true}}}},
                {{"type":"image_url","image_url":{{"url":"data:image/png;base64,iVBORw0KGgo="}},"cache_control":{cc}}},
                {{"type":"image_url","image_url":{{"url":"https://example.com/cat.jpg","detail":"high"}}}},
                {{"type":"document","source":{{"type":"text","media_type":"text/plain","data":"doc"}}}}
            ]}}]}}"#
    );
    let req: ChatCompletionRequest = serde_json::from_str(&body).unwrap();
    let out = messages_request(&req, false).unwrap();
    let blocks = &out["messages"][0]["content"];
    let original: Value = serde_json::from_str(cc).unwrap();
    assert_eq!(blocks[0]["cache_control"], original);
    assert_eq!(blocks[0]["cache_control"].to_string(), original.to_string());
    assert_eq!(blocks[0]["citations"], json!({"enabled": true}));
    assert_eq!(
        blocks[1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}, "cache_control": original})
    );
    assert_eq!(
        blocks[2],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}})
    );
    assert_eq!(
        blocks[3],
        json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}})
    );
    assert!(
        error_of(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}]}]})
        )
        .contains("data URL")
    );
}

#[test]
fn tools_and_tool_choice() {
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "noop"}, "cache_control": {"type": "ephemeral"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
    ]);
    let with = |extra: Value| {
        let mut body =
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        translate(body)
    };
    let out = with(json!({}));
    assert_eq!(
        out["tools"],
        json!([
            {"name": "get_weather", "description": "Weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"name": "noop", "input_schema": {"type": "object", "properties": {}}, "cache_control": {"type": "ephemeral"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
        ])
    );
    assert!(out.get("tool_choice").is_none());
    let choice = |c: Value, parallel: Value| {
        with(json!({"tool_choice": c, "parallel_tool_calls": parallel}))["tool_choice"].clone()
    };
    assert_eq!(choice(json!("auto"), Value::Null), json!({"type": "auto"}));
    assert_eq!(
        choice(json!("required"), Value::Null),
        json!({"type": "any"})
    );
    assert_eq!(choice(json!("none"), json!(false)), json!({"type": "none"}));
    assert_eq!(
        choice(
            json!({"type": "function", "function": {"name": "get_weather"}}),
            json!(false)
        ),
        json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        choice(Value::Null, json!(false)),
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    // No tools offered: neither tools nor tool_choice is sent.
    let out = translate(
        json!({"model": "m", "tool_choice": "auto", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert!(out.get("tools").is_none() && out.get("tool_choice").is_none());
}

/// A tool-calling conversation: the assistant's calls become `tool_use` blocks, the two
/// parallel results and the user's next words one user turn, alternation kept.
#[test]
fn tool_turns_are_merged() {
    let out = translate(json!({"model": "m", "messages": [
        {"role": "user", "content": "Weather in Paris and Berlin?"},
        {"role": "user", "content": "Quickly."},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Berlin\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "rain"}], "cache_control": {"type": "ephemeral"}},
        {"role": "user", "content": "Thanks; and tomorrow?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_3", "type": "function", "function": {"name": "forecast", "arguments": ""}},
        ]},
    ]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris and Berlin?"},
                {"type": "text", "text": "Quickly."},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Berlin"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "rain"}],
                    "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Thanks; and tomorrow?"},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_3", "name": "forecast", "input": {}},
            ]},
        ])
    );
    let bad = |args: &str| {
        error_of(json!({"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": args}}]},
        ]}))
    };
    assert_eq!(
        bad("{\"city\":"),
        "tool call call_9 has arguments that are not JSON"
    );
    assert!(bad("[1]").contains("not a JSON object"));
    assert!(
        error_of(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}))
            .contains("tool_call_id")
    );
}
