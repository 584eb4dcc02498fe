//! The API's error type: every failure a handler returns, as a [`Code`] of the one table
//! (`crate::error`) with its message, in OpenAI's envelope
//! `{"error":{"message","type","param","code"}}`.
//!
//! Domain errors convert here (`From` impls below), each by its own [`ErrorCode`]: no
//! handler or domain module picks a status or writes a code string. A 5xx never leaks
//! internals: the cause is logged once, the client gets a generic message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use crate::error::{Code, ErrorCode};

/// Every error the API can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("request body is not valid UTF-8")]
    InvalidUtf8,
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body did not arrive in time (server.body_read_timeout_secs)")]
    RequestTimeout,
    #[error("unsupported media type: expected application/json")]
    UnsupportedMediaType,
    /// A document that cannot be ingested (unsupported type, corrupt, empty, too large), or
    /// any other failure carried with its code (a batch item's copy of its error).
    #[error("{message}")]
    Coded { code: Code, message: String },
    #[error("missing API key")]
    MissingApiKey,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("rate limit exceeded: retry after {retry_after_secs}s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },
    /// The upstream answered with an error status; its message is passed on because it is
    /// the client's business (bad parameters, content policy, quota), not ours.
    #[error("upstream error ({status}): {message}")]
    Upstream {
        status: u16,
        message: String,
        code: Option<String>,
    },
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The database cannot be reached or does not take writes right now.
    #[error("the service's database is unavailable; retry shortly")]
    StoreUnavailable,
    /// A per-tenant or per-key limit or budget, or the failed-authentication limit.
    #[error("{message}")]
    LimitExceeded {
        code: Code,
        message: String,
        retry_after_secs: u64,
    },
    #[error("invalid webhook signature: {0}")]
    InvalidSignature(String),
    #[error("this Idempotency-Key was used with a different request; use a new key")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still in progress; retry shortly")]
    IdempotencyKeyInUse,
    /// The tenant is past its dunning grace period: only some models are served.
    #[error("{0}")]
    PaymentRequired(String),
    #[error("missing or invalid admin key")]
    AdminUnauthorized,
    #[error("the admin API is disabled: set admin.api_key_env (or admin.api_key)")]
    AdminDisabled,
    /// Anything else: logged with its cause, returned as a generic 500.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What an error response says, kept on it (a response extension) so that a door with an
/// error shape of its own (the Messages API's) can write it in that shape instead.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub code: Code,
    pub status: u16,
    /// The message the client sees (a 5xx's internals already replaced).
    pub message: String,
    /// An upstream's own error code, when the error is the upstream's.
    pub upstream_code: Option<String>,
}

/// OpenAI's error envelope.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope<'a> {
    pub error: ErrorBody<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ErrorCode for ApiError {
    fn error_code(&self) -> Code {
        use ApiError::*;
        match self {
            InvalidRequest { .. } => Code::InvalidRequest,
            InvalidJson(_) => Code::InvalidJson,
            InvalidUtf8 => Code::InvalidUtf8,
            BodyTooLarge { .. } => Code::RequestTooLarge,
            RequestTimeout => Code::RequestTimeout,
            UnsupportedMediaType => Code::UnsupportedMediaType,
            Coded { code, .. } => *code,
            MissingApiKey => Code::MissingApiKey,
            InvalidApiKey => Code::InvalidApiKey,
            ModelNotFound(_) => Code::ModelNotFound,
            NotFound(_) => Code::NotFound,
            MethodNotAllowed(_) => Code::MethodNotAllowed,
            RateLimited { .. } => Code::RateLimitExceeded,
            Overloaded { .. } => Code::Overloaded,
            Upstream { .. } => Code::UpstreamError,
            UpstreamTimeout => Code::UpstreamTimeout,
            UpstreamUnavailable => Code::UpstreamUnavailable,
            StoreUnavailable => Code::StoreUnavailable,
            LimitExceeded { code, .. } => *code,
            InvalidSignature(_) => Code::InvalidSignature,
            IdempotencyKeyReused => Code::IdempotencyKeyReused,
            IdempotencyKeyInUse => Code::IdempotencyKeyInUse,
            PaymentRequired(_) => Code::PaymentRequired,
            AdminUnauthorized => Code::InvalidAdminKey,
            AdminDisabled => Code::AdminDisabled,
            Internal(_) => Code::Internal,
        }
    }

    fn http_status(&self) -> u16 {
        match self {
            ApiError::Upstream { status, .. } => *status,
            other => other.error_code().status(),
        }
    }
}

impl ApiError {
    /// A domain error carried with its code and its message (an outage keeps its own
    /// mapping: `StoreUnavailable` with its generic message).
    pub fn coded<E: ErrorCode + std::fmt::Display>(e: &E) -> Self {
        match e.error_code() {
            Code::StoreUnavailable => ApiError::StoreUnavailable,
            code => ApiError::Coded {
                code,
                message: e.to_string(),
            },
        }
    }

    pub fn invalid(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: param.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The machine name of this error's code.
    pub fn code(&self) -> &'static str {
        self.error_code().name()
    }

