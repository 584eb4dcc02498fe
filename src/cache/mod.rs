//! The response cache: an exact cache keyed by the canonical request, then a semantic cache
//! (the last user message embedded, searched in a per-tenant HNSW graph or in Qdrant) whose
//! candidates must pass the similarity threshold, have the same parameter fingerprint, and
//! survive the verification stage (`verify`). Entries live in the store (the source of
//! truth, checksummed); the vector index is refilled from it at start (`graphs.rs`).

mod backend;
mod config;
mod controls;
pub mod eval;
pub mod feedback;
mod graphs;
mod guard;
pub mod key;
mod lookup;
pub mod pgvector;
pub mod qdrant;
pub mod sync;
mod upkeep;
pub mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::clock::now_ms;
pub use crate::index::{Candidate, HnswIndex, HnswParams};
use crate::store::{Store, StoreError, on_pool};
use crate::types::Usage;
pub use backend::{IndexError, VectorIndex};
pub use config::*;
pub use controls::*;
pub use guard::{GUARD_WINDOW_MS, InForce, held_bound};
pub use key::{CacheKeys, NotCacheable, cache_keys};
pub use verify::{Check, CrossVerifier};

/// A stored answer: one assistant message with plain text content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredAnswer {
    pub model: String,
    pub content: String,
    pub finish_reason: String,
    pub usage: Usage,
    /// The message's other fields as the upstream sent them (`refusal`, `annotations`...).
    #[serde(default)]
    pub message_extra: serde_json::Map<String, Value>,
    /// A grounded answer's citations (returned with every hit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citations: Option<Value>,
}

impl StoredAnswer {
    /// Only complete answers are stored: `stop` or `length`, text content, no tool calls.
    pub fn cacheable(finish_reason: Option<&str>, message: &Value) -> bool {
        let complete = matches!(finish_reason, Some("stop") | Some("length"));
        let text = message.get("content").is_some_and(Value::is_string);
        let tools = ["tool_calls", "function_call", "audio"]
            .iter()
            .any(|k| message.get(*k).is_some_and(|v| !v.is_null()));
        complete && text && !tools
    }

    pub fn message(&self) -> Value {
        let mut m = self.message_extra.clone();
        m.insert("role".into(), Value::String("assistant".into()));
        m.insert("content".into(), Value::String(self.content.clone()));
        Value::Object(m)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitKind {
    Exact,
    Semantic,
}

impl HitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HitKind::Exact => "exact",
            HitKind::Semantic => "semantic",
        }
    }
}

/// A cache hit, ready to be served.
#[derive(Debug, Clone)]
pub struct Hit {
    pub entry_id: String,
    pub kind: HitKind,
    pub similarity: f32,
    pub answer: StoredAnswer,
    /// What the answer cost when it was generated: saved by serving it again.
    pub cost_usd: f64,
}

/// An entry's metadata (`GET /v1/cache/entries/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct EntryInfo {
    pub id: String,
    pub object: &'static str,
    pub model: String,
    pub query: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub hits: i64,
    pub tags: Vec<String>,
}

