//! The chat pipeline, the same for every door: a normalised request in (the canonical
//! OpenAI-shaped body, the principal, the request's controls), then in order: grounding
//! requested?, the cache (exact, then by meaning; a hit is replayed and nothing else runs),
//! retrieval into the prompt, the routing decision, the limited-tenant filter, the budget
//! reservation, the upstream attempts (retries, failover, breakers: `route`), and the answer:
//! a whole completion or a stream of protocol-neutral events (`events.rs`). One accumulator
//! (`accumulate.rs`) serves both for usage, the cache write-back and the ledger (`usage`).
//! The doors (`api`) only decode and encode.

mod accumulate;
mod answer;
mod cache_step;
mod count;
pub mod events;
mod grounding;
mod reask;
mod routing;
mod run;

pub use events::{ChatEvent, ChoiceDelta, DeltaEvent, EventStream, ToolCallDelta};
pub use grounding::{RAG_HEADER, RAG_TOP_K_HEADER};
pub use reask::Reasker;
pub use routing::TIER_HEADER;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::cache::{Cache, ControlText, HitKind};
use crate::embed::EmbedService;
use crate::error::{Code, ErrorCode};
use crate::integrations::stripe::Billing;
use crate::providers::{ModelRegistry, ProviderError};
use crate::rag::{Rag, RagError};
use crate::route::{Breakers, Decision, Live};
use crate::store::{RequestLogWriter, Store};
use crate::types::{ChatCompletion, ChatCompletionRequest};
use crate::usage::{BudgetError, Budgets};

/// Output tokens reserved against budgets when the request sets no `max_tokens`.
const DEFAULT_RESERVED_OUTPUT_TOKENS: u32 = 1024;

/// What the pipeline needs, built once by the app.
pub struct Pipeline {
    pub models: ModelRegistry,
    /// Tiers, prices, thresholds, limits and the classifier: swapped whole on reload.
    pub live: ArcSwap<Live>,
    pub breakers: Breakers,
    pub budgets: Arc<Budgets>,
    pub cache: Option<Arc<Cache>>,
    pub rag: Option<Arc<Rag>>,
    pub embedder: Option<EmbedService>,
    pub store: Store,
    pub request_log: RequestLogWriter,
    pub billing: Arc<Billing>,
    /// The built-in local model's name, when it is enabled (what `auto` means without tiers).
    pub local_model: Option<String>,
    /// Cancelled when the shutdown grace period is over: open streams end with an error.
    pub grace_over: CancellationToken,
    /// Told of every request as it closes (server-side analytics), when configured.
    pub analytics: Option<Arc<dyn crate::usage::Tap>>,
    /// Re-asks a share of semantic hits in the background (`cache.reask_share`).
    pub reask: Reasker,
}

/// The request's controls, as the client sent them (the pipeline validates them, in the
/// order the steps run).
#[derive(Debug, Clone, Default)]
pub struct Controls {
    pub cache: ControlText,
    /// `x-quartermaster-rag`.
    pub rag: Option<String>,
    /// `x-quartermaster-rag-top-k`.
    pub rag_top_k: Option<String>,
    /// `x-quartermaster-tier`.
    pub tier: Option<String>,
    /// `x-quartermaster-analytics-consent`: the end user's consent, as the app knows it.
    pub consent: Option<String>,
    /// A request the gateway makes itself (a cache re-ask): it skips the cache without
    /// counting a bypass and is not told to analytics (the user's request already was).
    pub internal: bool,
}

/// One chat request, decoded by its door.
pub struct ChatRequest {
    /// The canonical body (OpenAI's chat completion request; other doors translate into it).
    pub body: ChatCompletionRequest,
    pub principal: Principal,
    pub controls: Controls,
    pub request_id: String,
    /// When the request arrived (latency, time to first token, the retry budget).
    pub started: Instant,
    /// The request's span: the pipeline's steps are its children (empty when tracing is
    /// off).
    pub trace: crate::telemetry::trace::Span,
}

/// How the cache took part.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheOutcome {
    Hit {
        kind: HitKind,
        similarity: f32,
        entry_id: String,
    },
    /// Looked up, not found.
    Miss,
    /// Not looked up (off, not cacheable, the store down).
    Bypass,
}

/// What a door reports beside the answer (as headers, or fields of its own).
#[derive(Debug, Clone)]
pub struct Meta {
    /// The model the client asked for (after the grounding prefix).
    pub requested_model: String,
    /// The model that answered (configured name; a cache hit's stored model).
    pub answered_by: String,
    /// The routing decision (none for a cache hit).
    pub route: Option<Decision>,
    pub cache: CacheOutcome,
    /// Chunks a grounded answer was given.
    pub grounded: Option<usize>,
    /// A grounded answer's citations.
    pub citations: Option<serde_json::Value>,
}

pub enum ChatBody {
    Whole(ChatCompletion),
    Stream(EventStream),
}

pub struct ChatResponse {
    pub meta: Meta,
    pub body: ChatBody,
}

/// Why a chat request failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<String>,
    },
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotFound(String),
    #[error("{0}")]
    PaymentRequired(String),
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// The upstream failed, after retries and failover (the last failure).
    #[error(transparent)]
    Upstream(ProviderError),
    /// No model could be tried (every circuit open).
    #[error("upstream unavailable")]
    NoUpstream,
    #[error(transparent)]
    Rag(RagError),
    /// The shutdown grace period ended the answer.
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl ErrorCode for ChatError {
    fn error_code(&self) -> Code {
        match self {
            ChatError::Invalid { .. } => Code::InvalidRequest,
            ChatError::ModelNotFound(_) => Code::ModelNotFound,
            ChatError::PaymentRequired(_) => Code::PaymentRequired,
            ChatError::Budget(b) => b.error_code(),
            ChatError::Upstream(p) => p.error_code(),
            ChatError::NoUpstream => Code::UpstreamUnavailable,
            ChatError::Rag(r) => r.error_code(),
            ChatError::ShuttingDown => Code::Overloaded,
        }
    }

    fn http_status(&self) -> u16 {
        match self {
            ChatError::Upstream(p) => p.http_status(),
            other => other.error_code().status(),
        }
    }
}

#[cfg(test)]
mod tests;
