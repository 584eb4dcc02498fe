//! What request handlers may use, built once at start and immutable after it. Handlers
//! take the part they need (`State<Arc<Pipeline>>` for the chat doors) through `FromRef`.

use std::sync::Arc;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;

use crate::auth::{FailedAuthLimiter, KeyVerifier};
use crate::chat::Pipeline;
use crate::config::Config;
use crate::integrations::stripe::Billing;
use crate::jobs::JobQueue;
use crate::store::{RequestLogWriter, Store};

pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    /// The chat pipeline and everything it owns (models, routing, cache, retrieval,
    /// embedder, budgets): shared by every chat door.
    pub chat: Arc<Pipeline>,
    pub keys: KeyVerifier,
    /// Failed authentications per client address.
    pub failed_auth: FailedAuthLimiter,
    pub request_log: RequestLogWriter,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Cancelled when shutdown begins (readiness turns false).
    pub shutdown: CancellationToken,
    pub started_at: i64,
    /// The durable job queue.
    pub jobs: JobQueue,
    pub billing: Arc<Billing>,
    /// SHA-256 of the admin key; `None` disables the admin API.
    pub admin_key: Option<[u8; 32]>,
    /// `/api/chat` answers still running, to resume.
    pub ui_streams: Arc<super::ui_chat::resume::Streams>,
    /// Stored Responses API responses, written in group commits.
    pub response_saver: crate::store::ResponseSaver,
    /// End users' tokens and sessions.
    pub identities: Arc<crate::auth::identity::Identities>,
    /// Scoped operator keys (by the SHA-256 of their secret) and their roles.
    pub operator_keys: Vec<([u8; 32], crate::auth::roles::Operator)>,
    /// The append-only, hash-chained audit log.
    pub audit: Arc<crate::audit::AuditLog>,
    /// Starts request spans (empty without `[tracing] otlp_endpoint`).
    pub tracer: crate::telemetry::trace::Tracer,
}

/// The chat doors' part of the state: the pipeline.
#[derive(Clone)]
pub struct Chat(pub Arc<Pipeline>);

impl FromRef<Arc<AppState>> for Chat {
    fn from_ref(state: &Arc<AppState>) -> Self {
        Chat(state.chat.clone())
    }
}
