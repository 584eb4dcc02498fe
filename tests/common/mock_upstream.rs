//! A mock OpenAI-compatible upstream on a real socket. It speaks the real wire format
//! (SSE `data:` events in several chunks, a usage chunk, `[DONE]`) and misbehaves on demand,
//! chosen by the requested model name:
//!
//! | model | behaviour |
//! | --- | --- |
//! | `mock-ok` | 4 content chunks 10 ms apart, `finish_reason: stop`, usage, `[DONE]` |
//! | `mock-slow` | 200 chunks 50 ms apart (for disconnects and shutdown) |
//! | `mock-fail-mid` | 2 chunks, then an error event, then the stream ends |
//! | `mock-drop-mid` | 2 chunks, then the body ends with no finish and no `[DONE]` |
//! | `mock-stall` | 1 chunk, then silence for a minute |
//! | `mock-429`, `mock-500`, `mock-503` | that status with OpenAI's error body |
//! | `mock-no-usage` | like `mock-ok` but never reports usage |
//! | `mock-hang` | no answer at all for a minute (a timeout before the first byte) |
//! | `mock-429-then-ok` | odd-numbered calls: 429 with `Retry-After: 1`; even ones: like `mock-ok` |
//! | `mock-tools` | a call of the first offered tool (`{"city":"Paris"}`, streamed as OpenAI's tool-call deltas in several chunks, `finish_reason: tool_calls`); once the conversation holds a tool result, the text `It is sunny in Paris.` |
//! | `mock-echo` | (not streamed) the answer `You asked: <the last user message>` |
//! | `mock-NNN` | any other status NNN |
//! | `gold-*` | the scripted answers of `scenario.rs`, in OpenAI's format |
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
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
    /// When each call arrived, by model (their count is the calls per model).
    pub arrivals: std::sync::Mutex<std::collections::HashMap<String, Vec<std::time::Instant>>>,
}

pub struct MockUpstream {
    pub url: String,
    pub stats: Arc<MockStats>,
}

