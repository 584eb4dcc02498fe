//! What a retrieval store keeps and answers, behind one trait: PostgreSQL + pgvector
//! (`pg.rs`) or the embedded store (`embedded.rs`: SQLite rows, hnsw_rs and BM25 in
//! memory). Every call is scoped to one tenant; no call reads across tenants.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::store::StoreError;

pub type Metadata = Map<String, Value>;

/// One ingested document (its chunks are stored beside it).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DocumentRecord {
    pub id: String,
    pub title: Option<String>,
    /// Where it came from (a file path, an upload's file name).
    pub source: Option<String>,
    pub format: String,
    /// SHA-256 over title, text, metadata and chunking parameters: equal means unchanged.
    pub content_hash: String,
    pub metadata: Metadata,
    pub chunk_count: usize,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One chunk as written.
#[derive(Debug, Clone)]
pub struct ChunkRecord {
    /// `{document id}#{index}`.
    pub id: String,
    pub index: usize,
    pub heading: Option<String>,
    pub text: String,
    /// SHA-256 of what was embedded: equal means the embedding can be reused.
    pub content_hash: String,
    pub tokens: usize,
    pub embedding: Vec<f32>,
    /// How many times this exact chunk occurs in the document (stored once).
    pub repeats: usize,
}

/// A retrieved chunk.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScoredChunk {
    pub chunk_id: String,
    pub document_id: String,
    pub index: usize,
    pub title: Option<String>,
    pub heading: Option<String>,
    pub text: String,
    pub metadata: Metadata,
    /// How many times this exact chunk occurs in its document (stored once).
    pub repeats: usize,
    /// Cosine similarity (vector search) or the text rank (full-text search); the fused
    /// score after [`crate::rag::Rag::retrieve`].
    pub score: f32,
}

/// Metadata conditions: a chunk matches when its metadata has every key with an equal value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter(pub Metadata);

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, metadata: &Metadata) -> bool {
        self.0.iter().all(|(k, v)| metadata.get(k) == Some(v))
    }
}

#[async_trait::async_trait]
pub trait ChunkStore: Send + Sync {
    fn name(&self) -> &'static str;

    /// Saves in-process indexes so the next start loads them (a no-op for shared stores).
    async fn save_snapshot(&self) {}

    async fn document(&self, tenant: &str, id: &str) -> Result<Option<DocumentRecord>, StoreError>;

    /// The stored embeddings of a document's chunks by content hash (reused on re-ingest).
    async fn chunk_vectors(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<HashMap<String, Vec<f32>>, StoreError>;

    /// Replaces the document and all its chunks in one transaction.
    async fn put(
        &self,
        tenant: &str,
        doc: &DocumentRecord,
        chunks: Vec<ChunkRecord>,
    ) -> Result<(), StoreError>;

    /// Deletes the document and its chunks; false if there was none.
    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;

    /// Documents in id order, after `after`.
    async fn list(
        &self,
        tenant: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DocumentRecord>, StoreError>;

    /// Nearest chunks by cosine similarity, best first. `exact` scans every chunk instead
    /// of walking the index (evaluation and benchmarks measure recall against it).
    async fn vector_search(
        &self,
        tenant: &str,
        vector: &[f32],
        k: usize,
        filter: &Filter,
        exact: bool,
    ) -> Result<Vec<ScoredChunk>, StoreError>;

    /// Best chunks by full-text rank (any query term may match), best first.
    async fn text_search(
        &self,
        tenant: &str,
        query: &str,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<ScoredChunk>, StoreError>;
}

pub fn vector_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn vector_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn metadata_from_text(text: &str) -> Metadata {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Metadata::new(),
    }
}
