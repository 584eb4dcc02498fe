//! A mock Anthropic Messages API on a real socket (`POST /v1/messages`). It speaks the real
//! wire format (typed SSE events, `event:` + `data:`, in several network chunks, pings
//! included) and checks what the real API checks: `x-api-key` and `anthropic-version`
//! present (else 401 `authentication_error`), `max_tokens` present (else 400
//! `invalid_request_error`). Behaviour by the requested model:
//!
//! | model | behaviour |
//! | --- | --- |
//! | `claude-ok` | `Hello from Claude.` as 4 text deltas 10 ms apart, `end_turn`; usage reports `cache_read_input_tokens: 3` and `cache_creation_input_tokens: 2` when the request holds any `cache_control`, else 0 |
//! | `claude-tools` | a `tool_use` of the first offered tool with input `{"city":"Paris"}` in 5 `input_json_delta`s, `tool_use`; once the conversation holds a `tool_result`, the text `It is sunny in Paris.` |
//! | `claude-parallel` | two `tool_use` blocks of the first offered tool: Paris, then Berlin |
//! | `claude-max` | text cut off, `max_tokens` |
//! | `claude-stop` | `Counting 1 2`, stopped by the stop sequence `3` (`stop_sequence`) |
//! | `claude-fail-mid` | 2 text deltas, then an `error` event (`overloaded_error`) and the end |
//! | `claude-429` | 429 with `retry-after: 1` and Anthropic's error body |
//! | `claude-529` | 529 `overloaded_error` |
//! | `gold-*` | the scripted answers of `scenario.rs`, in Anthropic's format |
//!
//! `POST /v1/messages/count_tokens` answers `{"input_tokens": N}` with N the characters of
//! the request's messages, system and tools over 4 (refusing fields the real API refuses).
//!
//! Non-streamed requests get the same content as one message.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Default)]
pub struct MockStats {
    pub calls: AtomicUsize,
    /// Streams whose body was dropped before it was fully sent: the gateway hung up.
    pub cancelled: AtomicUsize,
    pub completed: AtomicUsize,
    pub last_request: std::sync::Mutex<Option<Value>>,
    /// The headers of the last request.
    pub last_headers: std::sync::Mutex<Option<HeaderMap>>,
    /// When each call arrived, by model (their count is the calls per model).
    pub arrivals: std::sync::Mutex<std::collections::HashMap<String, Vec<std::time::Instant>>>,
}

pub struct MockAnthropic {
    /// The base URL to configure (`http://127.0.0.1:PORT/v1`; the provider posts to
    /// `{url}/messages`).
    pub url: String,
    pub stats: Arc<MockStats>,
}

impl MockAnthropic {
    pub async fn start() -> Self {
        let stats = Arc::new(MockStats::default());
        let app = Router::new()
            .route("/v1/messages", post(handle))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .with_state(stats.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, stats }
    }

    /// Requests the mock received for `model`.
    pub fn calls_for(&self, model: &str) -> usize {
        self.stats
            .arrivals
            .lock()
            .unwrap()
            .get(model)
            .map_or(0, Vec::len)
    }

    pub fn calls(&self) -> usize {
        self.stats.calls.load(Ordering::SeqCst)
    }

    /// The last request body (the Messages request the gateway sent).
    pub fn last_request(&self) -> Value {
        self.stats
            .last_request
            .lock()
            .unwrap()
            .clone()
            .expect("the mock saw a request")
    }

    /// The last request's headers.
    pub fn last_headers(&self) -> HeaderMap {
        self.stats
            .last_headers
            .lock()
            .unwrap()
            .clone()
            .expect("the mock saw a request")
    }
}