impl MockUpstream {
    pub async fn start() -> Self {
        let stats = Arc::new(MockStats::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
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

    /// When the calls for `model` arrived, in order.
    pub fn arrivals_for(&self, model: &str) -> Vec<std::time::Instant> {
        self.stats
            .arrivals
            .lock()
            .unwrap()
            .get(model)
            .cloned()
            .unwrap_or_default()
    }

    pub fn calls(&self) -> usize {
        self.stats.calls.load(Ordering::SeqCst)
    }

    pub fn last_request(&self) -> Value {
        self.stats
            .last_request
            .lock()
            .unwrap()
            .clone()
            .expect("the mock saw a request")
    }
}

const WORDS: [&str; 4] = ["Hello", " from", " the", " mock"];

async fn handle(State(stats): State<Arc<MockStats>>, body: Bytes) -> Response {
    stats.calls.fetch_add(1, Ordering::SeqCst);
    let req: Value = serde_json::from_slice(&body).expect("the gateway sends JSON");
    *stats.last_request.lock().unwrap() = Some(req.clone());
    let model = req["model"].as_str().unwrap_or_default().to_string();
    let nth = {
        let mut arrivals = stats.arrivals.lock().unwrap();
        let calls = arrivals.entry(model.clone()).or_default();
        calls.push(std::time::Instant::now());
        calls.len()
    };
    if model == "mock-429-then-ok" && nth % 2 == 1 {
        let mut resp = openai_error(
            StatusCode::TOO_MANY_REQUESTS,
            "mock says slow down",
            "rate_limit_exceeded",
        );
        resp.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return resp;
    }
    if model == "mock-hang" {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    if model == "mock-tools" {
        return tool_answer(&req);
    }
    if model == "mock-echo" {
        let asked = req["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default();
        return axum::Json(json!({
            "id": "chatcmpl-echo", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("You asked: {asked}")}, "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
        }))
        .into_response();
    }
    if let Some(s) = super::scenario::for_request(&model, &req) {
        return gold(&model, &req, &s);
    }
    let stream = req["stream"].as_bool().unwrap_or(false);
    let include_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    if let Some(status) = model
        .strip_prefix("mock-")
        .and_then(|s| s.parse::<u16>().ok())
    {
        return openai_error(
            StatusCode::from_u16(status).unwrap(),
            &format!("mock says {status}"),
            &format!("mock_{status}"),
        );
    }
    if !stream {
        let mut out = json!({
            "id": "chatcmpl-upstream", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": WORDS.concat()}, "finish_reason": "stop", "logprobs": null}],
            "system_fingerprint": "fp_mock",
        });
        if model != "mock-no-usage" {
            out["usage"] = json!({"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15});
        }
        return axum::Json(out).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    let guard = CompletionGuard {
        stats: stats.clone(),
        finished: false,
    };
    tokio::spawn(async move {
        let mut guard = guard;
        let send = |v: Value| Bytes::from(format!("data: {v}\n\n"));
        let chunk = |i: usize, content: Option<&str>, finish: Option<&str>| {
            let mut delta = json!({});
            if i == 0 {
                delta["role"] = json!("assistant");
            }
            if let Some(c) = content {
                delta["content"] = json!(c);
            }
            let mut c = json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000 + i as i64,
                "model": format!("{model}-2024"), "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
            if include_usage {
                c["usage"] = Value::Null;
            }
            c
        };
        let (n, gap) = match model.as_str() {
            "mock-slow" => (200, 50),
            _ => (WORDS.len(), 10),
        };
        for i in 0..n {
            if tx
                .send(Ok(send(chunk(i, Some(WORDS[i % WORDS.len()]), None))))
                .await
                .is_err()
            {
                return; // the gateway hung up; `guard` records the cancellation
            }
            match model.as_str() {
                "mock-fail-mid" if i == 1 => {
                    let err = json!({"error": {"message": "mock failed mid-stream", "type": "server_error", "param": null, "code": "mock_mid"}});
                    let _ = tx.send(Ok(send(err))).await;
                    guard.finished = true;
                    return;
                }
                "mock-drop-mid" if i == 1 => {
                    guard.finished = true;
                    return;
                }
                "mock-stall" => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
        let _ = tx.send(Ok(send(chunk(n, None, Some("stop"))))).await;
        if include_usage && model != "mock-no-usage" {
            let usage = json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": n, "total_tokens": 11 + n}});
            let _ = tx.send(Ok(send(usage))).await;
        }
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
        guard.finished = true;
    });
    // The stream ends (or is dropped) with the channel; a dropped receiver shows up as a
    // failed send above.
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

/// A status with OpenAI's error body.
fn openai_error(status: StatusCode, message: &str, code: &str) -> Response {
    let body =
        json!({"error": {"message": message, "type": "mock_error", "param": null, "code": code}});
    (status, axum::Json(body)).into_response()
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

/// A `gold-*` scenario: whole, or streamed with each event split across two network chunks.
fn gold(model: &str, req: &Value, s: &super::scenario::Scenario) -> Response {
    use super::scenario::{Finish, PROMPT_TOKENS, Step};
    if !req["stream"].as_bool().unwrap_or(false) {
        if s.finish == Finish::FailMid {
            return openai_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Overloaded",
                "overloaded_error",
            );
        }
        let calls: Vec<Value> = s
            .steps
            .iter()
            .filter_map(|step| match step {
                Step::Tool {
                    ordinal,
                    name,
                    pieces,
                } => Some(json!({"id": format!("call_gold{}", ordinal + 1),
                    "type": "function", "function": {"name": name, "arguments": pieces.concat()}})),
                Step::Text(_) => None,
            })
            .collect();
        let text = s.text();
        let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        let finish = match s.finish {
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
            _ => "stop",
        };
        let n = s.output_tokens();
        return axum::Json(json!({"id": "chatcmpl-gold", "object": "chat.completion", "created": 1700000000,
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n, "total_tokens": PROMPT_TOKENS + n,
                "prompt_tokens_details": {"cached_tokens": 0}}}))
        .into_response();
    }
    let pieces: Vec<Result<Bytes, Infallible>> = super::scenario::openai_sse(model, s)
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

/// `mock-tools`: a tool call until the conversation holds a tool result, then text.
fn tool_answer(req: &Value) -> Response {
    let stream = req["stream"].as_bool().unwrap_or(false);
    let answered = req["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    let tool = req["tools"][0]["function"]["name"]
        .as_str()
        .unwrap_or("get_weather")
        .to_string();
    let usage = json!({"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27});
    if !stream {
        let (message, finish) = if answered {
            (
                json!({"role": "assistant", "content": "It is sunny in Paris."}),
                "stop",
            )
        } else {
            (
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_mock1", "type": "function",
                    "function": {"name": tool, "arguments": "{\"city\":\"Paris\"}"}}]}),
                "tool_calls",
            )
        };
        return axum::Json(json!({
            "id": "chatcmpl-tools", "object": "chat.completion", "created": 1700000000, "model": "mock-tools",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-tools", "object": "chat.completion.chunk", "created": 1700000000, "model": "mock-tools",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut events = Vec::new();
    if answered {
        events.push(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
        for piece in ["It is ", "sunny ", "in Paris."] {
            events.push(chunk(json!({"content": piece}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
    } else {
        events.push(chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_mock1", "type": "function",
                "function": {"name": tool, "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in ["{\"city\"", ":\"Par", "is\"}"] {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
        events.push(chunk(json!({}), json!("tool_calls")));
    }
    let mut usage_chunk = chunk(json!({}), Value::Null);
    usage_chunk["choices"] = json!([]);
    usage_chunk["usage"] = usage;
    events.push(usage_chunk);
    let body: String = events
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .chain(std::iter::once("data: [DONE]\n\n".to_string()))
        .collect();
    // Several network chunks, as a real upstream sends them.
    let pieces: Vec<Result<Bytes, Infallible>> = body
        .split_inclusive("\n\n")
        .map(|p| Ok(Bytes::from(p.to_string())))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures::stream::iter(pieces)))
        .unwrap()
}
