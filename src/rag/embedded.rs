//! The embedded retrieval store: rows in SQLite (the source of truth, one transaction per
//! document), an hnsw_rs graph per tenant and a BM25 index per tenant in memory, refilled
//! from the rows at start. Needs no service at all.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use parking_lot::RwLock;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::bm25::Bm25;
use super::store::{
    ChunkRecord, ChunkStore, DocumentRecord, Filter, Metadata, ScoredChunk, metadata_from_text,
    vector_from_bytes, vector_to_bytes,
};
use crate::index::{HnswIndex, HnswParams, dot};
use crate::store::StoreError;

/// No fingerprint: every chunk of a tenant is one search space.
const NO_FP: &str = "";

struct ChunkMeta {
    metadata: Arc<Metadata>,
}

#[derive(Default)]
struct TenantMem {
    chunks: HashMap<Arc<str>, ChunkMeta>,
    bm25: Bm25,
}

pub struct EmbeddedStore {
    pool: SqlitePool,
    hnsw: Arc<HnswIndex>,
    /// Where the graphs are saved (at shutdown) and loaded from at start.
    snapshot_dir: Option<std::path::PathBuf>,
    /// The graphs' change count at the last save.
    saved_at: std::sync::atomic::AtomicU64,
    tenants: Arc<RwLock<HashMap<String, TenantMem>>>,
    /// Writes are serialised so memory follows the rows in commit order.
    write: tokio::sync::Mutex<()>,
}

fn bm25_text(title: Option<&str>, heading: Option<&str>, content: &str) -> String {
    format!(
        "{}\n{}\n{}",
        title.unwrap_or_default(),
        heading.unwrap_or_default(),
        content
    )
}

