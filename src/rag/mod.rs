//! Retrieval-augmented generation: documents are extracted, chunked (token-aware, with
//! overlap, along headings and paragraphs), embedded by the local embedder in batches and
//! written to a store (PostgreSQL + pgvector, or the embedded hnsw_rs + BM25 store), one
//! transaction per document. Retrieval fuses vector and full-text rankings by reciprocal
//! rank fusion; grounded chat puts the retrieved chunks into an operator-editable prompt
//! template and answers with citations.

pub mod bm25;
pub mod chunk;
pub mod embedded;
pub mod eval;
pub mod extract;
pub mod pg;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::cache::HnswParams;
use crate::cache::key::sha256_hex;
use crate::embed::{EmbedError, EmbedService, Priority};
use crate::store::{Pool, Store, StoreError, now_ms};
use crate::types::{ChatCompletionRequest, ChatMessage, MessageContent, Role};
pub use chunk::{Chunk, ChunkParams};
pub use extract::{ExtractConfig, ExtractError, Extractor, Format, SourceDoc};
pub use pg::PgVectorParams;
pub use store::{ChunkRecord, ChunkStore, DocumentRecord, Filter, Metadata, ScoredChunk};

/// The grounding template shipped with the gateway (used when the configured file is the
/// default one and is absent, e.g. an installed binary run outside the repository).
const BUILTIN_TEMPLATE: &str = include_str!("../../prompts/grounded.txt");
const DEFAULT_TEMPLATE_PATH: &str = "prompts/grounded.txt";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// pgvector when the database is PostgreSQL, else embedded.
    #[default]
    Auto,
    Pgvector,
    Embedded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
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

/// A document to ingest, already extracted to text.
#[derive(Debug, Clone)]
pub struct IngestDoc {
    pub id: String,
    pub title: Option<String>,
    pub text: String,
    pub format: Format,
    pub source: Option<String>,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestStatus {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestOutcome {
    pub id: String,
    pub status: IngestStatus,
    pub chunks: usize,
    /// Chunks embedded now.
    pub embedded: usize,
    /// Chunks whose stored embedding was reused (same content hash).
    pub reused: usize,
    /// Chunks identical to an earlier chunk of the same document: stored once, counted.
    pub duplicates: usize,
    /// Cache entries grounded on the previous version, removed.
    pub cache_invalidated: u64,
}

/// One retrieval request.
#[derive(Debug, Clone)]
pub struct Query {
    pub text: String,
    pub top_k: usize,
    pub filter: Filter,
    pub mode: Mode,
}

/// A retrieved chunk with where it ranked.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    #[serde(flatten)]
    pub chunk: ScoredChunk,
    /// Rank (1-based) in the vector ranking, if it was there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<usize>,
    /// Rank (1-based) in the full-text ranking, if it was there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_rank: Option<usize>,
    /// Cosine similarity to the query, if the vector ranking found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
}

/// Validates a document id: 1..=256 characters, no control characters.
pub fn check_id(id: &str) -> Result<(), RagError> {
    if id.is_empty() || id.chars().count() > 256 || id.chars().any(char::is_control) {
        return Err(RagError::Invalid(
            "a document id must be 1 to 256 characters without control characters".into(),
        ));
    }
    Ok(())
}

/// What the embedder reads for a chunk: the document title and section path give a short
/// chunk its context.
pub fn embed_input(title: Option<&str>, heading: Option<&str>, text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 64);
    for part in [title, heading].into_iter().flatten() {
        if !part.trim().is_empty() {
            s.push_str(part.trim());
            s.push('\n');
        }
    }
    s.push_str(text);
    s
}

/// The text of the last user message: what a grounded request retrieves for.
pub fn last_user_text(request: &ChatCompletionRequest) -> Option<String> {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(ChatMessage::text)
        .filter(|t| !t.trim().is_empty())
}

