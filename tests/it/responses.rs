//! The Responses API door on a real socket: the wire format (whole and streamed, text and
//! function calls), stored responses per tenant, a failure after the stream began, bad
//! requests in OpenAI's envelope, a Responses request hitting the cache entry of the
//! equivalent chat request; and what browsers and frameworks call first: a CORS preflight
//! and `GET /v1/models/{id}`.

use crate::common;

use common::{Options, TestApp};
use serde_json::{Value, json};

/// `(event name, data)` of every SSE event.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty() && !e.starts_with(':'))
        .map(|e| {
            let mut name = String::new();
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (
                name,
                serde_json::from_str(&data).expect("each event's data is JSON"),
            )
        })
        .collect()
}

async fn create(app: &TestApp, body: Value) -> reqwest::Response {
    app.post("/v1/responses").json(&body).send().await.unwrap()
}

#[tokio::test]
async fn a_streamed_response_is_every_event_in_order() {
    let app = TestApp::spawn().await;
    let resp = create(
        &app,
        json!({"model": "mock-ok", "input": "Say hello", "stream": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(&resp.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "response.output_text.delta")
        .count();
    assert_eq!(deltas, 4, "{names:?}");
    let expected_order = [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ];
    let mut deduped: Vec<&str> = names.clone();
    deduped.dedup();
    assert_eq!(deduped, expected_order);
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i);
    }
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["output"][0]["content"][0]["text"],
        "Hello from the mock"
    );
    assert_eq!(done["usage"]["input_tokens"], 11);
    // One id and item id throughout.
    let id = events[0].1["response"]["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"));
    assert_eq!(done["id"], id);
    let item = events[2].1["item"]["id"].clone();
    assert!(
        events
            .iter()
            .filter(|(n, _)| n == "response.output_text.delta")
            .all(|(_, d)| d["item_id"] == item)
    );
}

#[tokio::test]
async fn a_streamed_function_call_arrives_as_argument_deltas() {
    let app = TestApp::spawn().await;
    let tools =
        json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    let resp = create(
        &app,
        json!({"model": "mock-tools", "input": "Weather?", "tools": tools, "stream": true}),
    )
    .await;
    let events = sse_events(&resp.text().await.unwrap());
    let args: String = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    let done: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.done")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["arguments"], args.as_str());
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["output"][0]["type"], "function_call");
    assert_eq!(completed["output"][0]["call_id"], "call_mock1");
    assert_eq!(completed["output"][0]["name"], "get_weather");
    // The upstream got chat's nested tool shape.
    let sent = app.mock.last_request();
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(sent["messages"][0]["role"], "user");
}

