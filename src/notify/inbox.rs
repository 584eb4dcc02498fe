//! A recipient's notifications: unread first, newest first within each, in pages of a cursor
//! (`u.<id>` within the unread, `r.<id>` within the read ones); marking one or all read, or
//! one unread again. A recipient is a tenant and an end user (`""` for the tenant itself):
//! nobody reads another's.

use serde::Serialize;

use crate::clock::now_ms;
use crate::store::{Store, StoreError, on_pool};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, schemars::JsonSchema)]
#[schemars(rename = "Notification")]
pub struct Item {
    pub id: String,
    pub kind: String,
    pub priority: String,
    pub subject: String,
    pub body: String,
    pub created_at: i64,
    pub read_at: Option<i64>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "NotificationPage")]
pub struct Page {
    pub data: Vec<Item>,
    pub next_cursor: Option<String>,
    pub unread: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("invalid cursor")]
    Cursor,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::ErrorCode for InboxError {
    fn error_code(&self) -> crate::error::Code {
        match self {
            InboxError::Cursor => crate::error::Code::InvalidRequest,
            InboxError::Store(e) => e.error_code(),
        }
    }
}

const COLUMNS: &str = "id, kind, priority, subject, body, created_at, read_at";
/// Rows per read of the live stream.
pub const SINCE_PAGE: usize = 200;

/// One page of at most `limit` items after `cursor`.
pub async fn list(
    store: &Store,
    tenant: &str,
    user: &str,
    cursor: Option<&str>,
    limit: usize,
    unread_only: bool,
) -> Result<Page, InboxError> {
    let limit = limit.clamp(1, 100);
    let (section, after) = match cursor {
        None => ('u', None),
        Some(c) => {
            let (s, id) = c.split_once('.').ok_or(InboxError::Cursor)?;
            if !matches!(s, "u" | "r")
                || id.is_empty()
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(InboxError::Cursor);
            }
            (s.chars().next().unwrap(), Some(id.to_string()))
        }
    };
    let mut data = vec![];
    if section == 'u' {
        data = section_page(store, tenant, user, false, after.as_deref(), limit + 1).await?;
    }
    if !unread_only && data.len() <= limit {
        let after_read = if section == 'r' {
            after.as_deref()
        } else {
            None
        };
        let rest = section_page(
            store,
            tenant,
            user,
            true,
            after_read,
            limit + 1 - data.len(),
        )
        .await?;
        data.extend(rest);
    }
    let next_cursor = if data.len() > limit {
        data.truncate(limit);
        data.last()
            .map(|i| format!("{}.{}", if i.read_at.is_none() { 'u' } else { 'r' }, i.id))
    } else {
        None
    };
    let unread = unread_count(store, tenant, user).await?;
    Ok(Page {
        data,
        next_cursor,
        unread,
    })
}

async fn section_page(
    store: &Store,
    tenant: &str,
    user: &str,
    read: bool,
    after: Option<&str>,
    n: usize,
) -> Result<Vec<Item>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM notifications WHERE tenant_id = $1 AND user_id = $2 AND read_at IS {} NULL \
         AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        if read { "NOT" } else { "" }
    );
    Ok(
        on_pool!(store, p => sqlx::query_as::<_, Item>(sqlx::AssertSqlSafe(sql.clone()))
        .bind(tenant).bind(user).bind(after).bind(n as i64).fetch_all(p).await)?,
    )
}

pub async fn unread_count(store: &Store, tenant: &str, user: &str) -> Result<i64, StoreError> {
    Ok(on_pool!(store, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM notifications WHERE tenant_id = $1 AND user_id = $2 AND read_at IS NULL")
        .bind(tenant).bind(user).fetch_one(p).await)?)
}

/// Marks one read (or unread); false when the recipient has no such notification.
pub async fn mark(
    store: &Store,
    tenant: &str,
    user: &str,
    id: &str,
    read: bool,
) -> Result<bool, StoreError> {
    let at = read.then(now_ms);
    Ok(on_pool!(store, p => sqlx::query(
        "UPDATE notifications SET read_at = CASE WHEN $1 IS NULL THEN NULL ELSE COALESCE(read_at, $1) END \
         WHERE tenant_id = $2 AND user_id = $3 AND id = $4")
        .bind(at).bind(tenant).bind(user).bind(id).execute(p).await.map(|r| r.rows_affected() == 1))?)
}

/// Marks every unread one read; how many.
pub async fn mark_all(store: &Store, tenant: &str, user: &str) -> Result<u64, StoreError> {
    Ok(on_pool!(store, p => sqlx::query(
        "UPDATE notifications SET read_at = $1 WHERE tenant_id = $2 AND user_id = $3 AND read_at IS NULL")
        .bind(now_ms()).bind(tenant).bind(user).execute(p).await.map(|r| r.rows_affected()))?)
}

/// At most [`SINCE_PAGE`] of the recipient's notifications created at or after `since_ms`
/// with ids after `after_id` (`""`: from the first), by id, for the live stream (which skips
/// those it sent: a transaction that commits a little late is still seen).
pub async fn since(
    store: &Store,
    tenant: &str,
    user: &str,
    since_ms: i64,
    after_id: &str,
) -> Result<Vec<Item>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM notifications WHERE tenant_id = $1 AND user_id = $2 AND created_at >= $3 \
         AND id > $4 ORDER BY id LIMIT {SINCE_PAGE}"
    );
    Ok(
        on_pool!(store, p => sqlx::query_as::<_, Item>(sqlx::AssertSqlSafe(sql.clone()))
        .bind(tenant).bind(user).bind(since_ms).bind(after_id).fetch_all(p).await)?,
    )
}
