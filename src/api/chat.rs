//! `POST /v1/chat/completions` and `GET /v1/models`: OpenAI's wire format exactly, streamed or
//! not, with every request accounted for in the request log and metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde_json::json;

use super::REQUEST_ID;
use super::extract::ApiJson;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::providers::{ModelRoute, ProviderError};
use crate::server::AppState;
use crate::store::{RequestLogRecord, RequestLogWriter, now_ms};
use crate::types::{
    ChatChunk, ChatCompletionRequest, ModelObject, Usage, new_completion_id, unix_now,
};

pub async fn list_models(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut data: Vec<ModelObject> = state
        .models
        .iter()
        .map(|m| ModelObject {
            id: m.name.clone(),
            object: "model",
            created: state.started_at,
            owned_by: m.provider.name().to_string(),
        })
        .collect();
    if let Some(e) = &state.embedder {
        data.push(ModelObject {
            id: e.model_name.clone(),
            object: "model",
            created: state.started_at,
            owned_by: "quartermaster".into(),
        });
    }
    axum::Json(json!({"object": "list", "data": data}))
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    request
        .validate()
        .map_err(|(message, param)| ApiError::invalid(message, Some(param)))?;
    let route = state
        .models
        .get(&request.model)
        .cloned()
        .ok_or_else(|| ApiError::ModelNotFound(request.model.clone()))?;
    if principal.limited
        && !state
            .billing
            .allowed_when_limited(&route.name, route.provider.name())
    {
        return Err(ApiError::PaymentRequired(format!(
            "tenant `{}` has an unpaid invoice past its grace period: model `{}` is unavailable until it is paid",
            principal.tenant.name, route.name
        )));
    }
    let request_id = headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let ledger = Ledger {
        writer: state.request_log.clone(),
        record: RequestLogRecord {
            request_id,
            tenant_id: Some(principal.tenant.id.clone()),
            key_id: Some(principal.key_id.clone()),
            model: route.name.clone(),
            provider: Some(route.provider.name().to_string()),
            stream: request.is_stream(),
            status: "ok",
            http_status: 200,
            error_code: None,
            tokens_in: 0,
            tokens_out: 0,
            latency_ms: 0.0,
            ttft_ms: None,
            created_at: now_ms(),
        },
        started,
        done: false,
    };
    if request.is_stream() {
        stream_completion(state, route, request, ledger).await
    } else {
        complete(route, request, ledger).await
    }
}

async fn complete(
    route: ModelRoute,
    request: ChatCompletionRequest,
    mut ledger: Ledger,
) -> Result<Response, ApiError> {
    let prompt_estimate = request.estimate_prompt_tokens();
    let mut upstream_request = request;
    let client_model = std::mem::replace(&mut upstream_request.model, route.upstream_model.clone());
    match route.provider.complete(upstream_request).await {
        Ok(mut completion) => {
            completion.id = new_completion_id();
            if completion.created == 0 {
                completion.created = unix_now();
            }
            if completion.model.is_empty() {
                completion.model = client_model;
            }
            let usage = completion.usage.unwrap_or_else(|| {
                let out: usize = completion
                    .choices
                    .iter()
                    .map(|c| c.message.to_string().len())
                    .sum();
                Usage {
                    prompt_tokens: prompt_estimate,
                    completion_tokens: (out as u64).div_ceil(4),
                    total_tokens: prompt_estimate + (out as u64).div_ceil(4),
                }
            });
            ledger.finish_ok(usage).await;
            Ok(axum::Json(completion).into_response())
        }
        Err(e) => {
            let api = provider_error(&route, &e);
            ledger.finish_err(&api).await;
            Err(api)
        }
    }
}

