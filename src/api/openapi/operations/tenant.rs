//! The tenant's API, as `src/api/mod.rs` routes it: models, the three chat doors (OpenAI's
//! chat completions and Responses, Anthropic's Messages) and the AI SDK's `/api/chat`,
//! embeddings, the cache, documents and retrieval, usage, notifications, consent and
//! billing. Every operation takes the tenant's key (or an end user's token or session).

use schemars::SchemaGenerator;
use serde_json::{Value, json};

use super::super::{Auth, Op, op};
use super::{component, deleted, header, invalidation, json_or_sse, list_and, obj, sse, usage_row};
use crate::api::{billing, cache, documents, notifications, responses, tenant};

fn v1(method: &'static str, path: &'static str, tag: &'static str, summary: &'static str) -> Op {
    op(method, path, tag, summary).auth(Auth::Tenant)
}

pub(super) fn all(g: &mut SchemaGenerator) -> Vec<Op> {
    let mut ops = models_and_doors(g);
    ops.extend(cache_and_retrieval(g));
    ops.extend(accounts(g));
    ops.extend(uploads(g));
    ops
}

// ---- Models and the chat doors --------------------------------------------------------

fn models_and_doors(g: &mut SchemaGenerator) -> Vec<Op> {
    vec![
        v1(
            "get",
            "/v1/models",
            "Models",
            "List the served models and the embedding model",
        )
        .ok(200, component("ModelList")),
        v1(
            "get",
            "/v1/models/{id}",
            "Models",
            "One model, or a routing alias",
        )
        .ok(200, component("Model")),
        v1(
            "post",
            "/v1/responses",
            "Responses",
            "Create a response (streamed when asked)",
        )
        .body_schema(component("ResponsesRequest"))
        .answer(200, json_or_sse(component("Response"))),
        v1(
            "get",
            "/v1/responses/{id}",
            "Responses",
            "A stored response",
        )
        .ok(200, component("Response")),
        v1(
            "delete",
            "/v1/responses/{id}",
            "Responses",
            "Delete a stored response",
        )
        .ok(200, deleted("response")),
        v1(
            "get",
            "/v1/responses/{id}/input_items",
            "Responses",
            "A stored response's input items, a page at a time",
        )
        .query::<responses::ItemsQuery>(g)
        .ok(
            200,
            list_and(
                json!({"type": "object"}),
                &["first_id", "last_id", "has_more"],
                // The first and last items' ids (null on an empty page).
                json!({"first_id": {}, "last_id": {}, "has_more": {"type": "boolean"}}),
            ),
        ),
        v1(
            "post",
            "/v1/messages",
            "Messages",
            "Create a message, Anthropic's Messages API (streamed when asked)",
        )
        .body_schema(component("MessagesRequest"))
        .answer(200, json_or_sse(component("Message"))),
        v1(
            "post",
            "/v1/messages/count_tokens",
            "Messages",
            "Count a Messages request's input tokens",
        )
        .body_schema(component("CountTokensRequest"))
        .ok(
            200,
            obj(
                &["input_tokens"],
                json!({"input_tokens": {"type": "integer", "minimum": 0}}),
            ),
        ),
        v1(
            "post",
            "/api/chat",
            "UI chat",
            "Chat as the AI SDK's UI message stream (always streamed)",
        )
        .body_schema(component("UiChatRequest"))
        .answer(200, sse()),
        v1(
            "get",
            "/api/chat/{id}/stream",
            "UI chat",
            "Resume the chat's answer still running (204 when none is)",
        )
        .answer(200, sse())
        .empty(204),
        v1(
            "post",
            "/v1/chat/completions",
            "Chat completions",
            "Create a chat completion (streamed when asked)",
        )
        .body_schema(component("ChatCompletionRequest"))
        .answer(200, json_or_sse(component("ChatCompletion"))),
        v1(
            "post",
            "/v1/embeddings",
            "Embeddings",
            "Embed texts or token ids with the local embedder",
        )
        .body_schema(component("EmbeddingsRequest"))
        .ok(200, component("EmbeddingsResponse")),
    ]
}

// ---- The cache, documents and retrieval -----------------------------------------------

