//! A mock of Stripe's API on a real socket: `POST /v1/billing/meter_events`, and the calls
//! that start payments (`/v1/checkout/sessions`, `/v1/payment_intents`,
//! `/v1/billing_portal/sessions`, `GET`/`POST /v1/subscriptions/{id}`). Form-encoded bodies,
//! bearer auth, `Idempotency-Key` honoured like Stripe: a repeated key with the same body
//! gets the first response back (`Idempotent-Replayed: true`) and creates nothing; with
//! another body, Stripe's 400 `idempotency_error`. Fails, declines, rate-limits or stalls on
//! demand.
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
/// Payment calls: a card error (402, `card_declined` / `insufficient_funds`).
pub const DECLINE: u8 = 3;
/// Payment calls: 429.
pub const RATE_LIMIT: u8 = 4;

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
    /// Payment calls: (kind, Idempotency-Key, form) of each received.
    pub payment_calls: Mutex<Vec<(String, Option<String>, HashMap<String, String>)>>,
    /// Objects created by payment calls (a replay creates none).
    pub created: Mutex<Vec<Value>>,
    /// Payment responses by idempotency key, with the body they answered.
    payment_replays: Mutex<HashMap<String, (String, Value)>>,
    /// The next payment call creates its object, then never answers (a dropped connection).
    pub stall_next_payment: std::sync::atomic::AtomicBool,
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
            .route("/v1/checkout/sessions", post(payment_call))
            .route("/v1/payment_intents", post(payment_call))
            .route("/v1/billing_portal/sessions", post(payment_call))
            .route(
                "/v1/subscriptions/{id}",
                axum::routing::get(get_subscription).post(payment_call),
            )
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

    /// Objects the payment calls created.
    pub fn created(&self) -> Vec<Value> {
        self.state.created.lock().unwrap().clone()
    }

    /// The last object a payment call created.
    pub fn last_created(&self) -> Value {
        self.created().last().expect("an object created").clone()
    }

    /// The next payment call creates its object, then never answers (a dropped connection).
    pub fn stall_next_payment(&self) {
        self.state.stall_next_payment.store(true, Ordering::SeqCst);
    }

    /// How many payment calls arrived.
    pub fn payment_calls(&self) -> usize {
        self.state.payment_calls.lock().unwrap().len()
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

fn stripe_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let mut err = json!({"type": kind, "message": message});
    if let Some(c) = code {
        err["code"] = json!(c);
    }
    if kind == "card_error" {
        err["decline_code"] = json!("insufficient_funds");
    }
    (status, axum::Json(json!({"error": err}))).into_response()
}

async fn get_subscription(axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    axum::Json(json!({
        "id": id, "object": "subscription", "status": "active",
        "items": {"object": "list", "data": [{"id": "si_mock_1", "object": "subscription_item",
            "price": {"id": "price_pro"}}]}
    }))
    .into_response()
}

async fn payment_call(
    State(state): State<Arc<MockStripeState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = uri.path().to_string();
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk_test_mock") {
        return stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "Invalid API Key provided",
        );
    }
    state
        .payment_calls
        .lock()
        .unwrap()
        .push((path.clone(), key.clone(), form.clone()));
    if let Some(k) = &key {
        let replay = state.payment_replays.lock().unwrap().get(k).cloned();
        if let Some((first_body, response)) = replay {
            if first_body != body {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    None,
                    &format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{k}' if you meant to execute a different request."
                    ),
                );
            }
            let mut r = axum::Json(response).into_response();
            r.headers_mut()
                .insert("idempotent-replayed", "true".parse().unwrap());
            return r;
        }
    }
    match state.mode.load(Ordering::SeqCst) {
        FAIL => {
            return stripe_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                None,
                "mock failure",
            );
        }
        RATE_LIMIT => {
            return stripe_error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests",
            );
        }
        DECLINE if path == "/v1/payment_intents" => {
            return stripe_error(
                StatusCode::PAYMENT_REQUIRED,
                "card_error",
                Some("card_declined"),
                "Your card has insufficient funds.",
            );
        }
        _ => {}
    }
    let n = state.created.lock().unwrap().len() + 1;
    let object = if path == "/v1/checkout/sessions" {
        let id = format!("cs_test_{n}");
        json!({"id": id, "object": "checkout.session", "mode": form.get("mode"),
               "url": format!("https://checkout.stripe.test/c/pay/{id}"),
               "client_reference_id": form.get("client_reference_id"), "status": "open"})
    } else if path == "/v1/payment_intents" {
        let id = format!("pi_test_{n}");
        json!({"id": id, "object": "payment_intent", "amount": form.get("amount").and_then(|a| a.parse::<i64>().ok()),
               "currency": form.get("currency"), "status": "requires_payment_method",
               "client_secret": format!("{id}_secret_mock{n}")})
    } else if path == "/v1/billing_portal/sessions" {
        json!({"id": format!("bps_test_{n}"), "object": "billing_portal.session",
               "customer": form.get("customer"), "url": format!("https://billing.stripe.test/p/session/{n}")})
    } else {
        let id = path.trim_start_matches("/v1/subscriptions/");
        json!({"id": id, "object": "subscription", "status": "active",
               "items": {"data": [{"id": form.get("items[0][id]"), "price": {"id": form.get("items[0][price]")}}]},
               "proration_behavior": form.get("proration_behavior")})
    };
    state
        .created
        .lock()
        .unwrap()
        .push(json!({"path": path, "form": form, "object": object}));
    if let Some(k) = key {
        state
            .payment_replays
            .lock()
            .unwrap()
            .insert(k, (body, object.clone()));
    }
    if state.stall_next_payment.swap(false, Ordering::SeqCst) {
        state.stalled.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    axum::Json(object).into_response()
}
