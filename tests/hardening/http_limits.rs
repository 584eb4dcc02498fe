//! The HTTP edge: connections that say nothing or trickle their header or body are closed
//! or answered 408; requests hyper cannot parse, bad query strings and path segments get
//! the error envelope (not plain text or an empty 400); media types are matched exactly;
//! a tier hint must name a tier; invalidation takes a bounded number of tags; failed
//! authentications are limited per address.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Options, TestApp};

const ADMIN: &str = "qm_admin_http_limits_test";

async fn app() -> TestApp {
    TestApp::spawn_with(Options::extra(&format!(
        "[rate_limit]\nenabled = false\n\
         [server]\nshutdown_grace_secs = 2\nheader_read_timeout_secs = 1\nbody_read_timeout_secs = 1\n\
         [auth]\nfailed_per_ip_per_minute = 5\n\
         [admin]\napi_key = \"{ADMIN}\"\n\
         [cache]\nenabled = true\nsemantic = false\n"
    )))
    .await
}

fn addr(app: &TestApp) -> String {
    app.url.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or `limit` passes); the bytes read.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

fn body_json(response: &[u8]) -> Value {
    let text = String::from_utf8_lossy(response);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn silent_slow_header_and_slow_body_connections_are_cut() {
    let app = app().await;
    let a = addr(&app);
    let key = app.key.clone();
    let (silent, slow_header, slow_body) = tokio::task::spawn_blocking(move || {
        // Says nothing at all.
        let mut silent = TcpStream::connect(&a).unwrap();
        let silent = read_until_closed(&mut silent, Duration::from_secs(10));
        // Starts a header and never finishes it.
        let mut s = TcpStream::connect(&a).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let slow_header = read_until_closed(&mut s, Duration::from_secs(10));
        // A whole header, then a tenth of the body it announced.
        let mut s = TcpStream::connect(&a).unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"model\":"
        );
        s.write_all(head.as_bytes()).unwrap();
        let slow_body = read_until_closed(&mut s, Duration::from_secs(10));
        (silent, slow_header, slow_body)
    })
    .await
    .unwrap();
    assert!(silent.1, "a silent connection stayed open");
    assert!(slow_header.1, "a connection with half a header stayed open");
    let text = String::from_utf8_lossy(&slow_body.0);
    assert!(slow_body.1 || text.contains("408"), "{text}");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(body_json(&slow_body.0)["error"]["code"], "request_timeout");
}

#[tokio::test]
async fn a_header_hyper_refuses_gets_the_error_envelope() {
    let app = app().await;
    let a = addr(&app);
    let response = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/\x01json\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        read_until_closed(&mut s, Duration::from_secs(10)).0
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{text}"
    );
    let v = body_json(&response);
    assert_eq!(v["error"]["code"], "invalid_http");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn bad_query_strings_and_paths_get_the_error_envelope() {
    let app = app().await;
    for (path, token, param) in [
        ("/v1/documents?limit=abc", app.key.as_str(), Some("limit")),
        ("/admin/usage?since_ms=1e309", ADMIN, Some("since_ms")),
        ("/v1/documents/%FF", app.key.as_str(), Some("path")),
        ("/v1/cache/entries/%FF%FE", app.key.as_str(), Some("path")),
    ] {
        let r = app.get_as(path, token).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_request", "{path}: {v}");
        assert_eq!(v["error"]["param"].as_str(), param, "{path}: {v}");
    }
}

#[tokio::test]
async fn media_types_tier_hints_and_tag_lists_are_checked() {
    let app = app().await;
    let chat = json!({"model": "mock-ok", "messages": [{"role": "user", "content": "hi"}]});
    for (ct, want) in [
        ("application/jsonx", 415),
        ("application/json; charset=utf-8", 200),
        ("application/vnd.api+json", 200),
        ("text/json", 415),
        ("application/+json", 415),
    ] {
        let r = app
            .post("/v1/chat/completions")
            .header("content-type", ct)
            .body(chat.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{ct}");
    }
    // No tiers are configured: any hint is unknown.
    let r = app
        .post("/v1/chat/completions")
        .header("x-quartermaster-tier", "nope")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "x-quartermaster-tier");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("no tiers"),
        "{v}"
    );
    let many: Vec<String> = (0..100_000).map(|i| format!("t{i}")).collect();
    let r = app
        .post("/v1/cache/invalidate")
        .json(&json!({"tags": many}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "tags", "{v}");
    let r = app
        .post("/v1/cache/invalidate")
        .json(&json!({"tags": ["a\u{0}b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address() {
    let app = app().await;
    assert_eq!(app.get("/v1/models").send().await.unwrap().status(), 200);
    for i in 0..5 {
        let r = app
            .get_as("/v1/models", &format!("qm_made_up_{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = app
        .get_as("/v1/models", "qm_made_up_6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_failed_authentications");
    // A key verified moments ago still passes (it needs no lookup); a key that would need
    // one is refused until the address's window ends.
    assert_eq!(app.get("/v1/models").send().await.unwrap().status(), 200);
    let store = app.store().await;
    let fresh = quartermaster::auth::create_key(&store, "tenant-a", "fresh")
        .await
        .unwrap();
    let r = app
        .get_as("/v1/models", &fresh.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}
