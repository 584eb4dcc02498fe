//! Notifications: what the system tells tenants and their end users. One [`Notice`] becomes
//! an in-app notification (`inbox.rs`: listed, read and unread at `/v1/notifications`, pushed
//! live by `live.rs`) and, where an address is known, an email in the outbox; both are
//! written by [`insert_notice!`] in the transaction of the event that caused them, with the
//! job that sends the email (`integrations/email`). Low-priority notices are not emailed
//! one by one: the digest job gathers them per recipient.
//!
//! Every text comes from a template (`templates.rs`, files in `templates/email/`).

pub mod inbox;
pub mod live;
pub mod records;
pub mod templates;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::now_ms;
use crate::store::{Store, StoreError, on_pool};

/// The job that sends one outbox email (handled in `integrations/email`).
pub const JOB_EMAIL: &str = "email.send";
/// The scheduled job that sends the digests.
pub const JOB_DIGEST: &str = "email.digest";

/// `[notifications]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// A folder of templates overriding the built-in ones (same file names).
    pub templates_dir: Option<std::path::PathBuf>,
    /// Low-priority notifications are emailed together once per this period.
    pub digest_period_secs: u64,
    /// A budget alert when spend crosses each of these percentages of a budget.
    pub budget_alert_percent: Vec<u32>,
    /// The product's name in emails.
    pub product: String,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            templates_dir: None,
            digest_period_secs: 86_400,
            budget_alert_percent: vec![90, 100],
            product: "Quartermaster".into(),
        }
    }
}

/// At startup: the templates.
pub fn configure(config: &NotifyConfig) {
    templates::init(config.templates_dir.as_deref(), &config.product);
}

/// How urgent a notice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Emailed at once and pushed to open streams (budget almost used, a new sign-in).
    High,
    /// Emailed at once when it is mail the user expects (receipts, reminders).
    #[default]
    Normal,
    /// In the app, and in the next digest email.
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// One email of the outbox.
#[derive(Debug, Clone)]
pub struct Mail {
    pub id: String,
    pub to: String,
    pub template: String,
    /// `transactional` or `broadcast` (digests): providers keep them apart.
    pub stream: &'static str,
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// A notification and its email, rendered, ready to insert.
#[derive(Debug, Clone)]
pub struct Notice {
    pub id: String,
    pub tenant_id: String,
    /// `""`: the tenant itself (what its API keys see); otherwise an end user.
    pub user_id: String,
    pub kind: String,
    pub priority: Priority,
    pub subject: String,
    pub body: String,
    /// Makes writing the same notice twice (a retried job, a replayed webhook) a no-op.
    pub dedupe_key: String,
    pub created_at: i64,
    pub in_app: bool,
    pub mail: Option<Mail>,
    rendered: templates::Rendered,
}

impl Notice {
    /// The notice of `template` rendered with `context` (plus `product`) for a tenant.
    pub fn render(
        template: &str,
        tenant_id: &str,
        dedupe_key: impl Into<String>,
        context: Value,
    ) -> Result<Self, templates::TemplateError> {
        let rendered = templates::render(template, context)?;
        Ok(Self {
            id: format!("ntf_{}", uuid::Uuid::now_v7().simple()),
            tenant_id: tenant_id.to_string(),
            user_id: String::new(),
            kind: template.to_string(),
            priority: Priority::Normal,
            subject: rendered.subject.clone(),
            body: rendered.text.clone(),
            dedupe_key: dedupe_key.into(),
            created_at: now_ms(),
            in_app: true,
            mail: None,
            rendered,
        })
    }

    pub fn for_user(mut self, user: Option<&str>) -> Self {
        self.user_id = user.unwrap_or_default().to_string();
        self
    }

    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// Not shown in the app (mail to someone outside the tenant, e.g. a booking's attendee).
    pub fn email_only(mut self) -> Self {
        self.in_app = false;
        self
    }

