//! What every HTTP upstream shares: the API key from the config, the reqwest client with its
//! timeouts, and the mapping of HTTP failures (error statuses, transport errors, broken
//! event streams) to [`ProviderError`]s. Each provider names its own error dialect: the
//! fields of its error object that hold the code.

use std::time::Duration;

use eventsource_stream::EventStreamError;
use secrecy::ExposeSecret;

use super::{ProviderConfig, ProviderError};

/// The key from `api_key_env` (preferred) or `api_key`; empty (with a warning) when neither.
pub(super) fn api_key(name: &str, config: &ProviderConfig) -> String {
    let key = match (&config.api_key_env, &config.api_key) {
        (Some(var), _) => std::env::var(var).unwrap_or_default(),
        (None, Some(key)) => key.expose_secret().to_string(),
        (None, None) => String::new(),
    };
    if key.is_empty() {
        tracing::warn!(
            provider = name,
            "no API key configured for provider; sending requests without one"
        );
    }
    key
}

/// One client per provider. No retries here: the gateway's router owns them (budgeted,
/// jittered, with failover and circuit breakers).
pub(super) fn client(config: &ProviderConfig) -> anyhow::Result<reqwest::Client> {
    // One TLS crypto provider for the process (ring: builds without cmake).
    crate::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        // An idle-read timeout, not a total one: long streams are fine, silence is not.
        // Streams are also watched per event, which fires first and is reported as a
        // timeout; this one covers non-streamed answers.
        .read_timeout(Duration::from_millis(config.read_timeout_ms + 1_000))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()?)
}

/// An error status (for a stream: before it began), with `Retry-After`. The message is the
/// upstream's own when the body is an error envelope (`{"error": {"message", ...}}`, or
/// Ollama's `{"error": "..."}`), its code the first of `code_fields` present; any other body
/// (a proxy's HTML page, plain text) is quoted, whitespace collapsed, up to
/// `MAX_QUOTED_CHARS` characters.
pub(super) async fn status_error(
    response: reqwest::Response,
    code_fields: &[&str],
) -> ProviderError {
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
        Some(e) => message_and_code(e, code_fields),
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

/// `message`, and the first of `code_fields` that is a string, of an error object.
pub(super) fn message_and_code(
    error: &serde_json::Value,
    code_fields: &[&str],
) -> (Option<String>, Option<String>) {
    let field = |name: &str| error.get(name).and_then(|v| v.as_str()).map(str::to_string);
    (
        field("message"),
        code_fields.iter().find_map(|name| field(name)),
    )
}

/// Longest part of a non-JSON error body passed on in an error message.
pub(super) const MAX_QUOTED_CHARS: usize = 200;

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

pub(super) fn map_event_error(e: EventStreamError<reqwest::Error>) -> ProviderError {
    match e {
        EventStreamError::Transport(e) => map_reqwest(&e),
        EventStreamError::Utf8(e) => ProviderError::Protocol(e.to_string()),
        EventStreamError::Parser(e) => ProviderError::Protocol(e.to_string()),
    }
}

pub(super) fn map_reqwest(e: &reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout
    } else {
        ProviderError::Connection(without_url(e))
    }
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
