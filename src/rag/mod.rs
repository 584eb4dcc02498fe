//! Retrieval-augmented generation: documents are extracted, chunked (token-aware, with
//! overlap, along headings and paragraphs), embedded by the local embedder in batches and
//! written to a store (PostgreSQL + pgvector, or the embedded hnsw_rs + BM25 store), one
//! transaction per document. Retrieval fuses vector and full-text rankings by reciprocal
//! rank fusion; grounded chat puts the retrieved chunks into an operator-editable prompt
//! template and answers with citations.
//!
//! The service and its error live here; around it, `config` holds the settings, `ingest`
//! the write path, `retrieve` the rankings and `ground` the prompt and citations, each
//! re-exported so callers name everything as `rag::X`.

pub mod bm25;
pub mod chunk;
mod config;
pub mod embedded;
pub mod eval;
pub mod extract;
mod ground;
mod ingest;
pub mod pg;
mod retrieve;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::embed::{EmbedError, EmbedService, Priority};
use crate::store::{Pool, Store, StoreError};
pub use chunk::{Chunk, ChunkParams};
pub use config::{GroundingConfig, Mode, RagConfig, RetrievalConfig, StoreKind};
pub use extract::{ExtractConfig, ExtractError, Extractor, Format, SourceDoc};
pub use ground::{doc_tag, last_user_text};
pub use ingest::{IngestDoc, IngestOutcome, IngestStatus, check_id, content_id, embed_input};
pub use pg::PgVectorParams;
pub use retrieve::{Hit, Query, fuse};
pub use store::{ChunkRecord, ChunkStore, DocumentRecord, Filter, Metadata, ScoredChunk};

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Extract(#[from] ExtractError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Embed(#[from] EmbedError),
    #[error("{0}")]
    Template(String),
    #[error("{0}")]
    Internal(String),
}

/// The retrieval service.
pub struct Rag {
    pub config: RagConfig,
    store: Arc<dyn ChunkStore>,
    embedder: EmbedService,
    tokenizer: Arc<Tokenizer>,
    template: minijinja::Environment<'static>,
    /// Grounded answers are cached with a `doc:<id>` tag per cited document.
    cache: Option<Arc<crate::cache::Cache>>,
    embedding_model: String,
    extractor: Extractor,
    /// The database (its health learns of every document write's outcome).
    db: Store,
}

impl Rag {
    /// Opens the configured store (pgvector on PostgreSQL, else embedded) and loads the
    /// tokenizer and the prompt template.
    /// Saves the embedded store's graphs (at shutdown), so the next start loads them.
    pub async fn save_snapshot(&self) {
        self.store.save_snapshot().await;
    }

