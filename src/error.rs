//! The API's error type and the one place that maps every failure to an HTTP status and a
//! stable machine code, in OpenAI's envelope `{"error":{"message","type","param","code"}}`.
//!
//! Handlers return `Result<_, ApiError>`; lower layers have their own error enums and convert
//! at the boundary. A 5xx never leaks internals: the cause is logged once, the client gets a
//! generic message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Every error the API can return, one variant per stable `code`.
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
    /// A document that cannot be ingested (unsupported type, corrupt, empty, too large).
    #[error("{message}")]
    Document {
        status: u16,
        code: &'static str,
        message: String,
    },
    #[error("missing API key")]
    MissingApiKey,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotFound(String),
    #[error("{0}")]
    NotFound(String),
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
    /// A per-tenant or per-key limit or budget (requests or tokens per minute, spend per
    /// day or month).
    #[error("{message}")]
    LimitExceeded {
        code: &'static str,
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

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: param.into(),
        }
    }

    /// `(status, type, code)`: the one table of the API's error codes.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            InvalidRequest { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            InvalidJson(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
            ),
            InvalidUtf8 => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_utf8",
            ),
            BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "unsupported_media_type",
            ),
            Document { status, code, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                "invalid_request_error",
                code,
            ),
            MissingApiKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "missing_api_key",
            ),
            InvalidApiKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
            ),
            ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            Overloaded { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "overloaded",
            ),
            Upstream { status, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                "upstream_error",
                "upstream_error",
            ),
            UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
            ),
            UpstreamUnavailable => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_unavailable",
            ),
            StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "store_unavailable",
            ),
            LimitExceeded { code, .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", code),
            InvalidSignature(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_signature",
            ),
            IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                "idempotency_key_reused",
            ),
            IdempotencyKeyInUse => (
                StatusCode::CONFLICT,
                "invalid_request_error",
                "idempotency_key_in_use",
            ),
            PaymentRequired(_) => (
                StatusCode::PAYMENT_REQUIRED,
                "billing_error",
                "payment_required",
            ),
            AdminUnauthorized => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_admin_key",
            ),
            AdminDisabled => (StatusCode::FORBIDDEN, "permission_error", "admin_disabled"),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    pub fn code(&self) -> &'static str {
        self.parts().2
    }

    /// The envelope the client sees; internals of a 500 are replaced by a generic message.
    pub fn envelope(&self) -> ErrorEnvelope<'static> {
        let (_, kind, code) = self.parts();
        let (message, param, code) = match self {
            ApiError::Internal(_) => ("internal server error".to_string(), None, code.to_string()),
            ApiError::InvalidRequest { message, param } => {
                (message.clone(), param.clone(), code.to_string())
            }
            ApiError::Upstream {
                message, code: up, ..
            } => (
                message.clone(),
                None,
                up.clone().unwrap_or_else(|| code.to_string()),
            ),
            other => (other.to_string(), None, code.to_string()),
        };
        ErrorEnvelope {
            error: ErrorBody {
                message,
                kind,
                param,
                code: Some(code),
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.envelope()).expect("error envelope serializes")
    }

    fn retry_after(&self) -> Option<u64> {
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, code = self.code(), "request failed");
        } else {
            tracing::debug!(error = %self, code = self.code(), "request rejected");
        }
        metrics::counter!("qm_errors_total", "code" => self.code()).increment(1);
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
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

impl From<crate::rag::RagError> for ApiError {
    fn from(e: crate::rag::RagError) -> Self {
        use crate::rag::{ExtractError, RagError};
        let doc = |status: u16, code: &'static str, message: String| ApiError::Document {
            status,
            code,
            message,
        };
        match e {
            RagError::Invalid(m) => ApiError::invalid(m, None),
            RagError::Extract(x) => match x {
                ExtractError::Unsupported(_) => doc(415, "unsupported_file_type", x.to_string()),
                ExtractError::CorruptPdf(_) => doc(422, "corrupt_document", x.to_string()),
                ExtractError::NotUtf8 => doc(422, "invalid_encoding", x.to_string()),
                ExtractError::Empty => doc(422, "empty_document", x.to_string()),
                ExtractError::BadLine { .. } => doc(422, "invalid_document", x.to_string()),
                ExtractError::TooLarge(_) => doc(413, "document_too_large", x.to_string()),
                ExtractError::Internal(m) => ApiError::Internal(format!("extraction: {m}")),
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
