//! JSON Web Tokens from identity providers (`[auth.jwt.NAME]`: Clerk, Supabase, Auth0 or any
//! OIDC issuer), so a frontend can call the gateway with its user's own token. A token is
//! matched to its issuer by `iss`; its signature (RS256, ES256 or EdDSA) is checked against
//! the issuer's JWKS, fetched on first use, kept for `jwks_ttl_secs` and fetched again (at
//! most every `jwks_refresh_min_secs`) when a token names a key id it does not hold, so key
//! rotation works without a restart. `exp` (required), `nbf`, `iss` and `aud` are enforced
//! with `leeway_secs`. Refused: `alg: none`, any algorithm the issuer's keys are not for (an
//! HMAC algorithm where public keys are configured above all), a key of another type than
//! the algorithm's, tokens from an unknown issuer. Legacy HS256 issuers (Supabase's JWT
//! secret) are accepted only when configured with `hmac_secret_env`, and then only HS256.

mod keys;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use keys::{KeySet, PublicKey, parse_jwks};

/// `[auth.jwt.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// The `iss` the tokens carry, exactly.
    pub issuer: String,
    /// Where the issuer publishes its keys (`.../.well-known/jwks.json`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Static keys instead: a JWKS (`{"keys": [...]}`) or one JWK, as JSON.
    #[serde(default)]
    pub jwks: Option<String>,
    /// Legacy HS256 tokens: the environment variable holding the shared secret.
    #[serde(default)]
    pub hmac_secret_env: Option<String>,
    /// Accepted `aud` values; empty: `aud` is not checked.
    #[serde(default)]
    pub audience: Vec<String>,
    /// The claim naming the tenant (a dotted path, e.g. `org_id` for Clerk,
    /// `app_metadata.tenant` for Supabase).
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// The tenant of tokens without that claim (none: such tokens are refused).
    #[serde(default)]
    pub default_tenant: Option<String>,
    /// The claim naming the end user.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim holding roles (a string or a list), for operators.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Create a tenant the first time a token names it.
    #[serde(default)]
    pub create_tenants: bool,
    /// The claim holding the user's analytics consent (a boolean, or `granted`/`denied`).
    #[serde(default)]
    pub consent_claim: Option<String>,
    /// The claim holding the user's email address (where their notifications are mailed).
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    /// The claim naming the sign-in session (Clerk's `sid`, Supabase's `session_id`): a
    /// session not seen before is a "new sign-in" notification to the user.
    #[serde(default = "default_session_claim")]
    pub session_claim: String,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    #[serde(default = "default_jwks_ttl")]
    pub jwks_ttl_secs: u64,
    #[serde(default = "default_refresh_min")]
    pub jwks_refresh_min_secs: u64,
    /// Accepted algorithms (of `RS256`, `ES256`, `EdDSA`).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
}

fn default_user_claim() -> String {
    "sub".into()
}

fn default_email_claim() -> String {
    "email".into()
}

fn default_session_claim() -> String {
    "sid".into()
}
fn default_leeway() -> u64 {
    30
}
fn default_jwks_ttl() -> u64 {
    3600
}
fn default_refresh_min() -> u64 {
    10
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}

impl JwtIssuerConfig {
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let sources = [
            self.jwks_url.is_some(),
            self.jwks.is_some(),
            self.hmac_secret_env.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(format!(
                "auth.jwt.{name}: give exactly one of jwks_url, jwks or hmac_secret_env"
            ));
        }
        if self.tenant_claim.is_none() && self.default_tenant.is_none() {
            return Err(format!(
                "auth.jwt.{name}: give tenant_claim, default_tenant or both"
            ));
        }
        for a in &self.algorithms {
            if !matches!(a.as_str(), "RS256" | "ES256" | "EdDSA") {
                return Err(format!(
                    "auth.jwt.{name}.algorithms: `{a}` is not supported (RS256, ES256, EdDSA)"
                ));
            }
        }
        if let Some(j) = &self.jwks {
            parse_jwks(j).map_err(|e| format!("auth.jwt.{name}.jwks: {e}"))?;
        }
        Ok(())
    }
}

/// Why a token was refused (never shown in detail to the caller: logged, counted).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("no configured issuer is `{0}`")]
    UnknownIssuer(String),
    #[error("algorithm `{0}` is not accepted for this issuer")]
    Algorithm(String),
    #[error("no key `{0}` in the issuer's JWKS")]
    UnknownKey(String),
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("no expiry")]
    NoExpiry,
    #[error("wrong audience")]
    Audience,
    #[error("no tenant in the token")]
    NoTenant,
    #[error("the issuer's keys could not be fetched: {0}")]
    Jwks(String),
}

