//! Auth.js (NextAuth) sessions as authentication (`[auth.authjs]`), for a Next.js app whose
//! browser calls the gateway directly with its session cookie.
//!
//! The JWT strategy: the cookie (`authjs.session-token`, or `__Secure-authjs.session-token`
//! over HTTPS; chunked as `NAME.0`, `NAME.1`, ... when long) holds a JWE in compact form,
//! `alg: dir`, `enc: A256CBC-HS512`, whose 64-byte key Auth.js derives from `AUTH_SECRET`
//! with HKDF-SHA256, the cookie name as salt and `Auth.js Generated Encryption Key (NAME)`
//! as info. It is decrypted exactly as RFC 7518 §5.2 says (the tag checked, in constant
//! time, before anything is decrypted), and its `exp` enforced. Several secrets may be
//! configured (rotation): each is tried.
//!
//! The database strategy: the cookie holds a session token, looked up with a configurable
//! query in the app's own sessions table (Auth.js' `sessions`: `sessionToken`, `userId`,
//! `expires`); answers are kept `cache_ms` (1 s by default), so a ban or a sign-out — the
//! row deleted or expired — takes effect within it on every replica.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

/// The cookie names Auth.js uses for the session (the second over HTTPS).
pub const COOKIES: [&str; 2] = ["authjs.session-token", "__Secure-authjs.session-token"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Jwt,
    Database,
}

/// `[auth.authjs]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthJsConfig {
    /// The environment variable holding `AUTH_SECRET` (several, comma-separated: rotation).
    #[serde(default = "default_secret_env")]
    pub secret_env: String,
    /// The secret itself, instead (prefer `secret_env`).
    #[serde(default)]
    pub secret: Option<secrecy::SecretString>,
    #[serde(default)]
    pub strategy: Strategy,
    /// The tenant the app's users belong to.
    pub tenant: String,
    /// JWT strategy: a claim of the session naming the tenant instead (when present).
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// Database strategy: the query that reads a session by its token (`$1`), returning the
    /// user id and the expiry in Unix seconds. Runs on the gateway's database (PostgreSQL)
    /// unless `database_url` names the app's.
    #[serde(default = "default_session_query")]
    pub session_query: String,
    #[serde(default)]
    pub database_url: Option<String>,
    /// How long a looked-up session is trusted (a revocation takes at most this long).
    #[serde(default = "default_cache_ms")]
    pub cache_ms: u64,
}

fn default_secret_env() -> String {
    "AUTH_SECRET".into()
}
fn default_session_query() -> String {
    "SELECT \"userId\"::text, EXTRACT(EPOCH FROM expires)::float8 FROM sessions WHERE \"sessionToken\" = $1".into()
}
fn default_cache_ms() -> u64 {
    1000
}

/// Why a session was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    #[error("not an Auth.js session token")]
    Malformed,
    #[error("the session token does not decrypt with the configured secret")]
    Tag,
    #[error("the session has expired")]
    Expired,
    #[error("no such session")]
    Unknown,
    #[error("the sessions table could not be read: {0}")]
    Store(String),
}

impl SessionError {
    pub fn kind(&self) -> &'static str {
        match self {
            SessionError::Malformed => "malformed",
            SessionError::Tag => "decrypt",
            SessionError::Expired => "expired",
            SessionError::Unknown => "unknown",
            SessionError::Store(_) => "store",
        }
    }
}

/// A valid session: who it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub user: Option<String>,
    pub tenant: String,
    pub claims: Value,
}

/// The key Auth.js derives for a cookie name: HKDF-SHA256(secret, salt = name,
/// info = "Auth.js Generated Encryption Key (name)"), 64 bytes.
pub fn derive_key(secret: &str, cookie: &str) -> [u8; 64] {
    struct Len64;
    impl ring::hkdf::KeyType for Len64 {
        fn len(&self) -> usize {
            64
        }
    }
    let info = format!("Auth.js Generated Encryption Key ({cookie})");
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, cookie.as_bytes())
        .extract(secret.as_bytes());
    let info_parts = [info.as_bytes()];
    let okm = prk
        .expand(&info_parts, Len64)
        .expect("64 bytes is a valid HKDF length");
    let mut key = [0u8; 64];
    okm.fill(&mut key).expect("64 bytes");
    key
}

