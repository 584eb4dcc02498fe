//! Stripe webhooks, billing jobs, metering, the dead-letter queue and idempotency keys,
//! against the gateway on a real socket, a mock upstream and a mock Stripe.

use crate::common;

use std::time::Duration;

use common::mock_stripe::{self, MockStripe};
use common::{Options, TestApp, chat_body, wait_for};
use quartermaster::integrations::stripe::signature::sign;
use quartermaster::store::{Store, on_pool};
use serde_json::{Value, json};

const SECRET_OLD: &str = "whsec_old_rotation_secret";
const SECRET_NEW: &str = "whsec_new_rotation_secret";
const ADMIN: &str = "adm_test_key";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn extra(stripe_url: &str, more: &str) -> String {
    format!(
        "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 2\n\
         [auth]\nkey_cache_ttl_ms = 0\n\
         [admin]\napi_key = \"{ADMIN}\"\n\
         [stripe]\nwebhook_secrets = [\"{SECRET_OLD}\", \"{SECRET_NEW}\"]\nwebhook_secrets_env = \"QM_TEST_UNSET_VAR\"\n\
         api_base = \"{stripe_url}\"\nsecret_key = \"sk_test_mock\"\nmeter_interval_secs = 1\nmeter_settle_secs = 0\n\
         [jobs]\npoll_interval_ms = 50\nbackoff_base_ms = 20\nbackoff_max_ms = 100\nmax_attempts = 3\nlease_ms = 1000\n\
         [billing]\ngrace_period_secs = 2\nreminder_offsets_secs = [0]\nlimited_models = [\"mock-no-usage\"]\n{more}"
    )
}

async fn spawn(stripe: &MockStripe) -> TestApp {
    TestApp::spawn_with(Options::extra(&extra(&stripe.url, ""))).await
}

async fn spawn_on(stripe: &MockStripe, db_url: Option<String>) -> TestApp {
    TestApp::spawn_with(Options {
        extra: extra(&stripe.url, ""),
        db_url,
        config_file: false,
    })
    .await
}

