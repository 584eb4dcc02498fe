//! The providers' delivery webhooks (`POST /webhooks/email/{resend|postmark|sendgrid}`):
//! each verified on its raw body, each event recorded once (by the provider's event id),
//! and hard bounces, complaints and unsubscribes put on the suppression list that the
//! sender checks, all in one transaction before the 2xx.
//!
//! - Resend: Svix-signed (`svix-id`, `svix-timestamp`, `svix-signature`), `email.bounced`
//!   (unless `bounce.type` is `Transient`) and `email.complained` suppress.
//! - Postmark: HTTP basic auth on the webhook URL (Postmark signs nothing); `Bounce` with
//!   `Type: HardBounce`, `SpamComplaint` and `SubscriptionChange` with `SuppressSending`.
//! - SendGrid: the signed Event Webhook (ECDSA P-256); `bounce` (not `blocked`),
//!   `spamreport`, `unsubscribe`, `group_unsubscribe`.

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use crate::clock::now_ms;
use crate::integrations::signatures::{self, ecdsa_p256, standard_webhooks};
use crate::store::{Store, StoreError, on_pool};

/// `[email.webhooks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Resend's signing secrets (`whsec_...`), inline or in a variable.
    pub resend_secrets: Vec<SecretString>,
    pub resend_secrets_env: Option<String>,
    /// Postmark: `user:password` of the webhook URL's basic auth.
    pub postmark_basic_auth: Vec<SecretString>,
    pub postmark_basic_auth_env: Option<String>,
    /// SendGrid's verification keys (base64 DER), inline or in a variable.
    pub sendgrid_public_keys: Vec<String>,
    pub sendgrid_public_key_env: Option<String>,
    pub tolerance_secs: i64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            resend_secrets: vec![],
            resend_secrets_env: Some("RESEND_WEBHOOK_SECRET".into()),
            postmark_basic_auth: vec![],
            postmark_basic_auth_env: Some("POSTMARK_WEBHOOK_AUTH".into()),
            sendgrid_public_keys: vec![],
            sendgrid_public_key_env: Some("SENDGRID_WEBHOOK_PUBLIC_KEY".into()),
            tolerance_secs: 300,
        }
    }
}

/// A delivery-event webhook refused (the shared webhook error).
pub type EmailWebhookError = crate::integrations::signatures::WebhookError;

/// One delivery event, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub provider_id: Option<String>,
    /// Why the address is suppressed from now on, if it is.
    pub suppress: Option<&'static str>,
    pub payload: String,
}

/// What a delivery held.
#[derive(Debug, Default)]
pub struct Received {
    pub events: usize,
    pub new: usize,
    pub suppressed: usize,
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"))
}

fn sig_err(e: impl std::fmt::Display) -> EmailWebhookError {
    EmailWebhookError::Signature(e.to_string())
}

