//! Outbound email: providers behind one trait, an outbox written in the transaction of the
//! event that caused each mail (`crate::notify`), a job per mail that sends it at least once
//! with the provider's idempotency key (`outbox.rs`), the providers' delivery webhooks with a
//! suppression list that later sends respect (`events.rs`), and digests (`digest.rs`).
//!
//! - Resend: `POST {base}/emails`, `Authorization: Bearer`, `Idempotency-Key` header (the
//!   outbox id: a retried send is delivered once).
//! - Postmark: `POST {base}/email`, `X-Postmark-Server-Token`, a message stream per kind
//!   (transactional and broadcast kept apart); no idempotency header, so the outbox id goes
//!   as metadata and a send that Postmark accepted but whose answer was lost is sent again.
//! - SendGrid: `POST {base}/v3/mail/send`, `Authorization: Bearer`, `custom_args` carrying
//!   the outbox id; no idempotency header either.

pub mod digest;
pub mod events;
pub mod outbox;
mod providers;

pub use providers::{Postmark, Resend, SendGrid};

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// `[email]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `resend`, `postmark`, `sendgrid`, or `none` (notifications stay in the app).
    pub provider: String,
    /// The sender, e.g. `Acme <noreply@acme.dev>`.
    pub from: String,
    /// The API's base URL (each provider's own by default).
    pub base_url: Option<String>,
    /// The API key (Resend, SendGrid) or server token (Postmark), or the variable holding it.
    pub api_key: Option<secrecy::SecretString>,
    pub api_key_env: String,
    /// Postmark's message streams.
    pub transactional_stream: String,
    pub broadcast_stream: String,
    pub timeout_ms: u64,
    /// Delivery webhooks.
    pub webhooks: events::WebhooksConfig,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            provider: "none".into(),
            from: "Quartermaster <noreply@localhost.localdomain>".into(),
            base_url: None,
            api_key: None,
            api_key_env: "EMAIL_API_KEY".into(),
            transactional_stream: "outbound".into(),
            broadcast_stream: "broadcast".into(),
            timeout_ms: 10_000,
            webhooks: events::WebhooksConfig::default(),
        }
    }
}

impl EmailConfig {
    /// Whether mail is sent at all (otherwise emails stay in the outbox as `unsent`).
    pub fn enabled(&self) -> bool {
        self.provider != "none"
    }

    /// Checked at startup: a known provider.
    pub fn validate(&self) -> Result<(), String> {
        match self.provider.as_str() {
            "none" | "resend" | "postmark" | "sendgrid" => Ok(()),
            other => Err(format!(
                "[email] provider `{other}` is not one of resend, postmark, sendgrid, none"
            )),
        }
    }

    /// The configured provider (`None` for `none`).
    pub fn provider(&self) -> Option<Arc<dyn EmailProvider>> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(self.timeout_ms))
            .build()
            .expect("an HTTP client");
        let key = match &self.api_key {
            Some(k) => secrecy::ExposeSecret::expose_secret(k).to_string(),
            None => std::env::var(&self.api_key_env).unwrap_or_default(),
        };
        let base = |default: &str| self.base_url.clone().unwrap_or_else(|| default.into());
        Some(match self.provider.as_str() {
            "resend" => Arc::new(Resend {
                base: base("https://api.resend.com"),
                api_key: key,
                http,
            }),
            "postmark" => Arc::new(Postmark {
                base: base("https://api.postmarkapp.com"),
                server_token: key,
                transactional_stream: self.transactional_stream.clone(),
                broadcast_stream: self.broadcast_stream.clone(),
                http,
            }),
            "sendgrid" => Arc::new(SendGrid {
                base: base("https://api.sendgrid.com"),
                api_key: key,
                http,
            }),
            _ => return None,
        })
    }
}

/// One email to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    /// The outbox row's id: the idempotency key of every attempt.
    pub id: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Transactional (receipts, resets, reminders) or broadcast (digests).
    pub stream: Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    #[default]
    Transactional,
    Broadcast,
}

/// Why a send did not go.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Worth another attempt, after at least `retry_after_secs` when the provider said.
    #[error("{message}")]
    Retry {
        message: String,
        retry_after_secs: Option<u64>,
    },
    /// Refused for good (a bad address, a suppressed recipient, a bad request).
    #[error("{0}")]
    Rejected(String),
}

/// An email provider.
#[async_trait::async_trait]
pub trait EmailProvider: Send + Sync {
    fn name(&self) -> &'static str;

    /// Sends `email`; the provider's message id.
    async fn send(&self, email: &Email) -> Result<String, SendError>;

    /// Before a send is made again (an earlier attempt's answer may have been lost): the
    /// provider's id of the email if it was accepted after all, where the provider can say
    /// (Postmark's message search by metadata). `None`: not found, or cannot tell.
    async fn find_sent(&self, _email_id: &str) -> Result<Option<String>, SendError> {
        Ok(None)
    }
}

/// `Retry-After` as seconds from now: a number, or an HTTP date.
fn retry_after_secs(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let secs = at.as_second() - jiff::Timestamp::now().as_second();
    Some(secs.max(0) as u64)
}

/// A provider's HTTP answer as a [`SendError`]: 429, 408, 409 (Resend: the same idempotency
/// key still in flight) and 5xx (and no answer) retried, with `Retry-After` when given (in
/// seconds or as an HTTP date); other 4xx refused.
pub(crate) fn classify(status: u16, retry_after: Option<&str>, body: &str) -> SendError {
    let message = format!(
        "the provider answered {status}: {}",
        body.chars().take(300).collect::<String>()
    );
    if status == 429 || status >= 500 || status == 408 || status == 409 {
        SendError::Retry {
            message,
            retry_after_secs: retry_after.and_then(retry_after_secs),
        }
    } else {
        SendError::Rejected(message)
    }
}
