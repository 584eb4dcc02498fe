//! Stripe: verified webhooks stored before they are acknowledged and processed exactly once
//! by a job; provisioning from checkout, dunning on failed invoices, plan changes from
//! subscriptions; token usage pushed to Stripe Billing meter events.
//!
//! Exactly once: the event row is unique on Stripe's event id, so 50 simultaneous deliveries
//! store one row and enqueue one job (de-duplicated by `stripe:{event id}`). The job applies
//! its effects in one transaction whose first statement marks the event processed only if it
//! was not: a job that runs twice (the process died after commit, before marking the job
//! done) changes nothing the second time.

pub mod signature;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::extract::RawBody;
use crate::error::ApiError;
use crate::jobs::{JobError, JobHandler, JobQueue, JobRow, NewJob, enqueue_job};
use crate::server::AppState;
use crate::store::{Store, StoreError, now_ms, on_pool};

pub const JOB_EVENT: &str = "stripe.event";
pub const JOB_METER: &str = "stripe.meter_usage";
pub const JOB_REMIND: &str = "billing.dunning_reminder";
pub const JOB_ENFORCE: &str = "billing.dunning_enforce";
pub const JOB_HOUSEKEEPING: &str = "housekeeping";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// Webhook signing secrets (`whsec_...`); list the old and the new one during a rotation.
    pub webhook_secrets: Vec<SecretString>,
    /// An environment variable holding more signing secrets, comma-separated.
    pub webhook_secrets_env: Option<String>,
    /// Signatures older than this are rejected (Stripe's libraries use 300 s).
    pub webhook_tolerance_secs: i64,
    /// Stripe's API; tests point this at a local mock.
    pub api_base: String,
    /// The environment variable holding the secret API key. Usage metering runs only when
    /// a key is set (here or in `secret_key`).
    pub secret_key_env: String,
    /// The secret key itself; prefer `secret_key_env`.
    pub secret_key: Option<SecretString>,
    /// The Billing meter's `event_name`.
    pub meter_event_name: String,
    /// Usage is pushed per window of this length...
    pub meter_interval_secs: u64,
    /// ...once the window has been closed this long (request log rows are written in
    /// batches; replicas' clocks differ a little).
    pub meter_settle_secs: u64,
    /// The plan set by a completed subscription checkout without `metadata.plan`.
    pub default_plan: String,
    /// Stripe price ids or lookup keys to plan names, for subscription updates.
    pub plans: BTreeMap<String, String>,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            webhook_secrets: vec![],
            webhook_secrets_env: Some("STRIPE_WEBHOOK_SECRET".into()),
            webhook_tolerance_secs: 300,
            api_base: "https://api.stripe.com".into(),
            secret_key_env: "STRIPE_SECRET_KEY".into(),
            secret_key: None,
            meter_event_name: "quartermaster_tokens".into(),
            meter_interval_secs: 3600,
            meter_settle_secs: 120,
            default_plan: "pro".into(),
            plans: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// After an `invoice.payment_failed`, a tenant stays fully served this long; then it is
    /// limited to `limited_models` until an `invoice.paid`.
    pub grace_period_secs: u64,
    /// Reminders (to the notification outbox) this long after the failure.
    pub reminder_offsets_secs: Vec<u64>,
    /// Models a limited tenant may still use; by default the models of the built-in local
    /// provider (the ones that cost nothing).
    pub limited_models: Option<Vec<String>>,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            grace_period_secs: 7 * 86_400,
            reminder_offsets_secs: vec![0, 3 * 86_400, 6 * 86_400],
            limited_models: None,
        }
    }
}

/// Shared by the webhook endpoint and the billing jobs.
pub struct Billing {
    pub stripe: StripeConfig,
    pub billing: BillingConfig,
    secrets: Vec<String>,
    secret_key: Option<SecretString>,
    http: reqwest::Client,
}