impl JwtError {
    /// A low-cardinality label for metrics and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::UnknownIssuer(_) => "unknown_issuer",
            JwtError::Algorithm(_) => "algorithm",
            JwtError::UnknownKey(_) => "unknown_key",
            JwtError::Signature => "signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::NoExpiry => "no_expiry",
            JwtError::Audience => "audience",
            JwtError::NoTenant => "no_tenant",
            JwtError::Jwks(_) => "jwks",
        }
    }
}

/// The verified claims of a token, with what the gateway reads from them.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The `[auth.jwt.NAME]` that vouched for it.
    pub issuer_name: String,
    pub tenant: String,
    pub user: Option<String>,
    pub roles: Vec<String>,
    /// The analytics consent the token states.
    pub consent: Option<bool>,
    /// The user's email address, when the token states a plausible one.
    pub email: Option<String>,
    /// The sign-in session the token belongs to.
    pub session: Option<String>,
    pub claims: Value,
    /// Whether an unknown tenant may be created.
    pub create_tenant: bool,
}

struct Issuer {
    name: String,
    config: JwtIssuerConfig,
    hmac: Option<ring::hmac::Key>,
    keys: tokio::sync::Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    set: Arc<KeySet>,
    fetched: Option<Instant>,
}

/// Every configured issuer, by `iss`.
pub struct JwtVerifier {
    issuers: BTreeMap<String, Arc<Issuer>>,
    http: reqwest::Client,
}

/// A dotted path into the claims (`app_metadata.tenant`).
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, k| v.get(k))
}

fn now_secs() -> i64 {
    crate::clock::now_ms() / 1000
}

