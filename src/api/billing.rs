//! `/v1/billing`: a tenant starts payments (Checkout, PaymentIntents for Elements), opens
//! the customer portal, changes its plan, and reads its billing state. The work is in
//! `integrations::stripe::payments`; each POST needs an `Idempotency-Key`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extractors::ApiJson;
use super::state::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::integrations::stripe::payments::{CheckoutRequest, PaymentError, Payments, client_key};

fn payments(state: &AppState) -> Payments<'_> {
    Payments {
        billing: &state.billing,
        store: &state.store,
    }
}

/// A plan (its checkout or its change) and the portal change what the whole tenant pays: an
/// end user's own credential needs a `billing` or `admin` role for them (the tenant's API
/// keys may); buying credit needs none.
fn may_manage_billing(p: &Principal) -> Result<(), ApiError> {
    if p.personal && !p.roles.iter().any(|r| r == "billing" || r == "admin") {
        return Err(ApiError::Coded {
            code: crate::error::Code::Forbidden,
            message: "managing the tenant's billing needs the `billing` or `admin` role".into(),
        });
    }
    Ok(())
}

/// `POST /v1/billing/checkout` `{"plan"}` or `{"pack"}`, optional `success_url`,
/// `cancel_url`: `{id, url}` of a Stripe Checkout Session.
pub async fn checkout(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CheckoutRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    if req.plan.is_some() {
        may_manage_billing(&principal)?;
    }
    let key = client_key(&headers)?;
    Ok(axum::Json(
        payments(&state)
            .checkout(&principal.tenant.id, req, &key)
            .await?,
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackRequest {
    pack: String,
}

/// `POST /v1/billing/payment-intents` `{"pack"}`: `{client_secret}` for Stripe Elements.
pub async fn payment_intent(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PackRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let key = client_key(&headers)?;
    Ok(axum::Json(
        payments(&state)
            .payment_intent(&principal.tenant.id, &req.pack, &key)
            .await?,
    ))
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalRequest {
    return_url: Option<String>,
}

/// `POST /v1/billing/portal` `{"return_url"?}`: `{url}` of a customer portal session.
pub async fn portal(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PortalRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    may_manage_billing(&principal)?;
    let key = client_key(&headers)?;
    Ok(axum::Json(
        payments(&state)
            .portal(&principal.tenant.id, req.return_url, &key)
            .await?,
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    plan: String,
}

/// `POST /v1/billing/subscription` `{"plan"}`: an upgrade or a downgrade, prorated by Stripe.
pub async fn change_plan(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PlanRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    may_manage_billing(&principal)?;
    let key = client_key(&headers)?;
    Ok(axum::Json(
        payments(&state)
            .change_plan(&principal.tenant.id, &req.plan, &key)
            .await?,
    ))
}

/// `GET /v1/billing`: the tenant's plan, billing status and credit.
pub async fn status(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
) -> Result<axum::Json<Value>, ApiError> {
    let t = state
        .store
        .tenant_row(&principal.tenant.id)
        .await?
        .ok_or_else(|| ApiError::NotFound("unknown tenant".into()))?;
    Ok(axum::Json(json!({
        "object": "billing",
        "tenant": t.name,
        "plan": t.plan,
        "status": t.billing_status,
        "credit_cents": t.credit_cents,
        "has_customer": t.stripe_customer_id.is_some(),
        "has_subscription": t.stripe_subscription_id.is_some(),
    })))
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        match e {
            PaymentError::Store(s) => ApiError::from(s),
            other => ApiError::coded(&other),
        }
    }
}
