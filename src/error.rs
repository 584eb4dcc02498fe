//! The one table of the gateway's error codes: every failure, whichever module it comes
//! from, is one of these [`Code`]s, each with its HTTP status, its OpenAI error `type` and
//! its stable machine name (meilisearch's `ErrorCode` pattern). Domain modules return their
//! own error types and say which code each is ([`ErrorCode`]); the HTTP layer turns codes
//! into responses in each door's own shape, and the request log records the same codes. No
//! module writes a code string of its own.

/// A stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    InvalidRequest,
    InvalidJson,
    InvalidUtf8,
    InvalidHttp,
    RequestTooLarge,
    RequestHeaderTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    UnsupportedFileType,
    CorruptDocument,
    InvalidEncoding,
    EmptyDocument,
    InvalidDocument,
    DocumentTooLarge,
    MissingApiKey,
    InvalidApiKey,
    /// An end user's token or session that does not verify.
    InvalidToken,
    /// An operator whose role does not allow the request.
    Forbidden,
    InvalidAdminKey,
    AdminDisabled,
    /// An operator enrolled in TOTP who sent no code (or a raw key where a console session
    /// is needed).
    MfaRequired,
    /// A TOTP code that is wrong, stale or already used.
    InvalidMfaCode,
    MfaAlreadyEnrolled,
    PaymentRequired,
    /// Payments are not set up here (no Stripe key).
    BillingNotConfigured,
    /// A tenant without the Stripe customer or subscription an operation needs.
    NoBillingAccount,
    /// The payment provider declined the card.
    CardDeclined,
    PaymentProviderRateLimited,
    PaymentProviderError,
    ModelNotFound,
    NotFound,
    MethodNotAllowed,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyKeyRequired,
    RateLimitExceeded,
    TooManyFailedAuthentications,
    RequestsPerMinuteExceeded,
    TokensPerMinuteExceeded,
    DailyBudgetExceeded,
    MonthlyBudgetExceeded,
    InvalidSignature,
    UpstreamError,
    UpstreamUnavailable,
    UpstreamTimeout,
    Overloaded,
    StoreUnavailable,
    Internal,
}