impl Billing {
    pub fn new(stripe: StripeConfig, billing: BillingConfig) -> Self {
        let mut secrets: Vec<String> = stripe
            .webhook_secrets
            .iter()
            .map(|s| s.expose_secret().trim().to_string())
            .collect();
        if let Some(var) = &stripe.webhook_secrets_env {
            if let Ok(value) = std::env::var(var) {
                secrets.extend(
                    value
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                );
            }
        }
        secrets.retain(|s| !s.is_empty());
        let secret_key = stripe
            .secret_key
            .as_ref()
            .map(|k| k.expose_secret().trim().to_string())
            .or_else(|| std::env::var(&stripe.secret_key_env).ok())
            .filter(|k| !k.trim().is_empty())
            .map(SecretString::from);
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client builds");
        Self {
            stripe,
            billing,
            secrets,
            secret_key,
            http,
        }
    }

    pub fn webhooks_enabled(&self) -> bool {
        !self.secrets.is_empty()
    }

    pub fn metering_enabled(&self) -> bool {
        self.secret_key.is_some()
    }

    /// Whether a limited tenant (past the dunning grace period) may use this model.
    pub fn allowed_when_limited(&self, model: &str, provider: &str) -> bool {
        match &self.billing.limited_models {
            Some(models) => models.iter().any(|m| m == model),
            None => provider == "local",
        }
    }
}

/// `POST /webhooks/stripe`: verify, store (unique on event id), enqueue, then 200.
pub async fn stripe_webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::Json<Value>, ApiError> {
    let billing = &state.billing;
    if !billing.webhooks_enabled() {
        return Err(ApiError::NotFound(
            "Stripe webhooks are not configured (set stripe.webhook_secrets or STRIPE_WEBHOOK_SECRET)"
                .into(),
        ));
    }
    let header = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    signature::verify(
        &body,
        header,
        &billing.secrets,
        billing.stripe.webhook_tolerance_secs,
        now_ms() / 1000,
    )
    .map_err(|e| {
        metrics::counter!("qm_stripe_webhooks_total", "outcome" => "bad_signature").increment(1);
        ApiError::InvalidSignature(e.to_string())
    })?;
    let event: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let (Some(id), Some(kind)) = (
        event.get("id").and_then(Value::as_str),
        event.get("type").and_then(Value::as_str),
    ) else {
        return Err(ApiError::invalid(
            "a Stripe event needs string `id` and `type` fields",
            None,
        ));
    };
    if id.is_empty() || id.len() > 255 || id.contains('\0') || kind.contains('\0') {
        return Err(ApiError::invalid(
            "a Stripe event's `id` must be 1 to 255 characters, and neither it nor `type` may contain NUL",
            Some("id".to_string()),
        ));
    }
    let payload = std::str::from_utf8(&body).map_err(|_| ApiError::InvalidUtf8)?;
    let handled = is_handled(kind);
    let now = now_ms();
    let (processed_at, outcome) = if handled {
        (None, None)
    } else {
        (Some(now), Some("ignored: unhandled event type"))
    };
    // A 2xx tells Stripe the event is ours: the event and its job commit together before
    // it. The job's dedupe key keeps a duplicate delivery to one job.
    let job = handled
        .then(|| NewJob::new(JOB_EVENT, &json!({"event_id": id})).dedupe(format!("stripe:{id}")));
    let attempts = state.jobs.default_attempts();
    let stored: Result<bool, sqlx::Error> = on_pool!(&state.store, p => async {
        let mut tx = p.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO stripe_events (id, type, payload, received_at, processed_at, outcome) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO NOTHING")
            .bind(id).bind(kind).bind(payload).bind(now).bind(processed_at).bind(outcome)
            .execute(&mut *tx).await?.rows_affected() == 1;
        if let Some(job) = &job {
            enqueue_job!(&mut *tx, job, attempts)?;
        }
        tx.commit().await?;
        Ok(inserted)
    }.await);
    let inserted = state
        .store
        .observe(stored.map_err(crate::store::StoreError::from))?;
    if job.is_some() {
        state.jobs.wake();
    } else if inserted {
        tracing::info!(
            event_id = id,
            event_type = kind,
            "Stripe event acknowledged; type not handled"
        );
    }
    let outcome = match (inserted, handled) {
        (false, _) => "duplicate",
        (true, true) => "accepted",
        (true, false) => "ignored",
    };
    metrics::counter!("qm_stripe_webhooks_total", "outcome" => outcome).increment(1);
    Ok(axum::Json(
        json!({"received": true, "id": id, "duplicate": !inserted, "handled": handled}),
    ))
}

