//! The operator's reports over the request log: usage grouped by tenant, key, model or end
//! user, and
//! how many requests each routing decision sent where.

use super::{Store, StoreError, on_pool};

/// What a usage report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Tenant,
    Key,
    Model,
    /// End users, named `tenant/user` (a user id is unique within its tenant only).
    User,
    /// UTC days (`2026-12-06`).
    Day,
}

impl UsageGroup {
    /// `tenant`, `key`, `model` or `user`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(UsageGroup::Tenant),
            "key" => Some(UsageGroup::Key),
            "model" => Some(UsageGroup::Model),
            "user" => Some(UsageGroup::User),
            "day" => Some(UsageGroup::Day),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            UsageGroup::Tenant => "tenant_id",
            UsageGroup::Key => "key_id",
            UsageGroup::Model => "model",
            UsageGroup::User => "COALESCE(tenant_id, '-') || '/' || COALESCE(user_id, '-')",
            // The day number: the same integer arithmetic on both backends, named in Rust.
            UsageGroup::Day => "CAST(created_at / 86400000 AS TEXT)",
        }
    }
}

/// One group's requests, tokens, spend, cache hits and savings.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// The tenant id, key id or model (`-` where the request had none).
    pub group: String,
    pub requests: i64,
    pub succeeded: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub spend_usd: f64,
    pub cache_hits: i64,
    pub savings_usd: f64,
}

/// Requests one routing decision sent to one model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteCount {
    pub tier: Option<String>,
    pub reason: Option<String>,
    pub model: String,
    pub requests: i64,
}

impl Store {
    /// Usage since `since_ms` (ms since the epoch), before `until_ms`, of one tenant or all
    /// (`None`), and of one of its end users or all; one row per group, in group order.
    pub async fn usage_report(
        &self,
        by: UsageGroup,
        since_ms: i64,
        until_ms: Option<i64>,
        tenant: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        // Empty binds mean "any" in the statement below.
        let (tenant, user) = (tenant.unwrap_or(""), user.unwrap_or(""));
        let column = by.column();
        let sql = format!(
            "SELECT COALESCE({column}, '-'), COUNT(*), \
                    CAST(COALESCE(SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(tokens_in), 0) AS BIGINT), CAST(COALESCE(SUM(tokens_out), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION), \
                    CAST(COALESCE(SUM(CASE WHEN status = 'cache_hit' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(saved_usd), 0) AS DOUBLE PRECISION) \
             FROM request_log WHERE created_at >= $1 AND created_at < $3 \
             AND ($2 = '' OR tenant_id = $2) AND ($4 = '' OR user_id = $4) \
             GROUP BY {column} ORDER BY 1"
        );
        type Row = (String, i64, i64, i64, i64, f64, i64, f64);
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(since_ms).bind(tenant).bind(until_ms.unwrap_or(i64::MAX)).bind(user)
            .fetch_all(p).await)?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    group,
                    requests,
                    succeeded,
                    tokens_in,
                    tokens_out,
                    spend_usd,
                    cache_hits,
                    savings_usd,
                )| {
                    UsageRow {
                        group: match by {
                            UsageGroup::Day => group
                                .parse::<i64>()
                                .map(crate::clock::day_name)
                                .unwrap_or(group),
                            _ => group,
                        },
                        requests,
                        succeeded,
                        tokens_in,
                        tokens_out,
                        spend_usd,
                        cache_hits,
                        savings_usd,
                    }
                },
            )
            .collect())
    }

    /// Each tenant's spend since `day_start` and since `month_start` (the budgets' windows;
    /// `month_start` is the earlier), in one pass: tenant id -> (day, month).
    pub async fn tenant_spend(
        &self,
        day_start: i64,
        month_start: i64,
    ) -> Result<std::collections::HashMap<String, (f64, f64)>, StoreError> {
        type Row = (String, f64, f64);
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(
            "SELECT tenant_id, \
                    CAST(COALESCE(SUM(CASE WHEN created_at >= $1 THEN cost_usd ELSE 0 END), 0) AS DOUBLE PRECISION), \
                    CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) \
             FROM request_log WHERE created_at >= $2 AND tenant_id IS NOT NULL GROUP BY tenant_id")
            .bind(day_start).bind(month_start).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(t, d, m)| (t, (d, m))).collect())
    }

    /// Requests since `since_ms` per (tier, reason, model).
    pub async fn routing_report(&self, since_ms: i64) -> Result<Vec<RouteCount>, StoreError> {
        type Row = (Option<String>, Option<String>, String, i64);
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(
            "SELECT route_tier, route_reason, model, COUNT(*) FROM request_log WHERE created_at >= $1 \
             GROUP BY route_tier, route_reason, model ORDER BY 1, 2, 3")
            .bind(since_ms).fetch_all(p).await)?;
        Ok(rows
            .into_iter()
            .map(|(tier, reason, model, requests)| RouteCount {
                tier,
                reason,
                model,
                requests,
            })
            .collect())
    }
}

/// One request's figures, as the console's overview charts them.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSample {
    pub at_ms: i64,
    /// The tenant's name (its id if it has none; `-` for none).
    pub tenant: String,
    pub model: String,
    /// The routing tier (`-` when the request was not routed).
    pub tier: String,
    /// `ok`, `cache_hit`, or an error's status.
    pub status: String,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub cost_usd: f64,
    pub saved_usd: f64,
}

impl Store {
    /// The newest `limit` requests in `[since_ms, until_ms)`, of one tenant (name or id) and
    /// one model or all (empty), newest first.
    pub async fn request_samples(
        &self,
        since_ms: i64,
        until_ms: i64,
        tenant: &str,
        model: &str,
        limit: i64,
    ) -> Result<Vec<RequestSample>, StoreError> {
        type Row = (
            i64,
            String,
            String,
            String,
            String,
            f64,
            Option<f64>,
            f64,
            f64,
        );
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(
            "SELECT r.created_at, COALESCE(t.name, r.tenant_id, '-'), r.model, COALESCE(r.route_tier, '-'), \
                    r.status, r.latency_ms, r.ttft_ms, r.cost_usd, r.saved_usd \
             FROM request_log r LEFT JOIN tenants t ON t.id = r.tenant_id \
             WHERE r.created_at >= $1 AND r.created_at < $2 \
             AND ($3 = '' OR r.tenant_id = $3 OR t.name = $3) AND ($4 = '' OR r.model = $4) \
             ORDER BY r.created_at DESC LIMIT $5")
            .bind(since_ms).bind(until_ms).bind(tenant).bind(model).bind(limit)
            .fetch_all(p).await)?;
        Ok(rows
            .into_iter()
            .map(
                |(at_ms, tenant, model, tier, status, latency_ms, ttft_ms, cost_usd, saved_usd)| {
                    RequestSample {
                        at_ms,
                        tenant,
                        model,
                        tier,
                        status,
                        latency_ms,
                        ttft_ms,
                        cost_usd,
                        saved_usd,
                    }
                },
            )
            .collect())
    }
}