impl Code {
    /// `(HTTP status, OpenAI error type, machine name)`.
    pub const fn parts(self) -> (u16, &'static str, &'static str) {
        use Code::*;
        const REQ: &str = "invalid_request_error";
        match self {
            InvalidRequest => (400, REQ, "invalid_request"),
            InvalidJson => (400, REQ, "invalid_json"),
            InvalidUtf8 => (400, REQ, "invalid_utf8"),
            InvalidHttp => (400, REQ, "invalid_http"),
            RequestTooLarge => (413, REQ, "request_too_large"),
            RequestHeaderTooLarge => (431, REQ, "request_header_too_large"),
            RequestTimeout => (408, REQ, "request_timeout"),
            UnsupportedMediaType => (415, REQ, "unsupported_media_type"),
            UnsupportedFileType => (415, REQ, "unsupported_file_type"),
            CorruptDocument => (422, REQ, "corrupt_document"),
            InvalidEncoding => (422, REQ, "invalid_encoding"),
            EmptyDocument => (422, REQ, "empty_document"),
            InvalidDocument => (422, REQ, "invalid_document"),
            DocumentTooLarge => (413, REQ, "document_too_large"),
            MissingApiKey => (401, REQ, "missing_api_key"),
            InvalidApiKey => (401, REQ, "invalid_api_key"),
            InvalidToken => (401, REQ, "invalid_token"),
            Forbidden => (403, "permission_error", "insufficient_role"),
            InvalidAdminKey => (401, REQ, "invalid_admin_key"),
            AdminDisabled => (403, "permission_error", "admin_disabled"),
            MfaRequired => (401, REQ, "mfa_required"),
            InvalidMfaCode => (401, REQ, "invalid_mfa_code"),
            MfaAlreadyEnrolled => (409, REQ, "mfa_already_enrolled"),
            PaymentRequired => (402, "billing_error", "payment_required"),
            BillingNotConfigured => (404, REQ, "billing_not_configured"),
            NoBillingAccount => (409, "billing_error", "no_billing_account"),
            CardDeclined => (402, "card_error", "card_declined"),
            PaymentProviderRateLimited => {
                (429, "rate_limit_error", "payment_provider_rate_limited")
            }
            PaymentProviderError => (502, "upstream_error", "payment_provider_error"),
            ModelNotFound => (404, REQ, "model_not_found"),
            NotFound => (404, REQ, "not_found"),
            MethodNotAllowed => (405, REQ, "invalid_request"),
            IdempotencyKeyInUse => (409, REQ, "idempotency_key_in_use"),
            IdempotencyKeyReused => (422, REQ, "idempotency_key_reused"),
            IdempotencyKeyRequired => (400, REQ, "idempotency_key_required"),
            RateLimitExceeded => (429, "rate_limit_error", "rate_limit_exceeded"),
            TooManyFailedAuthentications => {
                (429, "rate_limit_error", "too_many_failed_authentications")
            }
            RequestsPerMinuteExceeded => (429, "rate_limit_error", "requests_per_minute_exceeded"),
            TokensPerMinuteExceeded => (429, "rate_limit_error", "tokens_per_minute_exceeded"),
            DailyBudgetExceeded => (429, "rate_limit_error", "daily_budget_exceeded"),
            MonthlyBudgetExceeded => (429, "rate_limit_error", "monthly_budget_exceeded"),
            InvalidSignature => (400, REQ, "invalid_signature"),
            UpstreamError => (502, "upstream_error", "upstream_error"),
            UpstreamUnavailable => (502, "upstream_error", "upstream_unavailable"),
            UpstreamTimeout => (504, "upstream_error", "upstream_timeout"),
            Overloaded => (503, "server_error", "overloaded"),
            StoreUnavailable => (503, "server_error", "store_unavailable"),
            Internal => (500, "server_error", "internal_error"),
        }
    }

    pub const fn status(self) -> u16 {
        self.parts().0
    }

