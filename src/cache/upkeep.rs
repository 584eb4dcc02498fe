//! Keeping the cache in shape: invalidation (one entry, a user's, a tenant's, by tag), the
//! sweep of expired and least recently used entries, and the upkeep loop (the index loaded
//! at start, then the sweep and the graph snapshot on their intervals).

use std::sync::Arc;
use std::time::Duration;

use super::{Cache, sync};
use crate::clock::now_ms;
use crate::store::{StoreError, on_pool};

impl Cache {
    pub(super) async fn delete_ids(&self, tenant: &str, ids: &[String]) -> Result<u64, StoreError> {
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
        let now = now_ms();
        for tag in tags {
            // First the time, then the rows: an answer still being written from the old
            // sources finds it when it is stored, and is not (`NewEntry::sources_read_at`).
            on_pool!(&self.store, p => sqlx::query(
                "INSERT INTO cache_tag_invalidations (tenant_id, tag, at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, tag) DO UPDATE SET at = excluded.at")
                .bind(tenant.unwrap_or("*")).bind(tag).bind(now).execute(p).await.map(|_| ()))?;
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

    /// Removes expired entries and the least recently used beyond each tenant's maximum,
    /// then rebuilds graphs that hold too many tombstones (on a blocking thread: lookups
    /// go on against the old graph). Returns entries removed.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        // A tag's invalidation time only matters to answers still being written from sources
        // read before it; after an hour there are none.
        on_pool!(&self.store, p => sqlx::query("DELETE FROM cache_tag_invalidations WHERE at < $1")
            .bind(now_ms() - 3_600_000).execute(p).await.map(|_| ()))?;
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
