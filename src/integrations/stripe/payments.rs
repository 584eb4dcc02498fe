//! Starting payments: Checkout Sessions for a plan or a credit pack, PaymentIntents for
//! Stripe Elements (only the `client_secret` leaves the gateway), customer portal sessions,
//! and plan changes as subscription updates (Stripe computes the proration). Card numbers
//! never touch the gateway.
//!
//! Every call carries an `Idempotency-Key` derived from the client's own key, the tenant and
//! the operation: a client retrying after a dropped connection reaches Stripe with the same
//! key and gets the same object back, and Stripe creates one. The same key with another
//! body is Stripe's `idempotency_error`, passed on as `idempotency_key_reused`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Billing;
use crate::error::{Code, ErrorCode};
use crate::store::{Store, StoreError, TenantRow};

/// `[stripe.credit_packs.NAME]`: credit sold as a one-off payment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditPack {
    /// What the customer pays, in the currency's smallest unit; the credit it buys (cents).
    pub amount: i64,
    #[serde(default = "default_currency")]
    pub currency: String,
    /// The line item's name on the Checkout page.
    #[serde(default)]
    pub name: Option<String>,
}

fn default_currency() -> String {
    "usd".into()
}

/// Why a payment could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("billing is not configured on this gateway (no Stripe secret key)")]
    NotConfigured,
    #[error("this endpoint needs an Idempotency-Key header (a retry with the same key is safe)")]
    IdempotencyKeyRequired,
    #[error("{0}")]
    Invalid(String),
    #[error("this tenant has no Stripe customer yet: complete a checkout first")]
    NoCustomer,
    #[error("this tenant has no subscription: start one with POST /v1/billing/checkout")]
    NoSubscription,
    #[error("the card was declined: {message}")]
    Card {
        message: String,
        code: Option<String>,
    },
    #[error("Stripe is rate limiting this account; retry shortly")]
    RateLimited,
    #[error("this Idempotency-Key was used with a different request: {0}")]
    IdempotencyConflict(String),
    #[error("a request with this Idempotency-Key is still in progress at Stripe; retry shortly")]
    IdempotencyInUse,
    #[error("Stripe refused the request: {0}")]
    Rejected(String),
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    #[error("Stripe did not answer in time")]
    Timeout,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for PaymentError {
    fn error_code(&self) -> Code {
        use PaymentError::*;
        match self {
            NotConfigured => Code::BillingNotConfigured,
            IdempotencyKeyRequired => Code::IdempotencyKeyRequired,
            Invalid(_) => Code::InvalidRequest,
            NoCustomer | NoSubscription => Code::NoBillingAccount,
            Card { .. } => Code::CardDeclined,
            RateLimited => Code::PaymentProviderRateLimited,
            IdempotencyConflict(_) => Code::IdempotencyKeyReused,
            IdempotencyInUse => Code::IdempotencyKeyInUse,
            Rejected(_) | Unavailable(_) => Code::PaymentProviderError,
            Timeout => Code::UpstreamTimeout,
            Store(e) => e.error_code(),
        }
    }
}

/// What a client asks Checkout for: a plan (a subscription) or a credit pack (a payment).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub plan: Option<String>,
    pub pack: Option<String>,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
}

/// The operations, each with its own key space at Stripe.
#[derive(Debug, Clone, Copy)]
pub enum Operation {
    Checkout,
    PaymentIntent,
    Portal,
    SubscriptionUpdate,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Checkout => "checkout",
            Operation::PaymentIntent => "payment_intent",
            Operation::Portal => "portal",
            Operation::SubscriptionUpdate => "subscription_update",
        }
    }
}

/// The `Idempotency-Key` sent to Stripe: the client's key, bound to the tenant and the
/// operation (two tenants, or two operations, never share one at Stripe).
pub fn stripe_idempotency_key(tenant_id: &str, op: Operation, client_key: &str) -> String {
    let mut h = Sha256::new();
    for part in [tenant_id, op.name(), client_key] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("qm_{}_{}", op.name(), &hex::encode(h.finalize())[..40])
}

