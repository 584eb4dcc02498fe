//! Any OpenAI-compatible upstream (OpenAI, Groq, Together, vLLM, Ollama, ...), with the
//! gateway's own wire types so unknown fields pass through both ways. The URL and the auth
//! header come from async-openai's `OpenAIConfig` (base URL and key from the gateway's
//! config; no organisation or project header, whatever the environment says: those are
//! OpenAI's and would go to every provider).
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

use super::ProviderConfig;
use super::{ChunkStream, Provider, ProviderError};
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
            .with_api_key(api_key.clone())
            .with_org_id("")
            .with_project_id("");
        let mut url =
            reqwest::Url::parse_with_params(&openai.url("/chat/completions"), openai.query())
                .map_err(|e| {
                    anyhow::anyhow!("provider `{name}`: base_url is not a valid URL: {e}")
                })?;
        if url.query() == Some("") {
            url.set_query(None); // no bare `?` on the path
        }
        let mut headers = openai.headers();
        if api_key.is_empty() {
            headers.remove(reqwest::header::AUTHORIZATION);
        } else if let Some(auth) = headers.get_mut(reqwest::header::AUTHORIZATION) {
            auth.set_sensitive(true);
        }
        Ok(Self {
            name: name.to_string(),
            // No retries here: the gateway's router owns them (budgeted, jittered, with
            // failover and circuit breakers).
            http,
            url,
            headers,
            idle_timeout: Duration::from_millis(config.read_timeout_ms),
        })
    }

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

/// An error status (for a stream: before it began), with `Retry-After`. The message is the
/// upstream's own when the body is an error envelope (OpenAI's `{"error": {"message", ...}}`
/// or Ollama's `{"error": "..."}`); any other body (a proxy's HTML page, plain text) is
/// quoted, whitespace collapsed, up to `MAX_QUOTED_CHARS` characters.
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
    let (message, code) = match serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .as_ref()
        .and_then(|v| v.get("error"))
    {
        Some(serde_json::Value::String(m)) => (Some(m.clone()), None),
        Some(e) => message_and_code(e),
        None => (None, None),
    };
    let message = message.unwrap_or_else(|| quote_body(status, &body));
    ProviderError::Status {
        status,
        message,
        code,
        retry_after_secs,
    }
}

/// Longest part of a non-JSON error body passed on in an error message.
const MAX_QUOTED_CHARS: usize = 200;

fn quote_body(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return format!("the upstream answered {status} with no error message");
    }
    match collapsed.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("the upstream answered {status}: {}...", &collapsed[..cut]),
        None => format!("the upstream answered {status}: {collapsed}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn error_for(status: u16, body: &'static str) -> ProviderError {
        let response = http::Response::builder()
            .status(status)
            .header("retry-after", "7")
            .body(body)
            .unwrap();
        status_error(reqwest::Response::from(response)).await
    }

    fn message_of(e: &ProviderError) -> (&str, Option<&str>, Option<u64>) {
        match e {
            ProviderError::Status {
                message,
                code,
                retry_after_secs,
                ..
            } => (message, code.as_deref(), *retry_after_secs),
            other => panic!("not a status error: {other:?}"),
        }
    }

    /// OpenAI's envelope, Ollama's string form, and anything else quoted briefly.
    #[tokio::test]
    async fn error_bodies_of_every_shape_become_clear_messages() {
        let e = error_for(
            429,
            r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        )
        .await;
        assert_eq!(
            message_of(&e),
            ("Rate limit reached", Some("rate_limit_exceeded"), Some(7))
        );
        let e = error_for(404, r#"{"error":"model 'llama9' not found"}"#).await;
        assert_eq!(message_of(&e).0, "model 'llama9' not found");
        let e = error_for(403, "<html>\n  <body>Forbidden\n by   policy</body></html>").await;
        assert_eq!(
            message_of(&e).0,
            "the upstream answered 403: <html> <body>Forbidden by policy</body></html>"
        );
        let page: &'static str = Box::leak("x ".repeat(5_000).into_boxed_str());
        let e = error_for(502, page).await;
        let m = message_of(&e).0;
        assert!(m.ends_with("..."), "{m}");
        assert!(m.len() < MAX_QUOTED_CHARS + 40, "{} chars", m.len());
        let e = error_for(500, "").await;
        assert_eq!(
            message_of(&e).0,
            "the upstream answered 500 with no error message"
        );
    }

    /// The URL has no bare `?`, no OpenAI organisation header leaks to other providers, and
    /// a provider without a key sends no `Authorization` header.
    #[test]
    fn url_and_headers_are_clean() {
        let config: ProviderConfig = toml::from_str(
            "kind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1/\"\napi_key = \"sk-test\"",
        )
        .unwrap();
        let p = OpenAiProvider::new("p", &config).unwrap();
        assert_eq!(p.url.as_str(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(
            p.headers.len(),
            1,
            "{:?}",
            p.headers.keys().collect::<Vec<_>>()
        );
        assert!(p.headers["authorization"].is_sensitive());
        let keyless: ProviderConfig =
            toml::from_str("kind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"").unwrap();
        let p = OpenAiProvider::new("p", &keyless).unwrap();
        assert!(p.headers.get("authorization").is_none());
    }
}
