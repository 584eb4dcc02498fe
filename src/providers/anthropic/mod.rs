//! Anthropic's Messages API as an upstream (`kind = "anthropic"`). Chat requests are
//! translated into Messages requests (`request.rs`), answers back into chat completions
//! (`response.rs`) and Anthropic's typed SSE events into `chat.completion.chunk`s
//! (`stream.rs`), so the rest of the gateway sees OpenAI's wire format only.
//!
//! As in `openai.rs`: one reqwest client, the URL (`{base_url}/messages`) and headers
//! (`x-api-key`, `anthropic-version`, `anthropic-beta`) built once, no retries (the router
//! owns them), an idle timeout per stream event reported as a timeout, and the upstream's
//! error statuses (with `Retry-After`) passed on as `ProviderError::Status`. Anthropic's
//! `529 overloaded_error` keeps its status; the router retries every status from 500 up.

mod request;
mod response;
mod stream;

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

use super::ProviderConfig;
use super::transport::{self, map_event_error, map_reqwest};
use super::{ChunkStream, Provider, ProviderError};
use crate::types::{ChatCompletion, ChatCompletionRequest};

/// `anthropic-version` when the config names none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct AnthropicProvider {
    name: String,
    http: reqwest::Client,
    /// `{base_url}/messages`.
    url: reqwest::Url,
    /// `{base_url}/messages/count_tokens`.
    count_url: reqwest::Url,
    /// `x-api-key` (sensitive), `anthropic-version`, `anthropic-beta`, `content-type`.
    headers: HeaderMap,
    /// Longest wait for the next stream event.
    idle_timeout: Duration,
}

impl AnthropicProvider {
    pub fn new(name: &str, config: &ProviderConfig) -> anyhow::Result<Self> {
        let api_key = transport::api_key(name, config);
        let http = transport::client(config)?;
        let endpoint = |path: &str| {
            reqwest::Url::parse(&format!("{}/{path}", config.base_url.trim_end_matches('/')))
                .map_err(|e| anyhow::anyhow!("provider `{name}`: base_url is not a valid URL: {e}"))
        };
        let url = endpoint("messages")?;
        let count_url = endpoint("messages/count_tokens")?;
        let header = |what: &str, value: &str| {
            HeaderValue::from_str(value)
                .map_err(|_| anyhow::anyhow!("provider `{name}`: {what} is not a valid header"))
        };
        let mut headers = HeaderMap::new();
        if !api_key.is_empty() {
            let mut key = header("the API key", &api_key)?;
            key.set_sensitive(true);
            headers.insert("x-api-key", key);
        }
        let version = config
            .anthropic_version
            .as_deref()
            .unwrap_or(DEFAULT_ANTHROPIC_VERSION);
        headers.insert("anthropic-version", header("anthropic_version", version)?);
        if !config.anthropic_beta.is_empty() {
            let beta = config.anthropic_beta.join(",");
            headers.insert("anthropic-beta", header("anthropic_beta", &beta)?);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Self {
            name: name.to_string(),
            http,
            url,
            count_url,
            headers,
            idle_timeout: Duration::from_millis(config.read_timeout_ms),
        })
    }

    async fn send(&self, body: &serde_json::Value) -> Result<reqwest::Response, ProviderError> {
        self.post(&self.url, body).await
    }

    async fn post(
        &self,
        url: &reqwest::Url,
        body: &serde_json::Value,
    ) -> Result<reqwest::Response, ProviderError> {
        let body = serde_json::to_vec(body).map_err(|e| ProviderError::Protocol(e.to_string()))?;
        self.http
            .post(url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| map_reqwest(&e))
    }
}

#[async_trait::async_trait]
impl Provider for AnthropicProvider {
    fn protocol(&self) -> &'static str {
        "anthropic"
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(
        &self,
        request: ChatCompletionRequest,
    ) -> Result<ChatCompletion, ProviderError> {
        let body = request::messages_request(&request, false)?;
        let response = self.send(&body).await?;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let bytes = response.bytes().await.map_err(|e| map_reqwest(&e))?;
        let message = serde_json::from_slice(&bytes).map_err(|e| {
            ProviderError::Protocol(format!("the upstream's answer is not a message: {e}"))
        })?;
        Ok(response::completion(message))
    }

    async fn count_tokens(
        &self,
        request: &ChatCompletionRequest,
    ) -> Option<Result<u64, ProviderError>> {
        Some(self.count(request).await)
    }

