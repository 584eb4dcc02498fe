//! `POST /api/chat` on a real socket: the UI message stream's wire format part by part, the
//! errors before the stream, and resuming per tenant (the AI SDK's own reader is driven in
//! tests/js/ui_stream_e2e.mjs).

use crate::common;

use common::{TestApp, sse_data};
use serde_json::{Value, json};

fn body(chat: &str, model: &str) -> Value {
    json!({"id": chat, "trigger": "submit-message", "model": model,
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Say hello"}]}]})
}

#[tokio::test]
async fn the_answer_is_ui_message_parts_in_order() {
    let app = TestApp::spawn().await;
    let resp = app
        .post("/api/chat")
        .json(&body("c1", "mock-ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-vercel-ai-ui-message-stream"], "v1");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(resp.headers()["x-quartermaster-model"], "mock-ok");
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let parts: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    let mut order = types.clone();
    order.dedup();
    assert_eq!(
        order,
        [
            "start",
            "data-route",
            "data-cache",
            "start-step",
            "text-start",
            "text-delta",
            "text-end",
            "finish-step",
            "message-metadata",
            "finish"
        ]
    );
    assert!(parts[0]["messageId"].as_str().unwrap().starts_with("msg_"));
    let text: String = parts
        .iter()
        .filter(|p| p["type"] == "text-delta")
        .map(|p| p["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from the mock");
    let meta =
        &parts[types.iter().position(|t| *t == "message-metadata").unwrap()]["messageMetadata"];
    assert_eq!(meta["usage"]["totalTokens"], 15);
    assert_eq!(parts.last().unwrap()["finishReason"], "stop");
    // The model defaults to `auto`.
    let sent = app.mock.last_request();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "user", "content": "Say hello"})
    );
}

#[tokio::test]
async fn tool_calls_are_tool_input_parts() {
    let app = TestApp::spawn().await;
    let text = app
        .post("/api/chat")
        .json(&body("c2", "mock-tools"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let parts: Vec<Value> = sse_data(&text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let of = |t: &str| {
        parts
            .iter()
            .filter(|p| p["type"] == t)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of("tool-input-start")[0]["toolName"], "get_weather");
    let input: String = of("tool-input-delta")
        .iter()
        .map(|p| p["inputTextDelta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(input, "{\"city\":\"Paris\"}");
    assert_eq!(
        of("tool-input-available")[0]["input"],
        json!({"city": "Paris"})
    );
    assert_eq!(of("finish")[0]["finishReason"], "tool-calls");
}

#[tokio::test]
async fn errors_before_the_stream_are_json_and_resume_is_per_tenant() {
    let app = TestApp::spawn().await;
    let missing = app
        .post("/api/chat")
        .json(&body("c3", "nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );
    let bad = app
        .post("/api/chat")
        .json(&json!({"id": "c3", "messages": [{"role": "user", "content": "no parts"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["param"],
        "messages[0].parts"
    );
    let unauthenticated = reqwest::Client::new()
        .post(format!("{}/api/chat", app.url))
        .json(&body("c3", "mock-ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    // Nothing running: 204. A running answer is resumable by its tenant only.
    assert_eq!(
        app.get("/api/chat/c4/stream")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let slow = app
        .post("/api/chat")
        .json(&body("c4", "mock-slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    let other = quartermaster::auth::create_key(&app.store().await, "tenant-b", "b")
        .await
        .unwrap()
        .secret;
    assert_eq!(
        app.get_as("/api/chat/c4/stream", &other)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let resumed = app.get("/api/chat/c4/stream").send().await.unwrap();
    assert_eq!(resumed.status(), 200);
    drop(slow);
    let data = sse_data(&resumed.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert!(
        data[0].contains("\"type\":\"start\""),
        "from the first part: {}",
        data[0]
    );
    assert_eq!(
        data.iter().filter(|d| d.contains("text-delta")).count(),
        200
    );
}
