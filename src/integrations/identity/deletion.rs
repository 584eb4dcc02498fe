//! A user's deletion (GDPR's right to be forgotten), everywhere the gateway holds or sent
//! their data: requested by an operator (`DELETE /admin/users/{id}`) or by the identity
//! provider's `user.deleted` webhook, recorded once per user (a repeat request returns the
//! same deletion), and run by a durable job, step by step, each step's state kept: the
//! user's cache entries, stored responses, documents they own (metadata `owner`), the user
//! id in the request log (the rows stay for accounting, unlinked), their sessions (Auth.js'
//! sessions table), the personal keys issued to them, then the external systems configured:
//! the Stripe customer (found by `metadata['user_id']`), the analytics provider's person
//! (PostHog), the email provider's contact (Resend). Requests of the user still in flight
//! when the deletion ran (on any replica) may log, cache or store after it: a last step,
//! `sweep`, waits `sweep_after_secs` (longer than any request may take) from the request
//! and runs the local steps again. A step that fails is retried with the job's backoff;
//! done steps are not run again; when the attempts are spent the deletion is `failed` and
//! the job dead-lettered. Every step is written to the audit log.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{AuditLog, Event, audit_in_tx};
use crate::clock::now_ms;
use crate::jobs::{JobError, JobHandler, JobQueue, JobRow, NewJob, enqueue_job};
use crate::store::{Store, StoreError, on_pool};

mod external;

pub const JOB: &str = "identity.delete_user";

/// The steps, in order.
pub const STEPS: [&str; 10] = [
    "cache",
    "responses",
    "documents",
    "request_log",
    "sessions",
    "keys",
    "stripe",
    "analytics",
    "email",
    "sweep",
];

/// The steps the sweep runs again.
const SWEPT: [&str; 4] = ["cache", "responses", "documents", "request_log"];

/// `[identity.deletion]`: the external systems a deletion reaches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeletionConfig {
    /// Deletes the user's Auth.js sessions (`$1`: the user id); empty: no sessions step.
    pub sessions_query: String,
    /// The metadata key naming a document's owner.
    pub document_owner_key: String,
    /// Delete the Stripe customer whose `metadata['user_id']` is the user (the `[stripe]`
    /// API base and secret key).
    pub stripe: bool,
    /// PostHog: `https://us.posthog.com` (or a self-hosted one), the project id and the
    /// variable holding a personal API key.
    pub posthog_url: Option<String>,
    pub posthog_project_id: Option<String>,
    pub posthog_key_env: Option<String>,
    /// Resend: the API base (`https://api.resend.com`), the audience and the variable
    /// holding the API key; the contact is removed by the user's email.
    pub resend_url: Option<String>,
    pub resend_audience_id: Option<String>,
    pub resend_key_env: Option<String>,
    /// Longest wait for one external call.
    pub timeout_ms: u64,
    /// When the sweep runs, counted from the request: longer than any request may take.
    pub sweep_after_secs: f64,
}

impl Default for DeletionConfig {
    fn default() -> Self {
        Self {
            sessions_query: String::new(),
            document_owner_key: "owner".into(),
            stripe: false,
            posthog_url: None,
            posthog_project_id: None,
            posthog_key_env: None,
            resend_url: None,
            resend_audience_id: None,
            resend_key_env: None,
            timeout_ms: 10_000,
            sweep_after_secs: 600.0,
        }
    }
}

/// A deletion and its steps, as `GET /admin/users/{id}/deletion` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Deletion {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub requested_by: String,
    pub requested_at: i64,
    /// `pending`, `done` or `failed`.
    pub status: String,
    pub finished_at: Option<i64>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
#[schemars(rename = "DeletionStep")]
pub struct Step {
    pub step: String,
    /// `pending`, `waiting` (the sweep, until its time), `done`, `skipped`, `failed` (a
    /// later attempt follows).
    pub status: String,
    pub attempts: i64,
    pub detail: Option<String>,
    pub updated_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    deletion_id: String,
}

