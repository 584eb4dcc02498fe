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
        err(r#"{"model":"a","model":"b","messages":[]}"#).starts_with("duplicate field `model`")
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
        mk(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#).is_err()
    );
    assert!(
        mk(r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{}]}]}"#)
            .is_ok()
    );
    assert!(
        mk(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}"#)
            .is_ok()
    );
}

#[test]
fn chunk_serializes_null_finish_reason() {
    let chunk = ChatChunk {
        id: "c".into(),
        object: "chat.completion.chunk".into(),
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
