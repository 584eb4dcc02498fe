//! The authentication middleware: the API key (`Authorization: Bearer` or `x-api-key`), an
//! end user's token or session, the failed-attempt limit per address, and the key the rate
//! limiter counts by.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_governor::key_extractor::KeyExtractor;

use super::AppState;
use super::error::ApiError;
use crate::auth::{Principal, bearer_token};
use crate::error::ErrorCode;
use crate::store::Tenant;

/// The caller's key: `Authorization: Bearer KEY`, or `x-api-key: KEY` (Anthropic's SDKs).
/// `None`: neither header; `Some(None)`: a header that holds no usable key.
fn presented_key(headers: &axum::http::HeaderMap) -> Option<Option<String>> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        return Some(v.to_str().ok().and_then(bearer_token).map(str::to_string));
    }
    headers.get("x-api-key").map(|v| {
        v.to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
    })
}

/// Resolves the bearer key to a [`Principal`] and attaches it to the request.
pub(super) async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let mut principal = if state.config.auth.required {
        let token = presented_key(req.headers());
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        match end_user(&state, peer, token.as_ref(), req.headers()).await {
            Some(Ok(p)) => p,
            Some(Err(response)) => return response,
            None => {
                // A key verified moments ago passes without a lookup (and so without the
                // limit).
                match token
                    .as_ref()
                    .and_then(|t| t.as_deref())
                    .and_then(|t| state.keys.remembered(t))
                {
                    Some(p) => p,
                    None => {
                        match verify_with_limit(&state, peer, token.as_ref().map(|t| t.as_deref()))
                            .await
                        {
                            Ok(p) => p,
                            Err(response) => return response,
                        }
                    }
                }
            }
        }
    } else {
        Principal::of_key(
            "anonymous".into(),
            Tenant {
                id: "default".into(),
                name: "default".into(),
            },
            false,
        )
    };
    // A tenant's API key may say which of its end users a request is for (an end user's
    // own credential may not speak for another).
    if !principal.personal
        && principal.user.is_none()
        && let Some(user) = req
            .headers()
            .get(USER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|u| !u.is_empty() && u.len() <= 256)
    {
        principal.user = Some(user.to_string());
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Request header: the end user an API-key caller makes the request for.
pub const USER_HEADER: &str = "x-quartermaster-user";

/// An end user's credential: an identity provider's token (a JWT where issuers are
/// configured) or an Auth.js session cookie (when no key is presented). `None`: neither, the
/// key path decides.
async fn end_user(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    token: Option<&Option<String>>,
    headers: &axum::http::HeaderMap,
) -> Option<Result<Principal, Response>> {
    let ids = &state.identities;
    let refused = |e: crate::auth::identity::IdentityError| {
        metrics::counter!("qm_auth_end_user_refusals_total", "reason" => e.kind()).increment(1);
        if matches!(e.error_code(), crate::error::Code::InvalidToken) {
            if let Some(ip) = peer {
                state.failed_auth.failed(ip);
            }
            state.audit.failed_auth(peer, e.kind());
        }
        ApiError::Coded {
            code: e.error_code(),
            message: e.to_string(),
        }
        .into_response()
    };
    match token {
        Some(Some(t))
            if ids.accepts_tokens() && crate::auth::jwt::JwtVerifier::looks_like_jwt(t) =>
        {
            if let Some(Err(retry_after_secs)) = peer.map(|ip| state.failed_auth.check(ip)) {
                return Some(Err(too_many_failures(retry_after_secs)));
            }
            Some(ids.token(t).await.map_err(refused))
        }
        None if ids.accepts_sessions() => {
            let cookie = headers.get(header::COOKIE)?.to_str().ok()?;
            Some(ids.session(cookie).await?.map_err(refused))
        }
        _ => None,
    }
}

fn too_many_failures(retry_after_secs: u64) -> Response {
    ApiError::LimitExceeded {
        code: crate::error::Code::TooManyFailedAuthentications,
        message: "too many failed authentications from this address; retry later".into(),
        retry_after_secs,
    }
    .into_response()
}

/// Verifies a key that is not in memory: an address that failed too often in the last
/// minute is refused before any lookup; a failure counts against its address.
async fn verify_with_limit(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    token: Option<Option<&str>>,
) -> Result<Principal, Response> {
    if let Some(Err(retry_after_secs)) = peer.map(|ip| state.failed_auth.check(ip)) {
        return Err(too_many_failures(retry_after_secs));
    }
    let failed = |e: ApiError| {
        if let Some(ip) = peer {
            state.failed_auth.failed(ip);
        }
        state.audit.failed_auth(peer, e.code());
        e.into_response()
    };
    let token = match token {
        None => return Err(failed(ApiError::MissingApiKey)),
        Some(None) => return Err(failed(ApiError::InvalidApiKey)),
        Some(Some(t)) => t,
    };
    match state.keys.verify(token).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(failed(ApiError::InvalidApiKey)),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// Rate limits are per API key (never per IP: many clients share a NAT, one key may not).
#[derive(Clone)]
pub(super) struct ApiKeyExtractor;

impl KeyExtractor for ApiKeyExtractor {
    type Key = String;

    fn extract<T>(
        &self,
        req: &axum::http::Request<T>,
    ) -> Result<Self::Key, tower_governor::GovernorError> {
        // An end user's token or session: limited per user (their issuer is one "key");
        // an API key: per key, whatever end user it names.
        req.extensions()
            .get::<Principal>()
            .map(|p| {
                match (
                    &p.user,
                    p.key_id.starts_with("jwt:") || p.key_id.starts_with("session:"),
                ) {
                    (Some(u), true) => format!("{}:{}:{u}", p.key_id, p.tenant.id),
                    _ => p.key_id.clone(),
                }
            })
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)
    }
}