fn is_handled(kind: &str) -> bool {
    matches!(
        kind,
        "checkout.session.completed"
            | "invoice.payment_failed"
            | "invoice.paid"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
    )
}

/// One statement of a handler's transaction.
#[derive(Debug, Clone)]
enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

#[derive(Debug, Clone)]
struct Stmt {
    sql: &'static str,
    args: Vec<Arg>,
    /// The transaction is abandoned (not an error) when this statement changes no row.
    must_change: bool,
}

fn stmt(sql: &'static str, args: Vec<Arg>) -> Stmt {
    Stmt {
        sql,
        args,
        must_change: false,
    }
}

fn text(s: impl Into<String>) -> Arg {
    Arg::Text(Some(s.into()))
}

/// Runs the statements (and enqueues the jobs) in one transaction. Returns false (and
/// commits nothing) when a `must_change` statement changed nothing.
async fn apply(
    store: &Store,
    stmts: &[Stmt],
    jobs: &[NewJob],
    default_attempts: i64,
) -> Result<bool, sqlx::Error> {
    macro_rules! bind_all {
        ($q:expr, $args:expr) => {{
            let mut q = $q;
            for a in $args {
                q = match a {
                    Arg::Text(v) => q.bind(v.clone()),
                    Arg::Int(v) => q.bind(*v),
                };
            }
            q
        }};
    }
    on_pool!(store, p => {
        let mut tx = p.begin().await?;
        for s in stmts {
            let changed = bind_all!(sqlx::query(s.sql), &s.args).execute(&mut *tx).await?.rows_affected();
            if s.must_change && changed == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        for job in jobs {
            enqueue_job!(&mut *tx, job, default_attempts)?;
        }
        tx.commit().await?;
        Ok(true)
    })
}

/// Processes one stored Stripe event.
pub struct EventJob {
    pub store: Store,
    pub queue: JobQueue,
    pub billing: Arc<Billing>,
}

#[derive(Deserialize)]
struct EventRef {
    event_id: String,
}

/// What a handler decided: statements (after the processed mark) and jobs.
struct Plan {
    outcome: String,
    stmts: Vec<Stmt>,
    jobs: Vec<NewJob>,
}

impl Plan {
    fn only(outcome: impl Into<String>) -> Self {
        Self {
            outcome: outcome.into(),
            stmts: vec![],
            jobs: vec![],
        }
    }
}

#[async_trait]
impl JobHandler for EventJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let r: EventRef = job.parse_payload()?;
        let row: Option<(String, String, Option<i64>)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT type, payload, processed_at FROM stripe_events WHERE id = $1")
            .bind(&r.event_id).fetch_optional(p).await)?;
        let Some((kind, payload, processed_at)) = row else {
            return Err(JobError::Permanent(format!(
                "no stored event {}",
                r.event_id
            )));
        };
        if processed_at.is_some() {
            return Ok(());
        }
        let event: Value = serde_json::from_str(&payload)
            .map_err(|e| JobError::Permanent(format!("stored event is not JSON: {e}")))?;
        let object = &event["data"]["object"];
        let plan = match kind.as_str() {
            "checkout.session.completed" => self.checkout_completed(object).await?,
            "invoice.payment_failed" => self.payment_failed(object).await?,
            "invoice.paid" => self.invoice_paid(object).await?,
            "customer.subscription.updated" | "customer.subscription.deleted" => {
                self.subscription_changed(&kind, object).await?
            }
            other => Plan::only(format!("ignored: {other}")),
        };
        let mut stmts = vec![Stmt {
            sql: "UPDATE stripe_events SET processed_at = $1, outcome = $2 WHERE id = $3 AND processed_at IS NULL",
            args: vec![
                Arg::Int(Some(now_ms())),
                text(plan.outcome.clone()),
                text(r.event_id.clone()),
            ],
            must_change: true,
        }];
        stmts.extend(plan.stmts);
        let applied = apply(
            &self.store,
            &stmts,
            &plan.jobs,
            self.queue.default_attempts(),
        )
        .await?;
        if applied {
            if !plan.jobs.is_empty() {
                self.queue.wake();
            }
            metrics::counter!("qm_stripe_events_processed_total", "type" => kind.clone())
                .increment(1);
            tracing::info!(event_id = %r.event_id, event_type = %kind, outcome = %plan.outcome, "Stripe event processed");
        }
        Ok(())
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