async fn stream_completion(
    state: Arc<AppState>,
    route: ModelRoute,
    request: ChatCompletionRequest,
    mut ledger: Ledger,
) -> Result<Response, ApiError> {
    let include_usage = request.include_usage();
    let prompt_estimate = request.estimate_prompt_tokens();
    let mut upstream_request = request;
    let client_model = std::mem::replace(&mut upstream_request.model, route.upstream_model.clone());
    // Errors before the first byte are ordinary HTTP errors; after it they are SSE events.
    let mut upstream = match route.provider.stream(upstream_request).await {
        Ok(s) => s,
        Err(e) => {
            let api = provider_error(&route, &e);
            ledger.finish_err(&api).await;
            return Err(api);
        }
    };
    let id = new_completion_id();
    let created = unix_now();
    let grace_over = state.grace_over.clone();

    let events = async_stream::stream! {
        // `ledger` moves in here: if the client goes away, the stream is dropped mid-way
        // and the ledger's drop records the request as abandoned. Dropping `upstream` with
        // it cancels the upstream request.
        let mut ledger = ledger;
        let mut usage: Option<Usage> = None;
        let mut finished = false;
        let mut completion_chars = 0usize;
        let mut model = client_model;
        loop {
            let item = tokio::select! {
                biased;
                _ = grace_over.cancelled() => {
                    let err = ApiError::Overloaded { message: "the server is shutting down".into(), retry_after_secs: 1 };
                    ledger.finish_err(&err).await;
                    yield Ok::<Event, Infallible>(error_event(&err));
                    return;
                }
                item = upstream.next() => item,
            };
            let Some(item) = item else { break };
            match item {
                Ok(mut chunk) => {
                    if let Some(u) = chunk.usage.take() {
                        usage = Some(u);
                    }
                    if !chunk.model.is_empty() {
                        model = chunk.model.clone();
                    }
                    if chunk.choices.is_empty() {
                        continue; // the upstream's usage chunk: re-sent below if asked for
                    }
                    for choice in &chunk.choices {
                        completion_chars += choice.delta.content.as_ref().map_or(0, |c| c.len());
                        finished |= choice.finish_reason.is_some();
                    }
                    ledger.first_token();
                    chunk.id = id.clone();
                    chunk.created = created;
                    chunk.model = model.clone();
                    yield Ok(Event::default().data(to_json(&chunk)));
                }
                Err(e) => {
                    let err = provider_error(&route, &e);
                    ledger.finish_err(&err).await;
                    yield Ok(error_event(&err));
                    return;
                }
            }
        }
        if !finished {
            let err = provider_error(&route, &ProviderError::Connection("the upstream closed the stream before it finished".into()));
            ledger.finish_err(&err).await;
            yield Ok(error_event(&err));
            return;
        }
        let usage = usage.unwrap_or_else(|| {
            let out = (completion_chars as u64).div_ceil(4);
            Usage { prompt_tokens: prompt_estimate, completion_tokens: out, total_tokens: prompt_estimate + out }
        });
        if include_usage {
            let chunk = ChatChunk {
                id: id.clone(),
                object: "chat.completion.chunk".into(),
                created,
                model: model.clone(),
                choices: vec![],
                usage: Some(usage),
                extra: Default::default(),
            };
            yield Ok(Event::default().data(to_json(&chunk)));
        }
        ledger.finish_ok(usage).await;
        yield Ok(Event::default().data("[DONE]"));
    };
    Ok(sse(events))
}

fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    // Stop proxies such as nginx from buffering the stream.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    response
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("wire types serialize")
}

fn error_event(err: &ApiError) -> Event {
    Event::default().data(err.to_json())
}

/// Maps a provider failure to the client-facing error, counting it by kind.
fn provider_error(route: &ModelRoute, e: &ProviderError) -> ApiError {
    metrics::counter!("qm_upstream_errors_total", "provider" => route.provider.name().to_string(), "kind" => e.kind())
        .increment(1);
    tracing::warn!(provider = route.provider.name(), model = %route.name, error = %e, "upstream failed");
    match e {
        ProviderError::Status {
            status,
            message,
            code,
            ..
        } if (400..500).contains(status) => ApiError::Upstream {
            status: *status,
            message: message.clone(),
            code: code.clone(),
        },
        ProviderError::Status { status, .. } => ApiError::Upstream {
            status: 502,
            message: format!("the upstream provider failed (status {status})"),
            code: Some("upstream_error".into()),
        },
        ProviderError::MidStream { message, code } => ApiError::Upstream {
            status: 502,
            message: message.clone(),
            code: code.clone(),
        },
        ProviderError::Timeout => ApiError::UpstreamTimeout,
        ProviderError::Connection(_) | ProviderError::Protocol(_) => ApiError::UpstreamUnavailable,
    }
}

/// Accounts for one chat request exactly once: on success, on error, or (through `Drop`)
/// when the client disconnects and the response future or stream is dropped.
struct Ledger {
    writer: RequestLogWriter,
    record: RequestLogRecord,
    started: Instant,
    done: bool,
}

impl Ledger {
    fn first_token(&mut self) {
        if self.record.ttft_ms.is_none() {
            let ttft = self.started.elapsed();
            self.record.ttft_ms = Some(ttft.as_secs_f64() * 1e3);
            metrics::histogram!("qm_time_to_first_token_seconds", "model" => self.record.model.clone())
                .record(ttft.as_secs_f64());
        }
    }

    fn close(&mut self, status: &'static str) -> RequestLogRecord {
        self.done = true;
        let elapsed = self.started.elapsed();
        self.record.status = status;
        self.record.latency_ms = elapsed.as_secs_f64() * 1e3;
        let model = self.record.model.clone();
        let stream = if self.record.stream { "true" } else { "false" };
        metrics::counter!("qm_chat_requests_total", "model" => model.clone(), "status" => status)
            .increment(1);
        metrics::histogram!("qm_chat_request_duration_seconds", "model" => model.clone(), "stream" => stream)
            .record(elapsed.as_secs_f64());
        metrics::counter!("qm_tokens_total", "model" => model.clone(), "direction" => "input")
            .increment(self.record.tokens_in);
        metrics::counter!("qm_tokens_total", "model" => model, "direction" => "output")
            .increment(self.record.tokens_out);
        self.record.clone()
    }

    async fn finish_ok(&mut self, usage: Usage) {
        self.record.tokens_in = usage.prompt_tokens;
        self.record.tokens_out = usage.completion_tokens;
        let record = self.close("ok");
        self.writer.send(record).await;
    }

    async fn finish_err(&mut self, err: &ApiError) {
        self.record.http_status = err.status().as_u16();
        self.record.error_code = Some(err.code().to_string());
        let record = self.close("error");
        self.writer.send(record).await;
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if !self.done {
            self.record.http_status = 499; // nginx's "client closed request"
            self.record.error_code = Some("client_disconnected".into());
            let record = self.close("client_disconnected");
            tracing::info!(request_id = %record.request_id, "client disconnected before the response finished");
            self.writer.send_detached(record);
        }
    }
}
