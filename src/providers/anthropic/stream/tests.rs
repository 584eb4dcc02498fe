use super::*;
use crate::types::{PromptTokensDetails, Usage};
use futures::StreamExt;

/// `usage` with the cache counts the upstream reported as 0.
fn reported_zero_cache(mut usage: Usage) -> Usage {
    usage.prompt_tokens_details = Some(PromptTokensDetails::default());
    usage
}

/// Runs an SSE transcript through the same parser and state as the provider.
async fn run(transcript: &str) -> (Vec<Value>, Option<ProviderError>) {
    // Cut into uneven network chunks so events straddle them.
    let bytes = transcript.as_bytes().to_vec();
    let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
        .chunks(37)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let mut events = eventsource_stream::Eventsource::eventsource(futures::stream::iter(pieces));
    let mut state = StreamState::new(1_700_000_000);
    let mut chunks = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        match state.on_event(&event.event, &event.data) {
            Ok(out) => chunks.extend(out.iter().map(|c| serde_json::to_value(c).unwrap())),
            Err(e) => return (chunks, Some(e)),
        }
        if state.is_done() {
            return (chunks, None);
        }
    }
    (
        chunks,
        Some(ProviderError::Connection("stream ended early".into())),
    )
}

fn sse(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

fn start(input: u64, read: u64, write: u64) -> (&'static str, Value) {
    (
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_01abc", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": write,
                "cache_read_input_tokens": read, "output_tokens": 1}}}),
    )
}

fn text_block(index: u64) -> (&'static str, Value) {
    (
        "content_block_start",
        json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}),
    )
}

fn text(index: u64, t: &str) -> (&'static str, Value) {
    (
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "text_delta", "text": t}}),
    )
}

fn tool_block(index: u64, id: &str) -> (&'static str, Value) {
    (
        "content_block_start",
        json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": "get_weather", "input": {}}}),
    )
}

fn json_piece(index: u64, piece: &str) -> (&'static str, Value) {
    (
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": piece}}),
    )
}

fn stop_block(index: u64) -> (&'static str, Value) {
    (
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    )
}

fn message_delta(stop: &str, output: u64) -> (&'static str, Value) {
    (
        "message_delta",
        json!({"type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output}}),
    )
}

fn message_stop() -> (&'static str, Value) {
    ("message_stop", json!({"type": "message_stop"}))
}

fn ping() -> (&'static str, Value) {
    ("ping", json!({"type": "ping"}))
}

fn contents(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn usage_of(chunks: &[Value]) -> Usage {
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    serde_json::from_value(last["usage"].clone()).unwrap()
}

/// Text with pings and unknown events (thinking, signatures, a future event type) in
/// between, and usage with cache reads and writes.
#[tokio::test]
async fn text_stream_with_noise_and_cache_usage() {
    let transcript = sse(&[
        start(10, 3, 2),
        ping(),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "thinking", "thinking": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "Let me think"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "signature_delta", "signature": "EqQB"}}),
        ),
        stop_block(0),
        text_block(1),
        text(1, "Hello"),
        ping(),
        (
            "brand_new_event",
            json!({"type": "brand_new_event", "stuff": [1]}),
        ),
        text(1, " from Claude."),
        stop_block(1),
        message_delta("end_turn", 6),
        message_stop(),
    ]);
    let (chunks, err) = run(&transcript).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant"})
    );
    for c in &chunks {
        assert_eq!(
            (&c["id"], &c["model"], &c["object"], &c["created"]),
            (
                &json!("msg_01abc"),
                &json!("claude-sonnet-4-5"),
                &json!("chat.completion.chunk"),
                &json!(1_700_000_000)
            )
        );
    }
    assert_eq!(contents(&chunks), "Hello from Claude.");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(
        chunks[..chunks.len() - 2]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    let u = usage_of(&chunks);
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (15, 6, 21)
    );
    assert_eq!(
        u.prompt_tokens_details,
        Some(PromptTokensDetails {
            cached_tokens: 3,
            cache_write_tokens: 2
        })
    );
}