async fn deliver_signed(app: &TestApp, body: &str, header: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/webhooks/stripe", app.url))
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn deliver(app: &TestApp, event: &Value) -> reqwest::Response {
    let body = event.to_string();
    let t = now_secs();
    let header = format!("t={t},v1={}", sign(body.as_bytes(), SECRET_NEW, t));
    deliver_signed(app, &body, &header).await
}

fn event(id: &str, kind: &str, object: Value) -> Value {
    json!({"id": id, "object": "event", "type": kind, "api_version": "2024-06-20",
           "created": now_secs(), "livemode": false, "data": {"object": object}})
}

async fn scalar(store: &Store, sql: &'static str, arg: &str) -> Option<String> {
    on_pool!(store, p => sqlx::query_scalar::<_, Option<String>>(sql).bind(arg).fetch_optional(p).await)
        .unwrap()
        .flatten()
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    on_pool!(store, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await).unwrap()
}

/// Waits until the tenant's `column` reads `expected`.
async fn wait_tenant(store: &Store, name: &str, column: &str, expected: &str) {
    wait_for(10, &format!("{name}.{column} = {expected}"), || async {
        tenant_field(store, name, column).await.as_deref() == Some(expected)
    })
    .await;
}

async fn tenant_field(store: &Store, name: &str, column: &str) -> Option<String> {
    let sql = format!("SELECT CAST({column} AS TEXT) FROM tenants WHERE name = $1");
    on_pool!(store, p => sqlx::query_scalar::<_, Option<String>>(sqlx::AssertSqlSafe(sql.clone()))
        .bind(name).fetch_optional(p).await)
    .unwrap()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_get_400_and_nothing_is_stored() {
    let stripe = MockStripe::start().await;
    let mut app = spawn(&stripe).await;
    let body = event("evt_bad", "invoice.paid", json!({"customer": "cus_x"})).to_string();
    let t = now_secs();
    let good = sign(body.as_bytes(), SECRET_NEW, t);
    let cases = [
        ("missing", None),
        ("empty", Some(String::new())),
        ("malformed", Some("garbage".to_string())),
        ("no v1", Some(format!("t={t},v0={good}"))),
        (
            "wrong secret",
            Some(format!(
                "t={t},v1={}",
                sign(body.as_bytes(), "whsec_wrong", t)
            )),
        ),
        ("other timestamp", Some(format!("t={},v1={good}", t + 1))),
        (
            "stale",
            Some(format!(
                "t={},v1={}",
                t - 301,
                sign(body.as_bytes(), SECRET_NEW, t - 301)
            )),
        ),
    ];
    for (name, header) in cases {
        let mut req = app
            .http
            .post(format!("{}/webhooks/stripe", app.url))
            .body(body.clone());
        if let Some(h) = header {
            req = req.header("stripe-signature", h);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 400, "{name}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "invalid_signature", "{name}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().len() > 20,
            "{name}: {err}"
        );
    }
    // A tampered body with the original's signature.
    let tampered = body.replace("cus_x", "cus_y");
    let resp = deliver_signed(&app, &tampered, &format!("t={t},v1={good}")).await;
    assert_eq!(resp.status(), 400);
    let store = app.store().await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM stripe_events").await, 0);
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM jobs WHERE kind = 'stripe.event'"
        )
        .await,
        0
    );
    // The old secret still verifies during a rotation; a valid signature over a non-event
    // is a clear 400, not a 500.
    let resp = deliver_signed(
        &app,
        "[1,2]",
        &format!("t={t},v1={}", sign(b"[1,2]", SECRET_OLD, t)),
    )
    .await;
    assert_eq!(resp.status(), 400);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simultaneous_duplicates_provision_exactly_once() {
    fifty_duplicates(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simultaneous_duplicates_provision_exactly_once_on_postgres() {
    let Some(db_url) = common::fresh_database().await else {
        return;
    };
    fifty_duplicates(Some(db_url)).await;
}

async fn fifty_duplicates(db_url: Option<String>) {
    let stripe = MockStripe::start().await;
    let mut app = spawn_on(&stripe, db_url).await;
    let checkout = event(
        "evt_checkout_1",
        "checkout.session.completed",
        json!({"id": "cs_1", "object": "checkout.session", "mode": "payment", "amount_total": 5000,
               "currency": "usd", "client_reference_id": "tenant-new", "customer": "cus_new",
               "customer_details": {"email": "Buyer@Tenant-New.test"}}),
    );
    let body = checkout.to_string();
    let t = now_secs();
    let header = format!("t={t},v1={}", sign(body.as_bytes(), SECRET_OLD, t));
    let sends = (0..50).map(|_| deliver_signed(&app, &body, &header));
    let responses = futures::future::join_all(sends).await;
    let mut fresh = 0;
    for r in responses {
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        if v["duplicate"] == false {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one delivery is the first");
    let store = app.store().await;
    wait_for(10, "checkout processed", || async {
        scalar(
            &store,
            "SELECT CAST(processed_at AS TEXT) FROM stripe_events WHERE id = $1",
            "evt_checkout_1",
        )
        .await
        .is_some()
    })
    .await;
    // A late redelivery changes nothing either.
    assert_eq!(deliver(&app, &checkout).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One receipt, in the app and in the outbox (written with the provisioning; no email
    // provider is configured here, so it is kept as `unsent`), to the address paid with,
    // which became the tenant's contact.
    let receipts: Vec<(String, String, String)> = quartermaster::store::on_pool!(&store, p => sqlx::query_as(
        "SELECT to_addr, subject, state FROM email_outbox WHERE template = 'receipt'").fetch_all(p).await)
    .unwrap();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0].0, "buyer@tenant-new.test");
    assert_eq!(receipts[0].1, "Receipt for tenant-new: 50.00 USD");
    wait_for(10, "the receipt settles", || async {
        scalar(
            &store,
            "SELECT state FROM email_outbox WHERE template = $1",
            "receipt",
        )
        .await
        .as_deref()
            == Some("unsent")
    })
    .await;
    assert_eq!(
        tenant_field(&store, "tenant-new", "contact_email")
            .await
            .as_deref(),
        Some("buyer@tenant-new.test")
    );
    assert_eq!(
        tenant_field(&store, "tenant-new", "credit_cents")
            .await
            .as_deref(),
        Some("5000")
    );
    assert_eq!(
        tenant_field(&store, "tenant-new", "stripe_customer_id")
            .await
            .as_deref(),
        Some("cus_new")
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM stripe_events").await, 1);
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM jobs WHERE kind = 'stripe.event'"
        )
        .await,
        1
    );
    // Visible to operators.
    let tenants = app.get_json_as("/admin/tenants", ADMIN).await;
    let t = tenants["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "tenant-new")
        .unwrap();
    assert_eq!(t["credit_cents"], 5000);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dunning_limits_after_grace_and_payment_restores() {
    let stripe = MockStripe::start().await;
    let mut app = spawn(&stripe).await;
    let store = app.store().await;
    // The test key's tenant subscribes.
    let sub = event(
        "evt_sub_checkout",
        "checkout.session.completed",
        json!({"mode": "subscription", "client_reference_id": "tenant-a", "customer": "cus_a",
               "subscription": "sub_a", "metadata": {"plan": "team"}}),
    );
    assert_eq!(deliver(&app, &sub).await.status(), 200);
    wait_tenant(&store, "tenant-a", "plan", "team").await;
    assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 200);

    let failed = event(
        "evt_inv_failed",
        "invoice.payment_failed",
        json!({"customer": "cus_a", "id": "in_1"}),
    );
    assert_eq!(deliver(&app, &failed).await.status(), 200);
    wait_tenant(&store, "tenant-a", "billing_status", "past_due").await;
    // Still served during the grace period (2 s here)...
    assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 200);
    // ...a reminder goes to the outbox, then the tenant is limited.
    wait_for(10, "reminder", || async {
        count(
            &store,
            "SELECT COUNT(*) FROM notifications WHERE kind = 'dunning_reminder'",
        )
        .await
            == 1
    })
    .await;
    wait_tenant(&store, "tenant-a", "billing_status", "limited").await;
    let resp = app.chat(chat_body("mock-ok", false)).await;
    assert_eq!(resp.status(), 402);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "payment_required");
    assert_eq!(err["error"]["type"], "billing_error");
    // The cheap model stays available.
    assert_eq!(
        app.chat(chat_body("mock-no-usage", false)).await.status(),
        200
    );

    let paid = event(
        "evt_inv_paid",
        "invoice.paid",
        json!({"customer": "cus_a", "id": "in_1"}),
    );
    assert_eq!(deliver(&app, &paid).await.status(), 200);
    wait_tenant(&store, "tenant-a", "billing_status", "active").await;
    assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 200);

    // Plan changes from subscription events; deletion returns to free.
    let updated = event(
        "evt_sub_updated",
        "customer.subscription.updated",
        json!({"id": "sub_a", "customer": "cus_a", "status": "active",
               "items": {"data": [{"price": {"id": "price_1", "lookup_key": "enterprise"}}]}}),
    );
    assert_eq!(deliver(&app, &updated).await.status(), 200);
    wait_tenant(&store, "tenant-a", "plan", "enterprise").await;
    let deleted = event(
        "evt_sub_deleted",
        "customer.subscription.deleted",
        json!({"id": "sub_a", "customer": "cus_a", "status": "canceled"}),
    );
    assert_eq!(deliver(&app, &deleted).await.status(), 200);
    wait_tenant(&store, "tenant-a", "plan", "free").await;

    // Unhandled types: acknowledged, stored as ignored, no job.
    let other = event("evt_other", "customer.created", json!({"id": "cus_z"}));
    let resp = deliver(&app, &other).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["handled"], false);
    assert_eq!(
        scalar(
            &store,
            "SELECT outcome FROM stripe_events WHERE id = $1",
            "evt_other"
        )
        .await
        .as_deref(),
        Some("ignored: unhandled event type")
    );
    app.shutdown().await;
}

/// Links the test tenant to a Stripe customer directly in the store.
async fn link_customer(store: &Store, tenant: &str, customer: &str) {
    on_pool!(store, p => sqlx::query("UPDATE tenants SET stripe_customer_id = $1 WHERE name = $2")
        .bind(customer).bind(tenant).execute(p).await.map(|_| ()))
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_metered_to_stripe_with_idempotency_keys() {
    let stripe = MockStripe::start().await;
    let mut app = spawn(&stripe).await;
    let store = app.store().await;
    link_customer(&store, "tenant-a", "cus_meter").await;
    for _ in 0..3 {
        assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 200);
    }
    wait_for(10, "request log written", || async {
        count(&store, "SELECT COUNT(*) FROM request_log").await == 3
    })
    .await;
    let logged = count(
        &store,
        "SELECT CAST(COALESCE(SUM(tokens_in + tokens_out), 0) AS BIGINT) FROM request_log",
    )
    .await;
    assert!(logged > 0);
    wait_for(15, "meter events totalling the logged tokens", || async {
        let total: i64 = stripe
            .events()
            .iter()
            .map(|e| {
                e["payload"]["value"]
                    .as_str()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
            })
            .sum();
        total == logged
    })
    .await;
    for call in stripe.calls() {
        assert_eq!(call.authorization.as_deref(), Some("Bearer sk_test_mock"));
        assert_eq!(call.form["event_name"], "quartermaster_tokens");
        assert_eq!(call.form["payload[stripe_customer_id]"], "cus_meter");
        assert_eq!(
            call.idempotency_key.as_deref(),
            Some(call.form["identifier"].as_str())
        );
        assert!(call.form["identifier"].starts_with("qm_"));
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_jobs_go_to_the_dead_letter_queue_and_can_be_redriven() {
    let stripe = MockStripe::start().await;
    stripe.set_mode(mock_stripe::FAIL);
    let mut app = spawn(&stripe).await;
    let store = app.store().await;
    link_customer(&store, "tenant-a", "cus_dlq").await;
    assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 200);
    // 3 attempts with backoff, then dead.
    wait_for(10, "a dead letter", || async {
        let dead = app.get_json_as("/admin/jobs/dead", ADMIN).await;
        dead["data"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    let dead = app.get_json_as("/admin/jobs/dead", ADMIN).await;
    let job = &dead["data"][0];
    assert_eq!(job["kind"], "stripe.meter_usage", "{dead}");
    assert_eq!(job["attempts"], 3);
    assert!(job["last_error"].as_str().unwrap().contains("500"), "{job}");
    assert!(stripe.calls().len() >= 3);

    // The admin API needs the admin key.
    let anon = app
        .http
        .get(format!("{}/admin/jobs/dead", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let tenant_key = app.get("/admin/jobs/dead").send().await.unwrap();
    assert_eq!(
        tenant_key.status(),
        401,
        "a tenant's API key is not an admin key"
    );

    stripe.set_mode(mock_stripe::OK);
    let id = job["id"].as_str().unwrap().to_string();
    let resp = app
        .post_as(&format!("/admin/jobs/{id}/redrive"), ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_for(10, "redriven job done", || async {
        app.get_json_as(&format!("/admin/jobs/{id}"), ADMIN).await["status"] == "done"
    })
    .await;
    assert!(!stripe.events().is_empty());
    let resp = app
        .post_as("/admin/jobs/nope/redrive", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let store = app.store().await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM stripe_events").await, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_reject_and_release() {
    let stripe = MockStripe::start().await;
    let mut app = spawn(&stripe).await;
    let post = |key: &str, body: &Value| {
        app.post("/v1/chat/completions")
            .header("Idempotency-Key", key)
            .json(body)
    };
    // Non-streaming: replayed byte for byte, upstream called once.
    let body = chat_body("mock-ok", false);
    let first = post("k1", &body).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["idempotent-replayed"], "false");
    let first_text = first.text().await.unwrap();
    let calls = app.mock.calls();
    let second = post("k1", &body).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.text().await.unwrap(), first_text);
    assert_eq!(
        app.mock.calls(),
        calls,
        "a replay does not reach the upstream"
    );

    // Same key, different body: 422.
    let other = post("k1", &chat_body("mock-no-usage", false))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 422);
    let err: Value = other.json().await.unwrap();
    assert_eq!(err["error"]["code"], "idempotency_key_reused");

    // Streaming: the whole SSE body is stored once finished and replayed.
    let sbody = chat_body("mock-ok", true);
    let s1 = post("k2", &sbody)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(s1.ends_with("data: [DONE]\n\n"), "{s1}");
    let s2 = post("k2", &sbody).send().await.unwrap();
    assert_eq!(s2.headers()["content-type"], "text/event-stream");
    assert_eq!(s2.text().await.unwrap(), s1);

    // While the first is running: 409.
    let slow = chat_body("mock-slow", true);
    let running = post("k3", &slow).send().await.unwrap();
    assert_eq!(running.status(), 200);
    let busy = post("k3", &slow).send().await.unwrap();
    assert_eq!(busy.status(), 409);
    assert_eq!(
        busy.json::<Value>().await.unwrap()["error"]["code"],
        "idempotency_key_in_use"
    );
    // The client hangs up mid-stream: the key is released and a retry runs.
    drop(running);
    let store = app.store().await;
    wait_for(5, "an abandoned stream releases its key", || async {
        scalar(
            &store,
            "SELECT state FROM idempotency_keys WHERE idem_key = $1",
            "k3",
        )
        .await
        .is_none()
    })
    .await;

    // Failures are not stored: the retry reaches the upstream again.
    let mut seen = vec![app.mock.calls()];
    for _ in 0..2 {
        let status = post("k4", &chat_body("mock-500", false))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_server_error(), "{status}");
        seen.push(app.mock.calls());
    }
    assert!(seen[0] < seen[1] && seen[1] < seen[2], "{seen:?}");
    // A stream that ended in an error event is not stored either.
    let f1 = post("k5", &chat_body("mock-fail-mid", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(f1.contains("\"error\""), "{f1}");
    let f2 = post("k5", &chat_body("mock-fail-mid", true))
        .send()
        .await
        .unwrap();
    assert_eq!(f2.headers()["idempotent-replayed"], "false");

    // Keys belong to a tenant: another tenant's identical key runs on its own.
    let other_key = quartermaster::auth::create_key(&app.store().await, "tenant-b", "t")
        .await
        .unwrap()
        .secret;
    let b = app
        .post_as("/v1/chat/completions", &other_key)
        .header("Idempotency-Key", "k1")
        .json(&chat_body("mock-no-usage", false))
        .send()
        .await
        .unwrap();
    assert_eq!(b.status(), 200);
    assert_eq!(b.headers()["idempotent-replayed"], "false");

    // A malformed key is a 400 in the API's shape.
    let bad = post("bad key with spaces", &body).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_is_disabled_without_a_key() {
    let mut app = TestApp::spawn().await;
    let resp = app
        .get_as("/admin/jobs/dead", "anything")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "admin_disabled");
    // Webhooks without a configured secret: 404 in the API's shape, nothing stored.
    let resp = app
        .http
        .post(format!("{}/webhooks/stripe", app.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let store = app.store().await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM stripe_events").await, 0);
    app.shutdown().await;
}

async fn pay(app: &TestApp, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = app.post(path).json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A payment call that must succeed (with `key` as its Idempotency-Key); its body.
async fn pay_ok(app: &TestApp, path: &str, key: &str, body: Value) -> Value {
    let (status, v) = pay(app, path, Some(key), body).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// A payment call that must fail with `status` and the error `code`; its error body.
async fn pay_fails(
    app: &TestApp,
    path: &str,
    key: Option<&str>,
    body: Value,
    status: u16,
    code: &str,
) -> Value {
    let (got, e) = pay(app, path, key, body).await;
    assert_eq!(
        (got, e["error"]["code"].as_str()),
        (status, Some(code)),
        "{path}: {e}"
    );
    e
}

/// Starting payments against a mock Stripe that keeps Stripe's idempotency rules: a dropped
/// connection retried with the client's key gets the object Stripe made the first time (one
/// created), the same key with another body is Stripe's `idempotency_error`; card, rate-limit
/// and missing-account errors are clear; the plan change is prorated; the webhook for a
/// credit pack paid with Elements adds the credit (Checkout's own intents do not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_start_with_idempotency_keys_stripe_honours() {
    let stripe = MockStripe::start().await;
    let config = extra(
        &stripe.url,
        "[stripe.plans]\nprice_pro = \"pro\"\nprice_team = \"team\"\nteam_lookup = \"team\"\n\
         [stripe.credit_packs.small]\namount = 1000\nname = \"10 USD of credit\"\n\
         [stripe.credit_packs.big]\namount = 5000\n",
    )
    .replace(
        "meter_settle_secs = 0\n",
        "meter_settle_secs = 0\ntimeout_ms = 800\nsuccess_url = \"https://app.test/ok\"\n\
         cancel_url = \"https://app.test/cancel\"\nportal_return_url = \"https://app.test/account\"\n",
    );
    let mut app = TestApp::spawn_with(Options::extra(&config)).await;
    let store = app.store().await;

    const CHECKOUT: &str = "/v1/billing/checkout";
    const INTENTS: &str = "/v1/billing/payment-intents";
    const PORTAL: &str = "/v1/billing/portal";
    const PLAN: &str = "/v1/billing/subscription";

    // The client's Idempotency-Key is required.
    pay_fails(
        &app,
        CHECKOUT,
        None,
        json!({"plan": "pro"}),
        400,
        "idempotency_key_required",
    )
    .await;

    // A subscription checkout: the plan's price, the tenant as the reference.
    let session = pay_ok(&app, CHECKOUT, "k-sub", json!({"plan": "pro"})).await;
    assert!(
        session["id"].as_str().unwrap().starts_with("cs_test_"),
        "{session}"
    );
    assert!(
        session["url"]
            .as_str()
            .unwrap()
            .starts_with("https://checkout.stripe.test/")
    );
    let form = stripe.created()[0]["form"].clone();
    assert_eq!(form["mode"], "subscription");
    assert_eq!(form["line_items[0][price]"], "price_pro");
    assert_eq!(form["client_reference_id"], "tenant-a");
    assert_eq!(form["success_url"], "https://app.test/ok");
    let sent_key = stripe.state.payment_calls.lock().unwrap()[0]
        .1
        .clone()
        .expect("an Idempotency-Key to Stripe");
    assert!(
        sent_key.starts_with("qm_checkout_") && !sent_key.contains("k-sub"),
        "{sent_key}"
    );

    let e = pay_fails(
        &app,
        CHECKOUT,
        Some("k-bad"),
        json!({"plan": "gold"}),
        400,
        "invalid_request",
    )
    .await;
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pro, team"),
        "{e}"
    );
    let both = json!({"plan": "pro", "pack": "small"});
    pay_fails(&app, CHECKOUT, Some("k-both"), both, 400, "invalid_request").await;

    // A dropped connection: Stripe made the session but its answer never came (504); the
    // client's retry with its key gets that same session back, and Stripe made one.
    stripe.stall_next_payment();
    let small = json!({"pack": "small"});
    pay_fails(
        &app,
        CHECKOUT,
        Some("k-pack"),
        small.clone(),
        504,
        "upstream_timeout",
    )
    .await;
    let before = stripe.created().len();
    let retried = pay_ok(&app, CHECKOUT, "k-pack", small.clone()).await;
    assert_eq!(stripe.created().len(), before, "the retry created nothing");
    let first = &stripe.created()[before - 1];
    assert_eq!(
        retried["id"], first["object"]["id"],
        "the same session back"
    );
    assert_eq!(first["form"]["mode"], "payment");
    assert_eq!(
        first["form"]["line_items[0][price_data][unit_amount]"],
        "1000"
    );

    // The same key after a dropped connection, with another body: Stripe's 400, passed on.
    stripe.stall_next_payment();
    pay_fails(
        &app,
        CHECKOUT,
        Some("k-swap"),
        small.clone(),
        504,
        "upstream_timeout",
    )
    .await;
    let big = json!({"pack": "big"});
    pay_fails(
        &app,
        CHECKOUT,
        Some("k-swap"),
        big.clone(),
        422,
        "idempotency_key_reused",
    )
    .await;

    // A PaymentIntent for Elements: only the client secret comes back.
    let pi = pay_ok(&app, INTENTS, "k-pi", small.clone()).await;
    let keys: Vec<&String> = pi.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["client_secret", "object"], "{pi}");
    assert!(pi["client_secret"].as_str().unwrap().contains("_secret_"));
    let intent = stripe.last_created();
    assert_eq!(intent["form"]["amount"], "1000");
    assert_eq!(intent["form"]["metadata[qm_credit]"], "elements");
    assert_eq!(intent["form"]["automatic_payment_methods[enabled]"], "true");

    // Stripe's errors, clearly.
    for (mode, key, status, code) in [
        (mock_stripe::DECLINE, "k-decl", 402, "card_declined"),
        (
            mock_stripe::RATE_LIMIT,
            "k-rl",
            429,
            "payment_provider_rate_limited",
        ),
        (mock_stripe::FAIL, "k-500", 502, "payment_provider_error"),
    ] {
        stripe.set_mode(mode);
        let e = pay_fails(&app, INTENTS, Some(key), big.clone(), status, code).await;
        if mode == mock_stripe::DECLINE {
            assert!(
                e["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("insufficient funds"),
                "{e}"
            );
        }
    }
    stripe.set_mode(mock_stripe::OK);
    let huge = json!({"pack": "huge"});
    pay_fails(
        &app,
        INTENTS,
        Some("k-nopack"),
        huge,
        400,
        "invalid_request",
    )
    .await;

    // The portal needs a Stripe customer.
    pay_fails(
        &app,
        PORTAL,
        Some("k-portal0"),
        json!({}),
        409,
        "no_billing_account",
    )
    .await;
    link_customer(&store, "tenant-a", "cus_pay_1").await;
    let portal = pay_ok(&app, PORTAL, "k-portal", json!({})).await;
    assert!(
        portal["url"]
            .as_str()
            .unwrap()
            .starts_with("https://billing.stripe.test/")
    );
    let form = stripe.last_created()["form"].clone();
    assert_eq!(form["customer"], "cus_pay_1");
    assert_eq!(form["return_url"], "https://app.test/account");

    // An upgrade: the subscription's item moves to the plan's price, prorated by Stripe.
    let team = json!({"plan": "team"});
    pay_fails(
        &app,
        PLAN,
        Some("k-up0"),
        team.clone(),
        409,
        "no_billing_account",
    )
    .await;
    on_pool!(&store, p => sqlx::query("UPDATE tenants SET stripe_subscription_id = 'sub_pay_1' WHERE name = 'tenant-a'")
        .execute(p).await.map(|_| ()))
    .unwrap();
    // A second subscription is refused.
    pay_fails(
        &app,
        CHECKOUT,
        Some("k-sub2"),
        team.clone(),
        400,
        "invalid_request",
    )
    .await;
    let up = pay_ok(&app, PLAN, "k-up", team.clone()).await;
    assert_eq!(up["plan"], "team");
    let update = stripe.last_created();
    assert_eq!(update["path"], "/v1/subscriptions/sub_pay_1");
    assert_eq!(update["form"]["items[0][id]"], "si_mock_1");
    assert_eq!(update["form"]["items[0][price]"], "price_team");
    assert_eq!(update["form"]["proration_behavior"], "create_prorations");
    // The gateway's own idempotency replays a completed call without reaching Stripe.
    let calls_before = stripe.payment_calls();
    let r = app
        .post(PLAN)
        .header("Idempotency-Key", "k-up")
        .json(&team)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(stripe.payment_calls(), calls_before);

    // The webhook closes the loop: a credit pack paid with Elements adds its credit once;
    // an intent Checkout made (not marked) adds nothing.
    let paid = json!({"id": "pi_test_9", "object": "payment_intent", "amount_received": 1000,
        "customer": "cus_pay_1", "metadata": {"tenant": "tenant-a", "pack": "small", "qm_credit": "elements"}});
    assert_eq!(
        deliver(&app, &event("evt_pi_1", "payment_intent.succeeded", paid))
            .await
            .status(),
        200
    );
    let checkout_pi = json!({"id": "pi_test_10", "object": "payment_intent", "amount_received": 5000,
        "customer": "cus_pay_1", "metadata": {}});
    assert_eq!(
        deliver(
            &app,
            &event("evt_pi_2", "payment_intent.succeeded", checkout_pi)
        )
        .await
        .status(),
        200
    );
    wait_for(10, "both events processed", || async {
        count(
            &store,
            "SELECT COUNT(*) FROM stripe_events WHERE processed_at IS NOT NULL",
        )
        .await
            == 2
    })
    .await;
    let status: Value = app.get_json("/v1/billing").await;
    assert_eq!(status["credit_cents"], 1000, "{status}");
    assert_eq!(status["has_subscription"], true);
    // A pack paid with a delayed method: the session completes unpaid (no credit); the
    // credit comes with async_payment_succeeded.
    let unpaid = json!({"id": "cs_delayed", "object": "checkout.session", "mode": "payment",
        "payment_status": "unpaid", "amount_total": 2500, "client_reference_id": "tenant-a", "customer": "cus_pay_1"});
    let r = deliver(
        &app,
        &event("evt_cs_1", "checkout.session.completed", unpaid.clone()),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut paid = unpaid;
    paid["payment_status"] = json!("paid");
    let r = deliver(
        &app,
        &event("evt_cs_2", "checkout.session.async_payment_succeeded", paid),
    )
    .await;
    assert_eq!(r.status(), 200);
    wait_for(10, "the delayed payment's events processed", || async {
        count(
            &store,
            "SELECT COUNT(*) FROM stripe_events WHERE processed_at IS NOT NULL",
        )
        .await
            == 4
    })
    .await;
    let status: Value = app.get_json("/v1/billing").await;
    assert_eq!(
        status["credit_cents"], 3500,
        "credited once, when paid: {status}"
    );
    app.shutdown().await;
}

/// Without a Stripe key the payment endpoints say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_need_a_stripe_key() {
    let mut app = TestApp::spawn_with(Options::extra("[rate_limit]\nenabled = false\n")).await;
    let (s, e) = pay(
        &app,
        "/v1/billing/checkout",
        Some("k1"),
        json!({"pack": "small"}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("billing_not_configured")),
        "{e}"
    );
    app.shutdown().await;
}
