//! Ingestion: a document checked, chunked, embedded where its chunks changed and written
//! in one transaction; deleting one; and the cache entries grounded on either removed.
//! Apart from retrieval because it is the write path, run as bulk work.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    Chunk, ChunkRecord, DocumentRecord, ExtractError, Format, Metadata, Rag, RagError, doc_tag,
    has_nul,
};
use crate::cache::key::sha256_hex;
use crate::clock::now_ms;
use crate::embed::Priority;

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

impl IngestOutcome {
    /// The outcome of a document whose content hash matched the stored one: nothing
    /// written, every stored chunk kept.
    fn unchanged(id: String, stored: &DocumentRecord) -> Self {
        Self {
            id,
            status: IngestStatus::Unchanged,
            chunks: stored.chunk_count,
            embedded: 0,
            reused: stored.chunk_count,
            duplicates: 0,
            cache_invalidated: 0,
        }
    }
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

/// A stable id for content posted without one.
pub fn content_id(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..12])
}

/// The rows to store for a document's chunks: an exact chunk repeated in the document is
/// stored once, with its count, since its copies would add nothing to retrieval but
/// identical vectors.
fn chunk_records(
    doc_id: &str,
    chunks: &[Chunk],
    hashes: &[String],
    known: &HashMap<String, Vec<f32>>,
) -> Vec<ChunkRecord> {
    let mut records: Vec<ChunkRecord> = Vec::with_capacity(chunks.len());
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (c, h) in chunks.iter().zip(hashes) {
        if let Some(&at) = first.get(h.as_str()) {
            records[at].repeats += 1;
            continue;
        }
        first.insert(h.as_str(), records.len());
        records.push(ChunkRecord {
            id: format!("{doc_id}#{}", c.index),
            index: c.index,
            heading: c.heading.clone(),
            text: c.text.clone(),
            content_hash: h.clone(),
            tokens: c.tokens,
            embedding: known.get(h).cloned().unwrap_or_default(),
            repeats: 1,
        });
    }
    records
}

/// The document row written with its chunks; a re-ingested document keeps its creation
/// time.
fn document_record(
    doc: &IngestDoc,
    content_hash: String,
    chunk_count: usize,
    previous: Option<&DocumentRecord>,
    now: i64,
) -> DocumentRecord {
    DocumentRecord {
        id: doc.id.clone(),
        title: doc.title.clone(),
        source: doc.source.clone(),
        format: doc.format.as_str().to_string(),
        content_hash,
        metadata: doc.metadata.clone(),
        chunk_count,
        created_at: previous.map_or(now, |p| p.created_at),
        updated_at: now,
    }
}