/// A cache entry's metadata (`cache::EntryInfo`).
fn cache_entry() -> Value {
    obj(
        &[
            "id",
            "object",
            "model",
            "query",
            "created_at",
            "expires_at",
            "hits",
            "tags",
        ],
        json!({
            "id": {"type": "string"},
            "object": {"const": "cache.entry"},
            "model": {"type": "string"},
            "query": {"type": "string"},
            "created_at": {"type": "integer"},
            "expires_at": {"type": "integer"},
            "hits": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        }),
    )
}

/// A stored document (`rag::DocumentRecord`).
fn document() -> Value {
    obj(
        &[
            "id",
            "title",
            "source",
            "format",
            "content_hash",
            "metadata",
            "chunk_count",
            "created_at",
            "updated_at",
        ],
        json!({
            "id": {"type": "string"},
            "title": {"type": ["string", "null"]},
            "source": {
                "type": ["string", "null"],
                "description": "A file path or an upload's file name",
            },
            "format": {"type": "string"},
            "content_hash": {"type": "string"},
            "metadata": {"type": "object"},
            "chunk_count": {"type": "integer", "minimum": 0},
            "created_at": {"type": "integer"},
            "updated_at": {"type": "integer"},
        }),
    )
}

/// A retrieved chunk (`rag::Hit`: the scored chunk and where it ranked). A score is null
/// only if it was not a number (serde_json writes NaN as null).
fn hit() -> Value {
    obj(
        &[
            "chunk_id",
            "document_id",
            "index",
            "title",
            "heading",
            "text",
            "metadata",
            "repeats",
            "score",
        ],
        json!({
            "chunk_id": {"type": "string"},
            "document_id": {"type": "string"},
            "index": {"type": "integer", "minimum": 0},
            "title": {"type": ["string", "null"]},
            "heading": {"type": ["string", "null"]},
            "text": {"type": "string"},
            "metadata": {"type": "object"},
            "repeats": {"type": "integer", "minimum": 0},
            "score": {"type": ["number", "null"]},
            "vector_rank": {"type": "integer", "minimum": 1},
            "text_rank": {"type": "integer", "minimum": 1},
            "similarity": {"type": ["number", "null"]},
        }),
    )
}

fn cache_and_retrieval(g: &mut SchemaGenerator) -> Vec<Op> {
    vec![
        v1(
            "get",
            "/v1/cache/entries/{id}",
            "Cache",
            "A cache entry's metadata",
        )
        .ok(200, cache_entry()),
        v1(
            "delete",
            "/v1/cache/entries/{id}",
            "Cache",
            "Delete a cache entry",
        )
        .ok(200, deleted("cache.entry")),
        v1(
            "post",
            "/v1/cache/invalidate",
            "Cache",
            "Invalidate entries by tag, or all of them",
        )
        .body::<cache::InvalidateRequest>(g)
        .ok(200, invalidation()),
        v1(
            "post",
            "/v1/cache/feedback",
            "Cache",
            "Say whether a cache hit was right",
        )
        .body::<cache::FeedbackRequest>(g)
        .ok(
            200,
            obj(
                &["object", "entry", "correct", "demoted"],
                json!({
                    "object": {"const": "cache.feedback"},
                    "entry": {"type": "string"},
                    "correct": {"type": "boolean"},
                    "demoted": {"type": "boolean"},
                }),
            ),
        ),
        v1("get", "/v1/documents/{id}", "Documents", "A document").ok(200, document()),
        v1(
            "delete",
            "/v1/documents/{id}",
            "Documents",
            "Delete a document and its chunks",
        )
        .ok(200, deleted("document")),
        v1(
            "post",
            "/v1/retrieve",
            "Documents",
            "Retrieve chunks, best first",
        )
        .body::<documents::RetrieveRequest>(g)
        .ok(
            200,
            list_and(
                hit(),
                &["mode", "store"],
                json!({
                    "mode": g.subschema_for::<crate::rag::Mode>().to_value(),
                    "store": {"type": "string"},
                }),
            ),
        ),
    ]
}

// ---- Usage, notifications, consent, billing -------------------------------------------

