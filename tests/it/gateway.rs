//! The gateway over a real socket, in front of a mock upstream that speaks OpenAI's SSE.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Options, TestApp, chat_body, sse_json};
use futures::StreamExt;
use serde_json::{Value, json};

fn content_of(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn streams_openai_chunks_with_stable_ids_and_usage() {
    let mut app = TestApp::spawn().await;
    let mut body = chat_body("mock-ok", true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = app.chat(body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert!(resp.headers().contains_key("x-request-id"));
    let (events, done) = sse_json(&resp.text().await.unwrap());
    assert!(done, "stream ends with [DONE]");
    assert!(
        events.len() >= 6,
        "several content chunks, a finish chunk and a usage chunk: {events:?}"
    );
    let id = events[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for e in &events {
        assert_eq!(e["id"], id, "id stable across the stream");
        assert_eq!(
            e["created"], events[0]["created"],
            "created stable across the stream"
        );
        assert_eq!(e["object"], "chat.completion.chunk");
    }
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(content_of(&events), "Hello from the mock");
    let finish = &events[events.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = events.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 11);
    assert_eq!(usage["usage"]["total_tokens"], 15);
    // The upstream was asked for usage and got its own model name.
    let sent = app.mock.last_request();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["model"], "mock-ok");
    app.shutdown().await;
}

#[tokio::test]
async fn usage_chunk_only_when_asked_and_alias_maps_upstream_model() {
    let mut app = TestApp::spawn().await;
    let resp = app.chat(chat_body("aliased", true)).await;
    let (events, done) = sse_json(&resp.text().await.unwrap());
    assert!(done);
    assert!(
        events
            .iter()
            .all(|e| e.get("usage").is_none() && !e["choices"].as_array().unwrap().is_empty())
    );
    assert_eq!(content_of(&events), "Hello from the mock");
    // The upstream's usage was still requested, for accounting.
    assert_eq!(app.mock.last_request()["model"], "mock-ok");
    assert_eq!(
        app.mock.last_request()["stream_options"]["include_usage"],
        true
    );
    app.shutdown().await;
}

#[tokio::test]
async fn non_streaming_completion_passes_fields_through() {
    let mut app = TestApp::spawn().await;
    let mut body = chat_body("mock-ok", false);
    body["response_format"] = json!({"type": "text"});
    body["temperature"] = json!(0.2);
    let resp = app.chat(body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the mock");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 15);
    assert_eq!(
        v["system_fingerprint"], "fp_mock",
        "unknown response fields pass through"
    );
    let sent = app.mock.last_request();
    assert_eq!(
        sent["response_format"]["type"], "text",
        "unknown request fields pass through"
    );
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["stream"], false);
    app.shutdown().await;
}

#[tokio::test]
async fn upstream_errors_before_the_stream_are_http_errors() {
    let mut app = TestApp::spawn().await;
    for (model, status, code) in [
        ("mock-429", 429, "mock_429"),
        ("mock-500", 502, "upstream_error"),
        ("mock-503", 502, "upstream_error"),
    ] {
        for stream in [true, false] {
            let resp = app.chat(chat_body(model, stream)).await;
            assert_eq!(resp.status(), status, "{model} stream={stream}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["code"], code, "{model}: {v}");
            assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
            assert!(v["error"].as_object().unwrap().contains_key("param"));
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn mid_stream_failures_end_with_an_error_event() {
    let mut app = TestApp::spawn().await;
    for (model, code) in [
        ("mock-fail-mid", "mock_mid"),
        ("mock-drop-mid", "upstream_unavailable"),
        ("mock-stall", "upstream_timeout"),
    ] {
        let started = Instant::now();
        let resp = app.chat(chat_body(model, true)).await;
        assert_eq!(resp.status(), 200, "{model}: the stream had begun");
        let (events, done) = sse_json(&resp.text().await.unwrap());
        assert!(!done, "{model}: no [DONE] after an error");
        assert!(
            !content_of(&events).is_empty(),
            "{model}: chunks before the failure were delivered"
        );
        let last = events.last().unwrap();
        assert_eq!(last["error"]["code"], code, "{model}: {last}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{model}: a stall is cut by the read timeout"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request_and_is_logged() {
    let mut app = TestApp::spawn().await;
    let resp = app.chat(chat_body("mock-slow", true)).await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.mock.stats.cancelled.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream never saw the cancellation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.mock.stats.completed.load(Ordering::SeqCst), 0);
    app.shutdown().await;
    let store = app.store().await;
    let statuses: Vec<(String, i32)> = quartermaster::store::on_pool!(&store, p =>
        sqlx::query_as("SELECT status, http_status FROM request_log").fetch_all(p).await)
    .unwrap();
    assert_eq!(statuses, vec![("client_disconnected".to_string(), 499)]);
}

#[tokio::test]
async fn request_log_records_every_request_after_graceful_shutdown() {
    let mut app = TestApp::spawn().await;
    let mut n = 0;
    for model in ["mock-ok", "mock-429", "mock-no-usage"] {
        for stream in [true, false] {
            let _ = app.chat(chat_body(model, stream)).await.text().await;
            n += 1;
        }
    }
    app.shutdown().await;
    let store = app.store().await;
    assert_eq!(store.count_request_log().await.unwrap(), n);
    let rows: Vec<(String, String, i64, i64, Option<f64>, String)> = quartermaster::store::on_pool!(&store, p =>
        sqlx::query_as("SELECT model, status, tokens_in, tokens_out, ttft_ms, tenant_id FROM request_log WHERE model = 'mock-ok' AND stream")
        .fetch_all(p).await).unwrap();
    let (model, status, tin, tout, ttft, tenant) = &rows[0];
    assert_eq!(
        (model.as_str(), status.as_str(), *tin, *tout),
        ("mock-ok", "ok", 11, 4)
    );
    assert!(ttft.unwrap() > 0.0);
    assert!(tenant.starts_with("ten_"));
    // Without upstream usage the tokens are estimated, never zero.
    let est: Vec<(i64, i64)> = quartermaster::store::on_pool!(&store, p =>
        sqlx::query_as("SELECT tokens_in, tokens_out FROM request_log WHERE model = 'mock-no-usage'").fetch_all(p).await).unwrap();
    assert!(est.iter().all(|(i, o)| *i > 0 && *o > 0), "{est:?}");
}

#[tokio::test]
async fn graceful_shutdown_lets_open_streams_finish() {
    let mut app = TestApp::spawn_with(Options::extra(
        "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 30\n",
    ))
    .await;
    let mut body = chat_body("mock-ok", true);
    body["stream_options"] = json!({"include_usage": true});
    let pending = tokio::spawn(app.post("/v1/chat/completions").json(&body).send());
    tokio::time::sleep(Duration::from_millis(15)).await;
    let resp = pending.await.unwrap().unwrap();
    app.shutdown().await;
    let (events, done) = sse_json(&resp.text().await.unwrap());
    assert!(
        done,
        "the in-flight stream finished after the shutdown signal"
    );
    assert_eq!(content_of(&events), "Hello from the mock");
    assert_eq!(app.store().await.count_request_log().await.unwrap(), 1);
}

#[tokio::test]
async fn shutdown_grace_expiry_ends_streams_cleanly() {
    let mut app = TestApp::spawn_with(Options::extra(
        "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 0\n",
    ))
    .await;
    let resp = app.chat(chat_body("mock-slow", true)).await;
    let reader = tokio::spawn(async move { resp.text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(120)).await;
    app.shutdown().await;
    let (events, done) = sse_json(&reader.await.unwrap());
    assert!(!done);
    assert_eq!(events.last().unwrap()["error"]["code"], "overloaded");
    assert_eq!(app.store().await.count_request_log().await.unwrap(), 1);
}

#[tokio::test]
async fn auth_rejects_missing_bad_and_revoked_keys() {
    let mut app = TestApp::spawn_with(Options::extra(
        "[rate_limit]\nenabled = false\n[auth]\nkey_cache_ttl_ms = 0\n",
    ))
    .await;
    let url = format!("{}/v1/chat/completions", app.url);
    let cases = [
        (None, "missing_api_key"),
        (Some("Bearer qm_0000"), "invalid_api_key"),
        (Some("Bearer sk-not-ours"), "invalid_api_key"),
        (Some("Basic abc"), "invalid_api_key"),
    ];
    for (auth, code) in cases {
        let mut req = app.http.post(&url).json(&chat_body("mock-ok", false));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], code);
    }
    assert_eq!(app.mock.calls(), 0, "nothing reached the upstream");
    assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 200);
    let store = app.store().await;
    let key_id = store.list_keys().await.unwrap()[0].id.clone();
    store.revoke_key(&key_id).await.unwrap();
    let resp = app.chat(chat_body("mock-ok", false)).await;
    assert_eq!(resp.status(), 401, "a revoked key stops working");
    app.shutdown().await;
}

#[tokio::test]
async fn rate_limit_per_key_returns_429_with_retry_after() {
    let mut app = TestApp::spawn_with(Options::extra(
        "[rate_limit]\nenabled = true\nrequests_per_second = 1\nburst = 2\n",
    ))
    .await;
    let mut statuses = vec![];
    for _ in 0..4 {
        let resp = app.get("/v1/models").send().await.unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            assert!(resp.headers().contains_key("retry-after"));
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["code"], "rate_limit_exceeded");
            assert_eq!(v["error"]["type"], "rate_limit_error");
        }
    }
    assert_eq!(&statuses[..2], &[200, 200]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    // Another key has its own budget.
    let other = quartermaster::auth::create_key(&app.store().await, "tenant-b", "b")
        .await
        .unwrap()
        .secret;
    let resp = app.get_as("/v1/models", &other).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_models() {
    let mut app = TestApp::spawn().await;
    assert_eq!(
        app.http
            .get(format!("{}/healthz", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = serde_json::from_str(&app.get_text("/readyz").await).unwrap();
    assert_eq!(ready["status"], "ready");
    let models: Value = app
        .get("/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"mock-ok") && ids.contains(&"aliased"));
    assert_eq!(models["data"][0]["object"], "model");
    let _ = app.chat(chat_body("mock-ok", true)).await.text().await;
    let _ = app.chat(chat_body("mock-500", false)).await.text().await;
    // A made-up method is counted as `other`: any token may be a method, and each must not
    // become a time series of its own.
    let brew = app
        .http
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            format!("{}/v1/models", app.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(brew.status(), 405);
    let metrics = app.get_text("/metrics").await;
    for series in [
        r#"qm_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}"#,
        r#"qm_http_requests_total{method="other",route="/v1/models",status="405"}"#,
        r#"qm_chat_requests_total{model="mock-ok",status="ok"}"#,
        r#"qm_chat_requests_total{model="mock-500",status="error"}"#,
        r#"qm_chat_request_duration_seconds_count{model="mock-ok",stream="true"}"#,
        r#"qm_tokens_total{model="mock-ok",direction="output"}"#,
    ] {
        let line = metrics.lines().find(|l| l.starts_with(series));
        let count: f64 = line
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{metrics}"));
        assert!(count >= 1.0, "{series} is {count}");
    }
    assert!(!metrics.contains("BREW"), "a made-up method became a label");
    for name in [
        "qm_http_requests_total",
        "qm_http_request_duration_seconds_bucket",
        "qm_time_to_first_token_seconds_bucket",
        "qm_chat_request_duration_seconds_bucket",
        "qm_upstream_errors_total",
        "qm_tokens_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    app.shutdown().await;
}
