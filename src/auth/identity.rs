//! End users' credentials resolved to a principal: an identity provider's token (`jwt.rs`)
//! or an Auth.js session (`authjs.rs`), with the tenant it names (looked up by name, kept a
//! few seconds; created on first sight when the issuer is configured to).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Principal;
use super::authjs::{AuthJs, AuthJsConfig, SessionError};
use super::jwt::{JwtError, JwtIssuerConfig, JwtVerifier};
use crate::error::{Code, ErrorCode};
use crate::store::{Pool, Store, StoreError, Tenant};

/// Why an end user's credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the token is not valid: {0}")]
    Token(JwtError),
    #[error("the session is not valid: {0}")]
    Session(SessionError),
    #[error("the tenant `{0}` does not exist")]
    UnknownTenant(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IdentityError {
    /// A low-cardinality reason (metrics, the audit log).
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityError::Token(e) => e.kind(),
            IdentityError::Session(e) => e.kind(),
            IdentityError::UnknownTenant(_) => "unknown_tenant",
            IdentityError::Store(_) => "store",
        }
    }
}

impl ErrorCode for IdentityError {
    fn error_code(&self) -> Code {
        match self {
            IdentityError::Token(JwtError::Jwks(_)) => Code::UpstreamUnavailable,
            IdentityError::Session(SessionError::Store(_)) => Code::StoreUnavailable,
            IdentityError::Store(e) => e.error_code(),
            _ => Code::InvalidToken,
        }
    }
}

pub struct Identities {
    jwt: Option<JwtVerifier>,
    authjs: Option<AuthJs>,
    store: Store,
    /// Tenants by name: (tenant, limited, when looked up).
    tenants: Mutex<HashMap<String, (Tenant, bool, Instant)>>,
    ttl: Duration,
    /// Tokens verified lately, by their SHA-256, until their `exp` (at most
    /// [`VERIFIED_TTL`]): a browser sends the same token with every request, and a
    /// signature check costs far more than a hash. Only successes are kept.
    verified: Mutex<HashMap<[u8; 32], (super::jwt::Verified, Instant)>>,
    /// End users' addresses as last recorded, by (tenant id, user): a token's email claim is
    /// written to the store only when it changes.
    contacts: std::sync::Arc<Mutex<HashMap<(String, String), String>>>,
    /// Sign-in sessions seen (tenant, user, session): a new one is a notification.
    sessions: std::sync::Arc<Mutex<std::collections::HashSet<(String, String, String)>>>,
    queue: crate::jobs::JobQueue,
}

/// The longest a verified token is remembered.
const VERIFIED_TTL: Duration = Duration::from_secs(30);
/// Remembered tokens at most (the map is cleared when full).
const VERIFIED_MAX: usize = 50_000;

impl Identities {
    pub fn new(
        jwt: &std::collections::BTreeMap<String, JwtIssuerConfig>,
        authjs: Option<&AuthJsConfig>,
        store: &Store,
        ttl: Duration,
        queue: crate::jobs::JobQueue,
    ) -> anyhow::Result<Self> {
        let gateway_pg = match store.pool() {
            Pool::Postgres(p) => Some(p.clone()),
            Pool::Sqlite(_) => None,
        };
        Ok(Self {
            jwt: (!jwt.is_empty())
                .then(|| JwtVerifier::new(jwt))
                .transpose()?,
            authjs: authjs
                .map(|c| AuthJs::new(c.clone(), gateway_pg))
                .transpose()?,
            store: store.clone(),
            tenants: Mutex::new(HashMap::new()),
            ttl,
            verified: Mutex::new(HashMap::new()),
            contacts: Default::default(),
            sessions: Default::default(),
            queue,
        })
    }

    pub fn accepts_tokens(&self) -> bool {
        self.jwt.is_some()
    }

    pub fn accepts_sessions(&self) -> bool {
        self.authjs.is_some()
    }

    /// The principal of an identity provider's token.
    pub async fn token(&self, token: &str) -> Result<Principal, IdentityError> {
        let jwt = self
            .jwt
            .as_ref()
            .ok_or(IdentityError::Token(JwtError::Malformed))?;
        let (v, fresh) = self.verify_remembered(jwt, token).await?;
        let (tenant, limited) = self.tenant(&v.tenant, v.create_tenant).await?;
        // A token just verified (not one remembered) may bring a new address or session.
        if fresh {
            if let (Some(user), Some(email)) = (&v.user, &v.email) {
                self.remember_contact(&tenant.id, user, email);
            }
            if let (Some(user), Some(session)) = (&v.user, &v.session) {
                self.remember_session(&tenant, user, session, &v);
            }
        }
        Ok(Principal {
            key_id: format!("jwt:{}", v.issuer_name),
            tenant,
            limited,
            user: v.user,
            roles: v.roles,
            consent: v.consent,
            personal: true,
        })
    }