fn accounts(g: &mut SchemaGenerator) -> Vec<Op> {
    let mark = obj(
        &["id", "read", "unread"],
        json!({
            "id": {"type": "string"},
            "read": {"type": "boolean"},
            "unread": {"type": "integer", "minimum": 0},
        }),
    );
    let consent = |analytics: Value| {
        obj(
            &["object", "user", "analytics"],
            json!({
                "object": {"const": "consent"},
                "user": {"type": "string"},
                "analytics": analytics,
            }),
        )
    };
    let idempotency_key = |operation: Op| {
        header(
            operation,
            "Idempotency-Key",
            true,
            json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "\\S"}),
            "The payment operation's key: a retry with the same key is the same operation",
        )
    };
    vec![
        v1(
            "get",
            "/v1/usage",
            "Usage",
            "The tenant's usage, grouped by model, key, end user or day",
        )
        .query::<tenant::UsageQuery>(g)
        .ok(
            200,
            obj(
                &["object", "tenant", "by", "data"],
                json!({
                    "object": {"const": "list"},
                    "tenant": {"type": "string"},
                    "by": {"type": "string"},
                    "data": {"type": "array", "items": usage_row()},
                }),
            ),
        ),
        v1(
            "get",
            "/v1/notifications",
            "Notifications",
            "The recipient's notifications, unread first",
        )
        .query::<notifications::ListQuery>(g)
        .ok_type::<crate::notify::inbox::Page>(200, g),
        v1(
            "get",
            "/v1/notifications/stream",
            "Notifications",
            "New notifications as server-sent events",
        )
        .query::<notifications::UserQuery>(g)
        .answer(200, sse()),
        v1(
            "post",
            "/v1/notifications/read-all",
            "Notifications",
            "Mark every notification read",
        )
        .query::<notifications::UserQuery>(g)
        .ok(
            200,
            obj(
                &["marked", "unread"],
                json!({"marked": {"type": "integer", "minimum": 0}, "unread": {"const": 0}}),
            ),
        ),
        v1(
            "post",
            "/v1/notifications/{id}/read",
            "Notifications",
            "Mark a notification read",
        )
        .query::<notifications::UserQuery>(g)
        .ok(200, mark.clone()),
        v1(
            "post",
            "/v1/notifications/{id}/unread",
            "Notifications",
            "Mark a notification unread",
        )
        .query::<notifications::UserQuery>(g)
        .ok(200, mark),
        v1(
            "get",
            "/v1/users/{id}/consent",
            "Consent",
            "An end user's analytics consent (null: never said)",
        )
        .ok(200, consent(json!({"type": ["boolean", "null"]}))),
        v1(
            "put",
            "/v1/users/{id}/consent",
            "Consent",
            "Set an end user's analytics consent",
        )
        .body::<tenant::ConsentBody>(g)
        .ok(200, consent(json!({"type": "boolean"}))),
        v1(
            "get",
            "/v1/billing",
            "Billing",
            "The tenant's plan, billing status and credit",
        )
        .ok(
            200,
            obj(
                &[
                    "object",
                    "tenant",
                    "plan",
                    "status",
                    "credit_cents",
                    "has_customer",
                    "has_subscription",
                ],
                json!({
                    "object": {"const": "billing"},
                    "tenant": {"type": "string"},
                    "plan": {"type": "string"},
                    "status": {"type": "string"},
                    "credit_cents": {"type": "integer"},
                    "has_customer": {"type": "boolean"},
                    "has_subscription": {"type": "boolean"},
                }),
            ),
        ),
        // The values beside `object` are Stripe's, passed through as it sent them.
        idempotency_key(v1(
            "post",
            "/v1/billing/checkout",
            "Billing",
            "Start a Stripe Checkout for a plan or a credit pack",
        ))
        .body::<crate::integrations::stripe::payments::CheckoutRequest>(g)
        .ok(
            200,
            obj(
                &["object", "id", "url", "mode"],
                json!({"object": {"const": "billing.checkout"}, "id": {}, "url": {}, "mode": {}}),
            ),
        ),
        idempotency_key(v1(
            "post",
            "/v1/billing/payment-intents",
            "Billing",
            "Start a payment for a credit pack (Stripe Elements)",
        ))
        .body::<billing::PackRequest>(g)
        .ok(
            200,
            obj(
                &["object", "client_secret"],
                json!({"object": {"const": "billing.payment_intent"}, "client_secret": {}}),
            ),
        ),
        idempotency_key(v1(
            "post",
            "/v1/billing/portal",
            "Billing",
            "Open a Stripe customer portal session",
        ))
        .body::<billing::PortalRequest>(g)
        .ok(
            200,
            obj(
                &["object", "url"],
                json!({"object": {"const": "billing.portal"}, "url": {}}),
            ),
        ),
        idempotency_key(v1(
            "post",
            "/v1/billing/subscription",
            "Billing",
            "Change the tenant's plan (prorated)",
        ))
        .body::<billing::PlanRequest>(g)
        .ok(
            200,
            obj(
                &["object", "id", "status", "plan"],
                json!({
                    "object": {"const": "billing.subscription"},
                    "id": {}, "status": {},
                    "plan": {"type": "string"},
                }),
            ),
        ),
    ]
}