/// The client's `Idempotency-Key`, required on the payment endpoints.
pub fn client_key(headers: &axum::http::HeaderMap) -> Result<String, PaymentError> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .ok_or(PaymentError::IdempotencyKeyRequired)
}

/// Starts payments for one tenant.
pub struct Payments<'a> {
    pub billing: &'a Billing,
    pub store: &'a Store,
}

impl Payments<'_> {
    /// The tenant, once payments are known to be configured (checked first, so a gateway
    /// without a Stripe key says so whatever the request).
    async fn tenant(&self, tenant_id: &str) -> Result<TenantRow, PaymentError> {
        self.billing.api().ok_or(PaymentError::NotConfigured)?;
        self.store
            .tenant_row(tenant_id)
            .await?
            .ok_or_else(|| PaymentError::Invalid("unknown tenant".into()))
    }

    /// The Stripe price of a plan (`[stripe.plans]` maps price ids to plan names).
    fn price_of(&self, plan: &str) -> Result<&str, PaymentError> {
        self.billing
            .stripe
            .plans
            .iter()
            .find(|(price, name)| name.as_str() == plan && price.starts_with("price_"))
            .map(|(price, _)| price.as_str())
            .ok_or_else(|| {
                PaymentError::Invalid(format!(
                    "unknown plan `{plan}` (plans: {})",
                    self.plan_names().join(", ")
                ))
            })
    }

    fn plan_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.billing.stripe.plans.values().cloned().collect();
        v.sort();
        v.dedup();
        v
    }

    fn pack(&self, name: &str) -> Result<&CreditPack, PaymentError> {
        self.billing.stripe.credit_packs.get(name).ok_or_else(|| {
            let names: Vec<&String> = self.billing.stripe.credit_packs.keys().collect();
            PaymentError::Invalid(format!("unknown credit pack `{name}` (packs: {names:?})"))
        })
    }

    fn url_or_default(
        &self,
        given: Option<String>,
        default: &Option<String>,
        what: &str,
    ) -> Result<String, PaymentError> {
        let url = given.or_else(|| default.clone()).ok_or_else(|| {
            PaymentError::Invalid(format!("{what} is required (no default configured)"))
        })?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(PaymentError::Invalid(format!(
                "{what} must be an http(s) URL"
            )));
        }
        Ok(url)
    }

    /// `POST /v1/checkout/sessions`: `{id, url}`.
    pub async fn checkout(
        &self,
        tenant_id: &str,
        req: CheckoutRequest,
        client_key: &str,
    ) -> Result<Value, PaymentError> {
        let tenant = self.tenant(tenant_id).await?;
        let cfg = &self.billing.stripe;
        let success = self.url_or_default(req.success_url, &cfg.success_url, "success_url")?;
        let cancel = self.url_or_default(req.cancel_url, &cfg.cancel_url, "cancel_url")?;
        let mut form: Vec<(String, String)> = vec![
            ("client_reference_id".into(), tenant.name.clone()),
            ("metadata[tenant]".into(), tenant.name.clone()),
            ("success_url".into(), success),
            ("cancel_url".into(), cancel),
            ("line_items[0][quantity]".into(), "1".into()),
        ];
        match (req.plan, req.pack) {
            (Some(plan), None) => {
                if tenant.stripe_subscription_id.is_some() {
                    return Err(PaymentError::Invalid(
                        "this tenant already has a subscription: change its plan with POST /v1/billing/subscription".into(),
                    ));
                }
                form.push(("mode".into(), "subscription".into()));
                form.push(("line_items[0][price]".into(), self.price_of(&plan)?.into()));
                form.push(("metadata[plan]".into(), plan.clone()));
                form.push((
                    "subscription_data[metadata][tenant]".into(),
                    tenant.name.clone(),
                ));
                form.push(("subscription_data[metadata][plan]".into(), plan));
            }
            (None, Some(pack_name)) => {
                let pack = self.pack(&pack_name)?;
                form.push(("mode".into(), "payment".into()));
                form.push((
                    "line_items[0][price_data][currency]".into(),
                    pack.currency.clone(),
                ));
                form.push((
                    "line_items[0][price_data][unit_amount]".into(),
                    pack.amount.to_string(),
                ));
                form.push((
                    "line_items[0][price_data][product_data][name]".into(),
                    pack.name
                        .clone()
                        .unwrap_or_else(|| format!("Credit: {pack_name}")),
                ));
                form.push(("metadata[pack]".into(), pack_name));
                if tenant.stripe_customer_id.is_none() {
                    form.push(("customer_creation".into(), "always".into()));
                }
            }
            _ => {
                return Err(PaymentError::Invalid(
                    "give exactly one of `plan` and `pack`".into(),
                ));
            }
        }
        if let Some(customer) = &tenant.stripe_customer_id {
            form.push(("customer".into(), customer.clone()));
        }
        let key = stripe_idempotency_key(tenant_id, Operation::Checkout, client_key);
        let session = self.call("/v1/checkout/sessions", &form, &key).await?;
        Ok(serde_json::json!({
            "object": "billing.checkout",
            "id": session["id"],
            "url": session["url"],
            "mode": session["mode"],
        }))
    }

    /// `POST /v1/payment_intents` for a credit pack: only the `client_secret` goes back (the
    /// browser confirms it with Stripe Elements; the webhook adds the credit).
    pub async fn payment_intent(
        &self,
        tenant_id: &str,
        pack_name: &str,
        client_key: &str,
    ) -> Result<Value, PaymentError> {
        let tenant = self.tenant(tenant_id).await?;
        let pack = self.pack(pack_name)?;
        let mut form: Vec<(String, String)> = vec![
            ("amount".into(), pack.amount.to_string()),
            ("currency".into(), pack.currency.clone()),
            ("automatic_payment_methods[enabled]".into(), "true".into()),
            ("metadata[tenant]".into(), tenant.name.clone()),
            ("metadata[pack]".into(), pack_name.to_string()),
            // Marks the intents whose success buys credit (Checkout's own intents do not:
            // their session's completion does).
            ("metadata[qm_credit]".into(), "elements".into()),
        ];
        if let Some(customer) = &tenant.stripe_customer_id {
            form.push(("customer".into(), customer.clone()));
        }
        let key = stripe_idempotency_key(tenant_id, Operation::PaymentIntent, client_key);
        let intent = self.call("/v1/payment_intents", &form, &key).await?;
        Ok(serde_json::json!({
            "object": "billing.payment_intent",
            "client_secret": intent["client_secret"],
        }))
    }

    /// `POST /v1/billing_portal/sessions`: `{url}`.
    pub async fn portal(
        &self,
        tenant_id: &str,
        return_url: Option<String>,
        client_key: &str,
    ) -> Result<Value, PaymentError> {
        let tenant = self.tenant(tenant_id).await?;
        let customer = tenant.stripe_customer_id.ok_or(PaymentError::NoCustomer)?;
        let back = self.url_or_default(
            return_url,
            &self.billing.stripe.portal_return_url,
            "return_url",
        )?;
        let form = vec![
            ("customer".to_string(), customer),
            ("return_url".to_string(), back),
        ];
        let key = stripe_idempotency_key(tenant_id, Operation::Portal, client_key);
        let session = self
            .call("/v1/billing_portal/sessions", &form, &key)
            .await?;
        Ok(serde_json::json!({"object": "billing.portal", "url": session["url"]}))
    }

    /// An upgrade or a downgrade: the subscription's item moves to the plan's price, with
    /// Stripe's prorations (`customer.subscription.updated` then sets the plan here).
    pub async fn change_plan(
        &self,
        tenant_id: &str,
        plan: &str,
        client_key: &str,
    ) -> Result<Value, PaymentError> {
        let tenant = self.tenant(tenant_id).await?;
        let sub_id = tenant
            .stripe_subscription_id
            .ok_or(PaymentError::NoSubscription)?;
        let price = self.price_of(plan)?.to_string();
        let sub = self.get(&format!("/v1/subscriptions/{sub_id}")).await?;
        let item = sub["items"]["data"][0]["id"]
            .as_str()
            .ok_or_else(|| PaymentError::Unavailable("the subscription has no items".into()))?
            .to_string();
        let form = vec![
            ("items[0][id]".to_string(), item),
            ("items[0][price]".to_string(), price),
            (
                "proration_behavior".to_string(),
                "create_prorations".to_string(),
            ),
            ("metadata[plan]".to_string(), plan.to_string()),
        ];
        let key = stripe_idempotency_key(tenant_id, Operation::SubscriptionUpdate, client_key);
        let updated = self
            .call(&format!("/v1/subscriptions/{sub_id}"), &form, &key)
            .await?;
        Ok(serde_json::json!({
            "object": "billing.subscription",
            "id": updated["id"],
            "status": updated["status"],
            "plan": plan,
        }))
    }

    async fn call(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<Value, PaymentError> {
        let (base, secret) = self.billing.api().ok_or(PaymentError::NotConfigured)?;
        let started = std::time::Instant::now();
        let sent = self
            .billing
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(secret)
            .header("Idempotency-Key", idempotency_key)
            .timeout(Duration::from_millis(self.billing.stripe.timeout_ms))
            .form(form)
            .send()
            .await;
        let out = answer(sent).await;
        metrics::histogram!("qm_stripe_call_seconds", "path" => path_label(path))
            .record(started.elapsed().as_secs_f64());
        out
    }

    async fn get(&self, path: &str) -> Result<Value, PaymentError> {
        let (base, secret) = self.billing.api().ok_or(PaymentError::NotConfigured)?;
        let sent = self
            .billing
            .http
            .get(format!("{base}{path}"))
            .bearer_auth(secret)
            .timeout(Duration::from_millis(self.billing.stripe.timeout_ms))
            .send()
            .await;
        answer(sent).await
    }
}

