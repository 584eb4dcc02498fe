//! Every query on operators' console state: TOTP enrolments (a secret per actor, pending
//! until its first code confirms it) and console sessions (stored by the SHA-256 of their
//! token, so a database dump holds no usable session).

use super::{Store, StoreError, on_pool};
use crate::clock::now_ms;

/// An operator's TOTP enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaRow {
    pub secret: String,
    pub confirmed: bool,
    /// The last 30 s step a code was accepted for.
    pub last_step: i64,
    /// Until when (ms) codes are refused after too many wrong ones.
    pub locked_until: i64,
}

/// A live console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub actor: String,
    pub role: String,
    pub expires_at: i64,
}

impl Store {
    pub async fn operator_mfa(&self, actor: &str) -> Result<Option<MfaRow>, StoreError> {
        type Row = (String, Option<i64>, i64, i64);
        let row: Option<Row> = on_pool!(self, p => sqlx::query_as(
            "SELECT secret, confirmed_at, last_step, locked_until FROM operator_mfa WHERE actor = $1")
            .bind(actor).fetch_optional(p).await)?;
        Ok(
            row.map(|(secret, confirmed_at, last_step, locked_until)| MfaRow {
                secret,
                confirmed: confirmed_at.is_some(),
                last_step,
                locked_until,
            }),
        )
    }

    /// Starts (or restarts) an enrolment with a new secret; `false` when the actor's
    /// enrolment is already confirmed (it is left as it is).
    pub async fn begin_mfa(&self, actor: &str, secret: &str) -> Result<bool, StoreError> {
        let done = on_pool!(self, p => sqlx::query(
            "INSERT INTO operator_mfa (actor, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (actor) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at, \
             last_step = 0 WHERE operator_mfa.confirmed_at IS NULL")
            .bind(actor).bind(secret).bind(now_ms()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Records that a code of `step` was accepted (confirming a pending enrolment), only if
    /// no code of that step or a later one was: `false` means a replayed code. With
    /// `end_sessions = Some(keep)`, the actor's other sessions (all but `keep`) end in the same
    /// transaction: an enrolment is never confirmed with an older session left open.
    pub async fn accept_mfa_step(
        &self,
        actor: &str,
        step: i64,
        end_sessions: Option<Option<&str>>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let done = sqlx::query(
                "UPDATE operator_mfa SET last_step = $2, confirmed_at = COALESCE(confirmed_at, $3), \
                 failures = 0, locked_until = 0 WHERE actor = $1 AND last_step < $2")
                .bind(actor).bind(step).bind(now).execute(&mut *tx).await?.rows_affected() == 1;
            if let (true, Some(keep)) = (done, end_sessions) {
                sqlx::query(
                    "UPDATE operator_sessions SET revoked_at = $2 WHERE actor = $1 AND revoked_at IS NULL \
                     AND token_hash <> $3")
                    .bind(actor).bind(now).bind(keep.unwrap_or("")).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done)
        }.await)?;
        Ok(done)
    }

    /// Counts a wrong code; the `max`th in a row locks codes out for `lock_ms`.
    pub async fn mfa_failed(&self, actor: &str, max: i64, lock_ms: i64) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE operator_mfa SET \
             locked_until = CASE WHEN failures + 1 >= $2 THEN $3 ELSE locked_until END, \
             failures = CASE WHEN failures + 1 >= $2 THEN 0 ELSE failures + 1 END WHERE actor = $1")
            .bind(actor).bind(max).bind(now_ms() + lock_ms).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Every enrolment: (actor, confirmed), by actor.
    pub async fn mfa_enrolments(&self) -> Result<Vec<(String, bool)>, StoreError> {
        let rows: Vec<(String, Option<i64>)> = on_pool!(self, p => sqlx::query_as(
            "SELECT actor, confirmed_at FROM operator_mfa ORDER BY actor")
            .fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(a, c)| (a, c.is_some())).collect())
    }

    /// Removes an actor's enrolment (an admin resetting a lost authenticator).
    pub async fn delete_mfa(&self, actor: &str) -> Result<bool, StoreError> {
        let done = on_pool!(self, p => sqlx::query("DELETE FROM operator_mfa WHERE actor = $1")
            .bind(actor).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    pub async fn insert_session(
        &self,
        token_hash: &str,
        actor: &str,
        role: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO operator_sessions (token_hash, actor, role, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)")
            .bind(token_hash).bind(actor).bind(role).bind(now_ms()).bind(expires_at)
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// The session with this token hash, if it is neither expired nor revoked.
    pub async fn live_session(&self, token_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        type Row = (String, String, i64);
        let row: Option<Row> = on_pool!(self, p => sqlx::query_as(
            "SELECT actor, role, expires_at FROM operator_sessions \
             WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2")
            .bind(token_hash).bind(now_ms()).fetch_optional(p).await)?;
        Ok(row.map(|(actor, role, expires_at)| SessionRow {
            actor,
            role,
            expires_at,
        }))
    }

    pub async fn revoke_session(&self, token_hash: &str) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE operator_sessions SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(token_hash).bind(now_ms()).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Revokes every session of an actor but `keep` (a token hash), if given.
    pub async fn revoke_sessions_of(
        &self,
        actor: &str,
        keep: Option<&str>,
    ) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE operator_sessions SET revoked_at = $2 WHERE actor = $1 AND revoked_at IS NULL \
             AND token_hash <> $3")
            .bind(actor).bind(now_ms()).bind(keep.unwrap_or("")).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Deletes sessions that ended (expired or revoked) before `before` (housekeeping).
    pub async fn purge_sessions(&self, before: i64) -> Result<u64, StoreError> {
        Ok(on_pool!(self, p => sqlx::query(
            "DELETE FROM operator_sessions WHERE expires_at < $1 OR revoked_at < $1")
            .bind(before).execute(p).await.map(|r| r.rows_affected()))?)
    }
}
