//! Stripe: verified webhooks stored before they are acknowledged (`webhook.rs`) and
//! processed exactly once by a job (`events.rs`); provisioning from checkout, dunning on
//! failed invoices (`dunning.rs`), plan changes from subscriptions; token usage pushed to
//! Stripe Billing meter events (`metering.rs`).
//!
//! Exactly once: the event row is unique on Stripe's event id, so 50 simultaneous deliveries
//! store one row and enqueue one job (de-duplicated by `stripe:{event id}`). The job applies
//! its effects in one transaction whose first statement marks the event processed only if it
//! was not: a job that runs twice (the process died after commit, before marking the job
//! done) changes nothing the second time.

mod dunning;
mod events;
mod metering;
pub mod payments;
pub mod signature;
pub mod webhook;

pub use dunning::{EnforceJob, ReminderJob};
pub use events::EventJob;
pub use metering::MeterJob;

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::clock::now_ms;
use crate::jobs::{JOB_HOUSEKEEPING, JobQueue, NewJob};
use crate::store::StoreError;

pub const JOB_EVENT: &str = "stripe.event";
pub const JOB_METER: &str = "stripe.meter_usage";
pub const JOB_REMIND: &str = "billing.dunning_reminder";
pub const JOB_ENFORCE: &str = "billing.dunning_enforce";

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
    /// Stripe price ids or lookup keys to plan names, for subscription updates (and, for
    /// price ids, the price a checkout for that plan uses).
    pub plans: BTreeMap<String, String>,
    /// Credit sold as one-off payments (Checkout or Elements).
    pub credit_packs: BTreeMap<String, payments::CreditPack>,
    /// Where Checkout sends the customer back, when the request names no URL.
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    /// Where the customer portal returns to, when the request names no URL.
    pub portal_return_url: Option<String>,
    /// Longest wait for one call to Stripe's API when starting a payment.
    pub timeout_ms: u64,
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
            credit_packs: BTreeMap::new(),
            success_url: None,
            cancel_url: None,
            portal_return_url: None,
            timeout_ms: 10_000,
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
    pub(super) secrets: Vec<String>,
    secret_key: Option<SecretString>,
    http: reqwest::Client,
}

impl Billing {
    /// Stripe's API base and the secret key, when a key is configured.
    pub fn api(&self) -> Option<(String, String)> {
        self.secret_key.as_ref().map(|k| {
            (
                self.stripe.api_base.trim_end_matches('/').to_string(),
                k.expose_secret().to_string(),
            )
        })
    }

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
                    NewJob::new(JOB_METER, &metering::MeterRef { window_end })
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
