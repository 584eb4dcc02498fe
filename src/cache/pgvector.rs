//! The semantic cache's index in PostgreSQL with pgvector (`cache.backend = "pgvector"`):
//! one `cache_vectors` table with an HNSW index, shared by every replica, so an entry
//! written through one is found through all at once with no other service to run. Every
//! search is filtered by tenant and fingerprint in SQL, with pgvector's iterative index scan
//! so a selective filter still returns its nearest rows; a vector row goes with its entry
//! (`ON DELETE CASCADE`), so invalidation needs nothing here.

use pgvector::Vector;
use serde::Deserialize;

use super::backend::{IndexError, VectorIndex};
use crate::index::Candidate;
use crate::store::{Pool, Store};

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgvectorCacheConfig {
    /// `hnsw.ef_search` for every search (at least the candidates asked for).
    pub ef_search: u32,
}

impl Default for PgvectorCacheConfig {
    fn default() -> Self {
        Self { ef_search: 64 }
    }
}

pub struct PgVectorIndex {
    pool: sqlx::PgPool,
    config: PgvectorCacheConfig,
}

fn backend(e: sqlx::Error) -> IndexError {
    IndexError::Backend(format!("pgvector: {e}"))
}

impl PgVectorIndex {
    pub fn new(store: &Store, config: PgvectorCacheConfig) -> anyhow::Result<Self> {
        match store.pool() {
            Pool::Postgres(pool) => Ok(Self {
                pool: pool.clone(),
                config,
            }),
            Pool::Sqlite(_) => anyhow::bail!(
                "cache.backend = \"pgvector\" needs PostgreSQL as the database (database.url)"
            ),
        }
    }
}

#[async_trait::async_trait]
impl VectorIndex for PgVectorIndex {
    fn name(&self) -> &'static str {
        "pgvector"
    }

    async fn insert(
        &self,
        tenant: &str,
        entry_id: &str,
        fingerprint: &str,
        vector: &[f32],
    ) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO cache_vectors (entry_id, tenant_id, fingerprint, embedding) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (entry_id) DO UPDATE SET embedding = excluded.embedding",
        )
        .bind(entry_id)
        .bind(tenant)
        .bind(fingerprint)
        .bind(Vector::from(vector.to_vec()))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn search(
        &self,
        tenant: &str,
        fingerprint: &str,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(
            "SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)",
        )
        .bind(self.config.ef_search.max(k as u32).to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        // Inner product on normalised vectors is the cosine; `<#>` is its negative.
        let rows: Vec<(String, f64)> = sqlx::query_as(
            "SELECT entry_id, (-(embedding <#> $1))::float8 FROM cache_vectors \
             WHERE tenant_id = $2 AND fingerprint = $3 ORDER BY embedding <#> $1 LIMIT $4",
        )
        .bind(Vector::from(vector.to_vec()))
        .bind(tenant)
        .bind(fingerprint)
        .bind(k as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        let mut out: Vec<Candidate> = rows
            .into_iter()
            .map(|(entry_id, similarity)| Candidate {
                entry_id,
                similarity: similarity as f32,
            })
            .collect();
        // Relaxed order: the rows are nearly sorted; callers want the best first.
        out.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        Ok(out)
    }

    /// Deleted entries' rows went with them (`ON DELETE CASCADE`); this is for entries that
    /// stay but leave the index (demoted by feedback).
    async fn remove(&self, tenant: &str, entry_ids: &[String]) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM cache_vectors WHERE tenant_id = $1 AND entry_id = ANY($2)")
            .bind(tenant)
            .bind(entry_ids)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn remove_tenant(&self, _tenant: &str) -> Result<(), IndexError> {
        Ok(())
    }

    fn needs_load(&self) -> bool {
        false
    }

    fn len(&self) -> usize {
        0 // not counted per lookup; `GET /admin/cache` counts the entries in the store
    }
}
