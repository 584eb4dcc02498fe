//! Cal.com bookings (`POST /webhooks/cal`, the source named `cal`, or
//! `/webhooks/cal/{source}`): `X-Cal-Signature-256` (hex HMAC-SHA256 of the raw body) checked
//! before parsing; `BOOKING_CREATED`, `BOOKING_RESCHEDULED` and `BOOKING_CANCELLED` stored per
//! tenant with times in UTC and the attendee's time zone kept (a reschedule's original,
//! named by `rescheduleUid`, becomes `superseded`); the same event delivered
//! twice is recorded once (Cal.com sends no event id: its trigger, booking uid and
//! `createdAt` are the id); an event older than the booking's last one changes nothing; in
//! the same transaction, a notification for the tenant and a confirmation email to the
//! attendee.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::clock::now_ms;
use crate::integrations::signatures::{self, hex_hmac};
use crate::jobs::JobQueue;
use crate::notify::{self, Notice, Priority};
use crate::store::{Store, StoreError, on_pool};

/// `[cal]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CalConfig {
    pub sources: BTreeMap<String, CalSource>,
}

/// `[cal.sources.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalSource {
    /// The webhook's secret, inline or in a variable (comma-separated for rotation).
    #[serde(default)]
    pub secrets: Vec<SecretString>,
    #[serde(default)]
    pub secrets_env: Option<String>,
    /// The tenant the bookings belong to.
    pub tenant: String,
    /// Events whose `createdAt` is older than this are refused (replays of old bodies).
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: i64,
}

fn default_tolerance() -> i64 {
    7 * 86_400
}

/// A Cal.com delivery refused (the shared webhook error).
pub type CalError = crate::integrations::signatures::WebhookError;

/// A booking as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Booking {
    pub uid: String,
    pub status: &'static str,
    pub title: String,
    pub start_utc: String,
    pub end_utc: String,
    pub attendee_name: String,
    pub attendee_email: String,
    pub attendee_tz: String,
    pub organizer: String,
    /// The event's `createdAt` (ms): what orders events of one booking.
    pub event_at: i64,
    /// A reschedule's original booking (Cal.com gives the new one its own uid).
    pub rescheduled_from: Option<String>,
}

#[derive(Debug)]
pub struct Received {
    pub id: String,
    pub duplicate: bool,
    /// Ignored triggers (pings, other events) are acknowledged and not stored.
    pub handled: bool,
    pub booking: Option<String>,
}

fn utc(v: &Value, field: &str) -> Result<(String, i64), CalError> {
    let text = v[field]
        .as_str()
        .ok_or_else(|| CalError::Invalid(format!("payload.{field} is missing")))?;
    let ts: jiff::Timestamp = text
        .parse()
        .map_err(|e| CalError::Invalid(format!("payload.{field}: {e}")))?;
    Ok((crate::clock::rfc3339(ts.as_second()), ts.as_millisecond()))
}

/// A time in a zone for people (`Tue 25 Nov 2026, 10:30 CET`); UTC if the zone is unknown.
fn local(utc_text: &str, tz: &str) -> String {
    let Ok(ts) = utc_text.parse::<jiff::Timestamp>() else {
        return utc_text.to_string();
    };
    match ts.in_tz(tz) {
        Ok(z) => z.strftime("%a %-d %b %Y, %H:%M %Z").to_string(),
        Err(_) => ts
            .in_tz("UTC")
            .map(|z| z.strftime("%a %-d %b %Y, %H:%M UTC").to_string())
            .unwrap_or_else(|_| utc_text.to_string()),
    }
}

