//! `Idempotency-Key` records, in the manner of Stripe's API: per tenant, a key is taken by
//! its first request (with a hash of that request), then holds the finished response for
//! `idempotency.ttl_secs` so a retry can replay it, or is released when the request failed
//! so the retry really runs. A key still pending after `idempotency.pending_lease_secs` (its
//! process was killed mid-request) is free again. The HTTP middleware is `api::idempotency`.

use crate::clock::now_ms;
use crate::store::{Store, StoreError, on_pool};

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    pub enabled: bool,
    /// How long a key (and its stored response) lives.
    pub ttl_secs: u64,
    /// How long a key stays pending (409 to retries) before a retry may take it over: what
    /// frees the key of a request whose process was killed. Must be longer than the longest
    /// request, which no single timeout caps: the body may take
    /// `server.body_read_timeout_secs` (60 s), each upstream attempt (retries, fallbacks)
    /// may stall `providers.NAME.read_timeout_ms` (60 s) between reads, and a long stream
    /// runs for minutes. Hence 15 minutes.
    pub pending_lease_secs: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_secs: 86_400,
            pending_lease_secs: 900,
        }
    }
}

pub enum Begin {
    /// The key is new: run the request. `taken_at` is what [`finish`] and [`release`] match,
    /// so a request whose key was taken over after the lease cannot store over (or free) the
    /// new holder's.
    Run {
        taken_at: i64,
    },
    Replay {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
    InUse,
    Mismatch,
}

/// Takes the key for this request, or says why not. A key past its TTL, or still pending
/// past the lease (its request's process died), is taken over as new.
pub async fn begin(
    store: &Store,
    tenant: &str,
    key: &str,
    hash: &str,
    ttl_ms: i64,
    lease_ms: i64,
) -> Result<Begin, StoreError> {
    let now = now_ms();
    // New, expired, or abandoned pending (then taken over as new): one statement either way.
    let inserted = on_pool!(store, p => sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, idem_key, request_hash, state, created_at) VALUES ($1, $2, $3, 'pending', $4) \
         ON CONFLICT (tenant_id, idem_key) DO UPDATE SET request_hash = excluded.request_hash, state = 'pending', \
         status_code = NULL, content_type = NULL, body = NULL, created_at = excluded.created_at \
         WHERE idempotency_keys.created_at < $5 \
         OR (idempotency_keys.state = 'pending' AND idempotency_keys.created_at < $6)")
        .bind(tenant).bind(key).bind(hash).bind(now).bind(now - ttl_ms).bind(now - lease_ms)
        .execute(p).await.map(|r| r.rows_affected() == 1))?;
    if inserted {
        return Ok(Begin::Run { taken_at: now });
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
    taken_at: i64,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), StoreError> {
    on_pool!(store, p => sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', status_code = $1, content_type = $2, body = $3 \
         WHERE tenant_id = $4 AND idem_key = $5 AND state = 'pending' AND created_at = $6")
        .bind(i64::from(status)).bind(content_type).bind(body).bind(tenant).bind(key).bind(taken_at)
        .execute(p).await.map(|_| ()))?;
    Ok(())
}

pub async fn release(
    store: &Store,
    tenant: &str,
    key: &str,
    taken_at: i64,
) -> Result<(), StoreError> {
    on_pool!(store, p => sqlx::query(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND idem_key = $2 AND state = 'pending' AND created_at = $3")
        .bind(tenant).bind(key).bind(taken_at).execute(p).await.map(|_| ()))?;
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

    /// The key's taking time, from a `Begin` that must be `Run`.
    fn ran(b: Begin) -> i64 {
        match b {
            Begin::Run { taken_at } => taken_at,
            _ => panic!("expected Run"),
        }
    }

    #[tokio::test]
    async fn begin_finish_replay_mismatch_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("i.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let ttl = 60_000;
        let t_taken = ran(begin(&store, "t", "k", "h1", ttl, ttl).await.unwrap());
        assert!(matches!(
            begin(&store, "t", "k", "h1", ttl, ttl).await.unwrap(),
            Begin::InUse
        ));
        assert!(matches!(
            begin(&store, "t", "k", "h2", ttl, ttl).await.unwrap(),
            Begin::Mismatch
        ));
        // Another tenant's key of the same name is unrelated.
        let u_taken = ran(begin(&store, "u", "k", "h2", ttl, ttl).await.unwrap());
        finish(
            &store,
            "t",
            "k",
            t_taken,
            200,
            Some("application/json"),
            b"{}",
        )
        .await
        .unwrap();
        match begin(&store, "t", "k", "h1", ttl, ttl).await.unwrap() {
            Begin::Replay { status, body, .. } => {
                assert_eq!(status, 200);
                assert_eq!(body, b"{}");
            }
            _ => panic!("expected a replay"),
        }
        release(&store, "u", "k", u_taken).await.unwrap();
        ran(begin(&store, "u", "k", "h3", ttl, ttl).await.unwrap());
        // Past the TTL the key is free for a different request.
        ran(begin(&store, "t", "k", "h9", -1, ttl).await.unwrap());
        purge_expired(&store, 3600).await.unwrap();
    }

    /// Moves a key's `created_at` `ago_ms` into the past (as if taken then); returns it.
    async fn age(store: &Store, tenant: &str, key: &str, ago_ms: i64) -> i64 {
        let at = now_ms() - ago_ms;
        on_pool!(store, p => sqlx::query(
            "UPDATE idempotency_keys SET created_at = $1 WHERE tenant_id = $2 AND idem_key = $3")
            .bind(at).bind(tenant).bind(key).execute(p).await.map(|_| ()))
        .unwrap();
        at
    }

    #[tokio::test]
    async fn a_pending_key_is_taken_over_after_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("i.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let (ttl, lease) = (3_600_000, 60_000);
        ran(begin(&store, "t", "k", "h1", ttl, lease).await.unwrap());
        // Younger than the lease: its request may still be running.
        age(&store, "t", "k", lease - 1_000).await;
        assert!(matches!(
            begin(&store, "t", "k", "h1", ttl, lease).await.unwrap(),
            Begin::InUse
        ));
        // Older: its process died; the retry takes the key over and runs...
        let first = age(&store, "t", "k", lease + 1_000).await;
        let second = ran(begin(&store, "t", "k", "h1", ttl, lease).await.unwrap());
        // ...and holds it afresh: the first request, should it still finish or fail, neither
        // stores over nor frees the retry's key.
        finish(
            &store,
            "t",
            "k",
            first,
            200,
            Some("application/json"),
            b"{\"old\":1}",
        )
        .await
        .unwrap();
        release(&store, "t", "k", first).await.unwrap();
        assert!(matches!(
            begin(&store, "t", "k", "h1", ttl, lease).await.unwrap(),
            Begin::InUse
        ));
        // A finished key older than the lease but within the TTL still replays.
        finish(
            &store,
            "t",
            "k",
            second,
            200,
            Some("application/json"),
            b"{\"ok\":1}",
        )
        .await
        .unwrap();
        age(&store, "t", "k", lease + 1_000).await;
        match begin(&store, "t", "k", "h1", ttl, lease).await.unwrap() {
            Begin::Replay { status, body, .. } => {
                assert_eq!(status, 200);
                assert_eq!(body, b"{\"ok\":1}");
            }
            _ => panic!("expected a replay"),
        }
        assert!(matches!(
            begin(&store, "t", "k", "h2", ttl, lease).await.unwrap(),
            Begin::Mismatch
        ));
    }
}