/// Records a user's deletion (once: a repeat returns the existing one) and queues its job.
pub async fn request(
    store: &Store,
    queue: &JobQueue,
    audit: &AuditLog,
    tenant_id: &str,
    user_id: &str,
    email: Option<&str>,
    requested_by: &str,
) -> Result<Deletion, StoreError> {
    let id = format!("del_{}", uuid::Uuid::now_v7().simple());
    let now = now_ms();
    // The row, its steps, its job and its audit row commit together: a deletion is never
    // recorded without the job that carries it out (a repeat finds the row and adds nothing).
    let mut job = NewJob::new(
        JOB,
        &Payload {
            deletion_id: id.clone(),
        },
    );
    job.dedupe_key = Some(format!("user-deletion:{id}"));
    let attempts = queue.default_attempts();
    let event = Event::new(
        requested_by,
        "user.delete.requested",
        Some(format!("{tenant_id}/{user_id}")),
        json!({"deletion": id}),
    );
    let created: bool = on_pool!(store, p => async {
        let mut tx = p.begin().await?;
        let n = sqlx::query(
            "INSERT INTO user_deletions (id, tenant_id, user_id, email, requested_by, requested_at, status) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending') ON CONFLICT (tenant_id, user_id) DO NOTHING")
            .bind(&id).bind(tenant_id).bind(user_id).bind(email).bind(requested_by).bind(now)
            .execute(&mut *tx).await?.rows_affected();
        if n == 0 {
            // Recorded before: queue its job again unless it has run (the dedupe key makes
            // this a no-op while one is queued), so a deletion recorded without its job (by an
            // earlier version that queued it apart) is carried out on the repeat request.
            let open: Option<String> = sqlx::query_scalar(
                "SELECT id FROM user_deletions WHERE tenant_id = $1 AND user_id = $2 AND status = 'pending'")
                .bind(tenant_id).bind(user_id).fetch_optional(&mut *tx).await?;
            if let Some(existing) = open {
                let mut again = NewJob::new(JOB, &Payload { deletion_id: existing.clone() });
                again.dedupe_key = Some(format!("user-deletion:{existing}"));
                enqueue_job!(&mut *tx, &again, attempts)?;
            }
        }
        if n == 1 {
            for step in STEPS {
                sqlx::query("INSERT INTO user_deletion_steps (deletion_id, step, status, attempts, updated_at) VALUES ($1, $2, 'pending', 0, $3)")
                    .bind(&id).bind(step).bind(now).execute(&mut *tx).await?;
            }
            enqueue_job!(&mut *tx, &job, attempts)?;
            audit_in_tx!(audit, tx, &event)?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(n == 1)
    }.await)?;
    if created {
        queue.wake();
        audit.appended();
    }
    find(store, tenant_id, user_id)
        .await?
        .ok_or_else(|| StoreError::NotFound("the deletion just recorded".into()))
}

type DeletionTuple = (String, String, String, String, i64, String, Option<i64>);

/// The deletion of `user_id` in `tenant_id`, with its steps.
pub async fn find(
    store: &Store,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<Deletion>, StoreError> {
    let row: Option<DeletionTuple> = on_pool!(store, p => sqlx::query_as(
        "SELECT id, tenant_id, user_id, requested_by, requested_at, status, finished_at FROM user_deletions \
         WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant_id).bind(user_id).fetch_optional(p).await)?;
    let Some((id, tenant_id, user_id, requested_by, requested_at, status, finished_at)) = row
    else {
        return Ok(None);
    };
    let steps = steps_of(store, &id).await?;
    Ok(Some(Deletion {
        id,
        tenant_id,
        user_id,
        requested_by,
        requested_at,
        status,
        finished_at,
        steps,
    }))
}

async fn steps_of(store: &Store, id: &str) -> Result<Vec<Step>, StoreError> {
    let rows: Vec<(String, String, i64, Option<String>, i64)> = on_pool!(store, p => sqlx::query_as(
        "SELECT step, status, CAST(attempts AS BIGINT), detail, updated_at FROM user_deletion_steps WHERE deletion_id = $1")
        .bind(id).fetch_all(p).await)?;
    let mut steps: Vec<Step> = rows
        .into_iter()
        .map(|(step, status, attempts, detail, updated_at)| Step {
            step,
            status,
            attempts,
            detail,
            updated_at,
        })
        .collect();
    steps.sort_by_key(|s| {
        STEPS
            .iter()
            .position(|x| *x == s.step)
            .unwrap_or(usize::MAX)
    });
    Ok(steps)
}

/// Runs a deletion's steps that are not done.
pub struct DeletionJob {
    pub store: Store,
    pub cache: Option<Arc<crate::cache::Cache>>,
    pub rag: Option<Arc<crate::rag::Rag>>,
    pub config: DeletionConfig,
    pub stripe_api: Option<(String, String)>,
    pub audit: Arc<AuditLog>,
    pub http: reqwest::Client,
    /// Where the sweep is queued.
    pub queue: JobQueue,
}

/// What a step did: its detail, or `None` when it does not apply here (skipped).
type Outcome = Result<Option<String>, String>;

impl DeletionJob {
    async fn mark(
        &self,
        id: &str,
        step: &str,
        status: &str,
        detail: Option<&str>,
        attempt: bool,
    ) -> Result<(), StoreError> {
        on_pool!(&self.store, p => sqlx::query(
            "UPDATE user_deletion_steps SET status = $1, detail = $2, updated_at = $3, attempts = attempts + $4 \
             WHERE deletion_id = $5 AND step = $6")
            .bind(status).bind(detail).bind(now_ms()).bind(i32::from(attempt)).bind(id).bind(step)
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }

    async fn run_step(&self, step: &str, tenant: &str, user: &str, email: Option<&str>) -> Outcome {
        let e = |x: StoreError| x.to_string();
        match step {
            "cache" => match &self.cache {
                Some(c) => Ok(Some(format!(
                    "{} entries",
                    c.invalidate_user(tenant, user).await.map_err(e)?
                ))),
                None => Ok(None),
            },
            "responses" => Ok(Some(format!(
                "{} responses",
                self.store
                    .delete_user_responses(tenant, user)
                    .await
                    .map_err(e)?
            ))),
            "documents" => match &self.rag {
                Some(rag) => {
                    let n = rag
                        .delete_owned(tenant, &self.config.document_owner_key, user)
                        .await
                        .map_err(|x| x.to_string())?;
                    Ok(Some(format!("{n} documents")))
                }
                None => Ok(None),
            },
            "request_log" => {
                let n = on_pool!(&self.store, p => sqlx::query(
                    "UPDATE request_log SET user_id = NULL WHERE tenant_id = $1 AND user_id = $2")
                    .bind(tenant).bind(user).execute(p).await.map(|r| r.rows_affected()))
                .map_err(|x| x.to_string())?;
                // Their stored analytics preference goes with them.
                on_pool!(&self.store, p => sqlx::query(
                    "DELETE FROM user_consent WHERE tenant_id = $1 AND user_id = $2")
                    .bind(tenant).bind(user).execute(p).await.map(|_| ()))
                .map_err(|x| x.to_string())?;
                Ok(Some(format!("{n} rows unlinked")))
            }
            "sessions" => {
                if self.config.sessions_query.is_empty() {
                    return Ok(None);
                }
                let n = on_pool!(&self.store, p => sqlx::query(sqlx::AssertSqlSafe(self.config.sessions_query.clone()))
                    .bind(user).execute(p).await.map(|r| r.rows_affected()))
                .map_err(|x| x.to_string())?;
                Ok(Some(format!("{n} sessions")))
            }
            "sweep" => {
                let mut found = Vec::new();
                for step in SWEPT {
                    if let Some(d) = Box::pin(self.run_step(step, tenant, user, email)).await? {
                        found.push(format!("{step}: {d}"));
                    }
                }
                Ok(Some(found.join(", ")))
            }
            "keys" => Ok(Some(format!(
                "{} keys revoked",
                self.store.revoke_user_keys(tenant, user).await.map_err(e)?
            ))),
            "stripe" => self.stripe(user).await,
            "analytics" => self.posthog(user).await,
            "email" => self.resend(email).await,
            _ => Ok(None),
        }
    }
}

impl DeletionJob {
    /// Queues the job again for the sweep's time (once) and shows the step as waiting.
    async fn wait_for_sweep(&self, id: &str, at: i64) -> Result<(), JobError> {
        let mut job = NewJob::new(
            JOB,
            &Payload {
                deletion_id: id.to_string(),
            },
        )
        .at(at);
        job.dedupe_key = Some(format!("user-deletion-sweep:{id}"));
        self.queue
            .enqueue(job)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        let when = format!("runs at {at} (ms since the epoch)");
        self.mark(id, "sweep", "waiting", Some(&when), false)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))
    }
}

#[async_trait::async_trait]
impl JobHandler for DeletionJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let payload: Payload = job.parse_payload()?;
        let id = payload.deletion_id;
        let row: Option<(String, String, Option<String>, String, i64)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT tenant_id, user_id, email, status, requested_at FROM user_deletions WHERE id = $1")
            .bind(&id).fetch_optional(p).await)
        .map_err(|e| JobError::Retry(e.to_string()))?;
        let Some((tenant, user, email, status, requested_at)) = row else {
            return Err(JobError::Permanent(format!("no deletion {id}")));
        };
        if status == "done" {
            return Ok(());
        }
        let steps = steps_of(&self.store, &id)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        let mut failures = Vec::new();
        let mut waiting = false;
        for s in steps
            .iter()
            .filter(|s| s.status != "done" && s.status != "skipped")
        {
            let sweep_at = requested_at + (self.config.sweep_after_secs * 1000.0) as i64;
            if s.step == "sweep" && (now_ms() < sweep_at || !failures.is_empty()) {
                if failures.is_empty() {
                    self.wait_for_sweep(&id, sweep_at).await?;
                    waiting = true;
                }
                continue;
            }
            let outcome = self
                .run_step(&s.step, &tenant, &user, email.as_deref())
                .await;
            let (status, detail) = match &outcome {
                Ok(Some(d)) => ("done", Some(d.as_str())),
                Ok(None) => ("skipped", Some("not configured")),
                Err(e) => ("failed", Some(e.as_str())),
            };
            // The step's audit row before its mark: a failure here retries the step (a
            // second row at worst), never leaves a step done without its row.
            self.audit
                .append(Event::new(
                    "system",
                    &format!("user.delete.{}", s.step),
                    Some(format!("{tenant}/{user}")),
                    json!({"deletion": id, "status": status, "detail": detail}),
                ))
                .await
                .map_err(|e| JobError::Retry(format!("audit: {e}")))?;
            self.mark(&id, &s.step, status, detail, true)
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            if let Err(e) = outcome {
                failures.push(format!("{}: {e}", s.step));
            }
        }
        let last_attempt = job.attempts >= job.max_attempts;
        let status = match (failures.is_empty(), last_attempt) {
            (true, _) if waiting => "pending",
            (true, _) => "done",
            (false, true) => "failed",
            (false, false) => "pending",
        };
        if status != "pending" {
            on_pool!(&self.store, p => sqlx::query(
                "UPDATE user_deletions SET status = $1, finished_at = $2 WHERE id = $3")
                .bind(status).bind(now_ms()).bind(&id).execute(p).await.map(|_| ()))
            .map_err(|e| JobError::Retry(e.to_string()))?;
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(JobError::Retry(failures.join("; ")))
        }
    }
}