/// The booking an event describes.
pub fn parse(event: &Value) -> Result<Option<Booking>, CalError> {
    let trigger = event["triggerEvent"].as_str().unwrap_or_default();
    let status = match trigger {
        "BOOKING_CREATED" => "confirmed",
        "BOOKING_RESCHEDULED" => "rescheduled",
        "BOOKING_CANCELLED" => "cancelled",
        _ => return Ok(None),
    };
    let p = &event["payload"];
    let uid = p["uid"]
        .as_str()
        .filter(|u| !u.is_empty() && u.len() <= 200 && !u.chars().any(char::is_control))
        .ok_or_else(|| CalError::Invalid("payload.uid is missing".into()))?;
    let (start_utc, _) = utc(p, "startTime")?;
    let (end_utc, _) = utc(p, "endTime")?;
    let event_at = event["createdAt"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
        .ok_or_else(|| CalError::Invalid("createdAt is missing".into()))?;
    let attendee = &p["attendees"][0];
    let text = |v: &Value| {
        v.as_str()
            .unwrap_or_default()
            .chars()
            .take(500)
            .collect::<String>()
    };
    Ok(Some(Booking {
        uid: uid.to_string(),
        status,
        title: text(&p["title"]),
        start_utc,
        end_utc,
        attendee_name: text(&attendee["name"]),
        attendee_email: text(&attendee["email"]).to_lowercase(),
        attendee_tz: Some(text(&attendee["timeZone"]))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "UTC".into()),
        organizer: text(&p["organizer"]["email"]),
        event_at,
        rescheduled_from: p["rescheduleUid"]
            .as_str()
            .filter(|o| !o.is_empty() && *o != uid && o.len() <= 200)
            .map(str::to_string),
    }))
}

/// The tenant's notification and the attendee's email for a booking.
fn notices(
    tenant_id: &str,
    tenant: &str,
    b: &Booking,
    to_tenant: Option<&str>,
) -> Result<Vec<Notice>, CalError> {
    let ctx = json!({
        "tenant": tenant, "status": b.status, "title": b.title, "attendee": b.attendee_name,
        "attendee_email": b.attendee_email, "timezone": b.attendee_tz,
        "start_utc": b.start_utc, "end_utc": b.end_utc,
        "start_local": local(&b.start_utc, &b.attendee_tz), "end_local": local(&b.end_utc, &b.attendee_tz),
    });
    let key = format!("cal:{tenant_id}:{}:{}:{}", b.uid, b.status, b.event_at);
    let err = |e: notify::templates::TemplateError| CalError::Invalid(e.to_string());
    Ok(vec![
        Notice::render("booking", tenant_id, format!("{key}:tenant"), ctx.clone())
            .map_err(err)?
            .priority(Priority::Normal)
            .email(to_tenant),
        Notice::render(
            "booking_confirmation",
            tenant_id,
            format!("{key}:attendee"),
            ctx,
        )
        .map_err(err)?
        .email_only()
        .email(Some(&b.attendee_email)),
    ])
}

