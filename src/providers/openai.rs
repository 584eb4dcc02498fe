//! Any OpenAI-compatible upstream (OpenAI, Groq, Together, vLLM, Ollama, ...), configured
//! through async-openai's `OpenAIConfig` (base URL, key, organisation and project headers,
//! query), with the gateway's own wire types so unknown fields pass through both ways.
//!
//! Requests are sent on one reqwest client from a URL and headers built once, and read in
//! the caller's task. async-openai's own calls cost more on the gateway's hot path: each
//! re-parses the URL (with IDNA host processing) and goes through a tower executor, and its
//! stream spawns a task per request and hands every event through an unbounded channel (one
//! more task hop, often a cross-thread wake-up, per chunk). Streams are parsed with the SSE
//! parser async-openai uses.

use std::time::Duration;

use async_openai::config::{Config as _, OpenAIConfig};
use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use secrecy::ExposeSecret;

use super::{ChunkStream, Provider, ProviderError};
use crate::config::ProviderConfig;
use crate::types::{ChatChunk, ChatCompletion, ChatCompletionRequest, StreamOptions};

pub struct OpenAiProvider {
    name: String,
    http: reqwest::Client,
    /// `{base_url}/chat/completions` with the config's query, and its headers (auth): built
    /// once from the async-openai config, not per request.
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    /// Longest wait for the next stream event.
    idle_timeout: Duration,
}

impl OpenAiProvider {
    pub fn new(name: &str, config: &ProviderConfig) -> anyhow::Result<Self> {
        // One TLS crypto provider for the process (ring: builds without cmake).
        crate::install_crypto_provider();
        let api_key = match (&config.api_key_env, &config.api_key) {
            (Some(var), _) => std::env::var(var).unwrap_or_default(),
            (None, Some(key)) => key.expose_secret().to_string(),
            (None, None) => String::new(),
        };
        if api_key.is_empty() {
            tracing::warn!(
                provider = name,
                "no API key configured for provider; sending requests without one"
            );
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            // An idle-read timeout, not a total one: long streams are fine, silence is not.
            // Streams are also watched per event (below), which fires first and is reported
            // as a timeout; this one covers non-streamed answers.
            .read_timeout(Duration::from_millis(config.read_timeout_ms + 1_000))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        let openai = OpenAIConfig::new()
            .with_api_base(config.base_url.trim_end_matches('/'))
            .with_api_key(api_key);
        Ok(Self {
            name: name.to_string(),
            // No retries here: the gateway's router owns them (budgeted, jittered, with
            // failover and circuit breakers).
            http,
            url: reqwest::Url::parse_with_params(&openai.url("/chat/completions"), openai.query())
                .map_err(|e| {
                    anyhow::anyhow!("provider `{name}`: base_url is not a valid URL: {e}")
                })?,
            headers: openai.headers(),
            idle_timeout: Duration::from_millis(config.read_timeout_ms),
        })
    }
}

impl OpenAiProvider {
    async fn send(
        &self,
        request: &ChatCompletionRequest,
    ) -> Result<reqwest::Response, ProviderError> {
        self.http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .json(request)
            .send()
            .await
            .map_err(|e| map_reqwest(&e))
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(
        &self,
        mut request: ChatCompletionRequest,
    ) -> Result<ChatCompletion, ProviderError> {
        request.stream = Some(false);
        request.stream_options = None;
        // The client's read timeout bounds a silent upstream here.
        let response = self.send(&request).await?;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let body = response.bytes().await.map_err(|e| map_reqwest(&e))?;
        serde_json::from_slice(&body).map_err(|e| {
            ProviderError::Protocol(format!(
                "the upstream's answer is not a chat completion: {e}"
            ))
        })
    }

    async fn stream(
        &self,
        mut request: ChatCompletionRequest,
    ) -> Result<ChunkStream, ProviderError> {
        request.stream = Some(true);
        request
            .stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
        let response = tokio::time::timeout(self.idle_timeout, self.send(&request))
            .await
            .map_err(|_| ProviderError::Timeout)??;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let mut events = response.bytes_stream().eventsource();
        let idle = self.idle_timeout;
        Ok(Box::pin(async_stream::stream! {
            loop {
                let event = match tokio::time::timeout(idle, events.next()).await {
                    Ok(Some(Ok(event))) => event,
                    Ok(Some(Err(e))) => {
                        yield Err(map_event_error(e));
                        break;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        yield Err(ProviderError::Timeout);
                        break;
                    }
                };
                if event.data == "[DONE]" {
                    break;
                }
                if event.event == "keepalive" {
                    continue;
                }
                match serde_json::from_str::<ChatChunk>(&event.data) {
                    // An error event mid-stream (`data: {"error":{...}}`) parses as an empty
                    // chunk with an `error` field; surface it as the failure it is.
                    Ok(chunk) if chunk.extra.contains_key("error") => {
                        yield Err(mid_stream_error(&chunk.extra["error"]));
                        break;
                    }
                    Ok(chunk) => yield Ok(chunk),
                    Err(e) => {
                        yield Err(ProviderError::Protocol(e.to_string()));
                        break;
                    }
                }
            }
        }))
    }
}

/// An error status (for a stream: before it began): OpenAI's `{"error": {...}}` envelope when the
/// body is one, the body's text otherwise (as async-openai reads it), and `Retry-After`.
async fn status_error(response: reqwest::Response) -> ProviderError {
    let status = response.status().as_u16();
    let retry_after_secs = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return map_reqwest(&e),
    };
    let (message, code) = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").map(message_and_code))
        .unwrap_or_default();
    let message = message.unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    ProviderError::Status {
        status,
        message,
        code,
        retry_after_secs,
    }
}

fn map_event_error(e: EventStreamError<reqwest::Error>) -> ProviderError {
    match e {
        EventStreamError::Transport(e) => map_reqwest(&e),
        EventStreamError::Utf8(e) => ProviderError::Protocol(e.to_string()),
        EventStreamError::Parser(e) => ProviderError::Protocol(e.to_string()),
    }
}

fn map_reqwest(e: &reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout
    } else {
        ProviderError::Connection(without_url(e))
    }
}

/// `message` and `code` of an OpenAI error object, when they are strings.
fn message_and_code(error: &serde_json::Value) -> (Option<String>, Option<String>) {
    let field = |name: &str| error.get(name).and_then(|v| v.as_str()).map(str::to_string);
    (field("message"), field("code"))
}

fn mid_stream_error(error: &serde_json::Value) -> ProviderError {
    let (message, code) = message_and_code(error);
    let message = message.unwrap_or_else(|| "upstream stream failed".to_string());
    ProviderError::MidStream { message, code }
}

/// reqwest errors name the URL; keep the message but not the upstream's address.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connect"
    } else if e.is_body() {
        "body"
    } else {
        "request"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    format!("{kind} error: {detail}")
}
