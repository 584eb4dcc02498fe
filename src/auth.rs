//! API keys and tenants. A key is `qm_` + 32 random bytes in hex; only its SHA-256 is stored
//! (a fast hash is right for a high-entropy secret: nothing to brute-force). Verified keys
//! are remembered briefly so the hot path rarely touches the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError, Tenant};

pub const KEY_PREFIX: &str = "qm_";

/// Who is calling: attached to the request by the auth middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub tenant: Tenant,
    /// Past the dunning grace period: only `billing.limited_models` are served.
    pub limited: bool,
}

/// A newly created key: the secret is shown once and never stored.
#[derive(Debug)]
pub struct CreatedKey {
    pub id: String,
    pub secret: String,
    pub tenant: Tenant,
}

pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Creates a key for the tenant named `tenant` (creating the tenant if needed).
pub async fn create_key(store: &Store, tenant: &str, name: &str) -> Result<CreatedKey, StoreError> {
    let tenant = store.ensure_tenant(tenant).await?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let id = format!("key_{}", uuid::Uuid::now_v7().simple());
    // The displayed prefix identifies a key in listings without revealing it.
    let prefix = secret[..KEY_PREFIX.len() + 8].to_string();
    store
        .insert_key(&id, &tenant.id, name, &hash_key(&secret), &prefix)
        .await?;
    Ok(CreatedKey { id, secret, tenant })
}

/// Verifies bearer tokens against the store with a short-lived positive cache.
pub struct KeyVerifier {
    store: Store,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
}

/// Entries beyond this are dropped wholesale: the cache is an optimisation, not a registry.
const MAX_CACHED_KEYS: usize = 100_000;

impl KeyVerifier {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok(None)` for an unknown or revoked key.
    pub async fn verify(&self, secret: &str) -> Result<Option<Principal>, StoreError> {
        if !secret.starts_with(KEY_PREFIX) {
            return Ok(None);
        }
        let hash = hash_key(secret);
        if !self.ttl.is_zero() {
            let cache = self.cache.lock().expect("key cache lock");
            if let Some((principal, at)) = cache.get(&hash) {
                if at.elapsed() < self.ttl {
                    return Ok(Some(principal.clone()));
                }
            }
        }
        let found = self.store.find_active_key(&hash).await?;
        let principal = found.map(|(key_id, tenant, status)| Principal {
            key_id,
            tenant,
            limited: status == "limited",
        });
        if let Some(p) = &principal {
            if !self.ttl.is_zero() {
                let mut cache = self.cache.lock().expect("key cache lock");
                if cache.len() >= MAX_CACHED_KEYS {
                    cache.clear();
                }
                cache.insert(hash, (p.clone(), Instant::now()));
            }
        } else {
            self.cache.lock().expect("key cache lock").remove(&hash);
        }
        Ok(principal)
    }
}

/// Extracts the token from `Authorization: Bearer <token>`.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer qm_abc"), Some("qm_abc"));
        assert_eq!(bearer_token("bearer   qm_abc "), Some("qm_abc"));
        assert_eq!(bearer_token("Basic qm_abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("qm_abc"), None);
    }

    #[tokio::test]
    async fn keys_are_stored_hashed_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let key = create_key(&store, "acme", "ci").await.unwrap();
        assert!(key.secret.starts_with("qm_") && key.secret.len() == 3 + 64);
        let verifier = KeyVerifier::new(store.clone(), Duration::ZERO);
        let p = verifier
            .verify(&key.secret)
            .await
            .unwrap()
            .expect("valid key");
        assert_eq!(p.tenant.name, "acme");
        let stored: Vec<String> = crate::store::on_pool!(&store, pool =>
            sqlx::query_scalar("SELECT key_hash FROM api_keys").fetch_all(pool).await)
        .unwrap();
        assert_eq!(stored, vec![hash_key(&key.secret)]);
        assert!(!stored[0].contains(&key.secret[3..]));
        store.revoke_key(&key.id).await.unwrap();
        assert!(verifier.verify(&key.secret).await.unwrap().is_none());
        assert!(verifier.verify("qm_nope").await.unwrap().is_none());
    }
}
