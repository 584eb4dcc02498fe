//! A mock of Stripe's `POST /v1/billing/meter_events` on a real socket: form-encoded body,
//! bearer auth, `Idempotency-Key` honoured like Stripe (a repeated key gets the first
//! response back and creates nothing). Fails or stalls on demand.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const OK: u8 = 0;
/// Every request gets a 500.
pub const FAIL: u8 = 1;
/// The first request is received and never answered; later ones succeed.
pub const STALL_FIRST: u8 = 2;

#[derive(Debug, Clone)]
pub struct MeterCall {
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
    pub form: HashMap<String, String>,
}

#[derive(Default)]
pub struct MockStripeState {
    pub mode: AtomicU8,
    pub calls: Mutex<Vec<MeterCall>>,
    /// Responses by idempotency key: what Stripe replays for a repeated key.
    replays: Mutex<HashMap<String, Value>>,
    /// Meter events created (unique identifiers).
    pub events: Mutex<Vec<Value>>,
    pub stalled: AtomicUsize,
}

pub struct MockStripe {
    pub url: String,
    pub state: Arc<MockStripeState>,
}

impl MockStripe {
    pub async fn start() -> Self {
        let state = Arc::new(MockStripeState::default());
        let app = Router::new()
            .route("/v1/billing/meter_events", post(meter_event))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, state }
    }

    pub fn set_mode(&self, mode: u8) {
        self.state.mode.store(mode, Ordering::SeqCst);
    }

    pub fn calls(&self) -> Vec<MeterCall> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Value> {
        self.state.events.lock().unwrap().clone()
    }
}

async fn meter_event(
    State(state): State<Arc<MockStripeState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let call = MeterCall {
        idempotency_key: header("idempotency-key"),
        authorization: header("authorization"),
        form: form.clone(),
    };
    let first = {
        let mut calls = state.calls.lock().unwrap();
        calls.push(call.clone());
        calls.len() == 1
    };
    match state.mode.load(Ordering::SeqCst) {
        FAIL => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"type": "api_error", "message": "mock failure"}})),
            )
                .into_response();
        }
        STALL_FIRST if first => {
            state.stalled.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        _ => {}
    }
    if let Some(key) = &call.idempotency_key {
        if let Some(previous) = state.replays.lock().unwrap().get(key) {
            return axum::Json(previous.clone()).into_response();
        }
    }
    let event = json!({
        "object": "billing.meter_event",
        "event_name": form.get("event_name"),
        "identifier": form.get("identifier"),
        "payload": {
            "stripe_customer_id": form.get("payload[stripe_customer_id]"),
            "value": form.get("payload[value]"),
        },
        "timestamp": form.get("timestamp").and_then(|t| t.parse::<i64>().ok()),
        "livemode": false,
    });
    {
        let mut events = state.events.lock().unwrap();
        let dup = events
            .iter()
            .any(|e| e["identifier"] == event["identifier"]);
        if !dup {
            events.push(event.clone());
        }
    }
    if let Some(key) = call.idempotency_key {
        state.replays.lock().unwrap().insert(key, event.clone());
    }
    axum::Json(event).into_response()
}
