//! Who is calling. API keys and tenants here: a key is `qm_` + 32 random bytes in hex; only
//! its SHA-256 is stored (a fast hash is right for a high-entropy secret: nothing to
//! brute-force), and verified keys are remembered briefly so the hot path rarely touches the
//! database. End users' credentials: identity providers' tokens (`jwt.rs`) and Auth.js
//! sessions (`authjs.rs`), resolved to a principal in `identity.rs`; operator roles in
//! `roles.rs`; operators' console sessions and second factor in `console.rs` (TOTP in
//! `totp.rs`).

pub mod authjs;
pub mod console;
pub mod identity;
pub mod jwt;
pub mod roles;
pub mod totp;

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
    /// The credential: an API key's id, or `jwt:ISSUER` / `session:authjs` for an end
    /// user's token or session.
    pub key_id: String,
    pub tenant: Tenant,
    /// Past the dunning grace period: only `billing.limited_models` are served.
    pub limited: bool,
    /// The end user: a token's or session's subject; for API-key callers the
    /// `x-quartermaster-user` header or the request's own `user` field.
    pub user: Option<String>,
    /// Roles the credential carries (an identity provider's roles claim).
    pub roles: Vec<String>,
    /// The end user's analytics consent, when the credential says (a token's
    /// `consent_claim`).
    pub consent: Option<bool>,
    /// The credential is one end user's (a token, a session, a personal key): it speaks
    /// for that user only, never for the whole tenant.
    pub personal: bool,
}

/// Compares two secrets in constant time (for equal lengths; the length itself is not
/// secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A consent as a header or a claim states it: `granted`/`true`/`yes`/`1` or
/// `denied`/`false`/`no`/`0`; anything else says nothing.
pub fn parse_consent(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "granted" | "true" | "yes" | "1" => Some(true),
        "denied" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

impl Principal {
    /// The principal of an API key (no end user, no roles).
    pub fn of_key(key_id: String, tenant: Tenant, limited: bool) -> Self {
        Self {
            key_id,
            tenant,
            limited,
            user: None,
            roles: Vec::new(),
            consent: None,
            personal: false,
        }
    }
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
    create_user_key(store, tenant, name, None).await
}

/// Creates a key, issued to one end user of the tenant when `user` is given (its requests
/// are that user's; the user's deletion revokes it).
pub async fn create_user_key(
    store: &Store,
    tenant: &str,
    name: &str,
    user: Option<&str>,
) -> Result<CreatedKey, StoreError> {
    let tenant = store.ensure_tenant(tenant).await?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let id = format!("key_{}", uuid::Uuid::now_v7().simple());
    // The displayed prefix identifies a key in listings without revealing it.
    let prefix = secret[..KEY_PREFIX.len() + 8].to_string();
    // The tenant (and the key's user) hear of it, in the key's own transaction.
    let ctx =
        serde_json::json!({"tenant": tenant.name, "name": name, "prefix": prefix, "user": user});
    let to = crate::notify::address(store, &tenant.id, None).await?;
    let mut notices = vec![];
    if let Ok(n) =
        crate::notify::Notice::render("key_created", &tenant.id, format!("key:{id}"), ctx.clone())
    {
        notices.push(
            n.priority(crate::notify::Priority::High)
                .email(to.as_deref()),
        );
    }
    if let Some(u) = user {
        let to = crate::notify::address(store, &tenant.id, Some(u)).await?;
        if let Ok(n) =
            crate::notify::Notice::render("key_created", &tenant.id, format!("key:{id}:user"), ctx)
        {
            notices.push(
                n.for_user(Some(u))
                    .priority(crate::notify::Priority::High)
                    .email(to.as_deref()),
            );
        }
    }
    let attempts = i64::from(crate::jobs::JobsConfig::default().max_attempts);
    let key_hash = hash_key(&secret);
    let r: Result<(), sqlx::Error> = crate::store::on_pool!(store, p => async {
        let mut tx = p.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, key_prefix, created_at, user_id) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&id).bind(&tenant.id).bind(name).bind(&key_hash).bind(&prefix)
            .bind(crate::clock::now_ms()).bind(user)
            .execute(&mut *tx).await?;
        for n in &notices {
            crate::notify::insert_notice!(tx, n, attempts)?;
        }
        tx.commit().await
    }.await);
    store.observe(r.map_err(StoreError::from))?;
    for n in &notices {
        crate::notify::live::wake(&n.tenant_id, &n.user_id);
    }
    Ok(CreatedKey { id, secret, tenant })
}

