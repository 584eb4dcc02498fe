//! `Idempotency-Key` records, in the manner of Stripe's API: per tenant, a key is taken by
//! its first request (with a hash of that request), then holds the finished response for
//! `idempotency.ttl_secs` so a retry can replay it, or is released when the request failed
//! so the retry really runs. The HTTP middleware is `api::idempotency`.

use crate::clock::now_ms;
use crate::store::{Store, StoreError, on_pool};

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    pub enabled: bool,
    /// How long a key (and its stored response) lives.
    pub ttl_secs: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_secs: 86_400,
        }
    }
}

pub enum Begin {
    /// The key is new: run the request.
    Run,
    Replay {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
    InUse,
    Mismatch,
}

pub async fn begin(
    store: &Store,
    tenant: &str,
    key: &str,
    hash: &str,
    ttl_ms: i64,
) -> Result<Begin, StoreError> {
    let now = now_ms();
    // New, or expired (then taken over as new): one statement either way.
    let inserted = on_pool!(store, p => sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, idem_key, request_hash, state, created_at) VALUES ($1, $2, $3, 'pending', $4) \
         ON CONFLICT (tenant_id, idem_key) DO UPDATE SET request_hash = excluded.request_hash, state = 'pending', \
         status_code = NULL, content_type = NULL, body = NULL, created_at = excluded.created_at \
         WHERE idempotency_keys.created_at < $5")
        .bind(tenant).bind(key).bind(hash).bind(now).bind(now - ttl_ms)
        .execute(p).await.map(|r| r.rows_affected() == 1))?;
    if inserted {
        return Ok(Begin::Run);
    }
    type Row = (String, String, Option<i64>, Option<String>, Option<Vec<u8>>);
    let row: Option<Row> = on_pool!(store, p => sqlx::query_as(
        "SELECT request_hash, state, status_code, content_type, body FROM idempotency_keys WHERE tenant_id = $1 AND idem_key = $2")
        .bind(tenant).bind(key).fetch_optional(p).await)?;
    Ok(match row {
        // Released between our insert and select: treat as in use; the client retries.
        None => Begin::InUse,
        Some((stored_hash, _, _, _, _)) if stored_hash != hash => Begin::Mismatch,
        Some((_, state, Some(status), content_type, Some(body))) if state == "done" => {
            Begin::Replay {
                status: status as u16,
                content_type,
                body,
            }
        }
        Some(_) => Begin::InUse,
    })
}

pub async fn finish(
    store: &Store,
    tenant: &str,
    key: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), StoreError> {
    on_pool!(store, p => sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', status_code = $1, content_type = $2, body = $3 \
         WHERE tenant_id = $4 AND idem_key = $5 AND state = 'pending'")
        .bind(i64::from(status)).bind(content_type).bind(body).bind(tenant).bind(key)
        .execute(p).await.map(|_| ()))?;
    Ok(())
}

pub async fn release(store: &Store, tenant: &str, key: &str) -> Result<(), StoreError> {
    on_pool!(store, p => sqlx::query(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND idem_key = $2 AND state = 'pending'")
        .bind(tenant).bind(key).execute(p).await.map(|_| ()))?;
    Ok(())
}

/// Deletes keys older than the TTL (run by the housekeeping job).
pub async fn purge_expired(store: &Store, ttl_secs: u64) -> Result<u64, StoreError> {
    let before = now_ms() - ttl_secs as i64 * 1000;
    Ok(
        on_pool!(store, p => sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(before).execute(p).await.map(|r| r.rows_affected()))?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn begin_finish_replay_mismatch_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("i.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let ttl = 60_000;
        assert!(matches!(
            begin(&store, "t", "k", "h1", ttl).await.unwrap(),
            Begin::Run
        ));
        assert!(matches!(
            begin(&store, "t", "k", "h1", ttl).await.unwrap(),
            Begin::InUse
        ));
        assert!(matches!(
            begin(&store, "t", "k", "h2", ttl).await.unwrap(),
            Begin::Mismatch
        ));
        // Another tenant's key of the same name is unrelated.
        assert!(matches!(
            begin(&store, "u", "k", "h2", ttl).await.unwrap(),
            Begin::Run
        ));
        finish(&store, "t", "k", 200, Some("application/json"), b"{}")
            .await
            .unwrap();
        match begin(&store, "t", "k", "h1", ttl).await.unwrap() {
            Begin::Replay { status, body, .. } => {
                assert_eq!(status, 200);
                assert_eq!(body, b"{}");
            }
            _ => panic!("expected a replay"),
        }
        release(&store, "u", "k").await.unwrap();
        assert!(matches!(
            begin(&store, "u", "k", "h3", ttl).await.unwrap(),
            Begin::Run
        ));
        // Past the TTL the key is free for a different request.
        assert!(matches!(
            begin(&store, "t", "k", "h9", -1).await.unwrap(),
            Begin::Run
        ));
        purge_expired(&store, 3600).await.unwrap();
    }
}
