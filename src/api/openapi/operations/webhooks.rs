//! The webhooks (`src/api/webhooks.rs`), signed by their senders rather than keyed. The
//! signature over the raw body is the authentication (each integration checks its own
//! headers), and the body is the sender's JSON, passed on untouched. Each answers a receipt;
//! a delivery seen before is acknowledged as a duplicate.

use serde_json::{Value, json};

use super::super::{Auth, Op, op};
use super::obj;

fn signed(path: &'static str, summary: &'static str) -> Op {
    op("post", path, "Webhooks", summary)
        .auth(Auth::Signed)
        .body_content(true, json!({"application/json": {"schema": {}}}))
}

/// A receipt: `received`, and what the integration says of the delivery.
fn receipt(required: &[&str], properties: Value) -> Value {
    let mut all = vec!["received"];
    all.extend_from_slice(required);
    let mut schema = obj(&all, properties);
    schema["properties"]["received"] = json!({"const": true});
    schema
}

pub(super) fn all() -> Vec<Op> {
    let string = json!({"type": "string"});
    let nullable_string = json!({"type": ["string", "null"]});
    let boolean = json!({"type": "boolean"});
    let count = json!({"type": "integer", "minimum": 0});
    // `handled`: the event's type has a handler here (others are stored, or only
    // acknowledged).
    let stripe = receipt(
        &["id", "duplicate", "handled"],
        json!({"id": string, "duplicate": boolean, "handled": boolean}),
    );
    let cms = receipt(
        &["id", "duplicate", "document", "operation", "revision"],
        json!({
            "id": string, "duplicate": boolean, "document": string,
            "operation": {"enum": ["upsert", "delete"]}, "revision": string,
        }),
    );
    let cal = receipt(
        &["id", "duplicate", "handled", "booking"],
        json!({"id": string, "duplicate": boolean, "handled": boolean, "booking": nullable_string}),
    );
    vec![
        signed("/webhooks/stripe", "Stripe events (`Stripe-Signature`)").ok(200, stripe),
        signed(
            "/webhooks/identity/{source}",
            "An identity provider's Standard Webhooks delivery (Clerk, Supabase)",
        )
        .ok(
            200,
            receipt(
                &["id", "duplicate", "deletion"],
                // The deletion a `user.deleted` event started.
                json!({"id": string, "duplicate": boolean, "deletion": nullable_string}),
            ),
        ),
        signed(
            "/webhooks/cms/{source}",
            "A headless CMS's publish, update or delete",
        )
        .ok(200, cms.clone()),
        signed(
            "/webhooks/sanity",
            "Sanity's publish, update or delete (the CMS source `sanity`)",
        )
        .ok(200, cms.clone()),
        signed(
            "/webhooks/contentful",
            "Contentful's publish, update or delete (the CMS source `contentful`)",
        )
        .ok(200, cms),
        signed(
            "/webhooks/email/{provider}",
            "Email delivery events (Resend, Postmark, SendGrid)",
        )
        .ok(
            200,
            receipt(
                &["events", "new", "suppressed"],
                json!({"events": count, "new": count, "suppressed": count}),
            ),
        ),
        signed("/webhooks/cal", "Cal.com booking events (the source `cal`)").ok(200, cal.clone()),
        signed("/webhooks/cal/{source}", "Cal.com booking events").ok(200, cal),
    ]
}