/// Anthropic's error body.
fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// What a model answers: text, or tool calls, with a stop reason and the output tokens.
enum Answer {
    Text(Vec<&'static str>),
    Tools(Vec<(String, Value)>),
}

async fn handle(State(stats): State<Arc<MockStats>>, headers: HeaderMap, body: Bytes) -> Response {
    stats.calls.fetch_add(1, Ordering::SeqCst);
    *stats.last_headers.lock().unwrap() = Some(headers.clone());
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return anthropic_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("body is not JSON: {e}"),
            );
        }
    };
    *stats.last_request.lock().unwrap() = Some(req.clone());
    let model = req["model"].as_str().unwrap_or_default().to_string();
    stats
        .arrivals
        .lock()
        .unwrap()
        .entry(model.clone())
        .or_default()
        .push(std::time::Instant::now());
    for header in ["x-api-key", "anthropic-version"] {
        if headers.get(header).is_none() {
            return anthropic_error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                &format!("{header} header is required"),
            );
        }
    }
    if !req["max_tokens"].is_u64() {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens: Field required",
        );
    }
    if let Some(s) = super::scenario::for_request(&model, &req) {
        let id = format!("msg_gold_{}", stats.calls.load(Ordering::SeqCst));
        return gold(&model, &id, &req, &s);
    }
    match model.as_str() {
        "claude-429" => {
            let mut resp = anthropic_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "mock says slow down",
            );
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            return resp;
        }
        "claude-529" => {
            return anthropic_error(
                StatusCode::from_u16(529).unwrap(),
                "overloaded_error",
                "Overloaded",
            );
        }
        _ => {}
    }
    let tool = req["tools"][0]["name"]
        .as_str()
        .unwrap_or("get_weather")
        .to_string();
    let answered = req["messages"].as_array().is_some_and(|messages| {
        messages.iter().any(|m| {
            m["content"]
                .as_array()
                .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
        })
    });
    let (answer, stop_reason) = match model.as_str() {
        "claude-tools" if answered => (
            Answer::Text(vec!["It is ", "sunny ", "in Paris."]),
            "end_turn",
        ),
        "claude-tools" => (
            Answer::Tools(vec![(tool.clone(), json!({"city": "Paris"}))]),
            "tool_use",
        ),
        "claude-parallel" => (
            Answer::Tools(vec![
                (tool.clone(), json!({"city": "Paris"})),
                (tool.clone(), json!({"city": "Berlin"})),
            ]),
            "tool_use",
        ),
        "claude-max" => (Answer::Text(vec!["Once upon", " a time"]), "max_tokens"),
        "claude-stop" => (Answer::Text(vec!["Counting", " 1 2"]), "stop_sequence"),
        "claude-fail-mid" => (Answer::Text(vec!["Hello", " from"]), "end_turn"),
        _ => (
            Answer::Text(vec!["Hello", " from", " Claude", "."]),
            "end_turn",
        ),
    };
    let cached = req.to_string().contains("\"cache_control\"");
    let (read, write) = if cached { (3, 2) } else { (0, 0) };
    let output_tokens = match &answer {
        Answer::Text(pieces) => pieces.len() as u64,
        Answer::Tools(calls) => 10 * calls.len() as u64,
    };
    let usage = json!({"input_tokens": 11, "output_tokens": output_tokens,
        "cache_creation_input_tokens": write, "cache_read_input_tokens": read});
    let id = format!("msg_mock_{}", stats.calls.load(Ordering::SeqCst));
    let stop_sequence = if stop_reason == "stop_sequence" {
        json!("3")
    } else {
        Value::Null
    };

    if !req["stream"].as_bool().unwrap_or(false) {
        if model == "claude-fail-mid" {
            return anthropic_error(
                StatusCode::from_u16(529).unwrap(),
                "overloaded_error",
                "Overloaded",
            );
        }
        let content = match &answer {
            Answer::Text(pieces) => json!([{"type": "text", "text": pieces.concat()}]),
            Answer::Tools(calls) => Value::Array(
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, (name, input))| {
                        json!({"type": "tool_use", "id": format!("toolu_mock{}", i + 1), "name": name, "input": input})
                    })
                    .collect(),
            ),
        };
        return axum::Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage,
        }))
        .into_response();
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    let guard = CompletionGuard {
        stats: stats.clone(),
        finished: false,
    };
    tokio::spawn(async move {
        let mut guard = guard;
        let event = |data: Value| {
            let name = data["type"].as_str().unwrap_or("message").to_string();
            Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
        };
        // Sends one event, split in two network chunks; false when the gateway hung up.
        let send = |data: Value| {
            let tx = tx.clone();
            let bytes = event(data);
            async move {
                let cut = bytes.len() / 2;
                tx.send(Ok(bytes.slice(..cut))).await.is_ok()
                    && tx.send(Ok(bytes.slice(cut..))).await.is_ok()
            }
        };
        let start = json!({"type": "message_start", "message": {"id": id, "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 1,
                "cache_creation_input_tokens": write, "cache_read_input_tokens": read}}});
        if !send(start).await || !send(json!({"type": "ping"})).await {
            return;
        }
        match &answer {
            Answer::Text(pieces) => {
                let block = json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}});
                if !send(block).await {
                    return;
                }
                for piece in pieces {
                    let delta = json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": piece}});
                    if !send(delta).await {
                        return; // `guard` records the cancellation
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if model == "claude-fail-mid" {
                    let err = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
                    let _ = send(err).await;
                    guard.finished = true;
                    return;
                }
                if !send(json!({"type": "content_block_stop", "index": 0})).await {
                    return;
                }
            }
            Answer::Tools(calls) => {
                for (i, (name, input)) in calls.iter().enumerate() {
                    let block = json!({"type": "content_block_start", "index": i,
                        "content_block": {"type": "tool_use", "id": format!("toolu_mock{}", i + 1),
                            "name": name, "input": {}}});
                    if !send(block).await {
                        return;
                    }
                    // The input in pieces of 4 characters (5 or more deltas), the first empty
                    // as the real API often sends.
                    let text = input.to_string();
                    let chars: Vec<char> = text.chars().collect();
                    let pieces = std::iter::once(String::new())
                        .chain(chars.chunks(4).map(|c| c.iter().collect::<String>()));
                    for piece in pieces {
                        let delta = json!({"type": "content_block_delta", "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": piece}});
                        if !send(delta).await {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    if !send(json!({"type": "content_block_stop", "index": i})).await {
                        return;
                    }
                }
            }
        }
        let delta = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {"output_tokens": output_tokens}});
        if !send(delta).await || !send(json!({"type": "message_stop"})).await {
            return;
        }
        guard.finished = true;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("request-id", "req_mock")
        .body(body)
        .unwrap()
}