/// Reciprocal rank fusion of a vector and a text ranking.
pub fn fuse(
    vector: Vec<ScoredChunk>,
    text: Vec<ScoredChunk>,
    config: &RetrievalConfig,
    top_k: usize,
) -> Vec<Hit> {
    let mut by_id: HashMap<String, (Hit, f32)> = HashMap::new();
    for (rank, c) in vector.into_iter().enumerate() {
        let score = config.vector_weight / (config.rrf_k + rank as f32 + 1.0);
        let similarity = c.score;
        by_id.insert(
            c.chunk_id.clone(),
            (
                Hit {
                    chunk: c,
                    vector_rank: Some(rank + 1),
                    text_rank: None,
                    similarity: Some(similarity),
                },
                score,
            ),
        );
    }
    for (rank, c) in text.into_iter().enumerate() {
        let score = config.text_weight / (config.rrf_k + rank as f32 + 1.0);
        by_id
            .entry(c.chunk_id.clone())
            .and_modify(|(h, s)| {
                h.text_rank = Some(rank + 1);
                *s += score;
            })
            .or_insert((
                Hit {
                    chunk: c,
                    vector_rank: None,
                    text_rank: Some(rank + 1),
                    similarity: None,
                },
                score,
            ));
    }
    let mut hits: Vec<(Hit, f32)> = by_id.into_values().collect();
    hits.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| a.0.chunk.chunk_id.cmp(&b.0.chunk.chunk_id))
    });
    hits.into_iter()
        .take(top_k)
        .map(|(mut h, s)| {
            h.chunk.score = s;
            h
        })
        .collect()
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

/// The cache tag of answers grounded on a document.
pub fn doc_tag(id: &str) -> String {
    format!("doc:{id}")
}

impl Rag {
    /// Opens the configured store (pgvector on PostgreSQL, else embedded) and loads the
    /// tokenizer and the prompt template.
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
                Arc::new(embedded::EmbeddedStore::open(pool.clone(), config.hnsw).await?)
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
        let source = match std::fs::read_to_string(&config.grounding.template) {
            Ok(s) => s,
            Err(_) if config.grounding.template == PathBuf::from(DEFAULT_TEMPLATE_PATH) => {
                BUILTIN_TEMPLATE.to_string()
            }
            Err(e) => anyhow::bail!(
                "reading the grounding template {}: {e}",
                config.grounding.template.display()
            ),
        };
        let mut template = minijinja::Environment::new();
        template
            .add_template_owned("grounded", source)
            .map_err(|e| anyhow::anyhow!("the grounding template: {e}"))?;
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