    async fn stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream, ProviderError> {
        let body = request::messages_request(&request, true)?;
        let response = tokio::time::timeout(self.idle_timeout, self.send(&body))
            .await
            .map_err(|_| ProviderError::Timeout)??;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let mut events = response.bytes_stream().eventsource();
        let idle = self.idle_timeout;
        Ok(Box::pin(async_stream::stream! {
            let mut state = stream::StreamState::new(crate::clock::unix_now());
            loop {
                let event = match tokio::time::timeout(idle, events.next()).await {
                    Ok(Some(Ok(event))) => event,
                    Ok(Some(Err(e))) => {
                        yield Err(map_event_error(e));
                        break;
                    }
                    Ok(None) => {
                        // The body ended before `message_stop`: the answer is cut off.
                        yield Err(ProviderError::Connection("stream ended early".into()));
                        break;
                    }
                    Err(_) => {
                        yield Err(ProviderError::Timeout);
                        break;
                    }
                };
                match state.on_event(&event.event, &event.data) {
                    Ok(chunks) => {
                        for chunk in chunks {
                            yield Ok(chunk);
                        }
                        if state.is_done() {
                            break;
                        }
                    }
                    Err(e) => {
                        yield Err(e);
                        break;
                    }
                }
            }
        }))
    }
}

impl AnthropicProvider {
    /// `POST /v1/messages/count_tokens` with the fields it takes.
    async fn count(&self, request: &ChatCompletionRequest) -> Result<u64, ProviderError> {
        let mut body = request::messages_request(request, false)?;
        if let Some(o) = body.as_object_mut() {
            o.retain(|k, _| COUNTED_FIELDS.contains(&k.as_str()));
        }
        let response = self.post(&self.count_url, &body).await?;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let bytes = response.bytes().await.map_err(|e| map_reqwest(&e))?;
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("input_tokens").and_then(serde_json::Value::as_u64))
            .ok_or_else(|| {
                ProviderError::Protocol("the upstream's token count has no input_tokens".into())
            })
    }
}

/// The fields `count_tokens` accepts (it refuses `max_tokens`, `temperature` and the like).
const COUNTED_FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "mcp_servers",
];

/// An error status, in Anthropic's dialect
/// (`{"type":"error","error":{"type":"rate_limit_error","message"}}`: the code is the error's
/// `type`, or `code` from an OpenAI-shaped proxy in front).
async fn status_error(response: reqwest::Response) -> ProviderError {
    transport::status_error(response, &["type", "code"]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> ProviderConfig {
        toml::from_str(&format!(
            "kind = \"anthropic\"\nbase_url = \"https://api.anthropic.com/v1/\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn url_and_headers() {
        let p = AnthropicProvider::new("a", &config("api_key = \"sk-ant-test\"")).unwrap();
        assert_eq!(p.url.as_str(), "https://api.anthropic.com/v1/messages");
        assert_eq!(p.headers["x-api-key"], "sk-ant-test");
        assert!(p.headers["x-api-key"].is_sensitive());
        assert_eq!(p.headers["anthropic-version"], DEFAULT_ANTHROPIC_VERSION);
        assert_eq!(p.headers["content-type"], "application/json");
        assert!(p.headers.get("anthropic-beta").is_none());
        assert!(p.headers.get("authorization").is_none());

        let p = AnthropicProvider::new(
            "a",
            &config(
                "anthropic_version = \"2024-01-01\"\n\
                 anthropic_beta = [\"prompt-caching-2024-07-31\", \"output-128k-2025-02-19\"]",
            ),
        )
        .unwrap();
        assert!(p.headers.get("x-api-key").is_none());
        assert_eq!(p.headers["anthropic-version"], "2024-01-01");
        assert_eq!(
            p.headers["anthropic-beta"],
            "prompt-caching-2024-07-31,output-128k-2025-02-19"
        );
        assert!(
            toml::from_str::<ProviderConfig>(
                "kind = \"anthropic\"\nbase_url = \"x\"\nanthropic_betas = []"
            )
            .is_err(),
            "unknown fields are still refused"
        );
    }

    #[tokio::test]
    async fn anthropic_error_bodies() {
        let response = http::Response::builder()
            .status(429)
            .header("retry-after", "1")
            .body(
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
            )
            .unwrap();
        match status_error(reqwest::Response::from(response)).await {
            ProviderError::Status {
                status,
                message,
                code,
                retry_after_secs,
            } => {
                assert_eq!(status, 429);
                assert!(message.starts_with("Number of request tokens"), "{message}");
                assert_eq!(code.as_deref(), Some("rate_limit_error"));
                assert_eq!(retry_after_secs, Some(1));
            }
            other => panic!("{other:?}"),
        }
        let response = http::Response::builder()
            .status(529)
            .body(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
            .unwrap();
        let e = status_error(reqwest::Response::from(response)).await;
        assert_eq!(e.kind(), "server_error");
        assert!(
            matches!(&e, ProviderError::Status { status: 529, code: Some(c), .. } if c == "overloaded_error"),
            "{e:?}"
        );
        let response = http::Response::builder()
            .status(502)
            .body("<html>Bad gateway</html>")
            .unwrap();
        let e = status_error(reqwest::Response::from(response)).await;
        assert!(
            e.to_string()
                .contains("the upstream answered 502: <html>Bad gateway")
        );
    }
}
