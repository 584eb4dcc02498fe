//! Webhook signature schemes, one implementation per family, shared by every sender of it:
//! each verifies the raw body before anything parses it, compares in constant time, and
//! refuses stale timestamps.
//!
//! - `standard_webhooks`: Standard Webhooks / Svix (Clerk, Supabase, Resend).
//! - `timestamped_hmac`: `t=...,v1=...` in one header (Sanity).
//! - `hex_hmac`: a hex HMAC of the body alone (Cal.com).
//! - `ecdsa_p256`: an ECDSA signature over timestamp and body (SendGrid's Event Webhook).
//! - `canonical_request`: an HMAC over method, path, chosen headers and body (Contentful).

pub mod canonical_request;
pub mod ecdsa_p256;
pub mod hex_hmac;
pub mod standard_webhooks;
pub mod timestamped_hmac;

/// The most signatures one header may offer that are checked (rotation sends two or three):
/// the rest are ignored, so a header of thousands costs no more than a handful.
pub const MAX_SIGNATURES: usize = 8;

/// Why a webhook delivery was refused, for every sender: one mapping to the API's codes.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid webhook signature: {0}")]
    Signature(String),
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl crate::error::ErrorCode for WebhookError {
    fn error_code(&self) -> crate::error::Code {
        use crate::error::Code;
        match self {
            WebhookError::Signature(_) => Code::InvalidSignature,
            WebhookError::Json(_) => Code::InvalidJson,
            WebhookError::Invalid(_) => Code::InvalidRequest,
            WebhookError::NotFound(_) => Code::NotFound,
            WebhookError::Store(e) => e.error_code(),
        }
    }
}

/// The secrets given inline plus those in the variable `env` (comma-separated).
pub fn secret_texts(inline: &[secrecy::SecretString], env: Option<&str>) -> Vec<String> {
    use secrecy::ExposeSecret;
    let mut out: Vec<String> = inline
        .iter()
        .map(|s| s.expose_secret().trim().to_string())
        .collect();
    if let Some(var) = env
        && let Ok(v) = std::env::var(var)
    {
        out.extend(v.split(',').map(|s| s.trim().to_string()));
    }
    out.retain(|s| !s.is_empty());
    out
}
