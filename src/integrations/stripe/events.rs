//! Processing a stored Stripe event, exactly once: the job's effects and the "processed"
//! mark commit in one transaction whose first statement marks the event only if it was not.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Billing, JOB_ENFORCE, JOB_REMIND};
use crate::clock::now_ms;
use crate::jobs::{JobError, JobHandler, JobQueue, JobRow, NewJob, enqueue_job};
use crate::notify::{Notice, insert_notice};
use crate::store::{Store, on_pool};

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
    notices: &[Notice],
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
        for n in notices {
            insert_notice!(tx, n, default_attempts)?;
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
    /// Notifications and emails, in the same transaction.
    notices: Vec<Notice>,
}

impl Plan {
    fn only(outcome: impl Into<String>) -> Self {
        Self {
            outcome: outcome.into(),
            stmts: vec![],
            jobs: vec![],
            notices: vec![],
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
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                self.checkout_completed(object).await?
            }
            "invoice.payment_failed" => self.payment_failed(object).await?,
            "invoice.paid" => self.invoice_paid(object).await?,
            "payment_intent.succeeded" => self.intent_succeeded(object),
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
            &plan.notices,
            self.queue.default_attempts(),
        )
        .await?;
        if applied {
            if !plan.jobs.is_empty() || !plan.notices.is_empty() {
                self.queue.wake();
            }
            for n in &plan.notices {
                crate::notify::live::wake(&n.tenant_id, &n.user_id);
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

    async fn tenant_id(&self, name_or_id: &str) -> Result<Option<String>, JobError> {
        Ok(on_pool!(&self.store, p => sqlx::query_scalar(
            "SELECT id FROM tenants WHERE name = $1 OR id = $1")
            .bind(name_or_id).fetch_optional(p).await)?)
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
        // A delayed payment method (SEPA, ACH) completes the session unpaid: its credit
        // comes with `checkout.session.async_payment_succeeded`.
        if mode == "payment" && str_at(session, &["payment_status"]) == Some("unpaid") {
            return Ok(Plan::only("waiting: the payment is not settled yet"));
        }
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
                vec![text(new_id.clone()), text(tenant), Arg::Int(Some(now_ms()))],
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
        let outcome = match &plan {
            Some(plan) => format!("provisioned {tenant}: plan {plan}"),
            None => format!("provisioned {tenant}: credit +{credit} cents"),
        };
        // The receipt goes to the address the customer paid with, which becomes the tenant's
        // contact when it has none.
        let email = str_at(session, &["customer_details", "email"])
            .or_else(|| str_at(session, &["customer_email"]))
            .filter(|e| crate::notify::valid_address(e))
            .map(str::to_lowercase);
        let mut stmts = stmts;
        if let Some(e) = &email {
            stmts.push(stmt(
                "UPDATE tenants SET contact_email = COALESCE(contact_email, $1) WHERE name = $2 OR id = $2",
                vec![text(e.clone()), text(tenant)],
            ));
        }
        let tenant_id = self.tenant_id(tenant).await?.unwrap_or(new_id);
        let amount = session["amount_total"].as_i64().unwrap_or(0);
        let currency = str_at(session, &["currency"])
            .unwrap_or("usd")
            .to_uppercase();
        let receipt = Notice::render(
            "receipt",
            &tenant_id,
            format!("receipt:{}", str_at(session, &["id"]).unwrap_or(tenant)),
            json!({"tenant": tenant, "amount": format!("{}.{:02} {currency}", amount / 100, amount % 100),
                   "plan": plan, "reference": str_at(session, &["id"])}),
        )
        .map_err(|e| JobError::Permanent(e.to_string()))?
        .email(email.as_deref());
        Ok(Plan {
            outcome,
            stmts,
            jobs: vec![],
            notices: vec![receipt],
        })
    }

    /// A credit pack paid through Elements (`POST /v1/billing/payment-intents`): the amount
    /// received becomes credit. Checkout's own intents are not marked (their session's
    /// completion adds the credit), so nothing is counted twice.
    fn intent_succeeded(&self, intent: &Value) -> Plan {
        if str_at(intent, &["metadata", "qm_credit"]) != Some("elements") {
            return Plan::only("ignored: not a credit pack bought with Elements");
        }
        let Some(tenant) = str_at(intent, &["metadata", "tenant"]) else {
            return Plan::only("ignored: no tenant reference");
        };
        let credit = intent["amount_received"].as_i64().unwrap_or(0).max(0);
        let customer = str_at(intent, &["customer"]).map(str::to_string);
        Plan {
            outcome: format!("credit {tenant}: +{credit} cents"),
            stmts: vec![stmt(
                "UPDATE tenants SET credit_cents = credit_cents + $1,                  stripe_customer_id = COALESCE(stripe_customer_id, $2) WHERE name = $3 OR id = $3",
                vec![Arg::Int(Some(credit)), Arg::Text(customer), text(tenant)],
            )],
            jobs: vec![],
            notices: vec![],
        }
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
            notices: vec![],
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
            notices: vec![],
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
            notices: vec![],
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