    /// OpenAI's error `type`.
    pub const fn kind(self) -> &'static str {
        self.parts().1
    }

    pub const fn name(self) -> &'static str {
        self.parts().2
    }

    /// Anthropic's error `type` for this code (the Messages door's error shape). An
    /// upstream's own error keeps the type its status means (`upstream_kind`).
    pub const fn anthropic_kind(self) -> &'static str {
        use Code::*;
        match self {
            MissingApiKey | InvalidApiKey | InvalidAdminKey | InvalidToken | MfaRequired
            | InvalidMfaCode => "authentication_error",
            AdminDisabled | Forbidden => "permission_error",
            PaymentRequired | NoBillingAccount | CardDeclined => "billing_error",
            ModelNotFound | NotFound => "not_found_error",
            RequestTooLarge | DocumentTooLarge => "request_too_large",
            RateLimitExceeded
            | TooManyFailedAuthentications
            | RequestsPerMinuteExceeded
            | TokensPerMinuteExceeded
            | DailyBudgetExceeded
            | MonthlyBudgetExceeded
            | PaymentProviderRateLimited => "rate_limit_error",
            Overloaded => "overloaded_error",
            UpstreamTimeout | RequestTimeout => "timeout_error",
            UpstreamError | UpstreamUnavailable | StoreUnavailable | Internal
            | PaymentProviderError => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// Anthropic's error `type` for an upstream's error status passed on to the client.
    pub const fn anthropic_kind_of_status(status: u16) -> &'static str {
        match status {
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            529 | 503 => "overloaded_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }
}

/// A domain error's place in the table.
pub trait ErrorCode {
    fn error_code(&self) -> Code;

    /// The HTTP status; the code's own unless the error carries another (an upstream's 4xx
    /// is passed on as it came).
    fn http_status(&self) -> u16 {
        self.error_code().status()
    }
}

impl ErrorCode for crate::store::StoreError {
    fn error_code(&self) -> Code {
        if self.is_outage() {
            return Code::StoreUnavailable;
        }
        match self {
            crate::store::StoreError::NotFound(_) => Code::NotFound,
            _ => Code::Internal,
        }
    }
}

impl ErrorCode for crate::rag::ExtractError {
    fn error_code(&self) -> Code {
        use crate::rag::ExtractError::*;
        match self {
            Unsupported(_) => Code::UnsupportedFileType,
            CorruptPdf(_) => Code::CorruptDocument,
            NotUtf8 => Code::InvalidEncoding,
            Empty => Code::EmptyDocument,
            BadLine { .. } => Code::InvalidDocument,
            TooLarge(_) => Code::DocumentTooLarge,
            Internal(_) => Code::Internal,
        }
    }
}

impl ErrorCode for crate::embed::EmbedError {
    fn error_code(&self) -> Code {
        match self {
            crate::embed::EmbedError::Overloaded => Code::Overloaded,
            _ => Code::Internal,
        }
    }
}

impl ErrorCode for crate::rag::RagError {
    fn error_code(&self) -> Code {
        use crate::rag::RagError::*;
        match self {
            Invalid(_) => Code::InvalidRequest,
            Extract(x) => x.error_code(),
            Embed(x) => x.error_code(),
            Store(x) => x.error_code(),
            Template(_) | Internal(_) => Code::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_name_or_a_shared_reason() {
        // Only 405 shares `invalid_request` (with 400): a wrong method is a bad request.
        let all = [
            Code::InvalidRequest,
            Code::InvalidJson,
            Code::InvalidUtf8,
            Code::InvalidHttp,
            Code::RequestTooLarge,
            Code::RequestHeaderTooLarge,
            Code::RequestTimeout,
            Code::UnsupportedMediaType,
            Code::UnsupportedFileType,
            Code::CorruptDocument,
            Code::InvalidEncoding,
            Code::EmptyDocument,
            Code::InvalidDocument,
            Code::DocumentTooLarge,
            Code::MissingApiKey,
            Code::InvalidApiKey,
            Code::InvalidAdminKey,
            Code::AdminDisabled,
            Code::MfaRequired,
            Code::InvalidMfaCode,
            Code::MfaAlreadyEnrolled,
            Code::PaymentRequired,
            Code::ModelNotFound,
            Code::NotFound,
            Code::IdempotencyKeyInUse,
            Code::IdempotencyKeyReused,
            Code::RateLimitExceeded,
            Code::TooManyFailedAuthentications,
            Code::RequestsPerMinuteExceeded,
            Code::TokensPerMinuteExceeded,
            Code::DailyBudgetExceeded,
            Code::MonthlyBudgetExceeded,
            Code::InvalidSignature,
            Code::UpstreamError,
            Code::UpstreamUnavailable,
            Code::UpstreamTimeout,
            Code::Overloaded,
            Code::StoreUnavailable,
            Code::Internal,
        ];
        let mut names: Vec<&str> = all.iter().map(|c| c.name()).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(Code::MethodNotAllowed.name(), Code::InvalidRequest.name());
    }

    #[test]
    fn an_upstream_4xx_keeps_its_status() {
        use crate::providers::ProviderError;
        let e = ProviderError::Status {
            status: 404,
            message: "no".into(),
            code: None,
            retry_after_secs: None,
        };
        assert_eq!(
            (e.http_status(), e.error_code().name()),
            (404, "upstream_error")
        );
        let e = ProviderError::Status {
            status: 503,
            message: "no".into(),
            code: None,
            retry_after_secs: None,
        };
        assert_eq!(e.http_status(), 502);
        assert_eq!(ProviderError::Timeout.http_status(), 504);
    }
}
