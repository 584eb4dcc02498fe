//! The request log's SQL: batches of rows inserted in a few prepared statement shapes,
//! skipping ids already present (so a retry or a replayed spill file writes nothing twice).

use std::time::Duration;

use super::Row;
use crate::store::{Store, StoreError, on_pool};

/// Longest one insert may take before it counts as failed (a connection to a database that
/// vanished can otherwise hang until TCP gives up).
const INSERT_TIMEOUT: Duration = Duration::from_secs(10);

/// Inserts a batch, counting one that hangs as an outage, and reports the outcome to the
/// store's health (which `/readyz` shows).
pub(super) async fn insert_with_timeout(store: &Store, batch: &[Row]) -> Result<(), StoreError> {
    let result = match tokio::time::timeout(INSERT_TIMEOUT, insert_batch(store, batch)).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(format!(
            "a request-log insert took over {} s",
            INSERT_TIMEOUT.as_secs()
        ))),
    };
    store.observe(result)
}

/// Inserts a batch, all or nothing, without a timeout.
pub(super) async fn insert_batch(store: &Store, batch: &[Row]) -> Result<(), StoreError> {
    // Multi-row INSERTs: a round trip to the database (for SQLite, a hop to its connection
    // thread and back) per statement of up to 64 rows instead of one per row.
    const HEAD: &str = "INSERT INTO request_log (id, request_id, tenant_id, key_id, model, provider, stream, status, \
        http_status, error_code, tokens_in, tokens_out, latency_ms, ttft_ms, created_at, logged_at, cost_usd, saved_usd, route_tier, route_reason, user_id) ";
    // `logged_at` is when the row is written (one writer, so it only grows): usage metering
    // reads by it, so a long stream that started in an earlier window is still counted.
    let logged_at = crate::clock::now_ms();
    on_pool!(store, pool => {
        // A batch is all or nothing: when it takes more than one statement they share a
        // transaction.
        let mut tx = if statement_chunks(batch).nth(1).is_some() {
            Some(pool.begin().await?)
        } else {
            None
        };
        for rows in statement_chunks(batch) {
            let mut insert = sqlx::QueryBuilder::new(HEAD);
            insert.push_values(rows, |mut row, r| {
                row.push_bind(r.id.clone())
                    .push_bind(r.request_id.clone())
                    .push_bind(r.tenant_id.clone())
                    .push_bind(r.key_id.clone())
                    .push_bind(r.model.clone())
                    .push_bind(r.provider.clone())
                    .push_bind(r.stream)
                    .push_bind(r.status.clone())
                    .push_bind(r.http_status as i32)
                    .push_bind(r.error_code.clone())
                    .push_bind(r.tokens_in as i64)
                    .push_bind(r.tokens_out as i64)
                    .push_bind(r.latency_ms)
                    .push_bind(r.ttft_ms)
                    .push_bind(r.created_at)
                    .push_bind(logged_at)
                    .push_bind(r.cost_usd)
                    .push_bind(r.saved_usd)
                    .push_bind(r.route_tier.clone())
                    .push_bind(r.route_reason.clone())
                    .push_bind(r.user_id.clone());
            });
            // A row already written (a retry after a lost acknowledgement, a replayed spill
            // file) is skipped.
            insert.push(" ON CONFLICT (id) DO NOTHING");
            // Kept prepared: statements come in a few sizes only (see `statement_chunks`), so
            // each connection caches at most a handful of them, and SQLite does not parse the
            // SQL again for every batch (parsing cost as much as inserting).
            let query = insert.build();
            match tx.as_mut() {
                Some(tx) => query.execute(&mut **tx).await?,
                None => query.execute(pool).await?,
            };
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
    });
    Ok(())
}

/// The rows of each INSERT statement for a batch, in order: each the largest power of two
/// up to `MAX_ROWS_PER_INSERT` that is left. Any batch is then written with statements of
/// only log2(MAX_ROWS_PER_INSERT) + 1 distinct shapes, which stay prepared; one statement
/// per batch size would fill each connection's statement cache with large INSERTs (tens of
/// MiB).
pub(super) fn statement_chunks<T>(mut rest: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let n = rest.len().min(MAX_ROWS_PER_INSERT);
        let (rows, tail) = rest.split_at(if n == 0 { 0 } else { 1 << n.ilog2() });
        rest = tail;
        (!rows.is_empty()).then_some(rows)
    })
}

/// Most rows in one INSERT statement, a power of two (21 parameters each; SQLite allows
/// 32,766, PostgreSQL 65,535).
pub(super) const MAX_ROWS_PER_INSERT: usize = 64;
