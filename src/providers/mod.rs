//! Model providers behind one trait. The API layer asks a provider for a completion or a
//! stream of chunks and never sees HTTP clients or model code; one file per backend.

mod anthropic;
mod config;
pub mod local;
mod openai;
mod transport;

pub use anthropic::AnthropicProvider;
pub use config::{ModelConfig, ProviderConfig, ProviderKind};
pub use local::{LocalConfig, LocalProvider};
pub use openai::OpenAiProvider;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

use crate::types::{ChatChunk, ChatCompletion, ChatCompletionRequest};

/// Why a provider call failed, in terms the router and the API can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The upstream answered with an error status (its message and code are kept).
    #[error("upstream returned {status}: {message}")]
    Status {
        status: u16,
        message: String,
        code: Option<String>,
        retry_after_secs: Option<u64>,
    },
    /// No answer within the connect or read timeout (including a stalled stream).
    #[error("upstream timed out")]
    Timeout,
    /// Connection refused, reset, or closed mid-response.
    #[error("upstream connection failed: {0}")]
    Connection(String),
    /// The upstream reported an error event in the middle of a stream.
    #[error("upstream stream failed: {message}")]
    MidStream {
        message: String,
        code: Option<String>,
    },
    /// The upstream sent something that is not OpenAI's wire format.
    #[error("upstream sent an invalid response: {0}")]
    Protocol(String),
}

impl ProviderError {
    /// A low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Status { status: 429, .. } => "rate_limited",
            ProviderError::Status { status, .. } if *status >= 500 => "server_error",
            ProviderError::Status { .. } => "client_error",
            ProviderError::Timeout => "timeout",
            ProviderError::Connection(_) => "connection",
            ProviderError::MidStream { .. } => "mid_stream",
            ProviderError::Protocol(_) => "protocol",
        }
    }
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, ProviderError>> + Send>>;

/// A backend that can answer chat requests. The request's `model` is already the name the
/// backend expects. Dropping a returned stream cancels the generation upstream.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &str;

    /// The wire protocol spoken upstream, as traces name it (`gen_ai.provider.name`).
    fn protocol(&self) -> &'static str {
        "openai"
    }

    async fn complete(
        &self,
        request: ChatCompletionRequest,
    ) -> Result<ChatCompletion, ProviderError>;

    /// Streams chunks. Providers request usage from the upstream whatever the client asked,
    /// so the gateway can account for every token; the API layer decides what to forward.
    async fn stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream, ProviderError>;

    /// The request's input tokens as the upstream counts them, when it can say (Anthropic's
    /// `count_tokens`); `None`: the gateway estimates.
    async fn count_tokens(
        &self,
        _request: &ChatCompletionRequest,
    ) -> Option<Result<u64, ProviderError>> {
        None
    }
}

/// A served model: what clients call it, which provider answers, and under what name.
#[derive(Clone)]
pub struct ModelRoute {
    pub name: String,
    pub upstream_model: String,
    pub provider: Arc<dyn Provider>,
    /// The model can call tools (a request offering tools is never routed to one that
    /// cannot).
    pub supports_tools: bool,
}

/// Every model the gateway serves, built from config.
#[derive(Clone, Default)]
pub struct ModelRegistry {
    models: BTreeMap<String, ModelRoute>,
}

impl ModelRegistry {
    /// The served models: the `[models]` on their `[providers]`, and the local model.
    pub fn build(
        provider_configs: &BTreeMap<String, ProviderConfig>,
        model_configs: &BTreeMap<String, ModelConfig>,
        local_config: &LocalConfig,
    ) -> anyhow::Result<Self> {
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        for (name, p) in provider_configs {
            let provider: Arc<dyn Provider> = match p.kind {
                ProviderKind::Openai => Arc::new(OpenAiProvider::new(name, p)?),
                ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(name, p)?),
            };
            providers.insert(name.clone(), provider);
        }
        let mut models = BTreeMap::new();
        if local_config.enabled {
            let local: Arc<dyn Provider> = Arc::new(LocalProvider::load(local_config)?);
            let name = local_config.model_name.clone();
            models.insert(
                name.clone(),
                ModelRoute {
                    name: name.clone(),
                    upstream_model: name,
                    provider: local.clone(),
                    // SmolLM2-135M answers a tool request with prose.
                    supports_tools: false,
                },
            );
            providers.insert("local".into(), local);
        }
        for (name, m) in model_configs {
            let provider = providers
                .get(&m.provider)
                .expect("config validation checked the provider")
                .clone();
            let upstream_model = m.upstream_model.clone().unwrap_or_else(|| name.clone());
            models.insert(
                name.clone(),
                ModelRoute {
                    name: name.clone(),
                    upstream_model,
                    provider,
                    supports_tools: m.supports_tools,
                },
            );
        }
        Ok(Self { models })
    }

    pub fn insert(&mut self, route: ModelRoute) {
        self.models.insert(route.name.clone(), route);
    }

    pub fn get(&self, name: &str) -> Option<&ModelRoute> {
        self.models.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ModelRoute> {
        self.models.values()
    }
}

impl ProviderError {
    /// The upstream refused the gateway's own credentials (401, 403, 407): the operator's
    /// key, not the client's request, is at fault, so the client sees a 502 and the next
    /// model is tried (retrying the same key cannot help).
    pub fn credentials_refused(&self) -> bool {
        matches!(
            self,
            ProviderError::Status {
                status: 401 | 403 | 407,
                ..
            }
        )
    }
}

/// Where a provider's failure sits in the one table of error codes (`crate::error`).
impl crate::error::ErrorCode for ProviderError {
    fn error_code(&self) -> crate::error::Code {
        use ProviderError::*;
        match self {
            Status { .. } | MidStream { .. } => crate::error::Code::UpstreamError,
            Timeout => crate::error::Code::UpstreamTimeout,
            Connection(_) | Protocol(_) => crate::error::Code::UpstreamUnavailable,
        }
    }

    /// An upstream's 4xx is the client's business and keeps its status (but a refusal of the
    /// gateway's credentials); anything else the upstream did wrong is a 502 (a timeout a 504).
    fn http_status(&self) -> u16 {
        match self {
            ProviderError::Status { status, .. }
                if (400..500).contains(status) && !self.credentials_refused() =>
            {
                *status
            }
            other => other.error_code().status(),
        }
    }
}
