//! The HTTP surface: routes, middleware (request ids, auth, rate limits, metrics, body
//! limits) and the fallbacks that keep every error in OpenAI's shape.

mod admin;
mod billing;
mod body;
mod cache;
mod chat_completions;
mod communications;
mod console;
pub mod controls;
mod documents;
mod embeddings;
pub mod error;
pub mod extractors;
pub mod idempotency;
mod identity;
mod messages;
mod notifications;
pub mod openapi;
mod ops;
mod responses;
mod sse;
mod state;
mod tenant;
pub mod trace;
mod ui_chat;
mod webhooks;

pub use admin::admin_key_hash;
pub use state::{AppState, Chat};

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{Principal, bearer_token};
use crate::error::ErrorCode;
use crate::store::Tenant;
use error::ApiError;
use extractors::BodyLimit;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: Arc<AppState>) -> Router {
    let config = state.config.clone();
    let v1 = Router::new()
        .route("/v1/models", get(chat_completions::list_models))
        .route("/v1/models/{id}", get(chat_completions::retrieve_model))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(responses::input_items),
        )
        .route("/v1/messages", post(messages::create))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/api/chat", post(ui_chat::chat))
        .route("/api/chat/{id}/stream", get(ui_chat::resume))
        .route(
            "/v1/chat/completions",
            post(chat_completions::chat_completions),
        )
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route(
            "/v1/cache/entries/{id}",
            get(cache::get_entry).delete(cache::delete_entry),
        )
        .route("/v1/cache/invalidate", post(cache::invalidate))
        .route("/v1/cache/feedback", post(cache::feedback))
        .route(
            "/v1/documents/{id}",
            get(documents::get).delete(documents::delete),
        )
        .route("/v1/retrieve", post(documents::retrieve))
        .route("/v1/usage", get(tenant::usage))
        .route("/v1/notifications", get(notifications::list))
        .route("/v1/notifications/stream", get(notifications::stream))
        .route("/v1/notifications/read-all", post(notifications::read_all))
        .route("/v1/notifications/{id}/read", post(notifications::read))
        .route("/v1/notifications/{id}/unread", post(notifications::unread))
        .route(
            "/v1/users/{id}/consent",
            get(tenant::get_consent).put(tenant::set_consent),
        )
        .route("/v1/billing", get(billing::status))
        .route("/v1/billing/checkout", post(billing::checkout))
        .route("/v1/billing/payment-intents", post(billing::payment_intent))
        .route("/v1/billing/portal", post(billing::portal))
        .route("/v1/billing/subscription", post(billing::change_plan))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ));
    // Uploads have their own body limit, which must hold before the idempotency layer
    // reads the body (and its 413s must state it).
    let upload = config.rag.max_upload_bytes;
    let documents = Router::new()
        .route(
            "/v1/documents",
            get(documents::list).post(documents::create),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .layer(DefaultBodyLimit::max(upload))
        .layer(middleware::from_fn(
            move |mut req: Request, next: Next| async move {
                req.extensions_mut().insert(BodyLimit(upload));
                next.run(req).await
            },
        ));
    let mut v1 = v1.merge(documents);
    if config.rate_limit.enabled {
        let governor = GovernorConfigBuilder::default()
            .per_nanosecond(1_000_000_000 / u64::from(config.rate_limit.requests_per_second))
            .burst_size(config.rate_limit.burst)
            .key_extractor(ApiKeyExtractor)
            .finish()
            .expect("rate limit validated at config load");
        v1 = v1.layer(GovernorLayer::new(governor).error_handler(|e| {
            match e {
                tower_governor::GovernorError::TooManyRequests { wait_time, .. } => {
                    ApiError::RateLimited {
                        retry_after_secs: wait_time.max(1),
                    }
                    .into_response()
                }
                other => ApiError::Internal(format!("rate limiter: {other}")).into_response(),
            }
        }));
    }
    let v1 = v1.layer(middleware::from_fn_with_state(state.clone(), authenticate));

    let limit = config.server.body_limit_bytes;
    let body_deadline = std::time::Duration::from_secs(config.server.body_read_timeout_secs.max(1));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/webhooks/stripe", post(webhooks::stripe))
        .route("/webhooks/identity/{source}", post(webhooks::identity))
        .route("/webhooks/cms/{source}", post(webhooks::cms))
        .route("/webhooks/sanity", post(webhooks::sanity))
        .route("/webhooks/contentful", post(webhooks::contentful))
        .route("/webhooks/email/{provider}", post(webhooks::email))
        .route("/webhooks/cal", post(webhooks::cal))
        .route("/webhooks/cal/{source}", post(webhooks::cal_source))
        .merge(admin::router(state.clone()))
        .merge(console::files(&config.admin.console_dir))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(door_errors))
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            trace::trace_requests,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |mut req: Request, next: Next| async move {
            req.extensions_mut().insert(BodyLimit(limit));
            let req = req.map(|b| {
                axum::body::Body::new(body::DeadlineBody::new(b, body_deadline))
            });
            next.run(req).await
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(cors(&config.server.cors))
        .with_state(state)
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of every route (`openapi/`).
async fn openapi_json() -> axum::Json<&'static serde_json::Value> {
    axum::Json(openapi::document())
}

