//! The in-process graphs kept in step with the store: refilled at start (from their saved
//! snapshots, then the store's rows), saved when they changed, and caught up with the entries
//! other replicas stored (`sync.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use super::{Cache, bytes_vector};
use crate::clock::now_ms;
use crate::store::{StoreError, on_pool};

impl Cache {
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
        let mut in_store: HashMap<String, HashSet<String>> = Default::default();
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
            let mut by_tenant: HashMap<String, Vec<(String, String, Vec<f32>)>> =
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

    /// An entry's fingerprint and vector, if it is live (another replica's new entry).
    pub(super) async fn indexed_vector(
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
    pub(super) async fn index_since(&self, since_ms: i64) -> Result<usize, StoreError> {
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

    /// Tenants whose graph was loaded from a snapshot at start (rather than rebuilt).
    pub fn snapshot_tenants(&self) -> usize {
        self.snapshot_tenants.load(Ordering::Relaxed)
    }

    pub fn index_stats(&self) -> (usize, usize) {
        let live = self.index.len();
        let dead = self.hnsw.as_ref().map_or(0, |h| h.dead());
        (live, dead)
    }
}