impl Rag {
    /// Chunks, embeds what changed and writes one document (one transaction). Unchanged
    /// documents are not written at all; unchanged chunks keep their embeddings.
    pub async fn ingest(
        &self,
        tenant: &str,
        mut doc: IngestDoc,
    ) -> Result<IngestOutcome, RagError> {
        self.check_document(&mut doc)?;
        let content_hash = self.content_hash(&doc);
        let previous = self.store.document(tenant, &doc.id).await?;
        if let Some(p) = &previous {
            if p.content_hash == content_hash {
                return Ok(IngestOutcome::unchanged(doc.id, p));
            }
        }
        let chunks = self.chunk(doc.text.clone()).await?;
        if chunks.is_empty() {
            return Err(ExtractError::Empty.into());
        }
        let (inputs, hashes) = self.embed_inputs(doc.title.as_deref(), &chunks);
        let mut known = if previous.is_some() {
            self.store.chunk_vectors(tenant, &doc.id).await?
        } else {
            HashMap::new()
        };
        let embedded = self
            .embed_missing(tenant, &inputs, &hashes, &mut known)
            .await?;
        let now = now_ms();
        let records = chunk_records(&doc.id, &chunks, &hashes, &known);
        let duplicates = chunks.len() - records.len();
        let record = document_record(&doc, content_hash, records.len(), previous.as_ref(), now);
        let total = records.len();
        // The answers grounded on the old text go first: if that fails, nothing is written
        // and the caller sees the error (a retry does both). After the write, once more for
        // any answer cached in between.
        let mut cache_invalidated = 0;
        if previous.is_some() {
            cache_invalidated += self.invalidate_cache(tenant, &doc.id).await?;
        }
        self.db
            .observe(self.store.put(tenant, &record, records).await)?;
        if previous.is_some() {
            cache_invalidated += self.invalidate_again(tenant, &doc.id).await;
        }
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

    /// Refuses a document the store cannot take (bad id, NUL in metadata, too large,
    /// empty) before any work, and strips NUL from its text and title.
    fn check_document(&self, doc: &mut IngestDoc) -> Result<(), RagError> {
        check_id(&doc.id)?;
        // NUL cannot be stored in PostgreSQL text; it carries nothing in a document.
        if doc.text.contains('\0') {
            doc.text = doc.text.replace('\0', "");
        }
        if let Some(t) = doc.title.as_mut() {
            *t = t.replace('\0', "");
        }
        if has_nul(&Value::Object(doc.metadata.clone())) {
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
        Ok(())
    }

    /// The hash that decides "unchanged": the document's title, text and metadata, and the
    /// settings that shape its chunks and vectors (a changed setting re-ingests it).
    fn content_hash(&self, doc: &IngestDoc) -> String {
        let metadata_text = Value::Object(doc.metadata.clone()).to_string();
        let params = format!(
            "{}/{}/{}",
            self.config.chunk_tokens, self.config.chunk_overlap_tokens, self.embedding_model
        );
        sha256_hex(&[
            doc.title.as_deref().unwrap_or(""),
            &doc.text,
            &metadata_text,
            &params,
        ])
    }

    /// What the embedder reads for each chunk and its hash, the embedding model included,
    /// by which a stored vector is reused only for the same text and model.
    fn embed_inputs(&self, title: Option<&str>, chunks: &[Chunk]) -> (Vec<String>, Vec<String>) {
        let inputs: Vec<String> = chunks
            .iter()
            .map(|c| embed_input(title, c.heading.as_deref(), &c.text))
            .collect();
        let hashes: Vec<String> = inputs
            .iter()
            .map(|i| sha256_hex(&[&self.embedding_model, i]))
            .collect();
        (inputs, hashes)
    }

    /// Embeds the chunks whose hash has no vector in `known` yet and adds theirs; returns
    /// how many texts were embedded.
    async fn embed_missing(
        &self,
        tenant: &str,
        inputs: &[String],
        hashes: &[String],
        known: &mut HashMap<String, Vec<f32>>,
    ) -> Result<usize, RagError> {
        let missing: Vec<usize> = (0..hashes.len())
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
        Ok(embedded)
    }

    /// Deletes a document and the cache entries grounded on it.
    pub async fn delete(&self, tenant: &str, id: &str) -> Result<bool, RagError> {
        // As in `ingest`: the grounded answers first (a failure deletes nothing), then the
        // document, then the answers cached in between.
        self.invalidate_cache(tenant, id).await?;
        let deleted = self.db.observe(self.store.delete(tenant, id).await)?;
        if deleted {
            self.invalidate_again(tenant, id).await;
        }
        Ok(deleted)
    }

    /// Deletes the tenant's documents whose metadata `key` names `owner` (a user's deletion);
    /// returns how many.
    pub async fn delete_owned(
        &self,
        tenant: &str,
        key: &str,
        owner: &str,
    ) -> Result<u64, RagError> {
        let mut owned = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .db
                .observe(self.store.list(tenant, 1000, after.as_deref()).await)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            owned.extend(
                page.iter()
                    .filter(|d| {
                        d.metadata.get(key).and_then(serde_json::Value::as_str) == Some(owner)
                    })
                    .map(|d| d.id.clone()),
            );
        }
        let mut n = 0;
        for id in owned {
            n += u64::from(self.delete(tenant, &id).await?);
        }
        Ok(n)
    }

    /// Removes the cached answers grounded on a document about to change or go; returns how
    /// many. Before the write, so a failure stops it.
    async fn invalidate_cache(&self, tenant: &str, id: &str) -> Result<u64, RagError> {
        let Some(cache) = &self.cache else {
            return Ok(0);
        };
        Ok(cache.invalidate_tags(Some(tenant), &[doc_tag(id)]).await?)
    }

    /// The same after the write, for answers cached while it ran; a failure is logged, not
    /// returned, since the document write itself succeeded (and the window was short).
    async fn invalidate_again(&self, tenant: &str, id: &str) -> u64 {
        match self.invalidate_cache(tenant, id).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, document = %id, "invalidating cache entries grounded on a changed document failed");
                0
            }
        }
    }
}