    /// Chunks, embeds what changed and writes one document (one transaction). Unchanged
    /// documents are not written at all; unchanged chunks keep their embeddings.
    pub async fn ingest(
        &self,
        tenant: &str,
        mut doc: IngestDoc,
    ) -> Result<IngestOutcome, RagError> {
        check_id(&doc.id)?;
        // NUL cannot be stored in PostgreSQL text; it carries nothing in a document.
        if doc.text.contains('\0') {
            doc.text = doc.text.replace('\0', "");
        }
        if let Some(t) = doc.title.as_mut() {
            *t = t.replace('\0', "");
        }
        if has_nul(&serde_json::Value::Object(doc.metadata.clone())) {
            return Err(RagError::Invalid(
                "metadata must not contain NUL characters".into(),
            ));
        }
        if doc.text.len() > self.config.max_document_bytes {
            return Err(RagError::Invalid(format!(
                "the document is {} bytes; the limit is {} (rag.max_document_bytes)",
                doc.text.len(),
                self.config.max_document_bytes
            )));
        }
        if doc.text.trim().is_empty() {
            return Err(ExtractError::Empty.into());
        }
        let metadata_text = Value::Object(doc.metadata.clone()).to_string();
        let params = format!(
            "{}/{}/{}",
            self.config.chunk_tokens, self.config.chunk_overlap_tokens, self.embedding_model
        );
        let content_hash = sha256_hex(&[
            doc.title.as_deref().unwrap_or(""),
            &doc.text,
            &metadata_text,
            &params,
        ]);
        let previous = self.store.document(tenant, &doc.id).await?;
        if let Some(p) = &previous {
            if p.content_hash == content_hash {
                return Ok(IngestOutcome {
                    id: doc.id,
                    status: IngestStatus::Unchanged,
                    chunks: p.chunk_count,
                    embedded: 0,
                    reused: p.chunk_count,
                    duplicates: 0,
                    cache_invalidated: 0,
                });
            }
        }
        let chunks = self.chunk(doc.text.clone()).await?;
        if chunks.is_empty() {
            return Err(ExtractError::Empty.into());
        }
        let inputs: Vec<String> = chunks
            .iter()
            .map(|c| embed_input(doc.title.as_deref(), c.heading.as_deref(), &c.text))
            .collect();
        let hashes: Vec<String> = inputs
            .iter()
            .map(|i| sha256_hex(&[&self.embedding_model, i]))
            .collect();
        let mut known = if previous.is_some() {
            self.store.chunk_vectors(tenant, &doc.id).await?
        } else {
            HashMap::new()
        };
        let missing: Vec<usize> = (0..chunks.len())
            .filter(|&i| !known.contains_key(&hashes[i]))
            .collect();
        // A text repeated inside the document is embedded once.
        let mut to_embed: Vec<String> = Vec::new();
        let mut seen: HashMap<&str, ()> = HashMap::new();
        for &i in &missing {
            if seen.insert(hashes[i].as_str(), ()).is_none() {
                to_embed.push(inputs[i].clone());
            }
        }
        let unique_hashes: Vec<String> = {
            let mut seen = std::collections::HashSet::new();
            missing
                .iter()
                .filter(|&&i| seen.insert(hashes[i].clone()))
                .map(|&i| hashes[i].clone())
                .collect()
        };
        let embedded = to_embed.len();
        let vectors = self.embed_for(tenant, Priority::Bulk, to_embed).await?;
        if vectors.len() != unique_hashes.len() {
            return Err(RagError::Internal(format!(
                "the embedder returned {} vectors for {} texts",
                vectors.len(),
                unique_hashes.len()
            )));
        }
        for (h, v) in unique_hashes.into_iter().zip(vectors) {
            known.insert(h, v);
        }
        let now = now_ms();
        // An exact chunk repeated in the document is stored once, with its count: its
        // copies would add nothing to retrieval but identical vectors.
        let mut records: Vec<ChunkRecord> = Vec::with_capacity(chunks.len());
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (c, h) in chunks.iter().zip(&hashes) {
            if let Some(&at) = first.get(h.as_str()) {
                records[at].repeats += 1;
                continue;
            }
            first.insert(h.as_str(), records.len());
            records.push(ChunkRecord {
                id: format!("{}#{}", doc.id, c.index),
                index: c.index,
                heading: c.heading.clone(),
                text: c.text.clone(),
                content_hash: h.clone(),
                tokens: c.tokens,
                embedding: known.get(h).cloned().unwrap_or_default(),
                repeats: 1,
            });
        }
        let duplicates = chunks.len() - records.len();
        let record = DocumentRecord {
            id: doc.id.clone(),
            title: doc.title.clone(),
            source: doc.source.clone(),
            format: doc.format.as_str().to_string(),
            content_hash,
            metadata: doc.metadata.clone(),
            chunk_count: records.len(),
            created_at: previous.as_ref().map_or(now, |p| p.created_at),
            updated_at: now,
        };
        let total = records.len();
        self.db
            .observe(self.store.put(tenant, &record, records).await)?;
        let cache_invalidated = if previous.is_some() {
            self.invalidate_cache(tenant, &doc.id).await
        } else {
            0
        };
        metrics::counter!("qm_rag_documents_ingested_total").increment(1);
        metrics::counter!("qm_rag_chunks_embedded_total").increment(embedded as u64);
        Ok(IngestOutcome {
            id: doc.id,
            status: if previous.is_some() {
                IngestStatus::Updated
            } else {
                IngestStatus::Created
            },
            chunks: total,
            embedded,
            reused: total.saturating_sub(embedded),
            duplicates,
            cache_invalidated,
        })
    }

    /// Deletes a document and the cache entries grounded on it.
    pub async fn delete(&self, tenant: &str, id: &str) -> Result<bool, RagError> {
        let deleted = self.db.observe(self.store.delete(tenant, id).await)?;
        if deleted {
            self.invalidate_cache(tenant, id).await;
        }
        Ok(deleted)
    }