/// Verifies bearer tokens against the store, remembering answers briefly.
///
/// A verified key is remembered for `ttl` (a revocation takes effect within it); an unknown
/// one as well (a client retrying with a bad key costs no lookup each time), in a map of
/// its own so a flood of made-up keys cannot push real ones out. While the database is
/// unreachable, a key verified within `stale_ttl` keeps working from memory; it is checked
/// again (and a revocation applied) as soon as the database answers.
pub struct KeyVerifier {
    store: Store,
    ttl: Duration,
    stale_ttl: Duration,
    known: Mutex<HashMap<String, (Principal, Instant)>>,
    unknown: Mutex<HashMap<String, Instant>>,
}

/// Entries beyond this are dropped wholesale: the cache is an optimisation, not a registry.
const MAX_CACHED_KEYS: usize = 100_000;
const MAX_CACHED_UNKNOWN: usize = 10_000;
/// Longest a key lookup may take before the database counts as unavailable for it.
const LOOKUP_PATIENCE: Duration = Duration::from_secs(1);

impl KeyVerifier {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self::with_stale(store, ttl, Duration::ZERO)
    }

    pub fn with_stale(store: Store, ttl: Duration, stale_ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            stale_ttl: stale_ttl.max(ttl),
            known: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of a key verified within the cache's lifetime, without any lookup.
    pub fn remembered(&self, secret: &str) -> Option<Principal> {
        if self.ttl.is_zero() || !secret.starts_with(KEY_PREFIX) {
            return None;
        }
        let known = self.known.lock().expect("key cache lock");
        known
            .get(&hash_key(secret))
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(p, _)| p.clone())
    }

    /// `Ok(None)` for an unknown or revoked key; an error only when the database is needed
    /// and cannot answer.
    pub async fn verify(&self, secret: &str) -> Result<Option<Principal>, StoreError> {
        if !secret.starts_with(KEY_PREFIX) {
            return Ok(None);
        }
        let hash = hash_key(secret);
        let remembered = self
            .known
            .lock()
            .expect("key cache lock")
            .get(&hash)
            .cloned();
        if let Some((principal, at)) = &remembered {
            if at.elapsed() < self.ttl {
                return Ok(Some(principal.clone()));
            }
        }
        if !self.ttl.is_zero() {
            let unknown = self.unknown.lock().expect("key cache lock");
            if unknown.get(&hash).is_some_and(|at| at.elapsed() < self.ttl) {
                return Ok(None);
            }
        }
        // A known outage is not waited out: a recently verified key is served from memory.
        let found = match self.store.check_up() {
            Ok(()) => {
                // Before the health probe notices an outage, a lookup would wait out the
                // pool: a slow answer counts as an outage too.
                match tokio::time::timeout(LOOKUP_PATIENCE, self.store.find_active_key(&hash)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(StoreError::Unavailable("the key lookup timed out".into())),
                }
            }
            Err(e) => Err(e),
        };
        let found = match found {
            Ok(found) => found,
            Err(e) if e.is_outage() => {
                return match remembered {
                    Some((principal, at)) if at.elapsed() < self.stale_ttl => {
                        metrics::counter!("qm_auth_stale_keys_served_total").increment(1);
                        Ok(Some(principal))
                    }
                    _ => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let principal = found.map(|k| Principal {
            personal: k.user_id.is_some(),
            user: k.user_id,
            ..Principal::of_key(k.key_id, k.tenant, k.billing_status == "limited")
        });
        match &principal {
            Some(p) if !self.ttl.is_zero() => {
                let mut known = self.known.lock().expect("key cache lock");
                if known.len() >= MAX_CACHED_KEYS {
                    known.clear();
                }
                known.insert(hash, (p.clone(), Instant::now()));
            }
            Some(_) => {}
            None => {
                self.known.lock().expect("key cache lock").remove(&hash);
                if !self.ttl.is_zero() {
                    let mut unknown = self.unknown.lock().expect("key cache lock");
                    if unknown.len() >= MAX_CACHED_UNKNOWN {
                        unknown.clear();
                    }
                    unknown.insert(hash, Instant::now());
                }
            }
        }
        Ok(principal)
    }
}

/// Counts failed authentications per client address in fixed one-minute windows; past the
/// limit, that address is refused before any lookup until its window ends. Addresses beyond
/// `MAX_TRACKED_ADDRESSES` reset the table (a flood from many addresses is then limited by
/// the negative cache and the database alone).
pub struct FailedAuthLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<std::net::IpAddr, (Instant, u32)>>,
}

const MAX_TRACKED_ADDRESSES: usize = 100_000;
const WINDOW: Duration = Duration::from_secs(60);

impl FailedAuthLimiter {
    /// `per_minute` = 0 turns it off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds until the window ends)` when `ip` has failed too often.
    pub fn check(&self, ip: std::net::IpAddr) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let windows = self.windows.lock().expect("limiter lock");
        match windows.get(&ip) {
            Some((start, n)) if start.elapsed() < WINDOW && *n >= self.per_minute => {
                Err((WINDOW - start.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, ip: std::net::IpAddr) {
        if self.per_minute == 0 {
            return;
        }
        let mut windows = self.windows.lock().expect("limiter lock");
        if windows.len() >= MAX_TRACKED_ADDRESSES {
            windows.clear();
        }
        let entry = windows.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// Extracts the token from `Authorization: Bearer <token>`.
/// The bearer token of a request's `Authorization` header, if it has one.
pub fn bearer_of(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
}

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

    /// With the database gone, a key verified recently keeps working from memory and an
    /// unknown one is an error (not a 401: the key may well be valid); once it is back a
    /// revocation applies at the next check.
    #[tokio::test]
    async fn recently_verified_keys_survive_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let key = create_key(&store, "acme", "ci").await.unwrap();
        let other = create_key(&store, "acme", "other").await.unwrap();
        let verifier = KeyVerifier::with_stale(
            store.clone(),
            Duration::from_millis(1),
            Duration::from_secs(60),
        );
        assert!(verifier.verify(&key.secret).await.unwrap().is_some());
        std::thread::sleep(Duration::from_millis(5));
        store.close().await; // every query now fails as an outage would
        let served = verifier.verify(&key.secret).await.unwrap();
        assert_eq!(served.map(|p| p.key_id), Some(key.id.clone()));
        let err = verifier.verify(&other.secret).await.unwrap_err();
        assert!(err.is_outage(), "{err}");
    }

    #[tokio::test]
    async fn unknown_keys_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let verifier = KeyVerifier::new(store.clone(), Duration::from_secs(60));
        assert!(verifier.verify("qm_unknown").await.unwrap().is_none());
        store.close().await;
        // Answered from memory: no lookup (which would now fail).
        assert!(verifier.verify("qm_unknown").await.unwrap().is_none());
    }

    #[test]
    fn failed_authentications_are_limited_per_address() {
        let limiter = FailedAuthLimiter::new(3);
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
            limiter.failed(a);
        }
        let wait = limiter.check(a).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(limiter.check(b).is_ok());
        assert!(FailedAuthLimiter::new(0).check(a).is_ok());
    }
}