fn checksum(response: &str) -> String {
    hex::encode(Sha256::digest(response.as_bytes()))
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_vector(b: &[u8]) -> Option<Vec<f32>> {
    if b.len() % 4 != 0 {
        return None;
    }
    Some(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// A new answer for the cache.
pub struct NewEntry {
    pub tenant: String,
    /// The end user whose request it answered (deleted with the user).
    pub user: Option<String>,
    pub keys: CacheKeys,
    pub vector: Option<Vec<f32>>,
    pub answer: StoredAnswer,
    pub cost_usd: f64,
    pub ttl_secs: u64,
    pub tags: Vec<String>,
    /// When the answer's sources were read (a grounded answer: before retrieval). If one of
    /// `tags` was invalidated since, the answer is not stored: it may quote a document that
    /// changed while it was written.
    pub sources_read_at: Option<i64>,
}

/// The cache: the store's rows plus a vector index over their queries.
pub struct Cache {
    pub config: CacheConfig,
    store: Store,
    index: Arc<dyn VectorIndex>,
    /// Set when the backend is the in-process HNSW (rebuilds, stats).
    hnsw: Option<Arc<HnswIndex>>,
    /// The in-process index has been refilled from the store.
    loaded: AtomicBool,
    checks: Vec<Check>,
    learned: Option<verify::LearnedVerifier>,
    /// The cross-encoder (`verifier = "cross"`), set by [`Cache::with_cross`].
    cross: Option<Arc<verify::CrossVerifier>>,
    /// Its passes running at once (one per core).
    cross_slots: Arc<tokio::sync::Semaphore>,
    /// Tenants held to a stricter bound than configured (`guard.rs`).
    guards: guard::Guards,
    /// Other replicas' changes to the in-process graph (`hnsw` on PostgreSQL).
    sync: Option<sync::CacheSync>,
    /// Where the in-process graphs are saved and loaded from.
    snapshot_dir: Option<std::path::PathBuf>,
    /// The graphs' change count at the last save.
    saved_at: std::sync::atomic::AtomicU64,
    /// Tenants whose graph was loaded from a snapshot at start.
    snapshot_tenants: std::sync::atomic::AtomicUsize,
}

type EntryRow = (String, String, String, String, f64, i64);

impl Cache {
    pub async fn new(config: CacheConfig, store: Store) -> anyhow::Result<Self> {
        let (index, hnsw): (Arc<dyn VectorIndex>, Option<Arc<HnswIndex>>) = match config.backend {
            IndexBackend::Hnsw => {
                let idx = Arc::new(HnswIndex::new(config.hnsw, 4096));
                (idx.clone(), Some(idx))
            }
            IndexBackend::Qdrant => (
                Arc::new(qdrant::QdrantIndex::connect(&config.qdrant).await?),
                None,
            ),
            IndexBackend::Pgvector => (
                Arc::new(pgvector::PgVectorIndex::new(&store, config.pgvector)?),
                None,
            ),
        };
        let checks = match config.verifier {
            VerifierMode::None => Vec::new(),
            VerifierMode::Rules | VerifierMode::Learned | VerifierMode::Cross => {
                Check::ALL.to_vec()
            }
        };
        let learned = (config.verifier == VerifierMode::Learned).then_some(DEFAULT_VERIFIER);
        let loaded = AtomicBool::new(!index.needs_load());
        let sync = (hnsw.is_some() && config.sync)
            .then(|| sync::CacheSync::new(&store))
            .flatten();
        let snapshot_dir = hnsw.as_ref().and_then(|_| {
            if !config.snapshot_dir.as_os_str().is_empty() {
                return Some(config.snapshot_dir.clone());
            }
            store.file().map(|file| {
                let mut name = file.file_name().unwrap_or_default().to_os_string();
                name.push(".cache-graphs");
                file.with_file_name(name)
            })
        });
        let cache = Self {
            config,
            store,
            index,
            hnsw,
            loaded,
            checks,
            learned,
            cross: None,
            cross_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            guards: Default::default(),
            sync,
            snapshot_dir,
            // Nothing saved yet: the first save writes whatever was built or loaded.
            saved_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            snapshot_tenants: Default::default(),
        };
        // Tenants held to a stricter bound stay held across a restart.
        if let Err(e) = cache.load_guards().await {
            tracing::warn!(error = %e, "cache guard: reading verdicts at start failed");
        }
        Ok(cache)
    }

    /// The cross-encoder for `verifier = "cross"`. Without it, that mode serves no semantic
    /// hit (it never falls back to a weaker check).
    pub fn with_cross(mut self, verifier: Arc<verify::CrossVerifier>) -> Self {
        self.cross = Some(verifier);
        self
    }

    pub fn index_name(&self) -> &'static str {
        self.index.name()
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Stores an answer, replacing any entry with the same exact key, in one transaction
    /// (row and tags); then indexes it. Returns the new entry's id, or `None` when a tag was
    /// invalidated after the answer's sources were read (nothing stored).
    pub async fn insert(&self, entry: NewEntry) -> Result<Option<String>, StoreError> {
        let id = format!("ce_{}", uuid::Uuid::now_v7().simple());
        let response = serde_json::to_string(&entry.answer).expect("answers serialize");
        let sum = checksum(&response);
        let now = now_ms();
        let expires = now + (entry.ttl_secs as i64) * 1000;
        let embedding = entry.vector.as_deref().map(vector_bytes);
        // PostgreSQL's text cannot hold NUL: the stored question (read only by the
        // verification rules, for which NUL means nothing) and model name drop it, on both
        // backends alike; the answer is stored as JSON, where NUL is escaped.
        let query_text = entry.keys.query.replace('\0', "\u{FFFD}");
        let model = entry.answer.model.replace('\0', "\u{FFFD}");
        let stored: Option<Vec<String>> = on_pool!(&self.store, p => {
            let mut tx = p.begin().await?;
            let mut stale = false;
            if let Some(read_at) = entry.sources_read_at {
                for tag in &entry.tags {
                    let since: Option<i64> = sqlx::query_scalar(
                        "SELECT MAX(at) FROM cache_tag_invalidations WHERE tenant_id IN ($1, '*') AND tag = $2")
                        .bind(&entry.tenant).bind(tag).fetch_one(&mut *tx).await?;
                    stale |= since.is_some_and(|at| at >= read_at);
                }
            }
            if stale {
                tx.rollback().await?;
                Ok::<_, sqlx::Error>(None)
            } else {
            let replaced: Vec<String> = sqlx::query_scalar(
                "DELETE FROM cache_entries WHERE tenant_id = $1 AND exact_key = $2 RETURNING id")
                .bind(&entry.tenant).bind(&entry.keys.exact).fetch_all(&mut *tx).await?;
            sqlx::query("INSERT INTO cache_entries (id, tenant_id, exact_key, fingerprint, query_text, embedding, model, response, checksum, cost_usd, created_at, expires_at, last_hit_at, user_id) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $11, $13)")
                .bind(&id).bind(&entry.tenant).bind(&entry.keys.exact).bind(&entry.keys.fingerprint)
                .bind(&query_text).bind(&embedding).bind(&model).bind(&response)
                .bind(&sum).bind(entry.cost_usd).bind(now).bind(expires).bind(&entry.user)
                .execute(&mut *tx).await?;
            for tag in &entry.tags {
                sqlx::query("INSERT INTO cache_entry_tags (entry_id, tenant_id, tag) VALUES ($1, $2, $3)")
                    .bind(&id).bind(&entry.tenant).bind(tag).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Some(replaced))
            }
        })?;
        let Some(replaced) = stored else {
            metrics::counter!("qm_cache_writes_skipped_total").increment(1);
            return Ok(None);
        };
        if !replaced.is_empty() {
            self.unindex(&entry.tenant, &replaced).await;
        }
        if let Some(v) = &entry.vector {
            if let Err(e) = self
                .index
                .insert(&entry.tenant, &id, &entry.keys.fingerprint, v)
                .await
            {
                // The row is stored: exact hits work; it is indexed again at the next load.
                tracing::warn!(error = %e, "cache entry stored but not indexed");
                metrics::counter!("qm_cache_index_errors_total").increment(1);
            }
            if let Some(s) = &self.sync {
                s.publish(sync::Change::Add {
                    tenant: entry.tenant.clone(),
                    ids: vec![id.clone()],
                })
                .await;
            }
        }
        metrics::counter!("qm_cache_writes_total").increment(1);
        Ok(Some(id))
    }

    async fn unindex(&self, tenant: &str, ids: &[String]) {
        if let Err(e) = self.index.remove(tenant, ids).await {
            // The rows are gone, so a stale index entry can never be served (every
            // candidate is read back from the store); it only costs a wasted lookup.
            tracing::warn!(error = %e, "cache index removal failed");
        }
        if let Some(s) = &self.sync {
            s.publish(sync::Change::Remove {
                tenant: tenant.to_string(),
                ids: ids.to_vec(),
            })
            .await;
        }
    }

    pub async fn entry_info(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<EntryInfo>, StoreError> {
        let row: Option<(String, String, String, i64, i64, i64)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT id, model, query_text, created_at, expires_at, hits FROM cache_entries WHERE tenant_id = $1 AND id = $2 AND expires_at > $3")
            .bind(tenant).bind(id).bind(now_ms()).fetch_optional(p).await)?;
        let Some((id, model, query, created_at, expires_at, hits)) = row else {
            return Ok(None);
        };
        let tags: Vec<String> = on_pool!(&self.store, p => sqlx::query_scalar(
            "SELECT tag FROM cache_entry_tags WHERE entry_id = $1 ORDER BY tag")
            .bind(&id).fetch_all(p).await)?;
        Ok(Some(EntryInfo {
            id,
            object: "cache.entry",
            model,
            query,
            created_at,
            expires_at,
            hits,
            tags,
        }))
    }

    /// Entries per tenant (admin view).
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(on_pool!(&self.store, p => sqlx::query_as(
            "SELECT tenant_id, COUNT(*) FROM cache_entries GROUP BY tenant_id ORDER BY tenant_id")
            .fetch_all(p).await)?)
    }
}

/// Splits an answer into stream chunks of about `size` characters, at word boundaries.
pub fn replay_pieces(content: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut last_break = 0;
    for (i, ch) in content.char_indices() {
        if ch.is_whitespace() {
            last_break = i;
        }
        if i - start >= size && last_break > start {
            out.push(&content[start..last_break]);
            start = last_break;
        }
    }
    if start < content.len() {
        out.push(&content[start..]);
    }
    out
}

#[cfg(test)]
mod tests;
