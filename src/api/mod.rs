//! The HTTP surface: routes, middleware (request ids, auth, rate limits, metrics, body
//! limits) and the fallbacks that keep every error in OpenAI's shape.

mod admin;
mod authn;
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
mod route_metrics;
mod sse;
mod state;
mod tenant;
pub mod trace;
mod ui_chat;
mod webhooks;

pub use admin::admin_key_hash;
pub use authn::USER_HEADER;
pub use state::{AppState, Chat};

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use authn::{ApiKeyExtractor, authenticate};
use error::ApiError;
use extractors::BodyLimit;
use route_metrics::record_metrics;

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