fn doc_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<DocumentRecord, sqlx::Error> {
    Ok(DocumentRecord {
        id: r.try_get("id")?,
        title: r.try_get("title")?,
        source: r.try_get("source")?,
        format: r.try_get("format")?,
        content_hash: r.try_get("content_hash")?,
        metadata: metadata_from_text(&r.try_get::<String, _>("metadata")?),
        chunk_count: r.try_get::<i64, _>("chunk_count")? as usize,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl EmbeddedStore {
    /// Opens the store and loads every chunk into memory; the vector graphs from their
    /// snapshot in `snapshot_dir` when there is one (only what changed since is inserted).
    pub async fn open(
        pool: SqlitePool,
        params: HnswParams,
        snapshot_dir: Option<std::path::PathBuf>,
    ) -> Result<Self, StoreError> {
        let store = Self {
            pool,
            hnsw: Arc::new(HnswIndex::new(params, 4096)),
            snapshot_dir,
            // Nothing saved yet: the first save writes whatever was built or loaded.
            saved_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            tenants: Arc::new(RwLock::new(HashMap::new())),
            write: tokio::sync::Mutex::new(()),
        };
        store.load().await?;
        Ok(store)
    }

    async fn load(&self) -> Result<(), StoreError> {
        let snapshot = match self.snapshot_dir.clone() {
            Some(dir) => {
                let h = self.hnsw.clone();
                tokio::task::spawn_blocking(move || h.load(&dir))
                    .await
                    .unwrap_or_default()
            }
            None => Vec::new(),
        };
        let mut in_store: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        let mut by_tenant: HashMap<String, Vec<(String, String, Vec<f32>)>> = HashMap::new();
        let mut rows = sqlx::query(
            "SELECT tenant_id, id, title, heading, content, metadata, embedding FROM rag_chunks",
        )
        .fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            let tenant: String = r.try_get("tenant_id")?;
            let id: String = r.try_get("id")?;
            let title: Option<String> = r.try_get("title")?;
            let heading: Option<String> = r.try_get("heading")?;
            let content: String = r.try_get("content")?;
            let metadata = metadata_from_text(&r.try_get::<String, _>("metadata")?);
            let embedding: Vec<u8> = r.try_get("embedding")?;
            let key: Arc<str> = Arc::from(id.as_str());
            {
                let mut tenants = self.tenants.write();
                let mem = tenants.entry(tenant.clone()).or_default();
                mem.bm25.insert(
                    key.clone(),
                    &bm25_text(title.as_deref(), heading.as_deref(), &content),
                );
                mem.chunks.insert(
                    key,
                    ChunkMeta {
                        metadata: Arc::new(metadata),
                    },
                );
            }
            if !snapshot.is_empty() {
                in_store
                    .entry(tenant.clone())
                    .or_default()
                    .insert(id.clone());
            }
            by_tenant.entry(tenant).or_default().push((
                id,
                NO_FP.to_string(),
                vector_from_bytes(&embedding),
            ));
        }
        drop(rows);
        let hnsw = self.hnsw.clone();
        let stale = crate::index::stale(&snapshot, &in_store);
        tokio::task::spawn_blocking(move || {
            // Entries already in a loaded graph with the same vector are skipped; those
            // stored since the snapshot are inserted, and those whose vector changed since
            // (a document re-ingested after the last save, then a kill) are replaced.
            for (tenant, items) in by_tenant {
                hnsw.load_tenant(&tenant, items);
            }
            for (tenant, gone) in stale {
                hnsw.remove_sync(&tenant, &gone);
            }
        })
        .await
        .map_err(|e| StoreError::Conflict(format!("loading the vector index: {e}")))?;
        if !snapshot.is_empty() {
            tracing::info!(
                tenants = snapshot.len(),
                "retrieval graphs loaded from their snapshots"
            );
            // Replaced and removed entries left tombstones in the loaded graphs.
            self.rebuild_if_due();
        }
        Ok(())
    }

    /// Chunks by id, in the order given, with the scores given.
    async fn hydrate(
        &self,
        tenant: &str,
        ranked: Vec<(String, f32)>,
    ) -> Result<Vec<ScoredChunk>, StoreError> {
        if ranked.is_empty() {
            return Ok(Vec::new());
        }
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, document_id, idx, title, heading, content, metadata, repeats FROM rag_chunks WHERE tenant_id = ",
        );
        qb.push_bind(tenant).push(" AND id IN (");
        let mut sep = qb.separated(", ");
        for (id, _) in &ranked {
            sep.push_bind(id.as_str());
        }
        sep.push_unseparated(")");
        let rows = qb.build().fetch_all(&self.pool).await?;
        let mut found: HashMap<String, ScoredChunk> = HashMap::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get("id")?;
            found.insert(
                id.clone(),
                ScoredChunk {
                    chunk_id: id,
                    document_id: r.try_get("document_id")?,
                    index: r.try_get::<i64, _>("idx")? as usize,
                    title: r.try_get("title")?,
                    heading: r.try_get("heading")?,
                    text: r.try_get("content")?,
                    metadata: metadata_from_text(&r.try_get::<String, _>("metadata")?),
                    repeats: r.try_get::<i64, _>("repeats")?.max(1) as usize,
                    score: 0.0,
                },
            );
        }
        // A chunk replaced between ranking and reading is left out, not half-shown.
        Ok(ranked
            .into_iter()
            .filter_map(|(id, score)| {
                found.remove(&id).map(|mut c| {
                    c.score = score;
                    c
                })
            })
            .collect())
    }

    /// Runs a ranking over one tenant's memory with the filter as a predicate on chunk ids.
    fn ranked(
        &self,
        tenant: &str,
        filter: &Filter,
        rank: impl FnOnce(&TenantMem, &dyn Fn(&str) -> bool) -> Vec<(String, f32)>,
    ) -> Vec<(String, f32)> {
        let tenants = self.tenants.read();
        let Some(mem) = tenants.get(tenant) else {
            return Vec::new();
        };
        let keep = |id: &str| {
            filter.is_empty()
                || mem
                    .chunks
                    .get(id)
                    .is_some_and(|c| filter.matches(&c.metadata))
        };
        rank(mem, &keep)
    }

    fn rebuild_if_due(&self) {
        for tenant in self.hnsw.tenants_to_rebuild() {
            let hnsw = self.hnsw.clone();
            tokio::task::spawn_blocking(move || hnsw.rebuild(&tenant));
        }
    }

    /// Brings memory in line with committed rows: `old` chunks out, `new` ones in. Runs on
    /// a blocking thread (BM25 compaction and graph inserts are CPU work), and runs to the
    /// end even if the caller goes away.
    async fn apply(
        &self,
        tenant: &str,
        old: Vec<String>,
        new: Vec<ChunkRecord>,
        title: Option<String>,
        metadata: Metadata,
    ) -> Result<(), StoreError> {
        let hnsw = self.hnsw.clone();
        let tenants = self.tenants.clone();
        let tenant = tenant.to_string();
        tokio::task::spawn_blocking(move || {
            if !old.is_empty() {
                hnsw.remove_entries(&tenant, &old);
            }
            {
                let mut all = tenants.write();
                let mem = all.entry(tenant.clone()).or_default();
                for id in &old {
                    mem.chunks.remove(id.as_str());
                    mem.bm25.remove(id);
                }
                let meta = Arc::new(metadata);
                for c in &new {
                    let key: Arc<str> = Arc::from(c.id.as_str());
                    mem.bm25.insert(
                        key.clone(),
                        &bm25_text(title.as_deref(), c.heading.as_deref(), &c.text),
                    );
                    mem.chunks.insert(
                        key,
                        ChunkMeta {
                            metadata: meta.clone(),
                        },
                    );
                }
            }
            for c in &new {
                hnsw.insert_sync(&tenant, &c.id, NO_FP, &c.embedding);
            }
        })
        .await
        .map_err(|e| StoreError::Conflict(format!("indexing: {e}")))?;
        self.rebuild_if_due();
        Ok(())
    }

    async fn chunk_ids(
        tx: &mut sqlx::SqliteConnection,
        tenant: &str,
        doc: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM rag_chunks WHERE tenant_id = $1 AND document_id = $2",
        )
        .bind(tenant)
        .bind(doc)
        .fetch_all(tx)
        .await?)
    }
}

