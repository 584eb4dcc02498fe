//! A local Resend (`POST /emails`): honours `Idempotency-Key` as Resend does (the same key
//! within a day is the same email, delivered once), and fails (status, Retry-After), stalls
//! or answers slowly on demand (having accepted the email first). Records every call with
//! its time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub key: String,
    pub to: String,
    pub subject: String,
    pub auth: String,
    /// The answer's status.
    pub status: u16,
}

#[derive(Default)]
pub struct MockEmailState {
    pub calls: Mutex<Vec<Call>>,
    /// Delivered emails by idempotency key (each key once).
    pub delivered: Mutex<HashMap<String, Value>>,
    /// The next answers instead of a success: (status, Retry-After).
    pub fail: Mutex<Vec<(u16, Option<&'static str>)>>,
    /// Every answer waits this long first.
    pub delay_ms: std::sync::atomic::AtomicU64,
}

pub struct MockEmail {
    pub url: String,
    pub state: Arc<MockEmailState>,
}

impl MockEmail {
    pub async fn start() -> Self {
        let state = Arc::new(MockEmailState::default());
        let app = Router::new()
            .route("/emails", post(send))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, state }
    }

    pub fn fail_next(&self, answers: &[(u16, Option<&'static str>)]) {
        self.state.fail.lock().unwrap().extend_from_slice(answers);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn delivered(&self) -> HashMap<String, Value> {
        self.state.delivered.lock().unwrap().clone()
    }
}

async fn send(State(m): State<Arc<MockEmailState>>, headers: HeaderMap, body: String) -> Response {
    let response = handle(&m, &headers, &body);
    // The email is accepted (and delivered) before the answer is slowed down, as when a
    // provider's answer is lost: a client that gives up now does not know it was sent.
    let delay = m.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    response
}

fn handle(m: &MockEmailState, headers: &HeaderMap, body: &str) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "{\"name\":\"validation_error\"}",
        )
            .into_response();
    };
    let key = h("idempotency-key");
    let next = {
        let mut f = m.fail.lock().unwrap();
        (!f.is_empty()).then(|| f.remove(0))
    };
    let status = next.map(|(s, _)| s).unwrap_or(200);
    m.calls.lock().unwrap().push(Call {
        at: Instant::now(),
        key: key.clone(),
        to: v["to"][0].as_str().unwrap_or_default().to_string(),
        subject: v["subject"].as_str().unwrap_or_default().to_string(),
        auth: h("authorization"),
        status,
    });
    if let Some((status, retry)) = next {
        let mut r = (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({"statusCode": status, "name": "rate_limit_exceeded", "message": "try later"})),
        )
            .into_response();
        if let Some(s) = retry {
            r.headers_mut().insert("retry-after", s.parse().unwrap());
        }
        return r;
    }
    let mut delivered = m.delivered.lock().unwrap();
    let n = delivered.len();
    let entry = delivered
        .entry(key)
        .or_insert_with(|| json!({"id": format!("re_{n}"), "email": v}));
    axum::Json(json!({"id": entry["id"]})).into_response()
}
