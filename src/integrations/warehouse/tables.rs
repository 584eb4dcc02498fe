//! The facts exported, each a table partitioned by UTC day: its Parquet schema, and the
//! query that reads one day's rows a page at a time (keyset pagination, so memory stays
//! bounded by a page whatever the day holds).

use super::parquet_file::Col;
use crate::store::{Store, StoreError, on_pool};

/// Rows per page, and per row group.
pub const PAGE: i64 = 50_000;

/// One exported table.
pub struct Table {
    pub name: &'static str,
    pub schema: &'static str,
    /// What each column means (the schema file's documentation).
    pub doc: &'static [(&'static str, &'static str)],
}

pub const REQUESTS: Table = Table {
    name: "requests",
    schema: "message requests {
        REQUIRED BYTE_ARRAY id (UTF8);
        REQUIRED BYTE_ARRAY request_id (UTF8);
        REQUIRED INT64 created_at (TIMESTAMP(MILLIS,true));
        OPTIONAL BYTE_ARRAY tenant_id (UTF8);
        OPTIONAL BYTE_ARRAY key_id (UTF8);
        OPTIONAL BYTE_ARRAY user_id (UTF8);
        REQUIRED BYTE_ARRAY model (UTF8);
        OPTIONAL BYTE_ARRAY provider (UTF8);
        REQUIRED BOOLEAN stream;
        REQUIRED BYTE_ARRAY status (UTF8);
        REQUIRED INT64 http_status;
        OPTIONAL BYTE_ARRAY error_code (UTF8);
        REQUIRED INT64 tokens_in;
        REQUIRED INT64 tokens_out;
        REQUIRED DOUBLE latency_ms;
        OPTIONAL DOUBLE ttft_ms;
        REQUIRED DOUBLE cost_usd;
        REQUIRED DOUBLE saved_usd;
        OPTIONAL BYTE_ARRAY route_tier (UTF8);
        OPTIONAL BYTE_ARRAY route_reason (UTF8);
    }",
    doc: &[
        ("id", "the request log row's id (unique)"),
        ("request_id", "the request's id (x-request-id)"),
        ("created_at", "when the request started, UTC"),
        ("status", "ok, error, cache_hit or client_disconnected"),
        ("cost_usd", "what the request cost at the configured prices"),
        ("saved_usd", "what a cache hit saved"),
        (
            "route_reason",
            "why the router chose the tier; cache_exact / cache_semantic for hits",
        ),
    ],
};

pub const USAGE_DAILY: Table = Table {
    name: "usage_daily",
    schema: "message usage_daily {
        REQUIRED BYTE_ARRAY day (UTF8);
        OPTIONAL BYTE_ARRAY tenant_id (UTF8);
        OPTIONAL BYTE_ARRAY key_id (UTF8);
        OPTIONAL BYTE_ARRAY user_id (UTF8);
        REQUIRED BYTE_ARRAY model (UTF8);
        REQUIRED INT64 requests;
        REQUIRED INT64 succeeded;
        REQUIRED INT64 cache_hits;
        REQUIRED INT64 tokens_in;
        REQUIRED INT64 tokens_out;
        REQUIRED DOUBLE spend_usd;
        REQUIRED DOUBLE savings_usd;
    }",
    doc: &[
        ("day", "UTC day, YYYY-MM-DD"),
        (
            "requests",
            "requests that day for the tenant, key, end user and model",
        ),
        ("succeeded", "of which answered by a model (status ok)"),
        ("cache_hits", "of which answered from the cache"),
        ("spend_usd", "their cost"),
        ("savings_usd", "what the cache hits saved"),
    ],
};

