//! Errors in Anthropic's shape (`{"type":"error","error":{"type","message"}}`), for every
//! response of the Messages door: its own, and those the shared middleware writes (auth,
//! limits, body size, idempotency), which carry what they said as a [`Rendered`].

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};

use crate::api::error::Rendered;
use crate::error::Code;

/// Anthropic's error types.
const KINDS: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "timeout_error",
    "api_error",
    "overloaded_error",
];

/// The error's body in Anthropic's shape.
pub fn body(r: &Rendered) -> Value {
    let kind = match r.code {
        // An upstream's error keeps its own type when it is one of Anthropic's (an
        // Anthropic upstream's, mid-stream too), else the type its status means.
        Code::UpstreamError => match r.upstream_code.as_deref() {
            Some(c) if KINDS.contains(&c) => c,
            _ if r.status < 500 => Code::anthropic_kind_of_status(r.status),
            _ => "api_error",
        },
        code => code.anthropic_kind(),
    };
    json!({"type": "error", "error": {"type": kind, "message": r.message}})
}

/// Rewrites an error response in Anthropic's shape.
pub async fn anthropic_errors(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let Some(rendered) = response.extensions_mut().remove::<Rendered>() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body(&rendered).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: Code, status: u16, upstream: Option<&str>) -> String {
        body(&Rendered {
            code,
            status,
            message: "m".into(),
            upstream_code: upstream.map(str::to_string),
        })["error"]["type"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn types() {
        assert_eq!(kind(Code::InvalidJson, 400, None), "invalid_request_error");
        assert_eq!(kind(Code::InvalidApiKey, 401, None), "authentication_error");
        assert_eq!(kind(Code::ModelNotFound, 404, None), "not_found_error");
        assert_eq!(kind(Code::RequestTooLarge, 413, None), "request_too_large");
        assert_eq!(
            kind(Code::TokensPerMinuteExceeded, 429, None),
            "rate_limit_error"
        );
        assert_eq!(kind(Code::Overloaded, 503, None), "overloaded_error");
        assert_eq!(kind(Code::UpstreamUnavailable, 502, None), "api_error");
        assert_eq!(kind(Code::Internal, 500, None), "api_error");
        // An upstream's 4xx: its own type, else its status's.
        assert_eq!(
            kind(Code::UpstreamError, 429, Some("rate_limit_error")),
            "rate_limit_error"
        );
        assert_eq!(
            kind(Code::UpstreamError, 400, Some("mock_400")),
            "invalid_request_error"
        );
        assert_eq!(kind(Code::UpstreamError, 404, None), "not_found_error");
        assert_eq!(
            kind(Code::UpstreamError, 502, Some("overloaded_error")),
            "overloaded_error"
        );
        assert_eq!(
            kind(Code::UpstreamError, 502, Some("server_error")),
            "api_error"
        );
    }
}
