//! Replicas keeping their in-process graphs in step (the `hnsw` backend on PostgreSQL): each
//! replica announces the entries it indexes and removes on one `LISTEN`/`NOTIFY` channel,
//! and applies what the others announce to its own graph, an added entry's vector read back
//! from the store. So an answer cached through one replica is a semantic hit through the
//! others within moments, and invalidations (by id, tag, tenant, expiry or eviction) leave
//! no stale node behind. Correctness never depends on it: every candidate is read back from
//! the store, so a missed removal only costs a wasted lookup, and after the connection drops
//! the entries written meanwhile are read back from the store.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::Cache;
use crate::clock::now_ms;
use crate::store::{Pool, Store};

pub const CHANNEL: &str = "qm_cache";
/// Ids per message (a NOTIFY payload holds under 8,000 bytes; ids are 35).
const IDS_PER_MESSAGE: usize = 150;

/// One announcement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Change {
    /// Entries stored and indexed (their vectors are in the store).
    Add {
        tenant: String,
        ids: Vec<String>,
    },
    Remove {
        tenant: String,
        ids: Vec<String>,
    },
    /// Every entry of a tenant.
    Tenant {
        tenant: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    /// The replica that made the change (it has applied it already).
    from: String,
    #[serde(flatten)]
    change: Change,
}

/// This replica's side of the channel.
pub struct CacheSync {
    store: Store,
    replica: String,
}

impl CacheSync {
    /// A publisher on `store`, when it is PostgreSQL.
    pub fn new(store: &Store) -> Option<Self> {
        matches!(store.pool(), Pool::Postgres(_)).then(|| Self {
            store: store.clone(),
            replica: format!("r_{}", uuid::Uuid::new_v4().simple()),
        })
    }

    /// Announces a change (best effort: a failure is logged; see the module docs).
    pub async fn publish(&self, change: Change) {
        let Pool::Postgres(pool) = self.store.pool() else {
            return;
        };
        for change in split(change) {
            let payload = serde_json::to_string(&Message {
                from: self.replica.clone(),
                change,
            })
            .expect("messages serialize");
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&payload)
                .execute(pool)
                .await
            {
                tracing::debug!(error = %e, "cache change not announced to other replicas");
            }
        }
    }
}

/// A change in messages that fit a payload.
fn split(change: Change) -> Vec<Change> {
    match change {
        Change::Add { tenant, ids } => ids
            .chunks(IDS_PER_MESSAGE)
            .map(|c| Change::Add {
                tenant: tenant.clone(),
                ids: c.to_vec(),
            })
            .collect(),
        Change::Remove { tenant, ids } => ids
            .chunks(IDS_PER_MESSAGE)
            .map(|c| Change::Remove {
                tenant: tenant.clone(),
                ids: c.to_vec(),
            })
            .collect(),
        t @ Change::Tenant { .. } => vec![t],
    }
}

impl Cache {
    /// Listens for the other replicas' changes until `shutdown`, reconnecting as needed.
    pub async fn run_sync(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(sync) = &self.sync else { return };
        let Pool::Postgres(pool) = self.store.pool() else {
            return;
        };
        let mut since = now_ms();
        loop {
            let mut listener = match PgListener::connect_with(pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "cache sync: cannot listen yet");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::debug!(error = %e, "cache sync: LISTEN failed");
                continue;
            }
            // Whatever other replicas stored while this one was not listening.
            match self.index_since(since - 5_000).await {
                Ok(n) if n > 0 => tracing::info!(entries = n, "cache sync: caught up"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cache sync: catch-up failed"),
            }
            loop {
                let note = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match note {
                    Ok(Some(n)) => {
                        since = now_ms();
                        match serde_json::from_str::<Message>(n.payload()) {
                            Ok(m) if m.from != sync.replica => self.apply(m.change).await,
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "cache sync: a message not understood")
                            }
                        }
                    }
                    // The connection dropped: listen again and catch up.
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "cache sync: listener failed");
                        break;
                    }
                }
            }
        }
    }

    /// Applies another replica's change to this one's graph.
    pub(super) async fn apply(&self, change: Change) {
        let Some(hnsw) = &self.hnsw else { return };
        metrics::counter!("qm_cache_sync_applied_total").increment(1);
        match change {
            Change::Add { tenant, ids } => {
                for id in ids {
                    match self.indexed_vector(&tenant, &id).await {
                        Ok(Some((fp, v))) => hnsw.insert_sync(&tenant, &id, &fp, &v),
                        Ok(None) => {} // gone again already
                        Err(e) => tracing::debug!(error = %e, "cache sync: entry not read"),
                    }
                }
            }
            Change::Remove { tenant, ids } => hnsw.remove_sync(&tenant, &ids),
            Change::Tenant { tenant } => hnsw.remove_tenant(&tenant),
        }
    }
}
