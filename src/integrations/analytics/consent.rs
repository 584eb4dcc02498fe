//! End users' stored analytics consent (`user_consent`), read by the analytics worker (never
//! on the request path) and remembered a few seconds (an opt-out holds within that).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::store::{Store, StoreError, on_pool};

const REMEMBER: Duration = Duration::from_secs(5);

pub struct ConsentStore {
    store: Store,
    seen: Mutex<HashMap<(String, String), (Option<bool>, Instant)>>,
}

impl ConsentStore {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The user's stored preference (`None`: none stored). A store that cannot be read
    /// counts as a refusal: nothing is sent on a guess.
    pub async fn get(&self, tenant: &str, user: &str) -> Option<bool> {
        let key = (tenant.to_string(), user.to_string());
        if let Some((v, at)) = self.seen.lock().expect("consent cache").get(&key)
            && at.elapsed() < REMEMBER
        {
            return *v;
        }
        match stored(&self.store, tenant, user).await {
            Ok(v) => {
                let mut seen = self.seen.lock().expect("consent cache");
                if seen.len() > 100_000 {
                    seen.clear();
                }
                seen.insert(key, (v, Instant::now()));
                v
            }
            Err(e) => {
                tracing::warn!(error = %e, "analytics: consent not readable; event treated as without consent");
                Some(false)
            }
        }
    }
}

/// A user's stored preference, straight from the store.
pub async fn stored(store: &Store, tenant: &str, user: &str) -> Result<Option<bool>, StoreError> {
    Ok(on_pool!(store, p => sqlx::query_scalar(
        "SELECT analytics FROM user_consent WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant).bind(user).fetch_optional(p).await)?)
}

/// Stores a user's preference (replacing the last).
pub async fn set(
    store: &Store,
    tenant: &str,
    user: &str,
    analytics: bool,
) -> Result<(), StoreError> {
    on_pool!(store, p => sqlx::query(
        "INSERT INTO user_consent (tenant_id, user_id, analytics, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET analytics = excluded.analytics, updated_at = excluded.updated_at")
        .bind(tenant).bind(user).bind(analytics).bind(now_ms()).execute(p).await.map(|_| ()))?;
    Ok(())
}
