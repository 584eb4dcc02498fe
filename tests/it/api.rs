//! Handler tests in process (`tower::ServiceExt::oneshot`): every bad input gets a 4xx in
//! OpenAI's error shape, with a request id, and never reaches the upstream.

use crate::common;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use common::{MockUpstream, config_text, parse_config};
use quartermaster::server::App;
use serde_json::Value;
use tower::ServiceExt;

struct Harness {
    app: App,
    key: String,
    mock: MockUpstream,
    _dir: tempfile::TempDir,
}

async fn harness(extra: &str) -> Harness {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("qm.db").display());
    let config = parse_config(&config_text(&mock.url, &db, extra));
    let app = App::build(config).await.unwrap();
    let key = quartermaster::auth::create_key(&app.state.store, "t", "k")
        .await
        .unwrap()
        .secret;
    Harness {
        app,
        key,
        mock,
        _dir: dir,
    }
}

async fn send(
    h: &Harness,
    body: impl Into<Body>,
    content_type: Option<&str>,
) -> (StatusCode, Value) {
    let mut req =
        Request::post("/v1/chat/completions").header("authorization", format!("Bearer {}", h.key));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = h
        .app
        .router()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        resp.headers().contains_key("x-request-id"),
        "every response has a request id"
    );
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let v: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("JSON body: {}", String::from_utf8_lossy(&bytes)));
    (status, v)
}

fn assert_envelope(v: &Value) {
    let e = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("OpenAI envelope: {v}"));
    for field in ["message", "type", "param", "code"] {
        assert!(e.contains_key(field), "{field} in {v}");
    }
    assert!(!e["message"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn bad_inputs_get_clear_4xx_errors() {
    let h = harness("[rate_limit]\nenabled = false\n[server]\nbody_limit_bytes = 4096\n").await;
    let json = Some("application/json");
    let big = format!(
        r#"{{"model":"mock-ok","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(10_000)
    );
    let cases: Vec<(&str, Body, Option<&str>, u16, &str, Option<&str>)> = vec![
        (
            "malformed JSON",
            Body::from("{\"model\": "),
            json,
            400,
            "invalid_json",
            None,
        ),
        (
            "trailing garbage",
            Body::from(r#"{"model":"mock-ok","messages":[{"role":"user","content":"a"}]} x"#),
            json,
            400,
            "invalid_json",
            None,
        ),
        (
            "empty body",
            Body::from(""),
            json,
            400,
            "invalid_json",
            None,
        ),
        (
            "not an object",
            Body::from("[1,2]"),
            json,
            400,
            "invalid_request",
            None,
        ),
        (
            "wrong type",
            Body::from(r#"{"model":"mock-ok","messages":"hi"}"#),
            json,
            400,
            "invalid_request",
            Some("messages"),
        ),
        (
            "wrong nested type",
            Body::from(r#"{"model":"mock-ok","messages":[{"role":"user","content":5}]}"#),
            json,
            400,
            "invalid_request",
            Some("messages[0].content"),
        ),
        (
            "content part without a type",
            Body::from(
                r#"{"model":"mock-ok","messages":[{"role":"user","content":[{"text":"a"}]}]}"#,
            ),
            json,
            400,
            "invalid_request",
            Some("messages[0].content[0]"),
        ),
        (
            "unknown role",
            Body::from(r#"{"model":"mock-ok","messages":[{"role":"wizard","content":"a"}]}"#),
            json,
            400,
            "invalid_request",
            Some("messages[0].role"),
        ),
        (
            "missing model",
            Body::from(r#"{"messages":[{"role":"user","content":"a"}]}"#),
            json,
            400,
            "invalid_request",
            None,
        ),
        (
            "empty messages",
            Body::from(r#"{"model":"mock-ok","messages":[]}"#),
            json,
            400,
            "invalid_request",
            Some("messages"),
        ),
        (
            "temperature out of range",
            Body::from(
                r#"{"model":"mock-ok","messages":[{"role":"user","content":"a"}],"temperature":9}"#,
            ),
            json,
            400,
            "invalid_request",
            Some("temperature"),
        ),
        (
            "wrong type temperature",
            Body::from(
                r#"{"model":"mock-ok","messages":[{"role":"user","content":"a"}],"temperature":"hot"}"#,
            ),
            json,
            400,
            "invalid_request",
            Some("temperature"),
        ),
        (
            "invalid UTF-8",
            Body::from(vec![b'{', 0xff, 0xfe, b'}']),
            json,
            400,
            "invalid_utf8",
            None,
        ),
        (
            "oversized",
            Body::from(big),
            json,
            413,
            "request_too_large",
            None,
        ),
        (
            "wrong content type",
            Body::from("model=x"),
            Some("application/x-www-form-urlencoded"),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "unknown model",
            Body::from(r#"{"model":"gpt-nope","messages":[{"role":"user","content":"a"}]}"#),
            json,
            404,
            "model_not_found",
            None,
        ),
    ];
    for (name, body, ct, status, code, param) in cases {
        let (got, v) = send(&h, body, ct).await;
        assert_eq!(got.as_u16(), status, "{name}: {v}");
        assert_envelope(&v);
        assert_eq!(v["error"]["code"], code, "{name}: {v}");
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{name}: {v}");
        }
    }
    assert_eq!(h.mock.calls(), 0, "no bad request reached the upstream");
}

#[tokio::test]
async fn exact_error_bodies_are_stable() {
    let h = harness("[rate_limit]\nenabled = false\n").await;
    let (_, v) = send(
        &h,
        Body::from(r#"{"model":"gpt-nope","messages":[{"role":"user","content":"a"}]}"#),
        Some("application/json"),
    )
    .await;
    assert_eq!(
        v,
        serde_json::json!({"error": {
            "message": "the model `gpt-nope` does not exist or you do not have access to it",
            "type": "invalid_request_error", "param": null, "code": "model_not_found"}})
    );
    let (_, v) = send(&h, Body::from(r#"{"model":"mock-ok","messages":[]}"#), None).await;
    assert_eq!(
        v,
        serde_json::json!({"error": {
            "message": "`messages` must contain at least one message",
            "type": "invalid_request_error", "param": "messages", "code": "invalid_request"}})
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_error_shape() {
    let h = harness("").await;
    for (method, path, status) in [
        ("GET", "/v1/nope", 404),
        ("GET", "/v1/chat/completions", 405),
        ("DELETE", "/healthz", 405),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", h.key));
        let resp = h
            .app
            .router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let v: Value =
            serde_json::from_slice(&to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
        assert_envelope(&v);
    }
}

#[tokio::test]
async fn anonymous_mode_serves_the_default_tenant() {
    let h = harness("[rate_limit]\nenabled = false\n[auth]\nrequired = false\n").await;
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"model":"mock-ok","messages":[{"role":"user","content":"a"}]}"#,
        ))
        .unwrap();
    let resp = h.app.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.calls(), 1);
}