impl EventJob {
    async fn tenant_by_customer(
        &self,
        customer: &str,
    ) -> Result<Option<(String, String, Option<i64>)>, JobError> {
        Ok(on_pool!(&self.store, p => sqlx::query_as(
            "SELECT id, billing_status, past_due_since FROM tenants WHERE stripe_customer_id = $1")
            .bind(customer).fetch_optional(p).await)?)
    }

    async fn checkout_completed(&self, session: &Value) -> Result<Plan, JobError> {
        let Some(tenant) = str_at(session, &["client_reference_id"])
            .or_else(|| str_at(session, &["metadata", "tenant"]))
        else {
            tracing::warn!(
                "checkout.session.completed without client_reference_id or metadata.tenant: nothing to provision"
            );
            return Ok(Plan::only("ignored: no tenant reference"));
        };
        let customer = str_at(session, &["customer"]).map(str::to_string);
        let subscription = str_at(session, &["subscription"]).map(str::to_string);
        let mode = str_at(session, &["mode"]).unwrap_or("payment");
        let (plan, credit) = if mode == "subscription" {
            let plan = str_at(session, &["metadata", "plan"])
                .unwrap_or(&self.billing.stripe.default_plan)
                .to_string();
            (Some(plan), 0)
        } else {
            // A one-off payment buys credit: the amount paid, in cents.
            (None, session["amount_total"].as_i64().unwrap_or(0).max(0))
        };
        let new_id = format!("ten_{}", uuid::Uuid::now_v7().simple());
        let stmts = vec![
            // Provision: the tenant named by the reference exists afterwards.
            stmt(
                "INSERT INTO tenants (id, name, created_at) SELECT $1, $2, $3 \
                 WHERE NOT EXISTS (SELECT 1 FROM tenants WHERE name = $2 OR id = $2)",
                vec![text(new_id), text(tenant), Arg::Int(Some(now_ms()))],
            ),
            stmt(
                "UPDATE tenants SET stripe_customer_id = COALESCE($1, stripe_customer_id), \
                 stripe_subscription_id = COALESCE($2, stripe_subscription_id), plan = COALESCE($3, plan), \
                 credit_cents = credit_cents + $4, billing_status = 'active', past_due_since = NULL \
                 WHERE name = $5 OR id = $5",
                vec![
                    Arg::Text(customer),
                    Arg::Text(subscription),
                    Arg::Text(plan.clone()),
                    Arg::Int(Some(credit)),
                    text(tenant),
                ],
            ),
        ];
        let outcome = match plan {
            Some(plan) => format!("provisioned {tenant}: plan {plan}"),
            None => format!("provisioned {tenant}: credit +{credit} cents"),
        };
        Ok(Plan {
            outcome,
            stmts,
            jobs: vec![],
        })
    }

    async fn payment_failed(&self, invoice: &Value) -> Result<Plan, JobError> {
        let customer = str_at(invoice, &["customer"])
            .ok_or_else(|| JobError::Permanent("invoice without customer".into()))?;
        let Some((tenant_id, status, since)) = self.tenant_by_customer(customer).await? else {
            // Events may arrive before the checkout that links the customer: retry later.
            return Err(JobError::Retry(format!(
                "no tenant with Stripe customer {customer} yet"
            )));
        };
        let since = match (status.as_str(), since) {
            ("past_due" | "limited", Some(since)) => since,
            _ => now_ms(),
        };
        let mut jobs = vec![];
        for (n, offset) in self
            .billing
            .billing
            .reminder_offsets_secs
            .iter()
            .enumerate()
        {
            jobs.push(
                NewJob::new(
                    JOB_REMIND,
                    &json!({"tenant_id": tenant_id, "since": since, "n": n}),
                )
                .at(since + *offset as i64 * 1000)
                .dedupe(format!("dunning:{tenant_id}:{since}:r{n}")),
            );
        }
        jobs.push(
            NewJob::new(
                JOB_ENFORCE,
                &json!({"tenant_id": tenant_id, "since": since}),
            )
            .at(since + self.billing.billing.grace_period_secs as i64 * 1000)
            .dedupe(format!("dunning:{tenant_id}:{since}:enforce")),
        );
        Ok(Plan {
            outcome: format!("tenant {tenant_id} past due"),
            stmts: vec![stmt(
                "UPDATE tenants SET billing_status = CASE WHEN billing_status = 'limited' THEN 'limited' ELSE 'past_due' END, \
                 past_due_since = $1 WHERE id = $2",
                vec![Arg::Int(Some(since)), text(tenant_id.clone())],
            )],
            jobs,
        })
    }