// ---- Document uploads (their own body limit) ------------------------------------------

/// One document of a JSON upload (`documents/decode.rs`): text, or a file's bytes in base64,
/// exactly one of them.
fn json_document() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "id": {"type": ["string", "null"]},
            "title": {"type": ["string", "null"]},
            "text": {"type": "string"},
            "content_base64": {"type": "string", "contentEncoding": "base64"},
            "format": {
                "type": ["string", "null"],
                "description": "`text` (the default), `markdown`, `html`, `pdf` or `jsonl`",
            },
            "metadata": {"type": "object"},
        },
        "oneOf": [{"required": ["text"]}, {"required": ["content_base64"]}],
    })
}

fn uploads(g: &mut SchemaGenerator) -> Vec<Op> {
    let failed = obj(
        &["id", "source", "status", "error"],
        json!({
            "id": {"type": ["string", "null"]},
            "source": {"type": ["string", "null"]},
            "status": {"const": "failed"},
            "error": {"type": "object", "required": ["message", "type"]},
        }),
    );
    let ingested = obj(
        &[
            "id",
            "status",
            "chunks",
            "embedded",
            "reused",
            "duplicates",
            "cache_invalidated",
        ],
        json!({
            "id": {"type": "string"},
            "status": {"enum": ["created", "updated", "unchanged"]},
            "chunks": {"type": "integer", "minimum": 0},
            "embedded": {"type": "integer", "minimum": 0},
            "reused": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0},
            "cache_invalidated": {"type": "integer", "minimum": 0},
        }),
    );
    vec![
        v1(
            "get",
            "/v1/documents",
            "Documents",
            "The tenant's documents, in id order",
        )
        .query::<documents::ListParams>(g)
        .ok(
            200,
            list_and(
                document(),
                &["has_more"],
                json!({"has_more": {"type": "boolean"}}),
            ),
        ),
        v1(
            "post",
            "/v1/documents",
            "Documents",
            "Ingest documents (JSON or a multipart upload)",
        )
        .body_content(
            true,
            json!({
                "application/json": {"schema": {"anyOf": [
                    {
                        "type": "object",
                        "required": ["documents"],
                        "properties": {"documents": {
                            "type": "array", "minItems": 1, "items": json_document(),
                        }},
                    },
                    json_document(),
                ]}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "description": "File parts (any field name; a file's name is its \
                            document's id unless `id` is given), `metadata` (a JSON object) and \
                            `id` (with one file).",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "string", "format": "binary",
                                "contentMediaType": "application/octet-stream",
                            },
                            "metadata": {"type": "string", "contentMediaType": "application/json"},
                            "id": {"type": "string"},
                        },
                    },
                    "encoding": {"file": {"contentType": "application/octet-stream"}},
                },
            }),
        )
        // Each document's own result, in order (one document that fails is the error).
        .ok(
            200,
            list_and(
                json!({"anyOf": [ingested, failed]}),
                &["ingested", "failed", "store"],
                json!({
                    "ingested": {"type": "integer", "minimum": 0},
                    "failed": {"type": "integer", "minimum": 0},
                    "store": {"type": "string"},
                }),
            ),
        ),
    ]
}