    /// Records an end user's address from their token, off the request's path, when it is
    /// new or changed.
    fn remember_contact(&self, tenant_id: &str, user: &str, email: &str) {
        let key = (tenant_id.to_string(), user.to_string());
        {
            let mut known = self.contacts.lock().expect("contacts");
            if known.get(&key).map(String::as_str) == Some(email) {
                return;
            }
            if known.len() >= VERIFIED_MAX {
                known.clear();
            }
            known.insert(key.clone(), email.to_string());
        }
        let contacts = self.contacts.clone();
        let (store, tenant_id, user, email) = (
            self.store.clone(),
            tenant_id.to_string(),
            user.to_string(),
            email.to_string(),
        );
        tokio::spawn(async move {
            if let Err(e) = crate::notify::set_user_address(&store, &tenant_id, &user, &email).await
            {
                tracing::debug!(error = %e, "an end user's address not recorded");
                // Tried again with the user's next token.
                contacts.lock().expect("contacts").remove(&key);
            }
        });
    }

    /// A sign-in session not seen before: a high-priority "new sign-in" notification to the
    /// user (in the app, pushed, and mailed to the token's address), off the request's path.
    /// Once per session, whichever replica sees it first (the notice's dedupe key).
    fn remember_session(
        &self,
        tenant: &Tenant,
        user: &str,
        session: &str,
        v: &super::jwt::Verified,
    ) {
        let key = (tenant.id.clone(), user.to_string(), session.to_string());
        {
            let mut seen = self.sessions.lock().expect("sessions");
            if !seen.insert(key.clone()) {
                return;
            }
            if seen.len() >= VERIFIED_MAX {
                seen.clear();
                seen.insert(key.clone());
            }
        }
        let ctx = serde_json::json!({
            "tenant": tenant.name, "user": user, "issuer": v.issuer_name,
            "at": crate::clock::rfc3339(crate::clock::now_ms() / 1000),
        });
        let notice = match crate::notify::Notice::render(
            "sign_in",
            &tenant.id,
            format!("signin:{}:{user}:{session}", tenant.id),
            ctx,
        ) {
            Ok(n) => n
                .for_user(Some(user))
                .priority(crate::notify::Priority::High)
                .email(v.email.as_deref()),
            Err(e) => {
                tracing::warn!(error = %e, "sign-in notice not rendered");
                return;
            }
        };
        let (store, queue, sessions) = (
            self.store.clone(),
            self.queue.clone(),
            self.sessions.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = crate::notify::send(&store, &queue, &[notice]).await {
                tracing::debug!(error = %e, "sign-in notice not written");
                sessions.lock().expect("sessions").remove(&key);
            }
        });
    }

    /// A token's verified claims: remembered, or checked (and remembered until its `exp`).
    async fn verify_remembered(
        &self,
        jwt: &JwtVerifier,
        token: &str,
    ) -> Result<(super::jwt::Verified, bool), IdentityError> {
        use sha2::Digest;
        let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some((v, until)) = self.verified.lock().expect("verified tokens").get(&hash)
            && Instant::now() < *until
        {
            return Ok((v.clone(), false));
        }
        let v = jwt.verify(token).await.map_err(IdentityError::Token)?;
        let left = v.claims["exp"]
            .as_i64()
            .map(|exp| exp - crate::clock::now_ms() / 1000)
            .unwrap_or(0);
        if left > 0 {
            let keep = VERIFIED_TTL.min(Duration::from_secs(left as u64));
            let mut map = self.verified.lock().expect("verified tokens");
            if map.len() >= VERIFIED_MAX {
                map.clear();
            }
            map.insert(hash, (v.clone(), Instant::now() + keep));
        }
        Ok((v, true))
    }

    /// The principal of an Auth.js session cookie, if the header carries one.
    pub async fn session(&self, cookie_header: &str) -> Option<Result<Principal, IdentityError>> {
        let authjs = self.authjs.as_ref()?;
        let session = authjs.verify(cookie_header).await?;
        Some(match session {
            Err(e) => Err(IdentityError::Session(e)),
            Ok(s) => self
                .tenant(&s.tenant, false)
                .await
                .map(|(tenant, limited)| Principal {
                    key_id: "session:authjs".into(),
                    tenant,
                    limited,
                    user: s.user,
                    roles: Vec::new(),
                    consent: None,
                    personal: true,
                }),
        })
    }

    async fn tenant(&self, name: &str, create: bool) -> Result<(Tenant, bool), IdentityError> {
        if let Some((t, limited, at)) = self.tenants.lock().expect("tenant cache").get(name)
            && at.elapsed() < self.ttl
        {
            return Ok((t.clone(), *limited));
        }
        let found = match self.store.tenant_by_name(name).await? {
            Some(found) => found,
            None if create => (self.store.ensure_tenant(name).await?, false),
            None => return Err(IdentityError::UnknownTenant(name.to_string())),
        };
        let mut cache = self.tenants.lock().expect("tenant cache");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(name.to_string(), (found.0.clone(), found.1, Instant::now()));
        Ok(found)
    }
}