pub async fn receive(
    store: &Store,
    queue: &JobQueue,
    source: &CalSource,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Received, CalError> {
    let secrets: Vec<Vec<u8>> =
        signatures::secret_texts(&source.secrets, source.secrets_env.as_deref())
            .into_iter()
            .map(String::into_bytes)
            .collect();
    if secrets.is_empty() {
        return Err(CalError::Signature("no secret configured".into()));
    }
    let header = headers
        .get("x-cal-signature-256")
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    hex_hmac::verify(header, body, &secrets).map_err(|e| CalError::Signature(e.to_string()))?;
    let event: Value = serde_json::from_slice(body).map_err(|e| CalError::Json(e.to_string()))?;
    let trigger = event["triggerEvent"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Cal.com sends no event id: the tenant, trigger, booking and time are one.
    let id = hex::encode(
        &Sha256::digest(format!(
            "{}\n{trigger}\n{}\n{}",
            source.tenant,
            event["payload"]["uid"].as_str().unwrap_or_default(),
            event["createdAt"].as_str().unwrap_or_default()
        ))[..16],
    );
    let Some(b) = parse(&event)? else {
        return Ok(Received {
            id,
            duplicate: false,
            handled: false,
            booking: None,
        });
    };
    if now_ms() - b.event_at > source.tolerance_secs.saturating_mul(1000) {
        return Err(CalError::Signature(
            "the event is older than the replay window".into(),
        ));
    }
    let tenant = store.ensure_tenant(&source.tenant).await?;
    let to_tenant = notify::address(store, &tenant.id, None).await?;
    let notices = notices(&tenant.id, &tenant.name, &b, to_tenant.as_deref())?;
    let attempts = queue.default_attempts();
    let now = now_ms();
    let r: Result<bool, sqlx::Error> = on_pool!(store, p => async {
        let mut tx = p.begin().await?;
        let new = sqlx::query(
            "INSERT INTO cal_events (id, tenant_id, trigger, uid, received_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING")
            .bind(&id).bind(&tenant.id).bind(&trigger).bind(&b.uid).bind(now)
            .execute(&mut *tx).await?.rows_affected() == 1;
        if new {
            // The newest event of a booking wins, whatever order they came in.
            let applied = sqlx::query(
                "INSERT INTO bookings (tenant_id, uid, status, title, start_utc, end_utc, attendee_name, attendee_email, attendee_tz, organizer, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (tenant_id, uid) DO UPDATE SET status = excluded.status, title = excluded.title, \
                 start_utc = excluded.start_utc, end_utc = excluded.end_utc, attendee_name = excluded.attendee_name, \
                 attendee_email = excluded.attendee_email, attendee_tz = excluded.attendee_tz, organizer = excluded.organizer, \
                 updated_at = excluded.updated_at WHERE bookings.updated_at <= excluded.updated_at")
                .bind(&tenant.id).bind(&b.uid).bind(b.status).bind(&b.title).bind(&b.start_utc).bind(&b.end_utc)
                .bind(&b.attendee_name).bind(&b.attendee_email).bind(&b.attendee_tz).bind(&b.organizer).bind(b.event_at)
                .execute(&mut *tx).await?.rows_affected() == 1;
            if let Some(original) = &b.rescheduled_from {
                // The booking it replaces is no longer the one that happens.
                sqlx::query(
                    "UPDATE bookings SET status = 'superseded', updated_at = $1 \
                     WHERE tenant_id = $2 AND uid = $3 AND updated_at <= $1")
                    .bind(b.event_at).bind(&tenant.id).bind(original)
                    .execute(&mut *tx).await?;
            }
            if applied {
                for n in &notices {
                    notify::insert_notice!(tx, n, attempts)?;
                }
            }
        }
        tx.commit().await?;
        Ok(new)
    }.await);
    let new = store.observe(r.map_err(StoreError::from))?;
    if new {
        queue.wake();
        notify::live::wake(&tenant.id, "");
    }
    metrics::counter!("qm_cal_webhooks_total", "duplicate" => if new { "false" } else { "true" })
        .increment(1);
    Ok(Received {
        id,
        duplicate: !new,
        handled: true,
        booking: Some(b.uid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_booking_is_read_in_utc_with_the_zone_kept() {
        let e = json!({"triggerEvent": "BOOKING_CREATED", "createdAt": "2026-12-01T09:00:00.000Z",
            "payload": {"uid": "u1", "title": "Intro", "startTime": "2026-12-10T15:30:00+01:00",
                        "endTime": "2026-12-10T16:00:00+01:00",
                        "attendees": [{"name": "Ana", "email": "Ana@Example.com", "timeZone": "America/New_York"}],
                        "organizer": {"email": "o@acme.dev"}}});
        let b = parse(&e).unwrap().unwrap();
        assert_eq!(b.start_utc, "2026-12-10T14:30:00Z");
        assert_eq!(b.attendee_tz, "America/New_York");
        assert_eq!(b.attendee_email, "ana@example.com");
        assert_eq!(
            local(&b.start_utc, "America/New_York"),
            "Thu 10 Dec 2026, 09:30 EST"
        );
        assert!(parse(&json!({"triggerEvent": "PING"})).unwrap().is_none());
        let mut bad = e.clone();
        bad["payload"]["startTime"] = json!("tomorrow");
        assert!(parse(&bad).is_err());
    }
}
