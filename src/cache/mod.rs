//! The response cache: an exact cache keyed by the canonical request, then a semantic cache
//! (the last user message embedded, searched in a per-tenant HNSW graph or in Qdrant) whose
//! candidates must pass the similarity threshold, have the same parameter fingerprint, and
//! survive the verification stage (`verify`). Entries live in the store (the source of
//! truth, checksummed); the vector index is rebuilt from it at start.

mod backend;
mod config;
mod controls;
pub mod eval;
pub mod feedback;
mod guard;
pub mod key;
pub mod pgvector;
pub mod qdrant;
pub mod sync;
pub mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::index::{Candidate, HnswIndex, HnswParams};
use crate::store::{Store, StoreError, now_ms, on_pool};
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

    /// Refills the in-process index from the store (at start; lookups meanwhile only
    /// miss semantically, exact hits work at once). Returns the entries loaded.
    pub async fn load_index(&self) -> Result<usize, StoreError> {
        if !self.index.needs_load() {
            return Ok(0);
        }
        let Some(hnsw) = self.hnsw.clone() else {
            return Ok(0);
        };
        // The saved graphs first: entries already in them are skipped below (no graph
        // insert), and those the store no longer holds are removed after.
        let snapshot = match self.snapshot_dir.clone() {
            Some(dir) => {
                let h = hnsw.clone();
                tokio::task::spawn_blocking(move || h.load(&dir))
                    .await
                    .unwrap_or_default()
            }
            None => Vec::new(),
        };
        let mut in_store: std::collections::HashMap<String, std::collections::HashSet<String>> =
            Default::default();
        let mut after = String::new();
        let mut total = 0usize;
        loop {
            const SQL: &str = "SELECT id, tenant_id, fingerprint, embedding FROM cache_entries \
                               WHERE id > $1 AND expires_at > $2 AND embedding IS NOT NULL AND demoted_at IS NULL ORDER BY id LIMIT 5000";
            let rows: Vec<(String, String, String, Vec<u8>)> = on_pool!(&self.store, p => sqlx::query_as(SQL)
                .bind(&after).bind(now_ms()).fetch_all(p).await)?;
            let Some(last) = rows.last() else { break };
            after = last.0.clone();
            total += rows.len();
            let mut by_tenant: std::collections::HashMap<String, Vec<(String, String, Vec<f32>)>> =
                Default::default();
            for (id, tenant, fp, bytes) in rows {
                if !snapshot.is_empty() {
                    in_store
                        .entry(tenant.clone())
                        .or_default()
                        .insert(id.clone());
                }
                if let Some(v) = bytes_vector(&bytes) {
                    by_tenant.entry(tenant).or_default().push((id, fp, v));
                }
            }
            let hnsw = hnsw.clone();
            tokio::task::spawn_blocking(move || {
                for (tenant, items) in by_tenant {
                    hnsw.load_tenant(&tenant, items);
                }
            })
            .await
            .map_err(|e| StoreError::Conflict(format!("index load: {e}")))?;
        }
        for (tenant, gone) in crate::index::stale(&snapshot, &in_store) {
            hnsw.remove_sync(&tenant, &gone);
        }
        if !snapshot.is_empty() {
            tracing::info!(
                tenants = snapshot.len(),
                "cache graphs loaded from their snapshots"
            );
        }
        self.snapshot_tenants
            .store(snapshot.len(), Ordering::Relaxed);
        self.loaded.store(true, Ordering::Release);
        metrics::gauge!("qm_cache_index_entries").set(self.index.len() as f64);
        Ok(total)
    }

    /// Saves the in-process graphs when they changed since the last save (a no-op for other
    /// backends or without a folder). Inserts wait while a graph is written.
    pub async fn save_snapshot(&self) {
        let (Some(hnsw), Some(dir)) = (self.hnsw.clone(), self.snapshot_dir.clone()) else {
            return;
        };
        let changes = hnsw.changes();
        if changes == self.saved_at.load(Ordering::Relaxed) || !self.is_loaded() {
            return;
        }
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || hnsw.save(&dir)).await {
            Ok(Ok(n)) => {
                self.saved_at.store(changes, Ordering::Relaxed);
                tracing::info!(
                    tenants = n,
                    ms = started.elapsed().as_millis() as u64,
                    "cache graphs saved"
                );
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cache graphs not saved"),
            Err(e) => tracing::warn!(error = %e, "cache graph save failed"),
        }
    }

    /// Reads one entry's answer, checking it is whole: a row whose checksum or JSON does not
    /// hold is deleted and treated as absent.
    async fn answer_of(
        &self,
        tenant: &str,
        row: EntryRow,
    ) -> Result<Option<(String, StoredAnswer, f64, String)>, StoreError> {
        let (id, response, sum, query, cost, _expires) = row;
        if checksum(&response) == sum {
            if let Ok(answer) = serde_json::from_str::<StoredAnswer>(&response) {
                return Ok(Some((id, answer, cost, query)));
            }
        }
        tracing::error!(entry = %id, "cache entry failed its checksum; deleting it");
        metrics::counter!("qm_cache_corrupt_total").increment(1);
        self.delete_ids(tenant, &[id]).await?;
        Ok(None)
    }

    /// The exact lookup: same tenant, same canonical request.
    pub async fn lookup_exact(
        &self,
        tenant: &str,
        keys: &CacheKeys,
    ) -> Result<Option<Hit>, StoreError> {
        const SQL: &str = "SELECT id, response, checksum, query_text, cost_usd, expires_at FROM cache_entries \
                           WHERE tenant_id = $1 AND exact_key = $2 AND expires_at > $3";
        let row: Option<EntryRow> = on_pool!(&self.store, p => sqlx::query_as(SQL)
            .bind(tenant).bind(&keys.exact).bind(now_ms()).fetch_optional(p).await)?;
        let Some(row) = row else { return Ok(None) };
        Ok(self
            .answer_of(tenant, row)
            .await?
            .map(|(entry_id, answer, cost_usd, _)| Hit {
                entry_id,
                kind: HitKind::Exact,
                similarity: 1.0,
                answer,
                cost_usd,
            }))
    }

    /// The semantic lookup: nearest entries of this tenant with the same fingerprint, above
    /// the threshold, that pass verification. Best first; the first that holds is the hit.
    /// A tenant held to a stricter bound (`guard.rs`) needs that bound's threshold and bar.
    pub async fn lookup_semantic(
        self: &Arc<Self>,
        tenant: &str,
        keys: &CacheKeys,
        vector: &[f32],
        threshold: f32,
    ) -> Result<Option<Hit>, StoreError> {
        let held = self.in_force_now(tenant);
        let threshold = match held.tightened {
            true => threshold.max(held.threshold),
            false => threshold,
        };
        let bar = held
            .cross_bar
            .unwrap_or_else(|| self.config.cross_min_logit());
        let candidates = match self
            .index
            .search(tenant, &keys.fingerprint, vector, self.config.candidates)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cache index search failed; treating as a miss");
                metrics::counter!("qm_cache_index_errors_total").increment(1);
                return Ok(None);
            }
        };
        let cross_mode = self.config.verifier == VerifierMode::Cross;
        // Candidates that pass the rule checks, best first; with the cross-encoder the best
        // `CROSS_MAX_READ` of them are read in one pass, and the first it accepts is the hit.
        let mut passed = Vec::new();
        for c in candidates.into_iter().filter(|c| c.similarity >= threshold) {
            const SQL: &str = "SELECT id, response, checksum, query_text, cost_usd, expires_at FROM cache_entries \
                               WHERE tenant_id = $1 AND id = $2 AND fingerprint = $3 AND expires_at > $4 AND demoted_at IS NULL";
            let row: Option<EntryRow> = on_pool!(&self.store, p => sqlx::query_as(SQL)
                .bind(tenant).bind(&c.entry_id).bind(&keys.fingerprint).bind(now_ms()).fetch_optional(p).await)?;
            let Some(row) = row else { continue };
            let Some((entry_id, answer, cost_usd, cached_query)) =
                self.answer_of(tenant, row).await?
            else {
                continue;
            };
            if let Err(check) = verify::verify(&keys.query, &cached_query, &self.checks) {
                metrics::counter!("qm_cache_verify_rejections_total", "check" => check.as_str())
                    .increment(1);
                tracing::debug!(entry = %entry_id, check = check.as_str(), similarity = c.similarity, "semantic candidate vetoed");
                continue;
            }
            if let Some(v) = &self.learned {
                let p = v.probability(&verify::features(&keys.query, &cached_query, c.similarity));
                if p < self.config.learned_min_probability() {
                    metrics::counter!("qm_cache_verify_rejections_total", "check" => "learned")
                        .increment(1);
                    tracing::debug!(entry = %entry_id, p, similarity = c.similarity, "semantic candidate vetoed by the learned verifier");
                    continue;
                }
            }
            let hit = Hit {
                entry_id,
                kind: HitKind::Semantic,
                similarity: c.similarity,
                answer,
                cost_usd,
            };
            if !cross_mode {
                return Ok(Some(hit));
            }
            passed.push((hit, cached_query));
            if passed.len() == CROSS_MAX_READ {
                break;
            }
        }
        if passed.is_empty() {
            return Ok(None);
        }
        self.cross_accept(&keys.query, passed, bar).await
    }

    /// The first candidate the cross-encoder accepts. A verifier that is missing or fails
    /// serves nothing: a miss costs one upstream call, a wrong hit a wrong answer.
    async fn cross_accept(
        &self,
        query: &str,
        passed: Vec<(Hit, String)>,
        bar: f32,
    ) -> Result<Option<Hit>, StoreError> {
        let Some(cross) = self.cross.clone() else {
            return Ok(None);
        };
        // One pass per core at a time: past that a lookup is a miss rather than a queue
        // behind other tenants' passes (the embedder keeps its own priorities).
        let Ok(_slot) = self.cross_slots.clone().try_acquire_owned() else {
            metrics::counter!("qm_cache_lookups_total", "result" => "skipped", "why" => "verifier_busy")
                .increment(1);
            return Ok(None);
        };
        let query = query.to_string();
        let texts: Vec<(String, f32)> = passed
            .iter()
            .map(|(hit, q)| (q.clone(), hit.similarity))
            .collect();
        let logits = tokio::task::spawn_blocking(move || {
            let pairs: Vec<(&str, &str, f32)> = texts
                .iter()
                .map(|(t, s)| (t.as_str(), query.as_str(), *s))
                .collect();
            cross.logits(&pairs)
        })
        .await;
        let logits = match logits {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cache cross-encoder failed; treating as a miss");
                metrics::counter!("qm_cache_verify_errors_total").increment(1);
                return Ok(None);
            }
            Err(e) => {
                tracing::error!(error = %e, "cache cross-encoder panicked; treating as a miss");
                metrics::counter!("qm_cache_verify_errors_total").increment(1);
                return Ok(None);
            }
        };
        for ((hit, _), logit) in passed.into_iter().zip(logits) {
            if logit >= bar {
                return Ok(Some(hit));
            }
            metrics::counter!("qm_cache_verify_rejections_total", "check" => "cross").increment(1);
            tracing::debug!(entry = %hit.entry_id, logit, bar, similarity = hit.similarity, "semantic candidate vetoed by the cross-encoder");
        }
        Ok(None)
    }

    /// Counts a hit on the entry (for LRU eviction), off the request's path.
    pub fn touch(self: &Arc<Self>, entry_id: String) {
        let store = self.store.clone();
        tokio::spawn(async move {
            let r = on_pool!(&store, p => sqlx::query("UPDATE cache_entries SET hits = hits + 1, last_hit_at = $1 WHERE id = $2")
                .bind(now_ms()).bind(&entry_id).execute(p).await.map(|_| ()));
            if let Err(e) = r {
                tracing::debug!(error = %e, "cache hit count not updated");
            }
        });
    }

    /// Stores an answer, replacing any entry with the same exact key, in one transaction
    /// (row and tags); then indexes it. Returns the new entry's id.
    pub async fn insert(&self, entry: NewEntry) -> Result<String, StoreError> {
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
        let replaced: Vec<String> = on_pool!(&self.store, p => {
            let mut tx = p.begin().await?;
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
            Ok::<_, sqlx::Error>(replaced)
        })?;
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
        Ok(id)
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

    /// An entry's fingerprint and vector, if it is live (another replica's new entry).
    async fn indexed_vector(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<(String, Vec<f32>)>, StoreError> {
        let row: Option<(String, Option<Vec<u8>>)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT fingerprint, embedding FROM cache_entries WHERE tenant_id = $1 AND id = $2 AND expires_at > $3 AND demoted_at IS NULL")
            .bind(tenant).bind(id).bind(now_ms()).fetch_optional(p).await)?;
        Ok(row.and_then(|(fp, bytes)| Some((fp, bytes_vector(&bytes?)?))))
    }

    /// Indexes the live entries created since `since_ms` (already indexed ones are skipped):
    /// what other replicas stored while this one was not listening.
    async fn index_since(&self, since_ms: i64) -> Result<usize, StoreError> {
        let Some(hnsw) = &self.hnsw else { return Ok(0) };
        let rows: Vec<(String, String, String, Vec<u8>)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT id, tenant_id, fingerprint, embedding FROM cache_entries \
             WHERE created_at >= $1 AND expires_at > $2 AND embedding IS NOT NULL AND demoted_at IS NULL")
            .bind(since_ms).bind(now_ms()).fetch_all(p).await)?;
        let n = rows.len();
        for (id, tenant, fp, bytes) in rows {
            if let Some(v) = bytes_vector(&bytes) {
                hnsw.insert_sync(&tenant, &id, &fp, &v);
            }
        }
        Ok(n)
    }

    async fn delete_ids(&self, tenant: &str, ids: &[String]) -> Result<u64, StoreError> {
        let mut n = 0;
        for id in ids {
            n += on_pool!(&self.store, p => sqlx::query("DELETE FROM cache_entries WHERE tenant_id = $1 AND id = $2")
                .bind(tenant).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        }
        self.unindex(tenant, ids).await;
        Ok(n)
    }

    /// Deletes one entry of `tenant`; false if it has no such entry.
    pub async fn invalidate_entry(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let n = self.delete_ids(tenant, &[id.to_string()]).await?;
        metrics::counter!("qm_cache_invalidations_total", "by" => "id").increment(n);
        Ok(n > 0)
    }

    /// Deletes the entries that answered `user`'s requests (the user's deletion).
    pub async fn invalidate_user(&self, tenant: &str, user: &str) -> Result<u64, StoreError> {
        let rows: Vec<(String, String)> = on_pool!(&self.store, p => sqlx::query_as(
            "DELETE FROM cache_entries WHERE tenant_id = $1 AND user_id = $2 RETURNING id, tenant_id")
            .bind(tenant).bind(user).fetch_all(p).await)?;
        let n = rows.len() as u64;
        self.unindex_rows(rows).await;
        metrics::counter!("qm_cache_invalidations_total", "by" => "user").increment(n);
        Ok(n)
    }

    /// Deletes every entry of `tenant`.
    pub async fn invalidate_tenant(&self, tenant: &str) -> Result<u64, StoreError> {
        let n = on_pool!(&self.store, p => sqlx::query("DELETE FROM cache_entries WHERE tenant_id = $1")
            .bind(tenant).execute(p).await.map(|r| r.rows_affected()))?;
        if let Err(e) = self.index.remove_tenant(tenant).await {
            tracing::warn!(error = %e, "cache index tenant removal failed");
        }
        if let Some(s) = &self.sync {
            s.publish(sync::Change::Tenant {
                tenant: tenant.to_string(),
            })
            .await;
        }
        metrics::counter!("qm_cache_invalidations_total", "by" => "tenant").increment(n);
        Ok(n)
    }

    /// Deletes the entries of `tenant` (every tenant when `None`) carrying any of `tags`.
    pub async fn invalidate_tags(
        &self,
        tenant: Option<&str>,
        tags: &[String],
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        for tag in tags {
            let rows: Vec<(String, String)> = match tenant {
                Some(t) => on_pool!(&self.store, p => sqlx::query_as(
                    "DELETE FROM cache_entries WHERE id IN (SELECT entry_id FROM cache_entry_tags WHERE tenant_id = $1 AND tag = $2) RETURNING id, tenant_id")
                    .bind(t).bind(tag).fetch_all(p).await)?,
                None => on_pool!(&self.store, p => sqlx::query_as(
                    "DELETE FROM cache_entries WHERE id IN (SELECT entry_id FROM cache_entry_tags WHERE tag = $1) RETURNING id, tenant_id")
                    .bind(tag).fetch_all(p).await)?,
            };
            total += rows.len() as u64;
            self.unindex_rows(rows).await;
        }
        metrics::counter!("qm_cache_invalidations_total", "by" => "tag").increment(total);
        Ok(total)
    }

    async fn unindex_rows(&self, rows: Vec<(String, String)>) {
        let mut by_tenant: std::collections::HashMap<String, Vec<String>> = Default::default();
        for (id, tenant) in rows {
            by_tenant.entry(tenant).or_default().push(id);
        }
        for (tenant, ids) in by_tenant {
            self.unindex(&tenant, &ids).await;
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

    /// Tenants whose graph was loaded from a snapshot at start (rather than rebuilt).
    pub fn snapshot_tenants(&self) -> usize {
        self.snapshot_tenants.load(Ordering::Relaxed)
    }

    pub fn index_stats(&self) -> (usize, usize) {
        let live = self.index.len();
        let dead = self.hnsw.as_ref().map_or(0, |h| h.dead());
        (live, dead)
    }

    /// Removes expired entries and the least recently used beyond each tenant's maximum,
    /// then rebuilds graphs that hold too many tombstones (on a blocking thread: lookups
    /// go on against the old graph). Returns entries removed.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        let expired: Vec<(String, String)> = on_pool!(&self.store, p => sqlx::query_as(
            "DELETE FROM cache_entries WHERE expires_at <= $1 RETURNING id, tenant_id")
            .bind(now_ms()).fetch_all(p).await)?;
        let mut removed = expired.len() as u64;
        metrics::counter!("qm_cache_evictions_total", "why" => "expired").increment(removed);
        self.unindex_rows(expired).await;
        let max = self.config.max_entries_per_tenant as i64;
        let over: Vec<(String, i64)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT tenant_id, COUNT(*) FROM cache_entries GROUP BY tenant_id HAVING COUNT(*) > $1")
            .bind(max).fetch_all(p).await)?;
        for (tenant, count) in over {
            let surplus = count - max;
            let evicted: Vec<(String, String)> = on_pool!(&self.store, p => sqlx::query_as(
                "DELETE FROM cache_entries WHERE id IN (SELECT id FROM cache_entries WHERE tenant_id = $1 ORDER BY last_hit_at, id LIMIT $2) RETURNING id, tenant_id")
                .bind(&tenant).bind(surplus).fetch_all(p).await)?;
            removed += evicted.len() as u64;
            metrics::counter!("qm_cache_evictions_total", "why" => "capacity")
                .increment(evicted.len() as u64);
            self.unindex_rows(evicted).await;
        }
        if let Some(hnsw) = &self.hnsw {
            for tenant in hnsw.tenants_to_rebuild() {
                let h = hnsw.clone();
                let started = std::time::Instant::now();
                let live = tokio::task::spawn_blocking(move || h.rebuild(&tenant))
                    .await
                    .unwrap_or(0);
                metrics::counter!("qm_cache_rebuilds_total").increment(1);
                tracing::info!(
                    live,
                    ms = started.elapsed().as_millis() as u64,
                    "cache graph rebuilt without tombstones"
                );
            }
        }
        metrics::gauge!("qm_cache_index_entries").set(self.index.len() as f64);
        Ok(removed)
    }

    /// Runs `load_index` once, then `sweep` every interval until `shutdown`.
    pub async fn run_upkeep(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        match self.load_index().await {
            Ok(n) if n > 0 => tracing::info!(entries = n, "cache index loaded from the store"),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cache index load failed; semantic lookups will miss")
            }
        }
        let every = Duration::from_secs(self.config.sweep_interval_secs);
        let snapshot_every = Duration::from_secs(self.config.snapshot_interval_secs);
        let mut last_snapshot = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "cache sweep failed");
            }
            if !snapshot_every.is_zero() && last_snapshot.elapsed() >= snapshot_every {
                last_snapshot = std::time::Instant::now();
                self.save_snapshot().await;
            }
        }
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
mod tests {
    use super::*;