/// One tool call whose input arrives in many pieces: one start delta with id and name,
/// then argument pieces that join into the input.
#[tokio::test]
async fn tool_call_split_across_many_deltas() {
    let pieces = ["", "{\"ci", "ty\"", ": \"Pa", "ri", "s\"}"];
    let mut events = vec![
        start(20, 0, 0),
        text_block(0),
        text(0, "Let me check."),
        stop_block(0),
        tool_block(1, "toolu_01A"),
    ];
    events.extend(pieces.iter().map(|p| json_piece(1, p)));
    events.extend([stop_block(1), message_delta("tool_use", 30), message_stop()]);
    let (chunks, err) = run(&sse(&events)).await;
    assert!(err.is_none(), "{err:?}");
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(
        calls[0],
        &json!([{"index": 0, "id": "toolu_01A", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}])
    );
    assert_eq!(calls.len(), 6, "the empty piece is skipped");
    let args: String = calls[1..]
        .iter()
        .map(|c| {
            assert_eq!(c[0]["index"], 0);
            c[0]["function"]["arguments"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );
    assert_eq!(usage_of(&chunks), reported_zero_cache(Usage::new(20, 30)));
}

/// Two parallel calls (after a text block, so block indexes 1 and 2) are tool calls 0
/// and 1; a call without input gets `{}` as its arguments.
#[tokio::test]
async fn parallel_tool_calls_are_indexed_from_zero() {
    let transcript = sse(&[
        start(5, 0, 0),
        text_block(0),
        text(0, "Checking both."),
        stop_block(0),
        tool_block(1, "toolu_P"),
        json_piece(1, "{\"city\":"),
        json_piece(1, "\"Paris\"}"),
        stop_block(1),
        tool_block(2, "toolu_B"),
        json_piece(2, "{\"city\":\"Berlin\"}"),
        stop_block(2),
        tool_block(3, "toolu_N"),
        stop_block(3),
        message_delta("tool_use", 40),
        message_stop(),
    ]);
    let (chunks, err) = run(&transcript).await;
    assert!(err.is_none(), "{err:?}");
    let mut args: HashMap<u64, String> = HashMap::new();
    let mut ids = Vec::new();
    for c in &chunks {
        if let Some(calls) = c["choices"][0]["delta"].get("tool_calls") {
            let call = &calls[0];
            if let Some(id) = call["id"].as_str() {
                ids.push((call["index"].as_u64().unwrap(), id.to_string()));
            }
            args.entry(call["index"].as_u64().unwrap())
                .or_default()
                .push_str(call["function"]["arguments"].as_str().unwrap());
        }
    }
    assert_eq!(
        ids,
        [
            (0, "toolu_P".into()),
            (1, "toolu_B".into()),
            (2, "toolu_N".into())
        ]
    );
    assert_eq!(args[&0], "{\"city\":\"Paris\"}");
    assert_eq!(args[&1], "{\"city\":\"Berlin\"}");
    assert_eq!(args[&2], "{}");
}

#[tokio::test]
async fn max_tokens_is_length() {
    let transcript = sse(&[
        start(4, 0, 0),
        text_block(0),
        text(0, "Once upon a"),
        stop_block(0),
        message_delta("max_tokens", 3),
        message_stop(),
    ]);
    let (chunks, err) = run(&transcript).await;
    assert!(err.is_none());
    assert_eq!(contents(&chunks), "Once upon a");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(usage_of(&chunks), reported_zero_cache(Usage::new(4, 3)));
}

#[tokio::test]
async fn error_event_fails_mid_stream() {
    let transcript = sse(&[
        start(4, 0, 0),
        text_block(0),
        text(0, "Hel"),
        text(0, "lo"),
        (
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]);
    let (chunks, err) = run(&transcript).await;
    assert_eq!(contents(&chunks), "Hello");
    match err {
        Some(ProviderError::MidStream { message, code }) => {
            assert_eq!(
                (message.as_str(), code.as_deref()),
                ("Overloaded", Some("overloaded_error"))
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A body that ends before `message_stop` is cut off; data that is not JSON is a
/// protocol error.
#[tokio::test]
async fn truncated_and_malformed_streams() {
    let (chunks, err) = run(&sse(&[start(4, 0, 0), text_block(0), text(0, "Hi")])).await;
    assert_eq!(contents(&chunks), "Hi");
    assert!(matches!(err, Some(ProviderError::Connection(_))), "{err:?}");
    let (_, err) = run("event: message_start\ndata: {not json\n\n").await;
    assert!(matches!(err, Some(ProviderError::Protocol(_))), "{err:?}");
}
