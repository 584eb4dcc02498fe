//! The `[providers.NAME]` and `[models.NAME]` sections: upstreams, and the model names the
//! gateway serves on them (with their prices).

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible HTTP API: OpenAI, Groq, Together, vLLM, Ollama, ...
    Openai,
    /// Anthropic's Messages API (`{base_url}/messages`, `x-api-key`, `anthropic-version`).
    Anthropic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Name of the environment variable that holds the API key (preferred to `api_key`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The key itself; prefer `api_key_env` so the file holds no secret.
    #[serde(default)]
    pub api_key: Option<SecretString>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest silence between two reads from the upstream (a stalled stream fails after it).
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// `kind = "anthropic"`: the `anthropic-version` header (default `2023-06-01`).
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// `kind = "anthropic"`: beta features, sent comma-joined as `anthropic-beta`.
    #[serde(default)]
    pub anthropic_beta: Vec<String>,
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_read_timeout_ms() -> u64 {
    60_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A key of `[providers]`.
    pub provider: String,
    /// The model name sent upstream; defaults to the name clients use.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Price in USD per million input (prompt) tokens.
    #[serde(default)]
    pub input_usd_per_mtok: f64,
    /// Price in USD per million output (completion) tokens.
    #[serde(default)]
    pub output_usd_per_mtok: f64,
    /// Price in USD per million prompt tokens read from the upstream's prompt cache
    /// (Anthropic's `cache_read_input_tokens`, OpenAI's `cached_tokens`); default: the input
    /// price.
    #[serde(default)]
    pub cache_read_usd_per_mtok: Option<f64>,
    /// Price in USD per million prompt tokens written to the upstream's prompt cache
    /// (Anthropic's `cache_creation_input_tokens`); default: the input price.
    #[serde(default)]
    pub cache_write_usd_per_mtok: Option<f64>,
    /// Whether the model can call tools (function calling); requests that offer tools go
    /// only to models that can.
    #[serde(default = "yes")]
    pub supports_tools: bool,
}

impl ModelConfig {
    pub fn price(&self) -> crate::usage::Price {
        crate::usage::Price {
            input: self.input_usd_per_mtok,
            output: self.output_usd_per_mtok,
            cache_read: self
                .cache_read_usd_per_mtok
                .unwrap_or(self.input_usd_per_mtok),
            cache_write: self
                .cache_write_usd_per_mtok
                .unwrap_or(self.input_usd_per_mtok),
        }
    }
}

fn yes() -> bool {
    true
}