#[async_trait::async_trait]
impl ChunkStore for EmbeddedStore {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn save_snapshot(&self) {
        use std::sync::atomic::Ordering;
        let Some(dir) = self.snapshot_dir.clone() else {
            return;
        };
        let changes = self.hnsw.changes();
        if changes == self.saved_at.load(Ordering::Relaxed) {
            return;
        }
        let (hnsw, started) = (self.hnsw.clone(), std::time::Instant::now());
        match tokio::task::spawn_blocking(move || hnsw.save(&dir)).await {
            Ok(Ok(n)) => {
                self.saved_at.store(changes, Ordering::Relaxed);
                tracing::info!(
                    tenants = n,
                    ms = started.elapsed().as_millis() as u64,
                    "retrieval graphs saved"
                );
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "retrieval graphs not saved"),
            Err(e) => tracing::warn!(error = %e, "retrieval graph save failed"),
        }
    }

    async fn document(&self, tenant: &str, id: &str) -> Result<Option<DocumentRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM rag_documents WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(doc_from_row).transpose()?)
    }

    async fn chunk_vectors(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT content_hash, embedding FROM rag_chunks WHERE tenant_id = $1 AND document_id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(h, v)| (h, vector_from_bytes(&v)))
            .collect())
    }

    async fn put(
        &self,
        tenant: &str,
        doc: &DocumentRecord,
        chunks: Vec<ChunkRecord>,
    ) -> Result<(), StoreError> {
        let _write = self.write.lock().await;
        let metadata = serde_json::Value::Object(doc.metadata.clone()).to_string();
        // The write lock from the start: a deferred transaction that reads (`chunk_ids`)
        // and then writes fails at once (SQLITE_BUSY, no busy wait) when another connection
        // (the request log writer, the health probe) wrote in between.
        let mut tx = self
            .pool
            .begin_with(sqlx::AssertSqlSafe("BEGIN IMMEDIATE"))
            .await?;
        let old = Self::chunk_ids(&mut tx, tenant, &doc.id).await?;
        sqlx::query("DELETE FROM rag_chunks WHERE tenant_id = $1 AND document_id = $2")
            .bind(tenant)
            .bind(&doc.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO rag_documents (tenant_id, id, title, source, format, content_hash, metadata, chunk_count, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (tenant_id, id) DO UPDATE SET title = excluded.title, source = excluded.source,
               format = excluded.format, content_hash = excluded.content_hash, metadata = excluded.metadata,
               chunk_count = excluded.chunk_count, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(&doc.id)
        .bind(&doc.title)
        .bind(&doc.source)
        .bind(&doc.format)
        .bind(&doc.content_hash)
        .bind(&metadata)
        .bind(doc.chunk_count as i64)
        .bind(doc.created_at)
        .bind(doc.updated_at)
        .execute(&mut *tx)
        .await?;
        for batch in chunks.chunks(500) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO rag_chunks (tenant_id, id, document_id, idx, title, heading, content, content_hash, tokens, metadata, embedding, repeats) ",
            );
            qb.push_values(batch, |mut b, c| {
                b.push_bind(tenant)
                    .push_bind(&c.id)
                    .push_bind(&doc.id)
                    .push_bind(c.index as i64)
                    .push_bind(&doc.title)
                    .push_bind(&c.heading)
                    .push_bind(&c.text)
                    .push_bind(&c.content_hash)
                    .push_bind(c.tokens as i64)
                    .push_bind(&metadata)
                    .push_bind(vector_to_bytes(&c.embedding))
                    .push_bind(c.repeats as i64);
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        // Memory follows the committed rows.
        self.apply(tenant, old, chunks, doc.title.clone(), doc.metadata.clone())
            .await
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let _write = self.write.lock().await;
        // The write lock from the start: a deferred transaction that reads (`chunk_ids`)
        // and then writes fails at once (SQLITE_BUSY, no busy wait) when another connection
        // (the request log writer, the health probe) wrote in between.
        let mut tx = self
            .pool
            .begin_with(sqlx::AssertSqlSafe("BEGIN IMMEDIATE"))
            .await?;
        let old = Self::chunk_ids(&mut tx, tenant, id).await?;
        let deleted = sqlx::query("DELETE FROM rag_documents WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        self.apply(tenant, old, Vec::new(), None, Metadata::new())
            .await?;
        Ok(deleted > 0)
    }

    async fn list(
        &self,
        tenant: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM rag_documents WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(tenant)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(doc_from_row).collect::<Result<_, _>>()?)
    }

    async fn vector_search(
        &self,
        tenant: &str,
        vector: &[f32],
        k: usize,
        filter: &Filter,
        exact: bool,
    ) -> Result<Vec<ScoredChunk>, StoreError> {
        let ranked: Vec<(String, f32)> = if exact {
            let mut rows =
                sqlx::query("SELECT id, metadata, embedding FROM rag_chunks WHERE tenant_id = $1")
                    .bind(tenant)
                    .fetch(&self.pool);
            let mut all: Vec<(String, f32)> = Vec::new();
            while let Some(r) = rows.try_next().await? {
                if !filter.is_empty()
                    && !filter.matches(&metadata_from_text(&r.try_get::<String, _>("metadata")?))
                {
                    continue;
                }
                let v = vector_from_bytes(&r.try_get::<Vec<u8>, _>("embedding")?);
                all.push((r.try_get("id")?, dot(vector, &v)));
            }
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            all.truncate(k);
            all
        } else {
            self.ranked(tenant, filter, |_, keep| {
                self.hnsw
                    .search_entries(tenant, vector, k, None, keep)
                    .into_iter()
                    .map(|c| (c.entry_id, c.similarity))
                    .collect()
            })
        };
        self.hydrate(tenant, ranked).await
    }

    async fn text_search(
        &self,
        tenant: &str,
        query: &str,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<ScoredChunk>, StoreError> {
        let ranked = self.ranked(tenant, filter, |mem, keep| {
            mem.bm25
                .search(query, k, keep)
                .into_iter()
                .map(|(id, s)| (id.to_string(), s))
                .collect()
        });
        self.hydrate(tenant, ranked).await
    }
}

#[cfg(test)]
mod tests;