    /// Emails it to `to` (when given, valid, and the notice is not low priority: those go
    /// in the digest).
    pub fn email(mut self, to: Option<&str>) -> Self {
        let Some(to) = to.map(str::trim).filter(|t| valid_address(t)) else {
            return self;
        };
        if self.priority == Priority::Low && self.in_app {
            return self;
        }
        self.mail = Some(Mail {
            id: format!("eml_{}", uuid::Uuid::now_v7().simple()),
            to: to.to_lowercase(),
            template: self.kind.clone(),
            stream: "transactional",
            subject: self.rendered.subject.clone(),
            html: self.rendered.html.clone(),
            text: self.rendered.text.clone(),
        });
        self
    }
}

/// A plausible address (the provider has the last word): one `@`, no spaces or controls.
pub fn valid_address(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.contains('@')
        && a.len() <= 254
        && !a.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub const INSERT_NOTIFICATION_SQL: &str = "INSERT INTO notifications (id, tenant_id, user_id, kind, priority, subject, body, dedupe_key, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (dedupe_key) DO NOTHING";
pub const INSERT_MAIL_SQL: &str = "INSERT INTO email_outbox (id, tenant_id, to_addr, template, stream, subject, html, text, dedupe_key, state, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10) ON CONFLICT (dedupe_key) DO NOTHING";

/// Inserts a [`Notice`] (its notification, its email and the email's send job) with the
/// executor of an open transaction: `insert_notice!(tx, &notice, default_attempts)`.
/// Evaluates to `Result<bool, sqlx::Error>`: whether anything was new.
#[macro_export]
macro_rules! insert_notice {
    ($tx:expr, $notice:expr, $default_attempts:expr) => {{
        let n: &$crate::notify::Notice = $notice;
        async {
            let mut fresh = false;
            if n.in_app {
                fresh = sqlx::query($crate::notify::INSERT_NOTIFICATION_SQL)
                    .bind(&n.id)
                    .bind(&n.tenant_id)
                    .bind(&n.user_id)
                    .bind(&n.kind)
                    .bind(n.priority.as_str())
                    .bind(&n.subject)
                    .bind(&n.body)
                    .bind(&n.dedupe_key)
                    .bind(n.created_at)
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected()
                    == 1;
            }
            if let Some(m) = &n.mail {
                let queued = sqlx::query($crate::notify::INSERT_MAIL_SQL)
                    .bind(&m.id)
                    .bind(&n.tenant_id)
                    .bind(&m.to)
                    .bind(&m.template)
                    .bind(m.stream)
                    .bind(&m.subject)
                    .bind(&m.html)
                    .bind(&m.text)
                    .bind(format!("mail:{}", n.dedupe_key))
                    .bind(n.created_at)
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected()
                    == 1;
                if queued {
                    fresh = true;
                    let job = $crate::jobs::NewJob::new(
                        $crate::notify::JOB_EMAIL,
                        &serde_json::json!({"id": m.id}),
                    )
                    .dedupe(format!("email:{}", m.id));
                    $crate::jobs::enqueue_job!(&mut *$tx, &job, $default_attempts)?;
                }
            }
            Ok::<bool, sqlx::Error>(fresh)
        }
        .await
    }};
}
pub use insert_notice;

/// Writes notices in a transaction of their own (for events already durable: a job's, a
/// budget crossing); wakes live streams. Whether any was new.
pub async fn send(
    store: &Store,
    queue: &crate::jobs::JobQueue,
    notices: &[Notice],
) -> Result<bool, StoreError> {
    let attempts = queue.default_attempts();
    let r: Result<bool, sqlx::Error> = on_pool!(store, p => async {
        let mut tx = p.begin().await?;
        let mut fresh = false;
        for n in notices {
            fresh |= insert_notice!(tx, n, attempts)?;
        }
        tx.commit().await?;
        Ok(fresh)
    }.await);
    let fresh = store.observe(r.map_err(StoreError::from))?;
    if fresh {
        queue.wake();
        for n in notices {
            live::wake(&n.tenant_id, &n.user_id);
        }
    }
    Ok(fresh)
}

/// Turns budget alerts into high-priority notices (in the app, pushed, and emailed) until
/// the channel closes. One per threshold and window, whichever replica saw it first.
pub async fn budget_alerts(
    store: Store,
    queue: crate::jobs::JobQueue,
    mut alerts: tokio::sync::mpsc::UnboundedReceiver<crate::usage::BudgetAlert>,
) {
    while let Some(a) = alerts.recv().await {
        let to = match address(&store, &a.tenant_id, a.user.as_deref()).await {
            Ok(to) => to,
            Err(e) => {
                tracing::warn!(error = %e, "budget alert: the recipient's address is unknown");
                None
            }
        };
        let tenant = store.tenant_name(&a.tenant_id).await.ok().flatten();
        let ctx = serde_json::json!({
            "tenant": tenant, "scope": a.label, "period": a.period, "percent": a.percent,
            "spent": format!("${:.2}", a.spent_usd), "limit": format!("${:.2}", a.limit_usd),
        });
        let key = format!("budget:{}:{}:{}:{}", a.scope, a.period, a.window, a.percent);
        let notice = match Notice::render("budget_alert", &a.tenant_id, key, ctx) {
            Ok(n) => n
                .for_user(a.user.as_deref())
                .priority(Priority::High)
                .email(to.as_deref()),
            Err(e) => {
                tracing::warn!(error = %e, "budget alert not rendered");
                continue;
            }
        };
        match send(&store, &queue, &[notice]).await {
            Ok(_) => {
                tracing::info!(scope = %a.scope, percent = a.percent, period = a.period, "budget alert")
            }
            Err(e) => tracing::warn!(error = %e, "budget alert not written"),
        }
    }
}

/// Where a tenant's or an end user's mail goes, if known.
pub async fn address(
    store: &Store,
    tenant_id: &str,
    user_id: Option<&str>,
) -> Result<Option<String>, StoreError> {
    Ok(match user_id.filter(|u| !u.is_empty()) {
        None => on_pool!(store, p => sqlx::query_scalar::<_, Option<String>>(
            "SELECT contact_email FROM tenants WHERE id = $1")
            .bind(tenant_id).fetch_optional(p).await)?
        .flatten(),
        Some(u) => on_pool!(store, p => sqlx::query_scalar::<_, String>(
            "SELECT email FROM user_contacts WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant_id).bind(u).fetch_optional(p).await)?,
    })
}

/// Records an end user's address (from their token's email claim, or an operator).
pub async fn set_user_address(
    store: &Store,
    tenant_id: &str,
    user_id: &str,
    email: &str,
) -> Result<(), StoreError> {
    Ok(on_pool!(store, p => sqlx::query(
        "INSERT INTO user_contacts (tenant_id, user_id, email, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET email = excluded.email, updated_at = excluded.updated_at")
        .bind(tenant_id).bind(user_id).bind(email.trim().to_lowercase()).bind(now_ms())
        .execute(p).await.map(|_| ()))?)
}

/// Records a tenant's contact address.
pub async fn set_tenant_address(
    store: &Store,
    tenant_id: &str,
    email: &str,
) -> Result<bool, StoreError> {
    Ok(
        on_pool!(store, p => sqlx::query("UPDATE tenants SET contact_email = $1 WHERE id = $2")
        .bind(email.trim().to_lowercase()).bind(tenant_id)
        .execute(p).await.map(|r| r.rows_affected() == 1))?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert!(valid_address("a@example.com"));
        for bad in [
            "",
            "a",
            "a@b",
            "@example.com",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert!(!valid_address(bad), "{bad}");
        }
    }

    #[test]
    fn low_priority_notices_wait_for_the_digest() {
        let ctx = serde_json::json!({"subject": "s", "body": "b", "tenant": "t"});
        let n = Notice::render("notice", "ten_1", "k", ctx.clone())
            .unwrap()
            .priority(Priority::Low)
            .email(Some("a@example.com"));
        assert!(n.mail.is_none());
        let n = Notice::render("notice", "ten_1", "k", ctx)
            .unwrap()
            .email(Some("A@Example.com "));
        assert_eq!(n.mail.unwrap().to, "a@example.com");
    }
}