/// Decrypts a compact JWE (`dir`, `A256CBC-HS512`) with `key`: the claims, as JSON.
pub fn decrypt(jwe: &str, key: &[u8; 64]) -> Result<Value, SessionError> {
    let parts: Vec<&str> = jwe.split('.').collect();
    let [h, encrypted_key, iv, ciphertext, tag] = parts[..] else {
        return Err(SessionError::Malformed);
    };
    let decode = |x: &str| {
        URL_SAFE_NO_PAD
            .decode(x)
            .map_err(|_| SessionError::Malformed)
    };
    let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| SessionError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("dir")
        || header.get("enc").and_then(Value::as_str) != Some("A256CBC-HS512")
        || !encrypted_key.is_empty()
        || header.get("zip").is_some()
    {
        return Err(SessionError::Malformed);
    }
    let (iv, ciphertext, tag) = (decode(iv)?, decode(ciphertext)?, decode(tag)?);
    if iv.len() != 16 || tag.len() != 32 || ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
        return Err(SessionError::Malformed);
    }
    let (mac_key, enc_key) = key.split_at(32);
    // The tag first: HMAC-SHA-512 over AAD || IV || ciphertext || AAD length in bits
    // (64-bit big-endian), its first half.
    let aad = h.as_bytes();
    let mut ctx =
        ring::hmac::Context::with_key(&ring::hmac::Key::new(ring::hmac::HMAC_SHA512, mac_key));
    ctx.update(aad);
    ctx.update(&iv);
    ctx.update(&ciphertext);
    ctx.update(&((aad.len() as u64) * 8).to_be_bytes());
    let mac = ctx.sign();
    if !super::constant_time_eq(&mac.as_ref()[..32], &tag) {
        return Err(SessionError::Tag);
    }
    let mut buf = ciphertext;
    let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(enc_key, &iv)
        .map_err(|_| SessionError::Malformed)?
        .decrypt_padded_mut::<Pkcs7>(&mut buf)
        .map_err(|_| SessionError::Malformed)?;
    serde_json::from_slice(plain).map_err(|_| SessionError::Malformed)
}

/// The session cookie's value and name from a `Cookie` header: whole, or its chunks
/// (`NAME.0`, `NAME.1`, ...) joined in order.
pub fn session_cookie(cookie_header: &str) -> Option<(String, &'static str)> {
    let pairs: Vec<(&str, &str)> = cookie_header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .collect();
    for name in COOKIES {
        if let Some((_, v)) = pairs.iter().find(|(k, _)| *k == name) {
            return Some((v.to_string(), name));
        }
        let mut chunks: Vec<(usize, &str)> = pairs
            .iter()
            .filter_map(|(k, v)| {
                let i = k.strip_prefix(name)?.strip_prefix('.')?.parse().ok()?;
                Some((i, *v))
            })
            .collect();
        if !chunks.is_empty() {
            chunks.sort();
            if chunks.iter().enumerate().all(|(i, (n, _))| i == *n) {
                return Some((chunks.iter().map(|(_, v)| *v).collect(), name));
            }
        }
    }
    None
}