#[tokio::test]
async fn a_failure_after_the_stream_began_is_an_error_event_then_failed() {
    let app = TestApp::spawn().await;
    let resp = create(
        &app,
        json!({"model": "mock-fail-mid", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(&resp.text().await.unwrap());
    let n = events.len();
    assert_eq!(events[n - 2].0, "error");
    assert!(events[n - 2].1["message"].as_str().unwrap().len() > 0);
    assert_eq!(events[n - 1].0, "response.failed");
    assert_eq!(events[n - 1].1["response"]["status"], "failed");
    assert!(events[n - 1].1["response"]["error"]["code"].is_string());
}

#[tokio::test]
async fn stored_responses_belong_to_their_tenant() {
    let app = TestApp::spawn().await;
    let other = quartermaster::auth::create_key(&app.store().await, "tenant-b", "b")
        .await
        .unwrap()
        .secret;
    let r: Value = create(
        &app,
        json!({"model": "mock-ok", "input": "Say hello", "metadata": {"k": "v"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = r["id"].as_str().unwrap();
    assert_eq!(r["metadata"]["k"], "v");
    let mine = app
        .get(&format!("/v1/responses/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), 200);
    assert_eq!(mine.json::<Value>().await.unwrap(), r);
    // Another tenant sees nothing: not the response, not its items, no continuation, no delete.
    let theirs = app
        .get_as(&format!("/v1/responses/{id}"), &other)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
    assert_eq!(
        theirs.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let items = app
        .get_as(&format!("/v1/responses/{id}/input_items"), &other)
        .send()
        .await
        .unwrap();
    assert_eq!(items.status(), 404);
    let cont = app
        .post_as("/v1/responses", &other)
        .json(&json!({"model": "mock-ok", "input": "more", "previous_response_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(cont.status(), 400);
    assert_eq!(
        app.delete_as(&format!("/v1/responses/{id}"), &other)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The owner continues it: the upstream sees the whole conversation.
    let cont: Value = create(
        &app,
        json!({"model": "mock-ok", "input": "And again", "previous_response_id": id}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(cont["previous_response_id"], id);
    let sent = app.mock.last_request();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(sent["messages"][1]["content"], "Hello from the mock");
    // Input items: newest first by default, a page at a time.
    let page = app
        .get_json_as(
            &format!(
                "/v1/responses/{}/input_items?order=asc&limit=1",
                cont["id"].as_str().unwrap()
            ),
            &app.key,
        )
        .await;
    assert_eq!(page["data"][0]["content"][0]["text"], "And again");
    assert_eq!(page["has_more"], false);
    let deleted = app
        .delete_as(&format!("/v1/responses/{id}"), &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.json::<Value>().await.unwrap()["deleted"], true);
    assert_eq!(
        app.get(&format!("/v1/responses/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn bad_requests_are_openai_errors_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"model": "mock-ok"}), 400, "input"),
        (json!({"model": "mock-ok", "input": []}), 400, "input"),
        (
            json!({"model": "mock-ok", "input": [{"role": "robot", "content": "x"}]}),
            400,
            "input[0].role",
        ),
        (
            json!({"model": "mock-ok", "input": [{"type": "item_reference", "id": "x"}]}),
            400,
            "input[0].id",
        ),
        (
            json!({"model": "mock-ok", "input": [{"type": "computer_call_output", "call_id": "x"}]}),
            400,
            "input[0].type",
        ),
        (
            json!({"model": "mock-ok", "input": "x", "tools": [{"type": "web_search"}]}),
            400,
            "tools[0].type",
        ),
        (
            json!({"model": "mock-ok", "input": "x", "tool_choice": 3}),
            400,
            "tool_choice",
        ),
        (
            json!({"model": "mock-ok", "input": "x", "text": {"format": {"type": "xml"}}}),
            400,
            "text.format.type",
        ),
    ];
    for (body, status, param) in cases {
        let resp = create(&app, body.clone()).await;
        assert_eq!(resp.status(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    let unknown = create(&app, json!({"model": "nope", "input": "x"})).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );
    let malformed = app
        .post("/v1/responses")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(app.mock.calls(), 0, "no bad request reached the upstream");
}

#[tokio::test]
async fn a_responses_request_hits_the_cache_entry_of_the_same_chat_request() {
    let app = TestApp::spawn_with(Options::extra(
        "[rate_limit]\nenabled = false\n[cache]\nenabled = true\nsemantic = false\n",
    ))
    .await;
    let chat = app
        .chat(json!({"model": "mock-ok", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]}))
        .await;
    assert_eq!(chat.headers()["x-quartermaster-cache"], "miss");
    // The write-back runs in the background: wait for the entry itself (asking before it is
    // stored would be a miss, and reach the upstream).
    let store = app.store().await;
    common::wait_for(10, "the chat answer is cached", || {
        let store = store.clone();
        async move {
            let n: i64 = quartermaster::store::on_pool!(&store, p => sqlx::query_scalar("SELECT COUNT(*) FROM cache_entries").fetch_one(p).await).unwrap();
            n > 0
        }
    })
    .await;
    let first = create(
        &app,
        json!({"model": "mock-ok", "instructions": "Be brief.", "input": "Say hello", "store": false}),
    )
    .await;
    assert_eq!(first.headers()["x-quartermaster-cache"], "hit");
    let hit: Value = create(
        &app,
        json!({"model": "mock-ok", "instructions": "Be brief.", "input": "Say hello"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        hit["output"][0]["content"][0]["text"],
        "Hello from the mock"
    );
    assert_eq!(app.mock.calls(), 1);
}

#[tokio::test]
async fn browsers_get_cors_for_configured_origins_only() {
    let app = TestApp::spawn_with(Options::extra(
        "[rate_limit]\nenabled = false\n[server.cors]\nallowed_origins = [\"https://app.example.com\"]\nallow_credentials = true\n",
    ))
    .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/chat/completions", app.url),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-stainless-os",
        )
        .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(ok.status(), 200);
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // The actual request: its x-quartermaster-* headers are readable by the page.
    let resp = app
        .post("/v1/chat/completions")
        .header("origin", "https://app.example.com")
        .json(&common::chat_body("mock-ok", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        resp.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-quartermaster-model")
    );
    // Without configured origins there is no CORS at all (the default).
    let plain = TestApp::spawn().await;
    let resp = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/chat/completions", plain.url),
        )
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_model_can_be_looked_up_by_id() {
    let app = TestApp::spawn().await;
    let m = app.get_json_as("/v1/models/mock-ok", &app.key).await;
    assert_eq!(
        (m["id"].as_str(), m["object"].as_str()),
        (Some("mock-ok"), Some("model"))
    );
    let alias = app.get_json_as("/v1/models/auto", &app.key).await;
    assert_eq!(alias["id"], "auto");
    let missing = app.get("/v1/models/nope").send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );
}

#[tokio::test]
async fn an_item_reference_is_the_stored_item_it_names() {
    let app = TestApp::spawn().await;
    let tools =
        json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    let first: Value = create(
        &app,
        json!({"model": "mock-tools", "input": "Weather?", "tools": tools}),
    )
    .await
    .json()
    .await
    .unwrap();
    let call = &first["output"][0];
    assert_eq!(call["type"], "function_call");
    // What the AI SDK sends for the next step when responses are stored: the earlier call by
    // reference, and the tool's output.
    let second: Value = create(
        &app,
        json!({"model": "mock-tools", "tools": tools, "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "item_reference", "id": call["id"]},
            {"type": "function_call_output", "call_id": call["call_id"], "output": "{\"sky\":\"sunny\"}"},
        ]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        second["output"][0]["content"][0]["text"],
        "It is sunny in Paris."
    );
    let sent = app.mock.last_request();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["tool_calls"][0]["id"], call["call_id"]);
    assert_eq!(
        messages[1]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(messages[2]["role"], "tool");
    assert_eq!(messages[2]["tool_call_id"], call["call_id"]);
}