    async fn invalidate_cache(&self, tenant: &str, id: &str) -> u64 {
        let Some(cache) = &self.cache else { return 0 };
        match cache.invalidate_tags(Some(tenant), &[doc_tag(id)]).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, document = %id, "invalidating cache entries grounded on a changed document failed");
                0
            }
        }
    }

    /// Retrieves for a query; `vector` is the query's embedding if already computed.
    pub async fn retrieve(
        &self,
        tenant: &str,
        query: &Query,
        vector: Option<Vec<f32>>,
    ) -> Result<Vec<Hit>, RagError> {
        self.retrieve_with(tenant, query, vector, &self.config.retrieval)
            .await
    }

    /// [`Rag::retrieve`] with other fusion settings (evaluation compares several).
    pub async fn retrieve_with(
        &self,
        tenant: &str,
        query: &Query,
        vector: Option<Vec<f32>>,
        settings: &RetrievalConfig,
    ) -> Result<Vec<Hit>, RagError> {
        if has_nul(&Value::Object(query.filter.0.clone())) {
            return Err(RagError::Invalid(
                "the filter must not contain NUL characters".into(),
            ));
        }
        let candidates = settings.candidates.max(query.top_k);
        let vector_list = if query.mode == Mode::Text {
            Vec::new()
        } else {
            let v = match vector {
                Some(v) => v,
                None => self
                    .embed_for(tenant, Priority::Interactive, vec![query.text.clone()])
                    .await?
                    .pop()
                    .unwrap_or_default(),
            };
            let k = if query.mode == Mode::Vector {
                query.top_k
            } else {
                candidates
            };
            self.store
                .vector_search(tenant, &v, k, &query.filter, false)
                .await?
        };
        let text_list = if query.mode == Mode::Vector {
            Vec::new()
        } else {
            let k = if query.mode == Mode::Text {
                query.top_k
            } else {
                candidates
            };
            self.store
                .text_search(tenant, &query.text, k, &query.filter)
                .await?
        };
        Ok(match query.mode {
            Mode::Vector => vector_list
                .into_iter()
                .enumerate()
                .map(|(i, c)| Hit {
                    similarity: Some(c.score),
                    chunk: c,
                    vector_rank: Some(i + 1),
                    text_rank: None,
                })
                .collect(),
            Mode::Text => text_list
                .into_iter()
                .enumerate()
                .map(|(i, c)| Hit {
                    chunk: c,
                    vector_rank: None,
                    text_rank: Some(i + 1),
                    similarity: None,
                })
                .collect(),
            Mode::Hybrid => fuse(vector_list, text_list, settings, query.top_k),
        })
    }

    /// Puts the hits into the prompt template as a system message (after the request's own
    /// leading system messages) and returns the citations: the chunks actually placed,
    /// numbered as the prompt numbers them.
    pub fn ground(
        &self,
        request: &mut ChatCompletionRequest,
        hits: &[Hit],
    ) -> Result<Value, RagError> {
        let mut budget = self.config.grounding.max_context_tokens;
        let mut sources = Vec::new();
        let mut citations = Vec::new();
        for h in hits {
            let tokens = self.count_tokens(&h.chunk.text);
            if tokens > budget && !sources.is_empty() {
                break;
            }
            budget = budget.saturating_sub(tokens);
            let n = sources.len() + 1;
            // A chunk cannot close the tags it sits in.
            let text = h
                .chunk
                .text
                .replace("</source", "< /source")
                .replace("</context", "< /context");
            sources.push(json!({
                "n": n,
                "document_id": h.chunk.document_id,
                "chunk_id": h.chunk.chunk_id,
                "title": h.chunk.title,
                "heading": h.chunk.heading,
                "text": text,
            }));
            citations.push(json!({
                "index": n,
                "chunk_id": h.chunk.chunk_id,
                "document_id": h.chunk.document_id,
                "title": h.chunk.title,
                "heading": h.chunk.heading,
                "score": h.chunk.score,
            }));
        }
        let question = last_user_text(request).unwrap_or_default();
        let rendered = self
            .template
            .get_template("grounded")
            .and_then(|t| t.render(json!({ "sources": sources, "question": question })))
            .map_err(|e| RagError::Template(e.to_string()))?;
        let at = request
            .messages
            .iter()
            .take_while(|m| matches!(m.role, Role::System | Role::Developer))
            .count();
        request.messages.insert(
            at,
            ChatMessage {
                role: Role::System,
                content: Some(MessageContent::Text(rendered)),
                extra: Default::default(),
            },
        );
        Ok(Value::Array(citations))
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

/// Whether a JSON value holds a NUL character in a key or a string.
pub fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// A stable id for content posted without one.
pub fn content_id(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..12])
}
