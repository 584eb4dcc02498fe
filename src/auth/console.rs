//! Operators' console sign-in: a credential (the admin key, an operator key, an identity
//! token with an operator role) is exchanged for a console session (`qms_` + 32 random bytes,
//! stored by its SHA-256, shared by every replica). An operator may enrol TOTP: the first
//! code confirms the enrolment, and from then on signing in needs a code and the raw
//! credential alone no longer opens the admin API (the brief's §13 MFA requirement).

use sha2::{Digest, Sha256};

use super::roles::{Operator, Role};
use super::totp;
use crate::clock::now_ms;
use crate::error::{Code, ErrorCode};
use crate::store::{MfaRow, Store, StoreError};

pub const SESSION_PREFIX: &str = "qms_";
const ISSUER: &str = "Quartermaster";

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("this account has a second factor: send the current code from its authenticator app")]
    MfaRequired,
    #[error("the code is wrong, expired or already used")]
    InvalidCode,
    #[error("too many wrong codes: try again in {0} s")]
    Locked(u64),
    #[error("this account is already enrolled; an admin can reset it")]
    AlreadyEnrolled,
    #[error("no enrolment is pending: start one first")]
    NotEnrolling,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for ConsoleError {
    fn error_code(&self) -> Code {
        match self {
            ConsoleError::MfaRequired => Code::MfaRequired,
            ConsoleError::InvalidCode => Code::InvalidMfaCode,
            ConsoleError::Locked(_) => Code::TooManyFailedAuthentications,
            ConsoleError::AlreadyEnrolled => Code::MfaAlreadyEnrolled,
            ConsoleError::NotEnrolling => Code::InvalidRequest,
            ConsoleError::Store(e) => e.error_code(),
        }
    }
}

/// A console session as its holder receives it (the token is shown only here).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    pub token: String,
    pub actor: String,
    pub role: &'static str,
    pub expires_at: i64,
}

/// An operator's enrolment state.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MfaState {
    pub enrolled: bool,
    pub pending: bool,
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a bearer token is a console session's.
pub fn is_session_token(token: &str) -> bool {
    token.starts_with(SESSION_PREFIX)
}

pub async fn mfa_state(store: &Store, actor: &str) -> Result<MfaState, StoreError> {
    let row = store.operator_mfa(actor).await?;
    Ok(MfaState {
        enrolled: row.as_ref().is_some_and(|r| r.confirmed),
        pending: row.as_ref().is_some_and(|r| !r.confirmed),
    })
}

/// Refuses a raw credential of an operator enrolled in TOTP (they sign in with a code).
pub async fn require_no_second_factor(store: &Store, actor: &str) -> Result<(), ConsoleError> {
    match store.operator_mfa(actor).await? {
        Some(row) if row.confirmed => Err(ConsoleError::MfaRequired),
        _ => Ok(()),
    }
}

/// Wrong codes in a row that lock an account's codes out, and for how long: guessing one of
/// the three codes valid at a time out of a million is then hopeless.
const MAX_FAILURES: i64 = 5;
const LOCK_MS: i64 = 5 * 60_000;

/// Checks a code against the actor's enrolment, once per step (a replayed code fails), and
/// not while wrong codes have locked it; `end_sessions` as in [`Store::accept_mfa_step`].
async fn accept_code(
    store: &Store,
    actor: &str,
    row: &MfaRow,
    code: &str,
    end_sessions: Option<Option<&str>>,
) -> Result<(), ConsoleError> {
    let now = now_ms();
    if row.locked_until > now {
        return Err(ConsoleError::Locked(
            ((row.locked_until - now) as u64).div_ceil(1000),
        ));
    }
    let step = totp::verify(&row.secret, code, (now.max(0) / 1000) as u64);
    match step {
        Some(step)
            if store
                .accept_mfa_step(actor, step as i64, end_sessions)
                .await? =>
        {
            Ok(())
        }
        _ => {
            store.mfa_failed(actor, MAX_FAILURES, LOCK_MS).await?;
            Err(ConsoleError::InvalidCode)
        }
    }
}

/// Opens a session for an authenticated operator; an enrolled one must send a good code.
pub async fn sign_in(
    store: &Store,
    operator: &Operator,
    code: Option<&str>,
    ttl_secs: u64,
) -> Result<Session, ConsoleError> {
    if let Some(row) = store
        .operator_mfa(&operator.actor)
        .await?
        .filter(|r| r.confirmed)
    {
        let code = code.ok_or(ConsoleError::MfaRequired)?;
        accept_code(store, &operator.actor, &row, code, None).await?;
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let token = format!("{SESSION_PREFIX}{}", hex::encode(bytes));
    // A day's minute to 30 days, whatever the configuration says.
    let expires_at = now_ms() + (ttl_secs.clamp(60, 30 * 86_400) as i64) * 1000;
    store
        .insert_session(
            &digest(&token),
            &operator.actor,
            operator.role.as_str(),
            expires_at,
        )
        .await?;
    Ok(Session {
        token,
        actor: operator.actor.clone(),
        role: operator.role.as_str(),
        expires_at,
    })
}

/// The operator of a live session token.
pub async fn session(store: &Store, token: &str) -> Result<Option<Operator>, StoreError> {
    Ok(store.live_session(&digest(token)).await?.and_then(|s| {
        Some(Operator {
            actor: s.actor,
            role: Role::parse(&s.role)?,
        })
    }))
}

pub async fn sign_out(store: &Store, token: &str) -> Result<(), StoreError> {
    store.revoke_session(&digest(token)).await
}

/// Starts an enrolment: a new secret and the `otpauth://` URI to show as a QR code.
pub async fn enroll(store: &Store, actor: &str) -> Result<(String, String), ConsoleError> {
    let secret = totp::new_secret();
    if !store.begin_mfa(actor, &secret).await? {
        return Err(ConsoleError::AlreadyEnrolled);
    }
    let uri = totp::uri(ISSUER, actor, &secret);
    Ok((secret, uri))
}

/// Confirms a pending enrolment with its first code. Every other session of the actor ends
/// (one opened with a stolen key before the enrolment must not outlive it); `current`, the
/// session that confirmed with a good code, if any, is kept.
pub async fn confirm(
    store: &Store,
    actor: &str,
    code: &str,
    current: Option<&str>,
) -> Result<(), ConsoleError> {
    match store.operator_mfa(actor).await? {
        Some(row) if row.confirmed => Err(ConsoleError::AlreadyEnrolled),
        Some(row) => {
            let keep = current.filter(|t| is_session_token(t)).map(digest);
            accept_code(store, actor, &row, code, Some(keep.as_deref())).await
        }
        None => Err(ConsoleError::NotEnrolling),
    }
}

/// Removes an actor's enrolment and ends their sessions (a lost authenticator).
pub async fn reset(store: &Store, actor: &str) -> Result<bool, StoreError> {
    let removed = store.delete_mfa(actor).await?;
    store.revoke_sessions_of(actor, None).await?;
    Ok(removed)
}