    async fn invoice_paid(&self, invoice: &Value) -> Result<Plan, JobError> {
        let customer = str_at(invoice, &["customer"])
            .ok_or_else(|| JobError::Permanent("invoice without customer".into()))?;
        let Some((tenant_id, ..)) = self.tenant_by_customer(customer).await? else {
            return Err(JobError::Retry(format!(
                "no tenant with Stripe customer {customer} yet"
            )));
        };
        Ok(Plan {
            outcome: format!("tenant {tenant_id} paid: dunning cleared"),
            stmts: vec![stmt(
                "UPDATE tenants SET billing_status = 'active', past_due_since = NULL WHERE id = $1",
                vec![text(tenant_id)],
            )],
            jobs: vec![],
        })
    }

    async fn subscription_changed(&self, kind: &str, sub: &Value) -> Result<Plan, JobError> {
        let customer = str_at(sub, &["customer"])
            .ok_or_else(|| JobError::Permanent("subscription without customer".into()))?;
        let Some((tenant_id, ..)) = self.tenant_by_customer(customer).await? else {
            return Err(JobError::Retry(format!(
                "no tenant with Stripe customer {customer} yet"
            )));
        };
        let status = str_at(sub, &["status"]).unwrap_or("active");
        let ended = kind == "customer.subscription.deleted"
            || matches!(status, "canceled" | "incomplete_expired" | "unpaid");
        let (plan, sub_id) = if ended {
            ("free".to_string(), None)
        } else {
            (self.plan_of(sub), str_at(sub, &["id"]).map(str::to_string))
        };
        Ok(Plan {
            outcome: format!("tenant {tenant_id} plan {plan}"),
            stmts: vec![stmt(
                "UPDATE tenants SET plan = $1, stripe_subscription_id = $2 WHERE id = $3",
                vec![text(plan), Arg::Text(sub_id), text(tenant_id)],
            )],
            jobs: vec![],
        })
    }

    /// The plan of a subscription: `metadata.plan`, else the first item's price lookup key
    /// or id mapped through `stripe.plans`, else the lookup key itself, else the default.
    fn plan_of(&self, sub: &Value) -> String {
        if let Some(plan) = str_at(sub, &["metadata", "plan"]) {
            return plan.to_string();
        }
        let price = &sub["items"]["data"][0]["price"];
        let lookup = str_at(price, &["lookup_key"]);
        let id = str_at(price, &["id"]);
        for key in [lookup, id].into_iter().flatten() {
            if let Some(plan) = self.billing.stripe.plans.get(key) {
                return plan.clone();
            }
        }
        lookup
            .map(str::to_string)
            .unwrap_or_else(|| self.billing.stripe.default_plan.clone())
    }
}

#[derive(Serialize, Deserialize)]
struct DunningRef {
    tenant_id: String,
    since: i64,
    #[serde(default)]
    n: usize,
}

/// A reminder while a tenant is past due (written to the notification outbox).
pub struct ReminderJob {
    pub store: Store,
}

