//! What communications left behind, for operators: the email outbox, the suppression list,
//! bookings.

use serde::Serialize;

use crate::store::{Store, StoreError, on_pool};

#[derive(Serialize, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: String,
    pub tenant_id: String,
    pub to_addr: String,
    pub template: String,
    pub stream: String,
    pub subject: String,
    pub state: String,
    pub attempts: i64,
    pub provider: Option<String>,
    pub provider_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

#[derive(Serialize, sqlx::FromRow)]
pub struct Suppression {
    pub address: String,
    pub reason: String,
    pub provider: String,
    pub created_at: i64,
}

#[derive(Serialize, sqlx::FromRow)]
pub struct BookingRow {
    pub uid: String,
    pub status: String,
    pub title: String,
    pub start_utc: String,
    pub end_utc: String,
    pub attendee_name: String,
    pub attendee_email: String,
    pub attendee_tz: String,
    pub organizer: String,
    pub updated_at: i64,
}

/// The newest outbox emails, in one state or all.
pub async fn outbox(
    store: &Store,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    Ok(on_pool!(store, p => sqlx::query_as(
        "SELECT id, tenant_id, to_addr, template, stream, subject, state, attempts, provider, provider_id, \
         last_error, created_at, sent_at FROM email_outbox WHERE ($1 IS NULL OR state = $1) ORDER BY id DESC LIMIT $2")
        .bind(state).bind(limit.clamp(1, 1000)).fetch_all(p).await)?)
}

pub async fn suppressions(store: &Store) -> Result<Vec<Suppression>, StoreError> {
    Ok(on_pool!(store, p => sqlx::query_as(
        "SELECT address, reason, provider, created_at FROM email_suppressions ORDER BY created_at DESC LIMIT 10000")
        .fetch_all(p).await)?)
}

/// Takes an address off the list; false when it was not on it.
pub async fn unsuppress(store: &Store, address: &str) -> Result<bool, StoreError> {
    Ok(
        on_pool!(store, p => sqlx::query("DELETE FROM email_suppressions WHERE address = $1")
        .bind(address.trim().to_lowercase()).execute(p).await.map(|r| r.rows_affected() > 0))?,
    )
}

/// A tenant's bookings by start time.
pub async fn bookings(store: &Store, tenant: &str) -> Result<Vec<BookingRow>, StoreError> {
    Ok(on_pool!(store, p => sqlx::query_as(
        "SELECT b.uid, b.status, b.title, b.start_utc, b.end_utc, b.attendee_name, b.attendee_email, b.attendee_tz, \
         b.organizer, b.updated_at FROM bookings b JOIN tenants t ON t.id = b.tenant_id WHERE t.name = $1 \
         ORDER BY b.start_utc LIMIT 1000")
        .bind(tenant).fetch_all(p).await)?)
}
