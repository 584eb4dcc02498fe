//! The operator API under `/admin`, in the order its router merges them: the job queue,
//! tenants, usage, routing and the cache (`admin.rs`); keys, users' deletion and the audit
//! log (`identity.rs`); contacts, email and bookings (`communications.rs`); console
//! sessions, second factors and the overview (`console.rs`). Every operation takes an
//! operator's credential; the role each needs is `auth/roles.rs`'s.

use schemars::SchemaGenerator;
use serde_json::{Value, json};

use super::super::{Auth, Op, op};
use super::{invalidation, list, list_and, obj, usage_row};
use crate::api::{admin, cache, communications, console, identity};

fn operator(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Op {
    op(method, path, tag, summary).auth(Auth::Admin)
}

// The operations' tags.
const JOBS: &str = "Admin: jobs";
const TENANTS: &str = "Admin: tenants";
const USAGE: &str = "Admin: usage";
const CACHE: &str = "Admin: cache";
const KEYS: &str = "Admin: keys";
const USERS: &str = "Admin: users";
const AUDIT: &str = "Admin: audit";
const MAIL: &str = "Admin: communications";
const CONSOLE: &str = "Admin: console";

pub(super) fn all(g: &mut SchemaGenerator) -> Vec<Op> {
    let mut ops = queue_and_reports(g);
    ops.extend(keys_and_users(g));
    ops.extend(mail_and_bookings(g));
    ops.extend(console_and_overview(g));
    ops
}

fn string() -> Value {
    json!({"type": "string"})
}

fn nullable_string() -> Value {
    json!({"type": ["string", "null"]})
}

fn integer() -> Value {
    json!({"type": "integer"})
}

// ---- Jobs, tenants, usage, routing, the cache (admin.rs) ------------------------------

/// A job as stored (`jobs::JobRow`).
fn job() -> Value {
    obj(
        &[
            "id",
            "kind",
            "payload",
            "status",
            "attempts",
            "max_attempts",
            "run_at",
            "last_error",
            "dedupe_key",
            "created_at",
            "updated_at",
        ],
        json!({
            "id": string(), "kind": string(),
            "payload": {"type": "string", "description": "The job's payload, as JSON text"},
            "status": {"type": "string", "description": "`queued`, `running`, `done` or `dead`"},
            "attempts": integer(), "max_attempts": integer(), "run_at": integer(),
            "last_error": nullable_string(), "dedupe_key": nullable_string(),
            "created_at": integer(), "updated_at": integer(),
        }),
    )
}

/// A tenant with its plan and billing state, its configured limits and what it spent today
/// and this month.
fn tenant() -> Value {
    let per_minute = json!({"type": ["integer", "null"], "minimum": 0});
    let usd = json!({"type": ["number", "null"]});
    obj(
        &[
            "id",
            "name",
            "plan",
            "billing_status",
            "past_due_since",
            "credit_cents",
            "stripe_customer_id",
            "stripe_subscription_id",
            "limits",
            "spend_today_usd",
            "spend_month_usd",
        ],
        json!({
            "id": string(), "name": string(), "plan": string(), "billing_status": string(),
            "past_due_since": {"type": ["integer", "null"]},
            "credit_cents": integer(),
            "stripe_customer_id": nullable_string(),
            "stripe_subscription_id": nullable_string(),
            "limits": obj(
                &["requests_per_minute", "tokens_per_minute", "usd_per_day", "usd_per_month"],
                json!({
                    "requests_per_minute": per_minute, "tokens_per_minute": per_minute,
                    "usd_per_day": usd, "usd_per_month": usd,
                }),
            ),
            "spend_today_usd": {"type": "number"},
            "spend_month_usd": {"type": "number"},
        }),
    )
}

/// `GET /admin/routing`: requests per routing decision, the tiers, the classifier's state.
fn routing() -> Value {
    list_and(
        obj(
            &["tier", "reason", "model", "requests"],
            json!({
                "tier": nullable_string(), "reason": nullable_string(),
                "model": string(), "requests": integer(),
            }),
        ),
        &["classifier_ready", "threshold", "tiers", "curve"],
        json!({
            "classifier_ready": {"type": "boolean"},
            "threshold": {"type": "number"},
            "tiers": {"type": "array", "items": obj(
                &["name", "models", "fallback"],
                json!({
                    "name": string(),
                    "models": {"type": "array", "items": string()},
                    "fallback": nullable_string(),
                }),
            )},
            // The classifier's scores at thresholds 0.1 to 0.9, when it was evaluated.
            "curve": {"type": ["array", "null"], "items": {"type": "object"}},
        }),
    )
}

/// `GET /admin/cache`: entries per tenant with their false-hit estimates, and the index.
fn cache_stats() -> Value {
    let rate = json!({"type": "number"});
    obj(
        &[
            "object",
            "index",
            "index_loaded",
            "indexed_entries",
            "tombstones",
            "snapshot_tenants_loaded",
            "threshold",
            "max_false_hit_rate",
            "tenants",
        ],
        json!({
            "object": {"const": "cache.stats"},
            "index": string(),
            "index_loaded": {"type": "boolean"},
            "indexed_entries": {"type": "integer", "minimum": 0},
            "tombstones": {"type": "integer", "minimum": 0},
            "snapshot_tenants_loaded": {"type": "integer", "minimum": 0},
            "threshold": {"type": "number"},
            "max_false_hit_rate": {"type": "number"},
            "verifier": {"type": "string", "enum": ["cross", "learned", "rules", "none"]},
            "reask_share": {"type": "number"},
            "tenants": {"type": "array", "items": obj(
                &["tenant_id", "entries", "false_hits_30d", "bound_in_force", "tightened",
                  "threshold_in_force", "cross_bar_in_force"],
                json!({
                    "tenant_id": string(),
                    "entries": integer(),
                    "bound_in_force": rate,
                    "tightened": {"type": "boolean"},
                    "threshold_in_force": {"type": "number"},
                    "cross_bar_in_force": {"type": ["number", "null"]},
                    "false_hits_30d": obj(
                        &["semantic_hits", "wrong", "rate", "low", "high", "reasked", "reask_wrong",
                          "reask_rate", "reask_low", "reask_high"],
                        json!({
                            "semantic_hits": integer(), "wrong": integer(),
                            "rate": rate, "low": rate, "high": rate,
                            "reasked": integer(), "reask_wrong": integer(),
                            "reask_rate": rate, "reask_low": rate, "reask_high": rate,
                        }),
                    ),
                }),
            )},
        }),
    )
}

fn queue_and_reports(g: &mut SchemaGenerator) -> Vec<Op> {
    let redriven = obj(
        &["redriven"],
        json!({"redriven": {"type": "integer", "minimum": 0}}),
    );
    vec![
        operator("get", "/admin/jobs", JOBS, "Jobs in one state")
            .query::<admin::ListQuery>(g)
            .ok(200, list(job())),
        operator("get", "/admin/jobs/stats", JOBS, "Jobs per state").ok(
            200,
            obj(
                &["counts"],
                json!({"counts": {"type": "object", "additionalProperties": {"type": "integer"}}}),
            ),
        ),
        operator("get", "/admin/jobs/dead", JOBS, "The dead-letter queue").ok(200, list(job())),
        operator(
            "post",
            "/admin/jobs/dead/redrive",
            JOBS,
            "Re-queue every dead job",
        )
        .ok(200, redriven.clone()),
        operator("get", "/admin/jobs/{id}", JOBS, "A job").ok(200, job()),
        operator(
            "post",
            "/admin/jobs/{id}/redrive",
            JOBS,
            "Re-queue a dead job",
        )
        .ok(200, redriven),
        operator(
            "get",
            "/admin/tenants",
            TENANTS,
            "Tenants with their billing state, limits and spend",
        )
        .ok(200, list(tenant())),
        operator(
            "get",
            "/admin/usage",
            USAGE,
            "Usage grouped by tenant, key, model, end user or day",
        )
        .query::<admin::UsageQuery>(g)
        .ok(200, list_and(usage_row(), &["by"], json!({"by": string()}))),
        // Reads only `since_ms` of the usage query.
        operator(
            "get",
            "/admin/routing",
            USAGE,
            "Requests per routing decision, and the classifier",
        )
        .query::<admin::UsageQuery>(g)
        .ok(200, routing()),
        operator(
            "get",
            "/admin/cache",
            CACHE,
            "Cache entries per tenant, false-hit estimates and the index",
        )
        .ok(200, cache_stats()),
        operator(
            "post",
            "/admin/cache/invalidate",
            CACHE,
            "Invalidate any tenant's entries, or every tenant's by tag",
        )
        .body::<cache::InvalidateRequest>(g)
        .ok(200, invalidation()),
    ]
}

// ---- Keys, users' deletion, the audit log (identity.rs) -------------------------------

fn keys_and_users(g: &mut SchemaGenerator) -> Vec<Op> {
    let audit_row = obj(
        &[
            "seq",
            "at",
            "actor",
            "action",
            "target",
            "detail",
            "prev_hash",
            "hash",
        ],
        json!({
            "seq": integer(), "at": integer(), "actor": string(), "action": string(),
            "target": nullable_string(), "detail": {}, "prev_hash": string(), "hash": string(),
        }),
    );
    vec![
        operator("get", "/admin/keys", KEYS, "API keys (never their secrets)").ok(
            200,
            list(g.subschema_for::<crate::store::ApiKeyRow>().to_value()),
        ),
        operator(
            "post",
            "/admin/keys",
            KEYS,
            "Create a key (its secret is in this answer only)",
        )
        .body::<identity::NewKey>(g)
        .ok(
            200,
            obj(
                &["object", "id", "secret", "tenant", "name", "user"],
                json!({
                    "object": {"const": "api_key"},
                    "id": string(), "secret": string(), "tenant": string(), "name": string(),
                    "user": nullable_string(),
                }),
            ),
        ),
        operator(
            "delete",
            "/admin/keys/{id}",
            KEYS,
            "Revoke a key (by id or its shown prefix)",
        )
        .ok(
            200,
            obj(
                &["object", "id", "revoked"],
                json!({"object": {"const": "api_key"}, "id": string(), "revoked": {"const": true}}),
            ),
        ),
        operator(
            "delete",
            "/admin/users/{id}",
            USERS,
            "Start an end user's deletion (asking again returns the same one)",
        )
        .query::<identity::UserQuery>(g)
        .ok_type::<crate::integrations::identity::deletion::Deletion>(202, g),
        operator(
            "get",
            "/admin/users/{id}/deletion",
            USERS,
            "An end user's deletion and its steps",
        )
        .query::<identity::UserQuery>(g)
        .ok_type::<crate::integrations::identity::deletion::Deletion>(200, g),
        operator(
            "get",
            "/admin/audit",
            AUDIT,
            "The audit log, filtered, as JSON or JSON lines (`format=jsonl`)",
        )
        .query::<crate::audit::Query>(g)
        .answer(
            200,
            json!({
                "application/json": {"schema": list(audit_row)},
                "application/x-ndjson": {"schema": {"type": "string"}},
            }),
        ),
    ]
}

// ---- Contacts, email, bookings (communications.rs) ------------------------------------

fn mail_and_bookings(g: &mut SchemaGenerator) -> Vec<Op> {
    let outbox_row = obj(
        &[
            "id",
            "tenant_id",
            "to_addr",
            "template",
            "stream",
            "subject",
            "state",
            "attempts",
            "provider",
            "provider_id",
            "last_error",
            "created_at",
            "sent_at",
        ],
        json!({
            "id": string(), "tenant_id": string(), "to_addr": string(), "template": string(),
            "stream": string(), "subject": string(), "state": string(), "attempts": integer(),
            "provider": nullable_string(), "provider_id": nullable_string(),
            "last_error": nullable_string(), "created_at": integer(),
            "sent_at": {"type": ["integer", "null"]},
        }),
    );
    let suppression = obj(
        &["address", "reason", "provider", "created_at"],
        json!({
            "address": string(), "reason": string(), "provider": string(),
            "created_at": integer(),
        }),
    );
    let booking = obj(
        &[
            "uid",
            "status",
            "title",
            "start_utc",
            "end_utc",
            "attendee_name",
            "attendee_email",
            "attendee_tz",
            "organizer",
            "updated_at",
        ],
        json!({
            "uid": string(), "status": string(), "title": string(), "start_utc": string(),
            "end_utc": string(), "attendee_name": string(), "attendee_email": string(),
            "attendee_tz": string(), "organizer": string(), "updated_at": integer(),
        }),
    );
    vec![
        operator(
            "put",
            "/admin/tenants/{name}/contact",
            MAIL,
            "Set where a tenant's mail goes (the tenant is created if new)",
        )
        .body::<communications::Contact>(g)
        .ok(
            200,
            obj(
                &["tenant", "email"],
                json!({"tenant": string(), "email": string()}),
            ),
        ),
        operator(
            "put",
            "/admin/users/{id}/contact",
            MAIL,
            "Set where an end user's mail goes (`tenant` required)",
        )
        .body::<communications::Contact>(g)
        .ok(
            200,
            obj(
                &["tenant", "user", "email"],
                json!({"tenant": string(), "user": string(), "email": string()}),
            ),
        ),
        operator(
            "get",
            "/admin/email/outbox",
            MAIL,
            "The newest outbox emails, in one state or all",
        )
        .query::<communications::OutboxQuery>(g)
        .ok(200, list(outbox_row)),
        operator(
            "get",
            "/admin/email/suppressions",
            MAIL,
            "The suppression list",
        )
        .ok(200, list(suppression)),
        operator(
            "delete",
            "/admin/email/suppressions/{address}",
            MAIL,
            "Take an address off the suppression list",
        )
        .ok(
            200,
            obj(
                &["address", "deleted"],
                json!({"address": string(), "deleted": {"const": true}}),
            ),
        ),
        operator(
            "get",
            "/admin/bookings",
            MAIL,
            "A tenant's bookings by start time",
        )
        .query::<communications::BookingsQuery>(g)
        .ok(200, list(booking)),
    ]
}

// ---- Console sessions, second factors, the overview (console.rs) ----------------------

fn console_and_overview(g: &mut SchemaGenerator) -> Vec<Op> {
    let mfa = obj(
        &["enrolled", "pending"],
        json!({"enrolled": {"type": "boolean"}, "pending": {"type": "boolean"}}),
    );
    let role = json!({"enum": ["viewer", "operator", "admin"]});
    vec![
        // The body is optional: a credential without a second factor signs in alone.
        operator(
            "post",
            "/admin/session",
            CONSOLE,
            "Exchange the credential for a console session",
        )
        .body_content(
            false,
            json!({
                "application/json": {"schema": g.subschema_for::<console::SignIn>().to_value()},
            }),
        )
        .ok(
            200,
            obj(
                &["token", "actor", "role", "expires_at", "mfa"],
                json!({
                    "token": {"type": "string", "description": "`qms_...`, shown only here"},
                    "actor": string(), "role": role, "expires_at": integer(), "mfa": mfa,
                }),
            ),
        ),
        operator(
            "delete",
            "/admin/session",
            CONSOLE,
            "End the console session that calls",
        )
        .empty(204),
        operator(
            "get",
            "/admin/me",
            CONSOLE,
            "The calling operator, their role and second factor",
        )
        .ok(
            200,
            obj(
                &["actor", "role", "mfa"],
                json!({"actor": string(), "role": role, "mfa": mfa}),
            ),
        ),
        operator(
            "post",
            "/admin/mfa/enroll",
            CONSOLE,
            "Start enrolling a second factor (TOTP)",
        )
        .ok(
            200,
            obj(
                &["secret", "otpauth_uri"],
                json!({"secret": string(), "otpauth_uri": string()}),
            ),
        ),
        operator(
            "post",
            "/admin/mfa/confirm",
            CONSOLE,
            "Confirm the enrolment with a first code",
        )
        .body::<console::Confirm>(g)
        .ok(
            200,
            obj(&["enrolled"], json!({"enrolled": {"const": true}})),
        ),
        operator(
            "get",
            "/admin/operators",
            CONSOLE,
            "The operators and their second factors",
        )
        .ok(
            200,
            list(obj(
                &["actor", "role", "mfa"],
                json!({
                    "actor": string(),
                    // Null for an identity user known only by their enrolment.
                    "role": {"enum": ["viewer", "operator", "admin", null]},
                    "mfa": {"enum": ["enrolled", "pending", "none"]},
                }),
            )),
        ),
        operator(
            "delete",
            "/admin/operators/{actor}/mfa",
            CONSOLE,
            "Reset an operator's second factor",
        )
        .ok(
            200,
            obj(
                &["actor", "reset"],
                json!({"actor": string(), "reset": {"const": true}}),
            ),
        ),
        // Requests, errors, spend, cache hits and latency percentiles, over time and per
        // tenant, model and route.
        operator("get", "/admin/overview", CONSOLE, "The overview's figures")
            .query::<console::OverviewQuery>(g)
            .ok_type::<crate::usage::overview::Overview>(200, g),
    ]
}