#[async_trait]
impl JobHandler for ReminderJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let r: DunningRef = job.parse_payload()?;
        let row: Option<(String, String, Option<i64>)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT name, billing_status, past_due_since FROM tenants WHERE id = $1")
            .bind(&r.tenant_id).fetch_optional(p).await)?;
        let Some((name, status, since)) = row else {
            return Ok(());
        };
        if status == "active" || since != Some(r.since) {
            return Ok(()); // paid in the meantime, or a newer dunning cycle owns it
        }
        let subject = format!("Payment failed for {name}: reminder {}", r.n + 1);
        let body = format!(
            "The last invoice for {name} could not be charged. Please update the payment method; \
             service is limited to the cheaper models if it stays unpaid."
        );
        let dedupe = format!("dunning:{}:{}:r{}", r.tenant_id, r.since, r.n);
        on_pool!(&self.store, p => sqlx::query(
            "INSERT INTO notifications (id, tenant_id, kind, subject, body, dedupe_key, created_at) \
             VALUES ($1, $2, 'dunning_reminder', $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING")
            .bind(format!("ntf_{}", uuid::Uuid::now_v7().simple())).bind(&r.tenant_id)
            .bind(&subject).bind(&body).bind(&dedupe).bind(now_ms())
            .execute(p).await.map(|_| ()))?;
        tracing::info!(tenant = %name, reminder = r.n + 1, "dunning reminder queued");
        Ok(())
    }
}

/// At the end of the grace period: a tenant still past due is limited.
pub struct EnforceJob {
    pub store: Store,
}

#[async_trait]
impl JobHandler for EnforceJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let r: DunningRef = job.parse_payload()?;
        let n = on_pool!(&self.store, p => sqlx::query(
            "UPDATE tenants SET billing_status = 'limited' WHERE id = $1 AND billing_status = 'past_due' AND past_due_since = $2")
            .bind(&r.tenant_id).bind(r.since).execute(p).await.map(|r| r.rows_affected()))?;
        if n == 1 {
            tracing::warn!(tenant_id = %r.tenant_id, "grace period over: tenant limited");
        }
        Ok(())
    }
}

/// Pushes each tenant's token usage since its last push to Stripe meter events.
pub struct MeterJob {
    pub store: Store,
    pub billing: Arc<Billing>,
}

#[derive(Serialize, Deserialize)]
struct MeterRef {
    window_end: i64,
}

#[async_trait]
impl JobHandler for MeterJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let r: MeterRef = job.parse_payload()?;
        let Some(key) = &self.billing.secret_key else {
            return Err(JobError::Permanent(
                "no Stripe secret key configured".into(),
            ));
        };
        let tenants: Vec<(String, String)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT id, stripe_customer_id FROM tenants WHERE stripe_customer_id IS NOT NULL ORDER BY id")
            .fetch_all(p).await)?;
        let mut failures = vec![];
        for (tenant_id, customer) in tenants {
            if let Err(e) = self
                .push_tenant(key, &tenant_id, &customer, r.window_end)
                .await
            {
                failures.push(format!("{tenant_id}: {e}"));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            // Tenants pushed already are skipped on the retry (their cursor moved).
            Err(JobError::Retry(failures.join("; ")))
        }
    }
}