/// Response headers a browser script may read: the gateway's own, the request id, and
/// what a client needs to retry.
const EXPOSED: &[&str] = &[
    "x-request-id",
    "retry-after",
    "idempotent-replayed",
    crate::cache::CACHE_HEADER,
    crate::cache::KIND_HEADER,
    crate::cache::SIMILARITY_HEADER,
    crate::cache::ENTRY_HEADER,
    crate::route::ROUTE_HEADER,
    crate::route::MODEL_HEADER,
    controls::GROUNDED_HEADER,
];

/// CORS for browsers calling the gateway directly (`[server.cors]`); with no origins
/// configured, no cross-origin request is allowed (a preflight gets no `Access-Control-*`).
fn cors(
    config: &crate::config::CorsConfig,
) -> tower::util::Either<CorsLayer, tower::layer::util::Identity> {
    if config.allowed_origins.is_empty() {
        return tower::util::Either::Right(tower::layer::util::Identity::new());
    }
    let origin = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let layer = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(
            EXPOSED
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .allow_credentials(config.allow_credentials)
        .max_age(std::time::Duration::from_secs(config.max_age_secs));
    tower::util::Either::Left(layer)
}

/// Errors in the shape of the door a request came to: Anthropic's for the Messages API,
/// OpenAI's (as written) everywhere else.
async fn door_errors(req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/v1/messages") {
        messages::error::anthropic_errors(req, next).await
    } else {
        next.run(req).await
    }
}

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
async fn authenticate(
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
struct ApiKeyExtractor;

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

async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = method_label(req.method());
    let response = next.run(req).await;
    let route = RouteMetrics::of(route.as_ref().map_or("unmatched", |p| p.as_str()));
    route
        .requests(method, response.status().as_u16())
        .increment(1);
    route.duration.record(start.elapsed().as_secs_f64());
    response
}

/// A method as a metric label; any other than the standard ones is `other` (a client may
/// send any token as a method: it must not make a new time series).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// A route's HTTP metrics, registered once (routes are the router's, so the set is
/// bounded): a label set written out per request costs a registry lookup and a copy of
/// each label string.
struct RouteMetrics {
    route: String,
    /// `qm_http_request_duration_seconds`.
    duration: metrics::Histogram,
    /// `qm_http_requests_total` by method and status.
    requests: std::sync::RwLock<std::collections::HashMap<(&'static str, u16), metrics::Counter>>,
}

impl RouteMetrics {
    fn of(route: &str) -> Arc<RouteMetrics> {
        static ROUTES: crate::telemetry::Kept<RouteMetrics> =
            crate::telemetry::Kept::new(usize::MAX);
        ROUTES.get(route, || RouteMetrics {
            route: route.to_string(),
            duration: metrics::histogram!("qm_http_request_duration_seconds", "route" => route.to_string()),
            requests: Default::default(),
        })
    }

    fn requests(&self, method: &'static str, status: u16) -> metrics::Counter {
        if let Some(c) = self
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(method, status))
        {
            return c.clone();
        }
        self.requests
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry((method, status))
            .or_insert_with(|| {
                metrics::counter!("qm_http_requests_total", "method" => method, "route" => self.route.clone(), "status" => status.to_string())
            })
            .clone()
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "method {} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}