    pub async fn open(
        config: RagConfig,
        store: &Store,
        embedder: EmbedService,
        embed_config: &crate::embed::EmbedConfig,
        cache: Option<Arc<crate::cache::Cache>>,
    ) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let chunks: Arc<dyn ChunkStore> = match (config.store, store.pool()) {
            (StoreKind::Auto | StoreKind::Pgvector, Pool::Postgres(pool)) => {
                Arc::new(pg::PgVectorStore::open(pool.clone(), config.pgvector).await?)
            }
            (StoreKind::Auto | StoreKind::Embedded, Pool::Sqlite(pool)) => {
                // The graphs' snapshots beside the database file.
                let snapshots = store.file().map(|file| {
                    let mut name = file.file_name().unwrap_or_default().to_os_string();
                    name.push(".rag-graphs");
                    file.with_file_name(name)
                });
                Arc::new(embedded::EmbeddedStore::open(pool.clone(), config.hnsw, snapshots).await?)
            }
            (StoreKind::Pgvector, Pool::Sqlite(_)) => anyhow::bail!(
                "rag.store = \"pgvector\" needs a PostgreSQL database (database.url = \"postgres://...\")"
            ),
            (StoreKind::Embedded, Pool::Postgres(_)) => anyhow::bail!(
                "rag.store = \"embedded\" keeps its rows in SQLite: use a sqlite:// database.url or rag.store = \"pgvector\""
            ),
        };
        let tokenizer_path = embed_config.model_dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow::anyhow!("loading {}: {e}", tokenizer_path.display()))?;
        // The shipped tokenizer.json truncates and pads to 128: counting needs neither.
        tokenizer
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        tokenizer.with_padding(None);
        let template = ground::load_template(&config.grounding)?;
        Ok(Self {
            extractor: Extractor::new(config.extract.clone()),
            db: store.clone(),
            config,
            store: chunks,
            embedder,
            tokenizer: Arc::new(tokenizer),
            template,
            cache,
            embedding_model: embed_config.model_name.clone(),
        })
    }

    /// Turns uploaded bytes into documents, under `rag.extract`'s caps.
    pub fn extractor(&self) -> &Extractor {
        &self.extractor
    }

    pub fn store(&self) -> &Arc<dyn ChunkStore> {
        &self.store
    }

    pub fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// Model tokens in `text` (special tokens excluded).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.len())
            .unwrap_or_else(|_| text.len().div_ceil(4))
    }

    /// Chunks a document on a blocking thread (the tokenizer is CPU work).
    pub async fn chunk(&self, text: String) -> Result<Vec<Chunk>, RagError> {
        let tokenizer = self.tokenizer.clone();
        let params = self.config.chunk_params();
        tokio::task::spawn_blocking(move || {
            let count = |s: &str| {
                tokenizer
                    .encode(s, false)
                    .map(|e| e.len())
                    .unwrap_or_else(|_| s.len().div_ceil(4))
            };
            chunk::chunk_text(&text, params, &count)
        })
        .await
        .map_err(|e| RagError::Internal(format!("chunking failed: {e}")))
    }

    /// Embeds texts in batches as bulk work of no tenant (evaluation, benchmarks).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, RagError> {
        self.embed_for("", Priority::Bulk, texts).await
    }

    /// Embeds texts for `tenant` in batches; a full embedding queue is waited out, not
    /// failed.
    pub async fn embed_for(
        &self,
        tenant: &str,
        priority: Priority,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, RagError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.config.embed_batch) {
            let mut delay = Duration::from_millis(20);
            loop {
                match self
                    .embedder
                    .embed_for(tenant, priority, batch.to_vec())
                    .await
                {
                    Ok(e) => {
                        out.extend(e.into_iter().map(|e| e.vector));
                        break;
                    }
                    Err(EmbedError::Overloaded) if delay < Duration::from_secs(10) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(out)
    }
}

/// Whether a JSON value holds a NUL character in a key or a string.
pub fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &str) -> ScoredChunk {
        ScoredChunk {
            chunk_id: id.into(),
            document_id: id.split('#').next().unwrap().into(),
            index: 0,
            title: None,
            heading: None,
            text: id.into(),
            metadata: Metadata::new(),
            repeats: 1,
            score: 0.5,
        }
    }

    #[test]
    fn rrf_rewards_agreement() {
        let config = RetrievalConfig::default();
        let vector = vec![chunk("a#0"), chunk("b#0"), chunk("c#0")];
        let text = vec![chunk("c#0"), chunk("d#0"), chunk("b#0")];
        let hits = fuse(vector, text, &config, 3);
        let ids: Vec<&str> = hits.iter().map(|h| h.chunk.chunk_id.as_str()).collect();
        // b: 1/62 + 1/63, c: 1/63 + 1/61, a: 1/61 only.
        assert_eq!(ids, vec!["c#0", "b#0", "a#0"]);
        assert_eq!(hits[0].vector_rank, Some(3));
        assert_eq!(hits[0].text_rank, Some(1));
        assert!((hits[0].chunk.score - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-6);
    }

    #[test]
    fn weights_can_switch_a_ranking_off() {
        let config = RetrievalConfig {
            text_weight: 0.0,
            ..RetrievalConfig::default()
        };
        let hits = fuse(
            vec![chunk("a#0"), chunk("b#0")],
            vec![chunk("b#0")],
            &config,
            2,
        );
        assert_eq!(hits[0].chunk.chunk_id, "a#0");
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("docs/handbook.md").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a\nb").is_err());
        assert!(check_id(&"x".repeat(257)).is_err());
    }

    #[test]
    fn embed_input_carries_title_and_heading() {
        assert_eq!(
            embed_input(Some("Acme"), Some("Refunds"), "text"),
            "Acme\nRefunds\ntext"
        );
        assert_eq!(embed_input(None, Some(" "), "text"), "text");
    }
}