impl MeterJob {
    /// Pushes the tenant's usage up to `to`. A push is recorded as `pending` before the POST
    /// and retried exactly as recorded (same value, same identifier) until Stripe accepts
    /// it: a push that may have reached Stripe before a crash is never merged into a
    /// differently-windowed one, so Stripe's de-duplication by identifier makes it count
    /// once.
    async fn push_tenant(
        &self,
        key: &SecretString,
        tenant_id: &str,
        customer: &str,
        to: i64,
    ) -> Result<(), JobError> {
        loop {
            let pending: Option<(i64, i64, i64, String)> = on_pool!(&self.store, p => sqlx::query_as(
                "SELECT window_start, window_end, tokens, identifier FROM meter_pushes \
                 WHERE tenant_id = $1 AND state = 'pending' ORDER BY window_start LIMIT 1")
                .bind(tenant_id).fetch_optional(p).await)?;
            if let Some((start, end, tokens, identifier)) = pending {
                self.post(key, customer, tokens, &identifier, end).await?;
                on_pool!(&self.store, p => sqlx::query(
                    "UPDATE meter_pushes SET state = 'sent', pushed_at = $1 WHERE tenant_id = $2 AND window_start = $3")
                    .bind(now_ms()).bind(tenant_id).bind(start).execute(p).await.map(|_| ()))?;
                continue;
            }
            let from: i64 = on_pool!(&self.store, p => sqlx::query_scalar(
                "SELECT CAST(COALESCE(MAX(window_end), 0) AS BIGINT) FROM meter_pushes WHERE tenant_id = $1")
                .bind(tenant_id).fetch_one(p).await)?;
            if from >= to {
                return Ok(());
            }
            let tokens: i64 = on_pool!(&self.store, p => sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(tokens_in + tokens_out), 0) AS BIGINT) FROM request_log \
                 WHERE tenant_id = $1 AND logged_at >= $2 AND logged_at < $3")
                .bind(tenant_id).bind(from).bind(to).fetch_one(p).await)?;
            if tokens == 0 {
                return Ok(()); // nothing to push; the next window starts from `from` again
            }
            let identifier = format!("qm_{tenant_id}_{from}_{to}");
            // Another worker may record the same window at once: the primary key keeps
            // one, and the loop pushes whichever is pending.
            on_pool!(&self.store, p => sqlx::query(
                "INSERT INTO meter_pushes (tenant_id, window_start, window_end, tokens, identifier, state, pushed_at) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6) ON CONFLICT (tenant_id, window_start) DO NOTHING")
                .bind(tenant_id).bind(from).bind(to).bind(tokens).bind(&identifier).bind(now_ms())
                .execute(p).await.map(|_| ()))?;
        }
    }

    async fn post(
        &self,
        key: &SecretString,
        customer: &str,
        tokens: i64,
        identifier: &str,
        window_end: i64,
    ) -> Result<(), JobError> {
        let url = format!(
            "{}/v1/billing/meter_events",
            self.billing.stripe.api_base.trim_end_matches('/')
        );
        let form = [
            ("event_name", self.billing.stripe.meter_event_name.clone()),
            ("payload[stripe_customer_id]", customer.to_string()),
            ("payload[value]", tokens.to_string()),
            ("identifier", identifier.to_string()),
            ("timestamp", ((window_end - 1) / 1000).to_string()),
        ];
        let response = self
            .billing
            .http
            .post(&url)
            .bearer_auth(key.expose_secret())
            .header("Idempotency-Key", identifier)
            .form(&form)
            .send()
            .await
            .map_err(|e| JobError::Retry(format!("Stripe unreachable: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let body: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect();
            return Err(JobError::Retry(format!("Stripe answered {status}: {body}")));
        }
        metrics::counter!("qm_stripe_meter_tokens_total").increment(tokens as u64);
        Ok(())
    }
}

/// Daily clean-up: finished jobs and expired idempotency keys.
pub struct HousekeepingJob {
    pub queue: JobQueue,
    pub idempotency_ttl_secs: u64,
}

#[async_trait]
impl JobHandler for HousekeepingJob {
    async fn run(&self, _job: &JobRow) -> Result<(), JobError> {
        let jobs = self.queue.purge_done().await?;
        let keys =
            crate::api::idempotency::purge_expired(self.queue.store(), self.idempotency_ttl_secs)
                .await?;
        tracing::info!(jobs, idempotency_keys = keys, "housekeeping done");
        Ok(())
    }
}

/// Enqueues the periodic jobs (metering per closed window, daily housekeeping). Every
/// enqueue is de-duplicated, so replicas running this at once are harmless.
pub async fn schedule_periodic(queue: &JobQueue, billing: &Billing) -> Result<(), StoreError> {
    let now = now_ms();
    if billing.metering_enabled() {
        let interval = billing.stripe.meter_interval_secs.max(1) as i64 * 1000;
        let settle = billing.stripe.meter_settle_secs as i64 * 1000;
        let window_end = (now - settle).div_euclid(interval) * interval;
        if window_end > 0 {
            queue
                .enqueue(
                    NewJob::new(JOB_METER, &MeterRef { window_end })
                        .dedupe(format!("meter:{window_end}")),
                )
                .await?;
        }
    }
    let day = now.div_euclid(86_400_000);
    queue
        .enqueue(
            NewJob::new(JOB_HOUSEKEEPING, &json!({"day": day}))
                .dedupe(format!("housekeeping:{day}")),
        )
        .await?;
    Ok(())
}

/// How often [`schedule_periodic`] runs.
pub fn schedule_tick(billing: &Billing) -> Duration {
    Duration::from_secs(billing.stripe.meter_interval_secs.clamp(1, 60))
}
