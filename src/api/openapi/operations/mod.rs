//! Every operation the gateway serves, in the order the router takes them: the open
//! endpoints (health, readiness, metrics, this document), the webhooks, the operator API
//! (`/admin`) and the tenant's API (`/v1`, `/api/chat`). Each says who may call it, what it
//! reads (its query and body, from the extractors' own types where they have one) and what it
//! answers on success; errors are the door's error shape, added by the builder.
//!
//! Answers the handlers build as JSON are described here by hand, from the handler's code:
//! a property is `required` only when the handler always writes it, a value that may be
//! absent is nullable, and objects stay open (`additionalProperties` allowed) unless the type
//! says otherwise. A stream is `text/event-stream`; a door that streams only when asked lists
//! both it and its JSON answer.

mod admin;
mod tenant;
mod webhooks;

use schemars::SchemaGenerator;
use serde_json::{Value, json};

use super::{Auth, Op, op};

pub fn all(g: &mut SchemaGenerator) -> Vec<super::Op> {
    let mut ops = public();
    ops.extend(webhooks::all());
    ops.extend(admin::all(g));
    ops.extend(tenant::all(g));
    ops
}

// ---- Open endpoints -------------------------------------------------------------------

fn public() -> Vec<Op> {
    let readiness = obj(
        &["status"],
        json!({
            "status": {"enum": [
                "ready", "store_not_writable", "store_unavailable", "shutting_down",
            ]},
            "store": {"enum": ["sqlite", "postgres"]},
            "store_health": obj(&["reachable", "writable"], json!({
                "reachable": {"type": "boolean"},
                "writable": {"type": "boolean"},
                "error": {"type": "string"},
                "free_bytes": {"type": "integer", "minimum": 0},
            })),
            "request_log": obj(&["state", "backlog", "spilled"], json!({
                "state": {"enum": ["ok", "retrying"]},
                "backlog": {"type": "integer", "minimum": 0},
                "spilled": {"type": "integer", "minimum": 0},
            })),
        }),
    );
    let mut ready = readiness.clone();
    ready["required"] = json!(["status", "store", "store_health", "request_log"]);
    vec![
        op(
            "get",
            "/healthz",
            "Operations",
            "Liveness: the process is up",
        )
        .auth(Auth::Public)
        .ok(200, obj(&["status"], json!({"status": {"const": "ok"}}))),
        op(
            "get",
            "/readyz",
            "Operations",
            "Readiness: the store answers and takes writes",
        )
        .auth(Auth::Public)
        .ok(200, ready)
        // Not ready: the same body (or only `status` while shutting down), not an error.
        .ok(503, readiness),
        op("get", "/metrics", "Operations", "Prometheus metrics")
            .auth(Auth::Public)
            .answer(200, json!({"text/plain": {"schema": {"type": "string"}}})),
        op("get", "/openapi.json", "Operations", "This document")
            .auth(Auth::Public)
            .ok(200, json!({"type": "object"})),
    ]
}

// ---- Helpers shared by the areas ------------------------------------------------------

/// An object schema: its properties, and those the handler always writes.
fn obj(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

/// `{"object": "list", "data": [item, ...]}`.
fn list(item: Value) -> Value {
    list_and(item, &[], json!({}))
}

/// A list with more properties beside `object` and `data` (`required`: those of them always
/// written).
fn list_and(item: Value, required: &[&str], more: Value) -> Value {
    let mut properties = json!({
        "object": {"const": "list"},
        "data": {"type": "array", "items": item},
    });
    if let (Some(p), Some(m)) = (properties.as_object_mut(), more.as_object()) {
        p.extend(m.clone());
    }
    let mut all = vec!["object", "data"];
    all.extend_from_slice(required);
    obj(&all, properties)
}

/// A shared component schema.
fn component(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A stream of server-sent events.
fn sse() -> Value {
    json!({"text/event-stream": {"schema": {"type": "string"}}})
}

/// JSON (`schema`), or server-sent events when the request asked for a stream.
fn json_or_sse(schema: Value) -> Value {
    json!({
        "application/json": {"schema": schema},
        "text/event-stream": {"schema": {"type": "string"}},
    })
}

/// `{"id": ..., "object": OBJECT, "deleted": true}`: what a DELETE of one thing answers.
fn deleted(object: &str) -> Value {
    obj(
        &["id", "object", "deleted"],
        json!({"id": {"type": "string"}, "object": {"const": object}, "deleted": {"const": true}}),
    )
}

/// A header the handler reads (the builder adds only path, query and body parameters).
fn header(mut operation: Op, name: &str, required: bool, schema: Value, description: &str) -> Op {
    operation.parameters.push(json!({
        "name": name, "in": "header", "required": required,
        "schema": schema, "description": description,
    }));
    operation
}

/// One row of a usage report (`/v1/usage`, `/admin/usage`): the group it is of, under the
/// name of what the report groups by, and its figures.
fn usage_row() -> Value {
    let count = json!({"type": "integer"});
    let usd = json!({"type": "number"});
    obj(
        &[
            "requests",
            "succeeded",
            "tokens_in",
            "tokens_out",
            "spend_usd",
            "cache_hits",
            "savings_usd",
        ],
        json!({
            "tenant": {"type": "string"}, "key": {"type": "string"}, "model": {"type": "string"},
            "user": {"type": "string", "description": "`tenant/user`"},
            "day": {"type": "string"},
            "requests": count, "succeeded": count, "tokens_in": count, "tokens_out": count,
            "spend_usd": usd, "cache_hits": count, "savings_usd": usd,
        }),
    )
}

/// What an invalidation answers (`/v1/cache/invalidate`, `/admin/cache/invalidate`).
fn invalidation() -> Value {
    obj(
        &["object", "deleted"],
        json!({
            "object": {"const": "cache.invalidation"},
            "deleted": {"type": "integer", "minimum": 0},
        }),
    )
}