pub const BILLING_EVENTS: Table = Table {
    name: "billing_events",
    schema: "message billing_events {
        REQUIRED BYTE_ARRAY id (UTF8);
        REQUIRED BYTE_ARRAY type (UTF8);
        REQUIRED INT64 received_at (TIMESTAMP(MILLIS,true));
        OPTIONAL INT64 processed_at (TIMESTAMP(MILLIS,true));
        OPTIONAL BYTE_ARRAY outcome (UTF8);
    }",
    doc: &[
        ("id", "Stripe's event id"),
        ("type", "Stripe's event type"),
        (
            "processed_at",
            "when its effects were applied, if they were",
        ),
        ("outcome", "what processing it did"),
    ],
};

pub const TABLES: [&Table; 3] = [&REQUESTS, &USAGE_DAILY, &BILLING_EVENTS];

#[derive(sqlx::FromRow)]
struct RequestRow {
    id: String,
    request_id: String,
    created_at: i64,
    tenant_id: Option<String>,
    key_id: Option<String>,
    user_id: Option<String>,
    model: String,
    provider: Option<String>,
    stream: bool,
    status: String,
    http_status: i64,
    error_code: Option<String>,
    tokens_in: i64,
    tokens_out: i64,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    cost_usd: f64,
    saved_usd: f64,
    route_tier: Option<String>,
    route_reason: Option<String>,
}

/// A page of one table's rows for the day `[from, to)` after `after` (a sort key), with
/// the sort key of its last row.
pub async fn page(
    store: &Store,
    table: &Table,
    from: i64,
    to: i64,
    day: &str,
    after: &str,
) -> Result<(Vec<Col>, usize, Option<String>), StoreError> {
    match table.name {
        "requests" => requests(store, from, to, after).await,
        "usage_daily" => usage_daily(store, from, to, day, after).await,
        _ => billing_events(store, from, to, after).await,
    }
}

async fn requests(
    store: &Store,
    from: i64,
    to: i64,
    after: &str,
) -> Result<(Vec<Col>, usize, Option<String>), StoreError> {
    let rows: Vec<RequestRow> = on_pool!(store, p => sqlx::query_as(
        "SELECT id, request_id, created_at, tenant_id, key_id, user_id, model, provider, stream, status, \
                CAST(http_status AS BIGINT) AS http_status, error_code, tokens_in, tokens_out, latency_ms, ttft_ms, \
                cost_usd, saved_usd, route_tier, route_reason \
         FROM request_log WHERE created_at >= $1 AND created_at < $2 AND id > $3 ORDER BY id LIMIT $4")
        .bind(from).bind(to).bind(after).bind(PAGE).fetch_all(p).await)?;
    let n = rows.len();
    let last = rows.last().map(|r| r.id.clone());
    let mut c: [Vec<Option<String>>; 7] = Default::default();
    let (mut ids, mut rids, mut models, mut statuses) = (vec![], vec![], vec![], vec![]);
    let (mut at, mut http, mut tin, mut tout) = (vec![], vec![], vec![], vec![]);
    let (mut stream, mut lat, mut ttft, mut cost, mut saved) =
        (vec![], vec![], vec![], vec![], vec![]);
    for r in rows {
        ids.push(r.id);
        rids.push(r.request_id);
        at.push(r.created_at);
        c[0].push(r.tenant_id);
        c[1].push(r.key_id);
        c[2].push(r.user_id);
        models.push(r.model);
        c[3].push(r.provider);
        stream.push(r.stream);
        statuses.push(r.status);
        http.push(r.http_status);
        c[4].push(r.error_code);
        tin.push(r.tokens_in);
        tout.push(r.tokens_out);
        lat.push(r.latency_ms);
        ttft.push(r.ttft_ms);
        cost.push(r.cost_usd);
        saved.push(r.saved_usd);
        c[5].push(r.route_tier);
        c[6].push(r.route_reason);
    }
    let [tenant, key, user, provider, error, tier, reason] = c;
    Ok((
        vec![
            Col::Str(ids),
            Col::Str(rids),
            Col::I64(at),
            Col::OptStr(tenant),
            Col::OptStr(key),
            Col::OptStr(user),
            Col::Str(models),
            Col::OptStr(provider),
            Col::Bool(stream),
            Col::Str(statuses),
            Col::I64(http),
            Col::OptStr(error),
            Col::I64(tin),
            Col::I64(tout),
            Col::F64(lat),
            Col::OptF64(ttft),
            Col::F64(cost),
            Col::F64(saved),
            Col::OptStr(tier),
            Col::OptStr(reason),
        ],
        n,
        last,
    ))
}

type UsageRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    f64,
    f64,
);

/// The day's usage per (tenant, key, user, model): small, one page (the sort key is unused).
async fn usage_daily(
    store: &Store,
    from: i64,
    to: i64,
    day: &str,
    after: &str,
) -> Result<(Vec<Col>, usize, Option<String>), StoreError> {
    if !after.is_empty() {
        return Ok((vec![], 0, None));
    }
    let rows: Vec<UsageRow> = on_pool!(store, p => sqlx::query_as(
        "SELECT COALESCE(tenant_id, '') || '|' || COALESCE(key_id, '') || '|' || COALESCE(user_id, '') || '|' || model, \
                tenant_id, key_id, user_id, model, COUNT(*), \
                CAST(COALESCE(SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                CAST(COALESCE(SUM(CASE WHEN status = 'cache_hit' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                CAST(COALESCE(SUM(tokens_in), 0) AS BIGINT), CAST(COALESCE(SUM(tokens_out), 0) AS BIGINT), \
                CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION), CAST(COALESCE(SUM(saved_usd), 0) AS DOUBLE PRECISION) \
         FROM request_log WHERE created_at >= $1 AND created_at < $2 \
         GROUP BY tenant_id, key_id, user_id, model ORDER BY 1")
        .bind(from).bind(to).fetch_all(p).await)?;
    let n = rows.len();
    let mut days = vec![];
    let (mut tenant, mut key, mut user, mut model) = (vec![], vec![], vec![], vec![]);
    let (mut req, mut ok, mut hits, mut tin, mut tout, mut spend, mut savings) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for r in rows {
        days.push(day.to_string());
        tenant.push(r.1);
        key.push(r.2);
        user.push(r.3);
        model.push(r.4);
        req.push(r.5);
        ok.push(r.6);
        hits.push(r.7);
        tin.push(r.8);
        tout.push(r.9);
        spend.push(r.10);
        savings.push(r.11);
    }
    Ok((
        vec![
            Col::Str(days),
            Col::OptStr(tenant),
            Col::OptStr(key),
            Col::OptStr(user),
            Col::Str(model),
            Col::I64(req),
            Col::I64(ok),
            Col::I64(hits),
            Col::I64(tin),
            Col::I64(tout),
            Col::F64(spend),
            Col::F64(savings),
        ],
        n,
        (n > 0).then(|| "done".to_string()),
    ))
}

async fn billing_events(
    store: &Store,
    from: i64,
    to: i64,
    after: &str,
) -> Result<(Vec<Col>, usize, Option<String>), StoreError> {
    type Row = (String, String, i64, Option<i64>, Option<String>);
    let rows: Vec<Row> = on_pool!(store, p => sqlx::query_as(
        "SELECT id, type, received_at, processed_at, outcome FROM stripe_events \
         WHERE received_at >= $1 AND received_at < $2 AND id > $3 ORDER BY id LIMIT $4")
        .bind(from).bind(to).bind(after).bind(PAGE).fetch_all(p).await)?;
    let n = rows.len();
    let last = rows.last().map(|r| r.0.clone());
    let (mut ids, mut types, mut at, mut processed, mut outcome) =
        (vec![], vec![], vec![], vec![], vec![]);
    for r in rows {
        ids.push(r.0);
        types.push(r.1);
        at.push(r.2);
        processed.push(r.3);
        outcome.push(r.4);
    }
    Ok((
        vec![
            Col::Str(ids),
            Col::Str(types),
            Col::I64(at),
            Col::OptI64(processed),
            Col::OptStr(outcome),
        ],
        n,
        last,
    ))
}