fn path_label(path: &str) -> &'static str {
    if path.starts_with("/v1/checkout") {
        "checkout"
    } else if path.starts_with("/v1/payment_intents") {
        "payment_intents"
    } else if path.starts_with("/v1/billing_portal") {
        "portal"
    } else {
        "subscriptions"
    }
}

/// Stripe's answer, or its error mapped (its error envelope:
/// `{"error": {"type", "code", "decline_code", "message", "param"}}`).
async fn answer(sent: Result<reqwest::Response, reqwest::Error>) -> Result<Value, PaymentError> {
    let response = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Err(PaymentError::Timeout),
        Err(e) => return Err(PaymentError::Unavailable(e.without_url().to_string())),
    };
    let status = response.status().as_u16();
    let body: Value = match response.json().await {
        Ok(v) => v,
        Err(e) if e.is_timeout() => return Err(PaymentError::Timeout),
        Err(_) => Value::Null,
    };
    if (200..300).contains(&status) {
        return Ok(body);
    }
    Err(stripe_error(status, &body))
}

/// Maps Stripe's error to ours.
pub fn stripe_error(status: u16, body: &Value) -> PaymentError {
    let err = &body["error"];
    let kind = err["type"].as_str().unwrap_or("");
    let message = err["message"]
        .as_str()
        .unwrap_or("no message")
        .chars()
        .take(300)
        .collect::<String>();
    match (status, kind) {
        (_, "card_error") | (402, _) => PaymentError::Card {
            message,
            code: err["decline_code"]
                .as_str()
                .or(err["code"].as_str())
                .map(str::to_string),
        },
        (429, _) | (_, "rate_limit_error") => PaymentError::RateLimited,
        (409, _) => PaymentError::IdempotencyInUse,
        (_, "idempotency_error") => PaymentError::IdempotencyConflict(message),
        (400..=499, _) => PaymentError::Rejected(message),
        _ => PaymentError::Unavailable(format!("Stripe answered {status}")),
    }
}

#[cfg(test)]
mod tests;