fn verify(
    provider: &str,
    config: &WebhooksConfig,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<(), EmailWebhookError> {
    let now = now_ms() / 1000;
    match provider {
        "resend" => {
            let keys = signatures::secret_texts(
                &config.resend_secrets,
                config.resend_secrets_env.as_deref(),
            )
            .iter()
            .map(|s| standard_webhooks::secret_key(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sig_err)?;
            if keys.is_empty() {
                return Err(sig_err("no secret configured"));
            }
            standard_webhooks::verify(headers, body, &keys, config.tolerance_secs, now)
                .map(|_| ())
                .map_err(sig_err)
        }
        "postmark" => {
            use base64::Engine;
            let creds = signatures::secret_texts(
                &config.postmark_basic_auth,
                config.postmark_basic_auth_env.as_deref(),
            );
            if creds.is_empty() {
                return Err(sig_err("no credentials configured"));
            }
            let given = header(headers, "authorization")
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .ok_or_else(|| sig_err("missing basic authorization"))?;
            if creds
                .iter()
                .any(|c| crate::auth::constant_time_eq(c.as_bytes(), &given))
            {
                Ok(())
            } else {
                Err(sig_err("the credentials do not match"))
            }
        }
        "sendgrid" => {
            let mut texts = config.sendgrid_public_keys.clone();
            if let Some(var) = &config.sendgrid_public_key_env
                && let Ok(v) = std::env::var(var)
            {
                texts.extend(
                    v.split(',')
                        .map(str::to_string)
                        .filter(|s| !s.trim().is_empty()),
                );
            }
            let keys = texts
                .iter()
                .map(|t| ecdsa_p256::public_key(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(sig_err)?;
            if keys.is_empty() {
                return Err(sig_err("no public key configured"));
            }
            ecdsa_p256::verify(
                header(headers, "x-twilio-email-event-webhook-signature"),
                header(headers, "x-twilio-email-event-webhook-timestamp"),
                body,
                &keys,
                config.tolerance_secs,
                now,
            )
            .map_err(sig_err)
        }
        other => Err(EmailWebhookError::NotFound(format!(
            "no delivery webhook `{other}` (resend, postmark, sendgrid)"
        ))),
    }
}

fn s(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A provider's body as events (`delivery_id`: the Svix id for Resend).
pub fn parse(provider: &str, body: &Value, delivery_id: Option<&str>) -> Vec<Event> {
    let payload = |v: &Value| v.to_string();
    match provider {
        "resend" => {
            let kind = body["type"].as_str().unwrap_or("unknown").to_string();
            let data = &body["data"];
            let suppress = match kind.as_str() {
                "email.bounced" if data["bounce"]["type"].as_str() != Some("Transient") => {
                    Some("hard_bounce")
                }
                "email.complained" => Some("complaint"),
                _ => None,
            };
            let recipients: Vec<String> = match &data["to"] {
                Value::Array(a) => a.iter().filter_map(s).collect(),
                v => s(v).into_iter().collect(),
            };
            recipients
                .into_iter()
                .enumerate()
                .map(|(i, recipient)| Event {
                    id: format!("{}:{i}", delivery_id.unwrap_or_default()),
                    kind: kind.clone(),
                    recipient,
                    provider_id: s(&data["email_id"]),
                    suppress,
                    payload: payload(body),
                })
                .collect()
        }
        "postmark" => {
            let kind = body["RecordType"].as_str().unwrap_or("unknown").to_string();
            let suppress = match kind.as_str() {
                "Bounce" if body["Type"].as_str() == Some("HardBounce") => Some("hard_bounce"),
                "SpamComplaint" => Some("complaint"),
                "SubscriptionChange" if body["SuppressSending"] == Value::Bool(true) => {
                    Some("unsubscribe")
                }
                _ => None,
            };
            let recipient = s(&body["Email"]).or_else(|| s(&body["Recipient"]));
            // No id at all: the body's hash (so distinct events never collapse into one).
            let id = s(&body["ID"])
                .or_else(|| s(&body["MessageID"]))
                .unwrap_or_else(|| {
                    use sha2::Digest;
                    hex::encode(&sha2::Sha256::digest(body.to_string().as_bytes())[..16])
                });
            recipient
                .map(|recipient| Event {
                    id: format!("{kind}:{id}:{}", s(&body["ChangedAt"]).unwrap_or_default()),
                    kind,
                    recipient,
                    provider_id: s(&body["MessageID"]),
                    suppress,
                    payload: payload(body),
                })
                .into_iter()
                .collect()
        }
        "sendgrid" => body
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                let kind = e["event"].as_str().unwrap_or("unknown").to_string();
                let suppress = match kind.as_str() {
                    "bounce" if e["type"].as_str() != Some("blocked") => Some("hard_bounce"),
                    "spamreport" => Some("complaint"),
                    "unsubscribe" | "group_unsubscribe" => Some("unsubscribe"),
                    _ => None,
                };
                Some(Event {
                    id: s(&e["sg_event_id"])?,
                    kind,
                    recipient: s(&e["email"])?,
                    provider_id: s(&e["sg_message_id"]),
                    suppress,
                    payload: payload(e),
                })
            })
            .collect(),
        _ => vec![],
    }
}

/// Verifies, parses and records one delivery.
pub async fn receive(
    store: &Store,
    provider: &str,
    config: &WebhooksConfig,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Received, EmailWebhookError> {
    verify(provider, config, headers, body)?;
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EmailWebhookError::Json(e.to_string()))?;
    let delivery = header(headers, "svix-id").or_else(|| header(headers, "webhook-id"));
    let events = parse(provider, &value, delivery);
    let now = now_ms();
    let r: Result<Received, sqlx::Error> = on_pool!(store, p => async {
        let mut tx = p.begin().await?;
        let mut out = Received { events: events.len(), ..Default::default() };
        for e in &events {
            let recipient = e.recipient.trim().to_lowercase();
            let new = sqlx::query(
                "INSERT INTO email_events (provider, event_id, kind, recipient, provider_id, payload, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (provider, event_id) DO NOTHING")
                .bind(provider).bind(&e.id).bind(&e.kind).bind(&recipient).bind(&e.provider_id)
                .bind(&e.payload).bind(now)
                .execute(&mut *tx).await?.rows_affected() == 1;
            if !new {
                continue;
            }
            out.new += 1;
            if let Some(reason) = e.suppress {
                out.suppressed += sqlx::query(
                    "INSERT INTO email_suppressions (address, reason, provider, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (address) DO NOTHING")
                    .bind(&recipient).bind(reason).bind(provider).bind(now)
                    .execute(&mut *tx).await?.rows_affected() as usize;
            }
        }
        tx.commit().await?;
        Ok(out)
    }.await);
    let received = store.observe(r.map_err(StoreError::from))?;
    metrics::counter!("qm_email_events_total", "provider" => provider.to_string())
        .increment(received.new as u64);
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_suppresses() {
        let r = parse(
            "resend",
            &json!({"type": "email.bounced", "data": {"email_id": "e1", "to": ["A@x.io"], "bounce": {"type": "Permanent"}}}),
            Some("msg_1"),
        );
        assert_eq!(r[0].suppress, Some("hard_bounce"));
        let r = parse(
            "resend",
            &json!({"type": "email.bounced", "data": {"to": ["a@x.io"], "bounce": {"type": "Transient"}}}),
            Some("msg_2"),
        );
        assert_eq!(r[0].suppress, None);
        let r = parse(
            "postmark",
            &json!({"RecordType": "Bounce", "ID": 42, "Type": "SoftBounce", "Email": "a@x.io"}),
            None,
        );
        assert_eq!(r[0].suppress, None);
        let r = parse(
            "sendgrid",
            &json!([{"event": "bounce", "type": "blocked", "email": "a@x.io", "sg_event_id": "1"},
                    {"event": "spamreport", "email": "b@x.io", "sg_event_id": "2"},
                    {"event": "delivered", "email": "c@x.io"}]),
            None,
        );
        assert_eq!(r.len(), 2, "an event without its id is skipped");
        assert_eq!((r[0].suppress, r[1].suppress), (None, Some("complaint")));
    }
}
