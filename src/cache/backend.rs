//! The cache's vector index behind one trait: the in-process HNSW graph (`crate::index`, the
//! default; kept in step across replicas by `sync.rs`), a pgvector table in the PostgreSQL
//! store (`pgvector.rs`) or Qdrant (`qdrant.rs`), both shared by every replica. Entries are found by (tenant,
//! parameter fingerprint, vector); the store stays the source of truth for everything else.

use crate::index::{Candidate, HnswIndex};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("vector index: {0}")]
    Backend(String),
}

/// What every index backend does. Vectors are L2-normalised, so dot product = cosine.
#[async_trait::async_trait]
pub trait VectorIndex: Send + Sync {
    fn name(&self) -> &'static str;
    async fn insert(
        &self,
        tenant: &str,
        entry_id: &str,
        fingerprint: &str,
        vector: &[f32],
    ) -> Result<(), IndexError>;
    /// The `k` nearest entries of `tenant` with this fingerprint, best first.
    async fn search(
        &self,
        tenant: &str,
        fingerprint: &str,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<Candidate>, IndexError>;
    async fn remove(&self, tenant: &str, entry_ids: &[String]) -> Result<(), IndexError>;
    async fn remove_tenant(&self, tenant: &str) -> Result<(), IndexError>;
    /// Whether the index must be refilled from the store at start (in-process indexes).
    fn needs_load(&self) -> bool;
    /// Live entries held, over all tenants (an estimate for remote indexes).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl VectorIndex for HnswIndex {
    fn name(&self) -> &'static str {
        "hnsw"
    }

    async fn insert(
        &self,
        tenant: &str,
        entry_id: &str,
        fingerprint: &str,
        vector: &[f32],
    ) -> Result<(), IndexError> {
        self.insert_sync(tenant, entry_id, fingerprint, vector);
        Ok(())
    }

    async fn search(
        &self,
        tenant: &str,
        fingerprint: &str,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        Ok(self.search_sync(tenant, fingerprint, vector, k))
    }

    async fn remove(&self, tenant: &str, entry_ids: &[String]) -> Result<(), IndexError> {
        self.remove_sync(tenant, entry_ids);
        Ok(())
    }

    async fn remove_tenant(&self, tenant: &str) -> Result<(), IndexError> {
        HnswIndex::remove_tenant(self, tenant);
        Ok(())
    }

    fn needs_load(&self) -> bool {
        true
    }

    fn len(&self) -> usize {
        HnswIndex::len(self)
    }
}
