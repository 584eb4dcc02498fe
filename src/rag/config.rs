//! The `[rag]` configuration: which store, how documents are chunked and embedded, how
//! retrieval ranks and how grounding fills the prompt. Apart from the service so the
//! settings and their validation read in one place.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ground::DEFAULT_TEMPLATE_PATH;
use super::{ChunkParams, ExtractConfig, PgVectorParams};
use crate::index::HnswParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// pgvector when the database is PostgreSQL, else embedded.
    #[default]
    Auto,
    Pgvector,
    Embedded,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Vector and full-text rankings fused by reciprocal rank fusion.
    Hybrid,
    /// The default: on the DBpedia evaluation set vector-only ranked best (README,
    /// "Retrieval quality").
    #[default]
    Vector,
    Text,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Vector => "vector",
            Mode::Text => "text",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalConfig {
    pub mode: Mode,
    /// Chunks returned when a request names no `top_k`.
    pub top_k: usize,
    /// The most a request may ask for.
    pub max_top_k: usize,
    /// Candidates taken from each ranking before fusion.
    pub candidates: usize,
    /// RRF's k: a chunk at rank r (1-based) of a ranking scores weight / (k + r).
    pub rrf_k: f32,
    pub vector_weight: f32,
    pub text_weight: f32,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Vector,
            top_k: 5,
            max_top_k: 100,
            candidates: 50,
            rrf_k: 60.0,
            vector_weight: 1.0,
            text_weight: 1.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroundingConfig {
    /// A request whose model starts with this prefix is grounded (`rag/auto`, `rag/gpt-4o`);
    /// the rest of the name is the model. The header `x-quartermaster-rag: on` does the same.
    pub model_prefix: String,
    /// The prompt template (minijinja), read at start.
    pub template: PathBuf,
    /// Chunks put into the prompt.
    pub top_k: usize,
    /// The context's token budget: chunks past it are left out.
    pub max_context_tokens: usize,
}

impl Default for GroundingConfig {
    fn default() -> Self {
        Self {
            model_prefix: "rag/".into(),
            template: PathBuf::from(DEFAULT_TEMPLATE_PATH),
            top_k: 5,
            max_context_tokens: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RagConfig {
    pub enabled: bool,
    pub store: StoreKind,
    /// Most tokens in a chunk (the embedder reads 256 at most, title included).
    pub chunk_tokens: usize,
    /// Tokens of the previous chunk repeated at the start of the next (same section only).
    pub chunk_overlap_tokens: usize,
    /// Texts per embedding call while ingesting.
    pub embed_batch: usize,
    /// A document larger than this (bytes, before extraction) is refused.
    pub max_document_bytes: usize,
    /// Body limit of `POST /v1/documents` (uploads are larger than chat requests).
    pub max_upload_bytes: usize,
    pub retrieval: RetrievalConfig,
    pub grounding: GroundingConfig,
    /// The embedded store's hnsw_rs graph.
    pub hnsw: HnswParams,
    /// The pgvector HNSW index.
    pub pgvector: PgVectorParams,
    /// Caps on extracting one document (text, inflated streams, the PDF helper's limits).
    pub extract: ExtractConfig,
}

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            store: StoreKind::Auto,
            chunk_tokens: 200,
            chunk_overlap_tokens: 40,
            embed_batch: 32,
            max_document_bytes: 10 * 1024 * 1024,
            max_upload_bytes: 32 * 1024 * 1024,
            retrieval: RetrievalConfig::default(),
            grounding: GroundingConfig::default(),
            hnsw: HnswParams {
                ef_search: 100,
                ..HnswParams::default()
            },
            pgvector: PgVectorParams::default(),
            extract: ExtractConfig::default(),
        }
    }
}

impl RagConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.chunk_tokens < 16 {
            return Err("rag.chunk_tokens must be at least 16".into());
        }
        if self.chunk_overlap_tokens >= self.chunk_tokens {
            return Err("rag.chunk_overlap_tokens must be below rag.chunk_tokens".into());
        }
        if self.embed_batch == 0 {
            return Err("rag.embed_batch must be at least 1".into());
        }
        let r = &self.retrieval;
        if r.top_k == 0 || r.top_k > r.max_top_k {
            return Err("rag.retrieval.top_k must be between 1 and rag.retrieval.max_top_k".into());
        }
        if r.rrf_k <= 0.0 || r.vector_weight < 0.0 || r.text_weight < 0.0 {
            return Err("rag.retrieval: rrf_k must be > 0 and weights >= 0".into());
        }
        if self.grounding.model_prefix.is_empty() {
            return Err("rag.grounding.model_prefix must not be empty".into());
        }
        if self.pgvector.m < 2 || self.pgvector.ef_construction < 2 * self.pgvector.m {
            return Err("rag.pgvector: m >= 2 and ef_construction >= 2 * m".into());
        }
        self.extract.validate()
    }

    pub fn chunk_params(&self) -> ChunkParams {
        ChunkParams {
            max_tokens: self.chunk_tokens,
            overlap_tokens: self.chunk_overlap_tokens,
        }
    }
}