    /// The envelope the client sees; internals of a 500 are replaced by a generic message.
    pub fn envelope(&self) -> ErrorEnvelope<'static> {
        let code = self.error_code();
        let (message, param, name) = match self {
            ApiError::Internal(_) => (
                "internal server error".to_string(),
                None,
                code.name().to_string(),
            ),
            ApiError::InvalidRequest { message, param } => {
                (message.clone(), param.clone(), code.name().to_string())
            }
            ApiError::Upstream {
                message, code: up, ..
            } => (
                message.clone(),
                None,
                up.clone().unwrap_or_else(|| code.name().to_string()),
            ),
            other => (other.to_string(), None, code.name().to_string()),
        };
        ErrorEnvelope {
            error: ErrorBody {
                message,
                kind: code.kind(),
                param,
                code: Some(name),
            },
        }
    }

    /// What the client is told, in no particular shape.
    pub fn rendered(&self) -> Rendered {
        let envelope = self.envelope();
        Rendered {
            code: self.error_code(),
            status: self.http_status(),
            message: envelope.error.message,
            upstream_code: match self {
                ApiError::Upstream { code, .. } => code.clone(),
                _ => None,
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.envelope()).expect("error envelope serializes")
    }

    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs }
            | ApiError::LimitExceeded {
                retry_after_secs, ..
            }
            | ApiError::Overloaded {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ApiError::StoreUnavailable => Some(1),
            _ => None,
        }
    }

    /// A copy that keeps status, code and text (ApiError is not Clone: it wraps sources).
    pub fn copied(&self) -> ApiError {
        ApiError::Coded {
            code: self.error_code(),
            message: self.envelope().error.message,
        }
    }

    /// Counts and logs the error once (5xx at error level, the rest at debug).
    pub fn record(&self) {
        if self.status().is_server_error() {
            tracing::error!(error = %self, code = self.code(), "request failed");
        } else {
            tracing::debug!(error = %self, code = self.code(), "request rejected");
        }
        metrics::counter!("qm_errors_total", "code" => self.code()).increment(1);
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.record();
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(self.rendered());
        response
    }
}

impl From<crate::integrations::stripe::webhook::WebhookError> for ApiError {
    fn from(e: crate::integrations::stripe::webhook::WebhookError) -> Self {
        use crate::integrations::stripe::webhook::WebhookError;
        match e {
            WebhookError::Disabled => ApiError::NotFound(e.to_string()),
            WebhookError::Signature(m) => ApiError::InvalidSignature(m),
            WebhookError::Json(m) => ApiError::InvalidJson(m),
            WebhookError::Utf8 => ApiError::InvalidUtf8,
            WebhookError::Invalid { message, param } => {
                ApiError::invalid(message, param.map(str::to_string))
            }
            WebhookError::Store(s) => ApiError::from(s),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        if e.is_outage() {
            tracing::warn!(error = %e, "store unavailable");
            return ApiError::StoreUnavailable;
        }
        match e {
            StoreError::NotFound(m) => ApiError::NotFound(m),
            other => ApiError::Internal(format!("store: {other}")),
        }
    }
}

impl From<crate::providers::ProviderError> for ApiError {
    /// What the client sees of an upstream that failed (after retries and failover).
    fn from(e: crate::providers::ProviderError) -> Self {
        use crate::providers::ProviderError;
        if e.credentials_refused() {
            return ApiError::Upstream {
                status: 502,
                message: "the upstream provider refused the gateway's credentials".into(),
                code: Some("upstream_error".into()),
            };
        }
        match e {
            ProviderError::Status {
                status,
                message,
                code,
                ..
            } if (400..500).contains(&status) => ApiError::Upstream {
                status,
                message,
                code,
            },
            ProviderError::Status { status, .. } => ApiError::Upstream {
                status: 502,
                message: format!("the upstream provider failed (status {status})"),
                code: Some("upstream_error".into()),
            },
            ProviderError::MidStream { message, code } => ApiError::Upstream {
                status: 502,
                message,
                code,
            },
            ProviderError::Timeout => ApiError::UpstreamTimeout,
            ProviderError::Connection(_) | ProviderError::Protocol(_) => {
                ApiError::UpstreamUnavailable
            }
        }
    }
}

impl From<crate::usage::BudgetError> for ApiError {
    fn from(e: crate::usage::BudgetError) -> Self {
        match e {
            crate::usage::BudgetError::Exceeded {
                code,
                message,
                retry_after_secs,
            } => ApiError::LimitExceeded {
                code,
                message,
                retry_after_secs,
            },
            crate::usage::BudgetError::Store(s) => ApiError::from(s),
        }
    }
}

impl From<crate::chat::ChatError> for ApiError {
    fn from(e: crate::chat::ChatError) -> Self {
        use crate::chat::ChatError;
        match e {
            ChatError::Invalid { message, param } => ApiError::invalid(message, param),
            ChatError::ModelNotFound(m) => ApiError::ModelNotFound(m),
            ChatError::PaymentRequired(m) => ApiError::PaymentRequired(m),
            ChatError::Budget(b) => ApiError::from(b),
            ChatError::Upstream(p) => ApiError::from(p),
            ChatError::NoUpstream => ApiError::UpstreamUnavailable,
            ChatError::Rag(r) => ApiError::from(r),
            ChatError::ShuttingDown => ApiError::Overloaded {
                message: "the server is shutting down".into(),
                retry_after_secs: 1,
            },
        }
    }
}

impl From<crate::rag::RagError> for ApiError {
    fn from(e: crate::rag::RagError) -> Self {
        use crate::rag::{ExtractError, RagError};
        match e {
            RagError::Invalid(m) => ApiError::invalid(m, None),
            RagError::Extract(ExtractError::Internal(m)) => {
                ApiError::Internal(format!("extraction: {m}"))
            }
            RagError::Extract(x) => ApiError::Coded {
                code: x.error_code(),
                message: x.to_string(),
            },
            RagError::Embed(crate::embed::EmbedError::Overloaded) => ApiError::Overloaded {
                message: "the embedding queue is full".into(),
                retry_after_secs: 1,
            },
            RagError::Embed(x) => ApiError::Internal(format!("embedding: {x}")),
            RagError::Store(x) => ApiError::from(x),
            RagError::Template(x) => ApiError::Internal(format!("grounding template: {x}")),
            RagError::Internal(x) => ApiError::Internal(x),
        }
    }
}
