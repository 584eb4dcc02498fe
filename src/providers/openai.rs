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
use eventsource_stream::Eventsource;
use futures::StreamExt;

use super::ProviderConfig;
use super::transport::{self, map_event_error, map_reqwest, message_and_code};
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
        let api_key = transport::api_key(name, config);
        let http = transport::client(config)?;
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

/// An error status, in OpenAI's dialect (the code is the error object's `code`).
async fn status_error(response: reqwest::Response) -> ProviderError {
    transport::status_error(response, &["code"]).await
}

fn mid_stream_error(error: &serde_json::Value) -> ProviderError {
    let (message, code) = message_and_code(error, &["code"]);
    let message = message.unwrap_or_else(|| "upstream stream failed".to_string());
    ProviderError::MidStream { message, code }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::transport::MAX_QUOTED_CHARS;

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
