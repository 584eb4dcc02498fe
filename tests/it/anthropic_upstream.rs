//! The native Anthropic provider behind the gateway, against the mock Anthropic API on a
//! real socket: chat completions in front, Messages behind (text, a tool call streamed in
//! many pieces, the headers Anthropic requires, prompt-cache usage, error statuses).

use crate::common;

use common::mock_anthropic::MockAnthropic;
use common::{Options, TestApp, sse_json};
use serde_json::{Value, json};

async fn spawn(mock: &MockAnthropic) -> TestApp {
    let mut extra = format!(
        "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 2\n\
         [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"sk-ant-test\"\n",
        mock.url
    );
    for m in ["claude-ok", "claude-tools", "claude-429"] {
        extra.push_str(&format!("[models.{m}]\nprovider = \"claude\"\n"));
    }
    TestApp::spawn_with(Options::extra(&extra)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_reach_anthropic_as_messages() {
    let mock = MockAnthropic::start().await;
    let mut app = spawn(&mock).await;

    let body = json!({"model": "claude-ok", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief.",
            "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "Say hello"}]});
    let r = app.chat(body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from Claude.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"], 3,
        "{v}"
    );
    let sent = mock.last_request();
    assert_eq!(
        sent["system"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert!(sent["max_tokens"].as_u64().is_some());
    let headers = mock.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(headers["x-api-key"], "sk-ant-test");
    assert!(headers.get("anthropic-version").is_some());

    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let r = app
        .chat(
            json!({"model": "claude-tools", "stream": true, "tools": tools,
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (chunks, done) = sse_json(&r.text().await.unwrap());
    assert!(done);
    let mut arguments = String::new();
    let mut id = None;
    for c in &chunks {
        for call in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            id = id.or(call["id"].as_str().map(str::to_string));
            arguments.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    assert!(id.is_some_and(|i| !i.is_empty()), "{chunks:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "Paris"})
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );

    let r = app
        .chat(json!({"model": "claude-429", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 429);
    app.shutdown().await;
}