impl JwtVerifier {
    pub fn new(configs: &BTreeMap<String, JwtIssuerConfig>) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let mut issuers = BTreeMap::new();
        for (name, c) in configs {
            c.validate(name).map_err(anyhow::Error::msg)?;
            let hmac = match &c.hmac_secret_env {
                Some(var) => {
                    let secret = std::env::var(var).map_err(|_| {
                        anyhow::anyhow!("auth.jwt.{name}: the variable {var} is not set")
                    })?;
                    Some(ring::hmac::Key::new(
                        ring::hmac::HMAC_SHA256,
                        secret.as_bytes(),
                    ))
                }
                None => None,
            };
            let keys = Keys {
                set: Arc::new(match &c.jwks {
                    Some(j) => parse_jwks(j).map_err(anyhow::Error::msg)?,
                    None => HashMap::new(),
                }),
                fetched: None,
            };
            issuers.insert(
                c.issuer.clone(),
                Arc::new(Issuer {
                    name: name.clone(),
                    config: c.clone(),
                    hmac,
                    keys: tokio::sync::Mutex::new(keys),
                }),
            );
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self { issuers, http })
    }

    /// Whether `token` looks like a JWT (three base64url parts, the first a JSON header).
    pub fn looks_like_jwt(token: &str) -> bool {
        let mut parts = token.split('.');
        matches!((parts.next(), parts.next(), parts.next(), parts.next()), (Some(h), Some(_), Some(_), None)
            if h.starts_with("eyJ"))
    }

    /// Verifies a token and reads its tenant, user and roles.
    pub async fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let decode = |x: &str| URL_SAFE_NO_PAD.decode(x).map_err(|_| JwtError::Malformed);
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| JwtError::Malformed)?;
        let claims: Value = serde_json::from_slice(&decode(p)?).map_err(|_| JwtError::Malformed)?;
        let sig = decode(s)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JwtError::Malformed)?;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        let issuer = self
            .issuers
            .get(iss)
            .ok_or_else(|| JwtError::UnknownIssuer(iss.to_string()))?;
        let msg = format!("{h}.{p}");
        match (&issuer.hmac, alg) {
            (Some(key), "HS256") => {
                ring::hmac::verify(key, msg.as_bytes(), &sig).map_err(|_| JwtError::Signature)?
            }
            // `none`, an HMAC algorithm with public keys, anything not configured.
            (Some(_), _) => return Err(JwtError::Algorithm(alg.to_string())),
            (None, _) if !issuer.config.algorithms.iter().any(|a| a == alg) => {
                return Err(JwtError::Algorithm(alg.to_string()));
            }
            (None, _) => {
                let kid = header.get("kid").and_then(Value::as_str).unwrap_or("");
                let key = self.key(issuer, kid).await?;
                key.verify(alg, msg.as_bytes(), &sig)?;
            }
        }
        check_times(&claims, issuer.config.leeway_secs as i64, now_secs())?;
        check_audience(&claims, &issuer.config.audience)?;
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let tenant = issuer
            .config
            .tenant_claim
            .as_deref()
            .and_then(|c| claim(&claims, c))
            .and_then(text)
            .filter(|t| !t.is_empty())
            .or_else(|| issuer.config.default_tenant.clone())
            .ok_or(JwtError::NoTenant)?;
        let user = claim(&claims, &issuer.config.user_claim).and_then(text);
        let roles = match issuer
            .config
            .roles_claim
            .as_deref()
            .and_then(|c| claim(&claims, c))
        {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(text).collect(),
            _ => Vec::new(),
        };
        let consent = match issuer
            .config
            .consent_claim
            .as_deref()
            .and_then(|c| claim(&claims, c))
        {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => crate::auth::parse_consent(s),
            _ => None,
        };
        // An address the provider says is unverified is not one to mail.
        let email = claim(&claims, &issuer.config.email_claim)
            .filter(|_| claims.get("email_verified") != Some(&Value::Bool(false)))
            .and_then(Value::as_str)
            .filter(|e| crate::notify::valid_address(e))
            .map(str::to_lowercase);
        let session = claim(&claims, &issuer.config.session_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 200)
            .map(str::to_string);
        Ok(Verified {
            issuer_name: issuer.name.clone(),
            tenant,
            user,
            roles,
            consent,
            email,
            session,
            claims,
            create_tenant: issuer.config.create_tenants,
        })
    }

    /// The issuer's key `kid`: from the cached set, or after fetching the set again (when it
    /// is older than its lifetime, or lacks `kid` and was fetched longer ago than the
    /// refresh minimum).
    async fn key(&self, issuer: &Issuer, kid: &str) -> Result<PublicKey, JwtError> {
        let Some(url) = issuer.config.jwks_url.as_deref() else {
            let keys = issuer.keys.lock().await;
            return keys
                .set
                .get(kid)
                .or_else(|| {
                    (keys.set.len() == 1)
                        .then(|| keys.set.values().next())
                        .flatten()
                })
                .cloned()
                .ok_or_else(|| JwtError::UnknownKey(kid.to_string()));
        };
        let mut keys = issuer.keys.lock().await;
        let age = keys.fetched.map(|t| t.elapsed());
        let stale = age.is_none_or(|a| a >= Duration::from_secs(issuer.config.jwks_ttl_secs));
        let missing = !keys.set.contains_key(kid);
        let may_refresh =
            age.is_none_or(|a| a >= Duration::from_secs(issuer.config.jwks_refresh_min_secs));
        if stale || (missing && may_refresh) {
            match self.fetch(url).await {
                Ok(set) => {
                    keys.set = Arc::new(set);
                    keys.fetched = Some(Instant::now());
                    metrics::counter!("qm_jwks_fetches_total", "outcome" => "ok").increment(1);
                }
                Err(e) => {
                    metrics::counter!("qm_jwks_fetches_total", "outcome" => "error").increment(1);
                    // Keys still held keep working through an outage of the issuer.
                    if keys.set.is_empty() {
                        return Err(JwtError::Jwks(e));
                    }
                    tracing::warn!(issuer = %issuer.name, error = %e, "JWKS fetch failed; using the keys held");
                    keys.fetched = Some(Instant::now());
                }
            }
        }
        keys.set
            .get(kid)
            .cloned()
            .ok_or_else(|| JwtError::UnknownKey(kid.to_string()))
    }

    async fn fetch(&self, url: &str) -> Result<KeySet, String> {
        let r = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("HTTP {}", r.status()));
        }
        let text = r.text().await.map_err(|e| e.to_string())?;
        parse_jwks(&text)
    }
}

/// `exp` (required) and `nbf` against `now`, with `leeway` seconds.
fn check_times(claims: &Value, leeway: i64, now: i64) -> Result<(), JwtError> {
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(JwtError::NoExpiry)?;
    if now > exp + leeway {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
        && now + leeway < nbf
    {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

/// `aud` (a string or a list) must name one of `accepted`, when any are configured.
fn check_audience(claims: &Value, accepted: &[String]) -> Result<(), JwtError> {
    if accepted.is_empty() {
        return Ok(());
    }
    let ok = match claims.get("aud") {
        Some(Value::String(a)) => accepted.contains(a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| accepted.iter().any(|x| x == a)),
        _ => false,
    };
    if ok { Ok(()) } else { Err(JwtError::Audience) }
}

#[cfg(test)]
mod tests;