/// Verifies Auth.js sessions.
pub struct AuthJs {
    config: AuthJsConfig,
    secrets: Vec<String>,
    /// Keys by (secret index, cookie name), derived once.
    keys: HashMap<(usize, &'static str), [u8; 64]>,
    db: Option<sqlx::PgPool>,
    /// Database sessions looked up recently: token -> (session or refusal, when).
    recent: Mutex<HashMap<String, (Result<Session, SessionError>, Instant)>>,
}

impl AuthJs {
    /// `gateway_db`: the gateway's own database, for the database strategy.
    pub fn new(config: AuthJsConfig, gateway_db: Option<sqlx::PgPool>) -> anyhow::Result<Self> {
        // A database session's cookie is its token, not encrypted: no secret needed.
        let value = match (&config.secret, &config.strategy) {
            (Some(s), _) => secrecy::ExposeSecret::expose_secret(s).to_string(),
            (None, Strategy::Database) => std::env::var(&config.secret_env).unwrap_or_default(),
            (None, Strategy::Jwt) => std::env::var(&config.secret_env).map_err(|_| {
                anyhow::anyhow!("auth.authjs: the variable {} is not set", config.secret_env)
            })?,
        };
        let secrets: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        anyhow::ensure!(
            !secrets.is_empty() || config.strategy == Strategy::Database,
            "auth.authjs: {} is empty",
            config.secret_env
        );
        let mut keys = HashMap::new();
        for (i, s) in secrets.iter().enumerate() {
            for name in COOKIES {
                keys.insert((i, name), derive_key(s, name));
            }
        }
        let db = match (&config.strategy, &config.database_url) {
            (Strategy::Jwt, _) => None,
            (Strategy::Database, Some(url)) => Some(sqlx::postgres::PgPoolOptions::new().max_connections(4).connect_lazy(url)?),
            (Strategy::Database, None) => Some(gateway_db.ok_or_else(|| {
                anyhow::anyhow!("auth.authjs: the database strategy needs PostgreSQL (database.url, or auth.authjs.database_url)")
            })?),
        };
        Ok(Self {
            config,
            secrets,
            keys,
            db,
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// The session a `Cookie` header carries, if it carries one (`None`: no session cookie).
    pub async fn verify(&self, cookie_header: &str) -> Option<Result<Session, SessionError>> {
        let (value, name) = session_cookie(cookie_header)?;
        Some(match self.config.strategy {
            Strategy::Jwt => self.verify_jwt(&value, name),
            Strategy::Database => self.verify_database(&value).await,
        })
    }

    fn verify_jwt(&self, value: &str, name: &'static str) -> Result<Session, SessionError> {
        let mut last = SessionError::Malformed;
        for i in 0..self.secrets.len() {
            match decrypt(value, &self.keys[&(i, name)]) {
                Ok(claims) => {
                    let exp = claims
                        .get("exp")
                        .and_then(Value::as_i64)
                        .ok_or(SessionError::Malformed)?;
                    if crate::clock::now_ms() / 1000 > exp {
                        return Err(SessionError::Expired);
                    }
                    let tenant = self
                        .config
                        .tenant_claim
                        .as_deref()
                        .and_then(|c| claims.get(c))
                        .and_then(Value::as_str)
                        .unwrap_or(&self.config.tenant)
                        .to_string();
                    let user = ["sub", "id", "email"]
                        .iter()
                        .find_map(|k| claims.get(*k).and_then(Value::as_str))
                        .map(str::to_string);
                    return Ok(Session {
                        user,
                        tenant,
                        claims,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn verify_database(&self, token: &str) -> Result<Session, SessionError> {
        let ttl = Duration::from_millis(self.config.cache_ms);
        if let Some((answer, at)) = self.recent.lock().expect("session cache").get(token)
            && at.elapsed() < ttl
        {
            return answer.clone();
        }
        let db = self.db.as_ref().expect("the database strategy has a pool");
        let row: Result<Option<(Option<String>, f64)>, sqlx::Error> =
            sqlx::query_as(sqlx::AssertSqlSafe(self.config.session_query.clone()))
                .bind(token)
                .fetch_optional(db)
                .await;
        let answer = match row {
            Err(e) => return Err(SessionError::Store(e.to_string())), // not cached
            Ok(None) => Err(SessionError::Unknown),
            Ok(Some((_, expires))) if (crate::clock::now_ms() as f64) / 1000.0 > expires => {
                Err(SessionError::Expired)
            }
            Ok(Some((user, _))) => Ok(Session {
                user,
                tenant: self.config.tenant.clone(),
                claims: Value::Null,
            }),
        };
        let mut recent = self.recent.lock().expect("session cache");
        if recent.len() > 100_000 {
            recent.clear();
        }
        recent.insert(token.to_string(), (answer.clone(), Instant::now()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockEncryptMut;

    /// A token made the way Auth.js makes one (its own tests use @auth/core; this checks the
    /// construction against itself and the refusals).
    fn encrypt(claims: &Value, key: &[u8; 64], iv: [u8; 16]) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"dir","enc":"A256CBC-HS512","kid":"x"}"#);
        let plain = claims.to_string();
        let mut buf = plain.as_bytes().to_vec();
        let n = buf.len();
        buf.resize(n + 16, 0);
        let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key[32..], &iv)
            .unwrap()
            .encrypt_padded_mut::<Pkcs7>(&mut buf, n)
            .unwrap()
            .to_vec();
        let mut ctx = ring::hmac::Context::with_key(&ring::hmac::Key::new(
            ring::hmac::HMAC_SHA512,
            &key[..32],
        ));
        ctx.update(h.as_bytes());
        ctx.update(&iv);
        ctx.update(&ct);
        ctx.update(&((h.len() as u64) * 8).to_be_bytes());
        let tag = &ctx.sign().as_ref()[..32].to_vec();
        format!(
            "{h}..{}.{}.{}",
            URL_SAFE_NO_PAD.encode(iv),
            URL_SAFE_NO_PAD.encode(&ct),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    #[test]
    fn decrypts_and_refuses() {
        let key = derive_key("a-secret", COOKIES[0]);
        let claims = serde_json::json!({"sub": "u1", "exp": 4_000_000_000i64});
        let token = encrypt(&claims, &key, [7; 16]);
        assert_eq!(decrypt(&token, &key).unwrap(), claims);
        // Another secret, or the other cookie name's key: the tag fails.
        assert_eq!(
            decrypt(&token, &derive_key("other", COOKIES[0])).unwrap_err(),
            SessionError::Tag
        );
        assert_eq!(
            decrypt(&token, &derive_key("a-secret", COOKIES[1])).unwrap_err(),
            SessionError::Tag
        );
        // A flipped ciphertext bit.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut ct = URL_SAFE_NO_PAD.decode(&parts[3]).unwrap();
        ct[0] ^= 1;
        parts[3] = URL_SAFE_NO_PAD.encode(ct);
        assert_eq!(
            decrypt(&parts.join("."), &key).unwrap_err(),
            SessionError::Tag
        );
        assert_eq!(decrypt("a.b.c", &key).unwrap_err(), SessionError::Malformed);
    }

    #[test]
    fn cookies_whole_and_chunked() {
        assert_eq!(
            session_cookie("a=1; authjs.session-token=abc; b=2"),
            Some(("abc".to_string(), COOKIES[0]))
        );
        assert_eq!(
            session_cookie(
                "__Secure-authjs.session-token.1=def; __Secure-authjs.session-token.0=abc"
            ),
            Some(("abcdef".to_string(), COOKIES[1]))
        );
        assert_eq!(
            session_cookie("authjs.session-token.1=def"),
            None,
            "a chunk missing"
        );
        assert_eq!(session_cookie("other=1"), None);
    }
}
