//! The Messages door (`POST /v1/messages`, `count_tokens`) on a real socket: Anthropic's
//! official Python client end to end; an Anthropic upstream receiving the client's body
//! untranslated (`cache_control`, `thinking`); prompt-cache usage reported and priced;
//! the stop sequence that matched; errors in Anthropic's shape from every layer (auth, body,
//! decoding, the pipeline, the upstream); the cache shared with chat completions; an
//! `Idempotency-Key` replay.

use crate::common;
use crate::golden;

use serde_json::{Value, json};

/// The golden-stream gateway plus Anthropic-mock models with prices, and `extra` config.
async fn spawn(extra: &str) -> (common::mock_anthropic::MockAnthropic, common::TestApp) {
    let mut more = extra.to_string();
    for m in ["claude-ok", "claude-stop", "claude-429"] {
        more.push_str(&format!(
            "[models.{m}]\nprovider = \"claude\"\ninput_usd_per_mtok = 3.0\n\
             output_usd_per_mtok = 15.0\ncache_read_usd_per_mtok = 0.3\ncache_write_usd_per_mtok = 3.75\n"
        ));
    }
    golden::spawn(&more).await
}

async fn post(app: &common::TestApp, body: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", &app.key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Asserts an Anthropic error body of `kind` with `status`; returns its message.
async fn anthropic_error(r: reqwest::Response, status: u16, kind: &str) -> String {
    assert_eq!(r.status(), status);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert_eq!(
        v.as_object().unwrap().len(),
        2,
        "nothing but type and error: {v}"
    );
    v["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_anthropic_client_end_to_end() {
    let (_anthropic, mut app) = spawn("").await;
    crate::python_sdk::run_script(
        "anthropic_e2e.py",
        &[("QM_BASE_URL", &app.url), ("QM_API_KEY", &app.key)],
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_upstream_gets_the_body_untranslated() {
    let (anthropic, mut app) = spawn("").await;
    let body = json!({
        "model": "claude-ok", "max_tokens": 300,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Say hello", "cache_control": {"type": "ephemeral"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}}]}],
        "metadata": {"user_id": "u-42"},
    });
    let r = post(&app, &body).await;
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["content"][0]["text"], "Hello from Claude.");
    // The mock reports cache reads and writes when the request holds cache_control.
    assert_eq!(
        m["usage"],
        json!({"input_tokens": 11, "output_tokens": 4, "cache_creation_input_tokens": 2,
            "cache_read_input_tokens": 3})
    );
    let mut expected = body.clone();
    expected["model"] = json!("claude-ok");
    assert_eq!(
        anthropic.last_request(),
        expected,
        "byte for byte, but the model"
    );

    // Priced with the cache prices: 11 plain + 3 read + 2 written in, 4 out.
    app.shutdown().await;
    let store = app.store().await;
    let (cost,): (f64,) = quartermaster::store::on_pool!(&store, p => sqlx::query_as(
        "SELECT cost_usd FROM request_log WHERE model = 'claude-ok'").fetch_one(p).await)
    .unwrap();
    let want = (11.0 * 3.0 + 3.0 * 0.3 + 2.0 * 3.75 + 4.0 * 15.0) / 1e6;
    assert!((cost - want).abs() < 1e-12, "cost {cost}, want {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_sequence_that_matched_comes_back() {
    let (_anthropic, mut app) = spawn("").await;
    let body = json!({"model": "claude-stop", "max_tokens": 50, "stop_sequences": ["3"],
        "messages": [{"role": "user", "content": "Count"}]});
    let m: Value = post(&app, &body).await.json().await.unwrap();
    assert_eq!(m["stop_reason"], "stop_sequence");
    assert_eq!(m["stop_sequence"], "3");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let text = post(&app, &streamed).await.text().await.unwrap();
    let delta = common::sse_data(&text)
        .into_iter()
        .map(|d| serde_json::from_str::<Value>(&d).unwrap())
        .find(|e| e["type"] == "message_delta")
        .expect("a message_delta");
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "stop_sequence", "stop_sequence": "3"})
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_in_anthropics_shape_from_every_layer() {
    let (_anthropic, mut app) =
        spawn("[server]\nshutdown_grace_secs = 2\nbody_limit_bytes = 4096\n").await;
    let ok = json!({"model": "an-gold-text", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let url = format!("{}/v1/messages", app.url);
    // Auth (the shared middleware).
    let r = app.http.post(&url).json(&ok).send().await.unwrap();
    anthropic_error(r, 401, "authentication_error").await;
    let r = app
        .http
        .post(&url)
        .header("x-api-key", "qm-not-a-key")
        .json(&ok)
        .send()
        .await
        .unwrap();
    anthropic_error(r, 401, "authentication_error").await;
    // The body: malformed, too large, a wrong media type.
    let r = app
        .http
        .post(&url)
        .header("x-api-key", &app.key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    anthropic_error(r, 400, "invalid_request_error").await;
    let big = json!({"model": "an-gold-text", "max_tokens": 5,
        "messages": [{"role": "user", "content": "x".repeat(10_000)}]});
    anthropic_error(post(&app, &big).await, 413, "request_too_large").await;
    let r = app
        .http
        .post(&url)
        .header("x-api-key", &app.key)
        .header("content-type", "text/plain")
        .body(ok.to_string())
        .send()
        .await
        .unwrap();
    anthropic_error(r, 415, "invalid_request_error").await;
    // Decoding, with Anthropic's dotted paths.
    let mut no_max = ok.clone();
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let m = anthropic_error(post(&app, &no_max).await, 400, "invalid_request_error").await;
    assert_eq!(m, "max_tokens: Field required");
    // The pipeline: an unknown model.
    let mut unknown = ok.clone();
    unknown["model"] = json!("no-such-model");
    anthropic_error(post(&app, &unknown).await, 404, "not_found_error").await;
    // The upstream: its 429 after retries, with its own type.
    let mut limited = ok.clone();
    limited["model"] = json!("claude-429");
    anthropic_error(post(&app, &limited).await, 429, "rate_limit_error").await;
    // count_tokens has the same shapes.
    let r = app
        .http
        .post(format!("{url}/count_tokens"))
        .header("x-api-key", &app.key)
        .json(&json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    anthropic_error(r, 404, "not_found_error").await;
    // Other doors keep OpenAI's envelope.
    let r = app
        .http
        .post(format!("{}/v1/chat/completions", app.url))
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "missing_api_key");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_sends_only_what_anthropic_counts() {
    let (anthropic, mut app) = spawn("").await;
    let r = app
        .http
        .post(format!("{}/v1/messages/count_tokens", app.url))
        .header("x-api-key", &app.key)
        .json(&json!({"model": "claude-ok", "system": "Be brief.",
            "messages": [{"role": "user", "content": "Say hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let sent = anthropic.last_request();
    assert!(v["input_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(sent["system"], "Be brief.");
    assert!(
        sent.get("max_tokens").is_none() && sent.get("stream").is_none(),
        "{sent}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_and_idempotency_work_across_doors() {
    let (anthropic, mut app) = spawn("[cache]\nenabled = true\n").await;
    // A chat completion with the same model, prompt and max_tokens is the same request.
    let chat = json!({"model": "oa-gold-text", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Say hello to the cache"}]});
    let r = app.chat(chat).await;
    assert_eq!(r.headers()["x-quartermaster-cache"], "miss");
    let msg = json!({"model": "oa-gold-text", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Say hello to the cache"}]});
    // The entry is written in the background after the answer: ask until it is there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let hit = loop {
        let r = post(&app, &msg).await;
        if r.headers()["x-quartermaster-cache"] == "hit" {
            break r.json::<Value>().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Messages door never hit the chat entry"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let m = hit;
    assert_eq!(m["content"][0]["text"], "Hello from the upstream.");
    assert_eq!(m["type"], "message");

    // An Idempotency-Key retry replays without reaching the upstream.
    let body = json!({"model": "an-gold-text", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "Once only"}]});
    let send = || {
        app.http
            .post(format!("{}/v1/messages", app.url))
            .header("x-api-key", &app.key)
            .header("idempotency-key", "msg-once-1")
            .header("x-quartermaster-cache", "off")
            .json(&body)
            .send()
    };
    let first = send().await.unwrap().text().await.unwrap();
    assert!(first.contains("event: message_stop"), "{first}");
    let calls = anthropic.calls_for("gold-text");
    let second = send().await.unwrap();
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.text().await.unwrap(), first);
    assert_eq!(
        anthropic.calls_for("gold-text"),
        calls,
        "the replay never reached the upstream"
    );
    app.shutdown().await;
}