/// A `gold-*` scenario: whole, or streamed with each event split across two network chunks.
fn gold(model: &str, id: &str, req: &Value, s: &super::scenario::Scenario) -> Response {
    use super::scenario::{Finish, PROMPT_TOKENS, Step};
    if !req["stream"].as_bool().unwrap_or(false) {
        if s.finish == Finish::FailMid {
            return anthropic_error(
                StatusCode::from_u16(529).unwrap(),
                "overloaded_error",
                "Overloaded",
            );
        }
        let mut content = Vec::new();
        let text = s.text();
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        for step in &s.steps {
            if let Step::Tool {
                ordinal,
                name,
                pieces,
            } = step
            {
                let input: Value = serde_json::from_str(&pieces.concat()).unwrap();
                content.push(
                    json!({"type": "tool_use", "id": format!("toolu_gold{}", ordinal + 1),
                    "name": name, "input": input}),
                );
            }
        }
        let stop = match s.finish {
            Finish::Length => "max_tokens",
            Finish::ToolCalls => "tool_use",
            _ => "end_turn",
        };
        return axum::Json(
            json!({"id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": s.output_tokens(),
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
        )
        .into_response();
    }
    let pieces: Vec<Result<Bytes, Infallible>> = super::scenario::anthropic_sse(model, id, s)
        .into_iter()
        .flat_map(|e| {
            let cut = e.len() / 2;
            [
                Ok(Bytes::from(e[..cut].to_string())),
                Ok(Bytes::from(e[cut..].to_string())),
            ]
        })
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures::stream::iter(pieces)))
        .unwrap()
}

/// `count_tokens`: a count from the request's size; fields the real endpoint refuses are a 400.
async fn count_tokens(
    State(stats): State<Arc<MockStats>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stats.calls.fetch_add(1, Ordering::SeqCst);
    *stats.last_headers.lock().unwrap() = Some(headers);
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    *stats.last_request.lock().unwrap() = Some(req.clone());
    for refused in ["max_tokens", "stream", "temperature", "metadata"] {
        if req.get(refused).is_some() {
            return anthropic_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("{refused}: Extra inputs are not permitted"),
            );
        }
    }
    let size = req["messages"].to_string().len()
        + req["system"].to_string().len()
        + req["tools"].to_string().len();
    axum::Json(json!({"input_tokens": size / 4})).into_response()
}

struct CompletionGuard {
    stats: Arc<MockStats>,
    finished: bool,
}

impl Drop for CompletionGuard {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.stats.completed
        } else {
            &self.stats.cancelled
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}