    #[test]
    fn replay_pieces_cover_the_text_exactly() {
        let text = "The quick brown fox jumps over the lazy dog. Ünïcødé words too, and a verylongwordwithoutanybreaksatallinside end.";
        for size in [1, 5, 24, 1000] {
            let pieces = replay_pieces(text, size);
            assert_eq!(pieces.concat(), text);
            if size == 5 {
                assert!(pieces.len() > 10);
            }
        }
        assert!(replay_pieces("", 10).is_empty());
    }

    #[test]
    fn controls_parse_and_reject() {
        let cfg = CacheConfig::default();
        let c = Controls::parse(&ControlText::default(), &cfg).unwrap();
        assert!(c.read && c.write);
        assert_eq!(c.ttl_secs, cfg.default_ttl_secs);
        let text = ControlText {
            mode: Some("refresh".into()),
            ttl: Some("60".into()),
            threshold: Some("0.97".into()),
            tags: Some("doc:1, doc:2,doc:1".into()),
        };
        let c = Controls::parse(&text, &cfg).unwrap();
        assert_eq!((c.read, c.write, c.ttl_secs), (false, true, 60));
        assert_eq!(c.tags, vec!["doc:1", "doc:2"]);
        let some = |v: &str| Some(v.to_string());
        for (header, bad) in [
            (
                CACHE_HEADER,
                ControlText {
                    mode: some("sometimes"),
                    ..Default::default()
                },
            ),
            (
                TTL_HEADER,
                ControlText {
                    ttl: some("0"),
                    ..Default::default()
                },
            ),
            (
                TTL_HEADER,
                ControlText {
                    ttl: some("abc"),
                    ..Default::default()
                },
            ),
            (
                THRESHOLD_HEADER,
                ControlText {
                    threshold: some("1.5"),
                    ..Default::default()
                },
            ),
        ] {
            let e = Controls::parse(&bad, &cfg).unwrap_err();
            assert_eq!(e.header, header, "{bad:?}");
        }
    }

    #[test]
    fn only_complete_text_answers_are_cacheable() {
        let text = serde_json::json!({"role": "assistant", "content": "hi"});
        let tools = serde_json::json!({"role": "assistant", "content": null, "tool_calls": [{}]});
        assert!(StoredAnswer::cacheable(Some("stop"), &text));
        assert!(StoredAnswer::cacheable(Some("length"), &text));
        assert!(!StoredAnswer::cacheable(Some("content_filter"), &text));
        assert!(!StoredAnswer::cacheable(None, &text));
        assert!(!StoredAnswer::cacheable(Some("tool_calls"), &tools));
    }
}
