//! Communications end to end: emails written with the events that cause them and sent by
//! jobs through a local Resend (outage, 429 with Retry-After, refusal), delivery webhooks
//! signed by the providers' own libraries (svix; SendGrid's verifier) feeding the
//! suppression list, Postmark's basic auth, Cal.com bookings, digests, the notification
//! centre and its live stream (across two replicas on PostgreSQL).

use crate::common::mock_email::MockEmail;
use crate::common::{Options, TestApp, fresh_database, node_script, wait_for};

use std::time::{Duration, Instant};

use quartermaster::integrations::signatures::hex_hmac;
use quartermaster::notify::{self, Notice, Priority};
use quartermaster::store::{Store, on_pool};
use serde_json::{Value, json};

const ADMIN: &str = "adm-comms";
/// A `whsec_` secret (base64 of 24 bytes).
const RESEND_SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3";
const CAL_SECRET: &str = "cal-secret";

fn config(mock: &MockEmail, extra: &str) -> String {
    format!(
        "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 2\n[admin]\napi_key = \"{ADMIN}\"\n\
         [jobs]\npoll_interval_ms = 50\nbackoff_base_ms = 100\nbackoff_max_ms = 300\n\
         [email]\nprovider = \"resend\"\nbase_url = \"{}\"\napi_key = \"re_test\"\nfrom = \"QM <noreply@qm.test>\"\n\
         [email.webhooks]\nresend_secrets = [\"{RESEND_SECRET}\"]\npostmark_basic_auth = [\"pm:hook-secret\"]\n{extra}\n\
         [cal.sources.cal]\nsecrets = [\"{CAL_SECRET}\"]\ntenant = \"tenant-a\"\n",
        mock.url
    )
}

#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    to_addr: String,
    template: String,
    state: String,
}

async fn outbox(store: &Store) -> Vec<OutboxRow> {
    on_pool!(store, p => sqlx::query_as::<_, OutboxRow>(
        "SELECT to_addr, template, state FROM email_outbox ORDER BY id").fetch_all(p).await)
    .unwrap()
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    on_pool!(store, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await).unwrap()
}

async fn new_key(app: &TestApp, body: Value) -> Value {
    let r = app
        .post_as("/admin/keys", ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Headers for `body` signed by the provider's own library.
async fn signed(provider: &str, body: &str, env: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
    let mut all = vec![("QM_PROVIDER", provider), ("QM_BODY", body)];
    all.extend_from_slice(env);
    let out = node_script("email_webhooks_sign.mjs", &all).await?;
    let v: Value = serde_json::from_str(&out).unwrap();
    Some(
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect(),
    )
}

async fn post_signed(
    app: &TestApp,
    path: &str,
    body: &str,
    headers: &[(String, String)],
) -> reqwest::Response {
    // No API key: a webhook's signature is its authentication.
    let mut r = app
        .http
        .post(format!("{}{path}", app.url))
        .header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(k, v);
    }
    r.body(body.to_string()).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_go_out_once_through_failures_and_respect_suppression() {
    let mock = MockEmail::start().await;
    let app = TestApp::spawn_with(Options::extra(&config(&mock, ""))).await;
    let store = app.store().await;
    let r = app
        .http
        .put(format!("{}/admin/tenants/tenant-a/contact", app.url))
        .bearer_auth(ADMIN)
        .json(&json!({"email": "Ops@Tenant-A.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .put(format!("{}/admin/tenants/tenant-a/contact", app.url))
        .bearer_auth(ADMIN)
        .json(&json!({"email": "not an address"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // An outage, then a 429 with Retry-After: 1, then the send: one email.
    mock.fail_next(&[(503, None), (429, Some("1"))]);
    new_key(&app, json!({"tenant": "tenant-a", "name": "ci"})).await;
    wait_for(20, "the key email is sent", || async {
        outbox(&store)
            .await
            .iter()
            .any(|r| r.template == "key_created" && r.state == "sent")
    })
    .await;
    let calls = mock.calls();
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [503, 429, 200]
    );
    assert!(
        calls.iter().all(|c| c.key == calls[0].key),
        "one idempotency key"
    );
    assert!(
        calls[2].at - calls[1].at >= Duration::from_millis(950),
        "Retry-After honoured: {:?}",
        calls[2].at - calls[1].at
    );
    assert_eq!(calls[2].to, "ops@tenant-a.test");
    assert_eq!(calls[2].subject, "A new API key for tenant-a: ci");
    assert_eq!(calls[2].auth, "Bearer re_test");
    assert_eq!(mock.delivered().len(), 1);

    // Resend says the address bounced hard (signed by svix): suppressed.
    let bounce = json!({"type": "email.bounced", "created_at": "2026-12-06T10:00:00.000Z",
        "data": {"email_id": "re_0", "to": ["ops@tenant-a.test"], "bounce": {"type": "Permanent", "message": "mailbox does not exist"}}})
    .to_string();
    let Some(headers) = signed(
        "resend",
        &bounce,
        &[("QM_SECRET", RESEND_SECRET), ("QM_ID", "msg_bounce_1")],
    )
    .await
    else {
        return;
    };
    let r = post_signed(&app, "/webhooks/email/resend", &bounce, &headers).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["new"].as_i64(), v["suppressed"].as_i64()),
        (Some(1), Some(1))
    );
    // The same delivery again: recorded once.
    let v: Value = post_signed(&app, "/webhooks/email/resend", &bounce, &headers)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["new"], 0);
    // A body changed after signing: 400, nothing stored.
    let forged = bounce.replace("ops@tenant-a.test", "someone@else.test");
    let r = post_signed(&app, "/webhooks/email/resend", &forged, &headers).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_signature"
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM email_events").await, 1);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM email_suppressions").await,
        1
    );

    // The next email to that address is not sent.
    new_key(&app, json!({"tenant": "tenant-a", "name": "second"})).await;
    wait_for(10, "the second key email is settled", || async {
        outbox(&store)
            .await
            .iter()
            .filter(|r| r.template == "key_created")
            .any(|r| r.state == "suppressed")
    })
    .await;
    assert_eq!(
        mock.calls().len(),
        3,
        "nothing sent to a suppressed address"
    );
    let list = app.get_json_as("/admin/email/suppressions", ADMIN).await;
    assert_eq!(list["data"][0]["reason"], "hard_bounce");

    // Taken off the list, and a refusal (422): final, not retried.
    let r = app
        .http
        .delete(format!(
            "{}/admin/email/suppressions/ops@tenant-a.test",
            app.url
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    mock.fail_next(&[(422, None)]);
    new_key(&app, json!({"tenant": "tenant-a", "name": "third"})).await;
    wait_for(10, "the refused email is settled", || async {
        outbox(&store).await.iter().any(|r| r.state == "rejected")
    })
    .await;
    new_key(&app, json!({"tenant": "tenant-a", "name": "fourth"})).await;
    wait_for(10, "the fourth key email is sent", || async {
        outbox(&store)
            .await
            .iter()
            .filter(|r| r.state == "sent")
            .count()
            == 2
    })
    .await;
    assert_eq!(mock.calls().len(), 5, "the refusal was not retried");
    let rejected = app
        .get_json_as("/admin/email/outbox?state=rejected", ADMIN)
        .await;
    assert_eq!(rejected["data"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendgrid_and_postmark_delivery_events() {
    use base64::Engine;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    let b64 = base64::engine::general_purpose::STANDARD;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    spki.extend_from_slice(pair.public_key().as_ref());
    let public = b64.encode(&spki);
    let mock = MockEmail::start().await;
    let app = TestApp::spawn_with(Options::extra(&config(
        &mock,
        &format!("sendgrid_public_keys = [\"{public}\"]"),
    )))
    .await;
    let store = app.store().await;

    let batch = json!([
        {"email": "gone@example.com", "timestamp": 1765000000, "event": "bounce", "type": "bounce", "sg_event_id": "sg_1", "sg_message_id": "m1"},
        {"email": "full@example.com", "timestamp": 1765000000, "event": "bounce", "type": "blocked", "sg_event_id": "sg_2"},
        {"email": "ok@example.com", "timestamp": 1765000000, "event": "delivered", "sg_event_id": "sg_3"},
        {"email": "angry@example.com", "timestamp": 1765000000, "event": "spamreport", "sg_event_id": "sg_4"}
    ])
    .to_string();
    let pkcs8_b64 = b64.encode(pkcs8.as_ref());
    let Some(headers) = signed(
        "sendgrid",
        &batch,
        &[("QM_PKCS8", &pkcs8_b64), ("QM_PUBLIC_KEY", &public)],
    )
    .await
    else {
        return;
    };
    let r = post_signed(&app, "/webhooks/email/sendgrid", &batch, &headers).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (
            v["events"].as_i64(),
            v["new"].as_i64(),
            v["suppressed"].as_i64()
        ),
        (Some(4), Some(4), Some(2))
    );
    // A signature over another body, and a stale one: refused.
    let r = post_signed(
        &app,
        "/webhooks/email/sendgrid",
        &batch.replace("sg_4", "sg_5"),
        &headers,
    )
    .await;
    assert_eq!(r.status(), 400);
    let stale_ts = (quartermaster::clock::now_ms() / 1000 - 3600).to_string();
    let Some(stale) = signed(
        "sendgrid",
        &batch,
        &[
            ("QM_PKCS8", &pkcs8_b64),
            ("QM_PUBLIC_KEY", &public),
            ("QM_TIMESTAMP", &stale_ts),
        ],
    )
    .await
    else {
        return;
    };
    assert_eq!(
        post_signed(&app, "/webhooks/email/sendgrid", &batch, &stale)
            .await
            .status(),
        400
    );

    // Postmark: basic auth on the URL; a complaint suppresses, a soft bounce does not.
    let complaint = json!({"RecordType": "SpamComplaint", "ID": 42, "MessageID": "pm-1", "Email": "Spam@Example.com", "MessageStream": "outbound"}).to_string();
    let soft = json!({"RecordType": "Bounce", "ID": 43, "Type": "SoftBounce", "MessageID": "pm-2", "Email": "soft@example.com"}).to_string();
    let auth = |user: &str| {
        vec![(
            "authorization".to_string(),
            format!("Basic {}", b64.encode(user)),
        )]
    };
    for body in [&complaint, &soft] {
        let r = post_signed(
            &app,
            "/webhooks/email/postmark",
            body,
            &auth("pm:hook-secret"),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let r = post_signed(
        &app,
        "/webhooks/email/postmark",
        &complaint,
        &auth("pm:wrong"),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post_signed(
        &app,
        "/webhooks/email/nobody",
        &complaint,
        &auth("pm:hook-secret"),
    )
    .await;
    assert_eq!(r.status(), 404);
    let suppressed: Vec<String> = on_pool!(&store, p => sqlx::query_scalar(
        "SELECT address FROM email_suppressions ORDER BY address").fetch_all(p).await)
    .unwrap();
    assert_eq!(
        suppressed,
        ["angry@example.com", "gone@example.com", "spam@example.com"]
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM email_events").await, 6);
}

fn cal_event(trigger: &str, uid: &str, created_at: &str, start: &str) -> String {
    json!({
        "triggerEvent": trigger, "createdAt": created_at,
        "payload": {"uid": uid, "title": "Intro call", "startTime": start, "endTime": "2026-12-20T16:00:00+01:00",
                    "organizer": {"email": "sales@tenant-a.test", "name": "Sales", "timeZone": "Europe/Paris"},
                    "attendees": [{"name": "Ana", "email": "Ana@Customer.test", "timeZone": "America/New_York"}]}
    })
    .to_string()
}

async fn post_cal(app: &TestApp, body: &str, secret: &str) -> reqwest::Response {
    app.post("/webhooks/cal")
        .header("content-type", "application/json")
        .header(
            "x-cal-signature-256",
            hex_hmac::sign(body.as_bytes(), secret.as_bytes()),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cal_bookings_are_stored_once_and_confirmed() {
    let mock = MockEmail::start().await;
    let app = TestApp::spawn_with(Options::extra(&config(&mock, ""))).await;
    let store = app.store().await;
    let now = jiff::Timestamp::now();
    let at = |mins: i64| (now - jiff::SignedDuration::from_mins(mins)).to_string();
    let created = cal_event(
        "BOOKING_CREATED",
        "bk_1",
        &at(30),
        "2026-12-20T15:30:00+01:00",
    );
    let r = post_cal(&app, &created, CAL_SECRET).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["handled"].as_bool(), v["duplicate"].as_bool()),
        (Some(true), Some(false))
    );
    let again: Value = post_cal(&app, &created, CAL_SECRET)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["duplicate"], true);

    let list = app
        .get_json_as("/admin/bookings?tenant=tenant-a", ADMIN)
        .await;
    let b = &list["data"][0];
    assert_eq!(b["start_utc"], "2026-12-20T14:30:00Z", "stored in UTC");
    assert_eq!(
        b["attendee_tz"], "America/New_York",
        "the attendee's zone kept"
    );
    assert_eq!(b["status"], "confirmed");
    wait_for(10, "the confirmation is sent", || async {
        outbox(&store)
            .await
            .iter()
            .any(|r| r.template == "booking_confirmation" && r.state == "sent")
    })
    .await;
    let confirmation = mock
        .calls()
        .into_iter()
        .find(|c| c.to == "ana@customer.test")
        .unwrap();
    assert_eq!(confirmation.subject, "Confirmed: Intro call");
    let delivered = mock.delivered();
    let text = delivered
        .values()
        .find(|v| v["email"]["to"][0] == "ana@customer.test")
        .unwrap()["email"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains("Sun 20 Dec 2026, 09:30 EST"),
        "in the attendee's time: {text}"
    );
    // The tenant's notification (in the app: the tenant has no contact address).
    let inbox = app.get_json("/v1/notifications").await;
    assert!(
        inbox["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["kind"] == "booking")
    );

    // Out of order: a reschedule made after a cancellation, delivered before it.
    let rescheduled = cal_event(
        "BOOKING_RESCHEDULED",
        "bk_1",
        &at(5),
        "2026-12-21T10:00:00Z",
    );
    let cancelled = cal_event(
        "BOOKING_CANCELLED",
        "bk_1",
        &at(10),
        "2026-12-20T15:30:00+01:00",
    );
    assert_eq!(post_cal(&app, &rescheduled, CAL_SECRET).await.status(), 200);
    assert_eq!(post_cal(&app, &cancelled, CAL_SECRET).await.status(), 200);
    let list = app
        .get_json_as("/admin/bookings?tenant=tenant-a", ADMIN)
        .await;
    assert_eq!(list["data"][0]["status"], "rescheduled");
    assert_eq!(list["data"][0]["start_utc"], "2026-12-21T10:00:00Z");
    // A reschedule as Cal.com makes it: a new booking naming the original, which is then
    // superseded.
    let mut moved: Value = serde_json::from_str(&cal_event(
        "BOOKING_RESCHEDULED",
        "bk_1b",
        &at(2),
        "2026-12-23T10:00:00Z",
    ))
    .unwrap();
    moved["payload"]["rescheduleUid"] = json!("bk_1");
    assert_eq!(
        post_cal(&app, &moved.to_string(), CAL_SECRET)
            .await
            .status(),
        200
    );
    let list = app
        .get_json_as("/admin/bookings?tenant=tenant-a", ADMIN)
        .await;
    let status_of = |uid: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["uid"] == uid)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status_of("bk_1"), "superseded");
    assert_eq!(status_of("bk_1b"), "rescheduled");

    // Refusals store nothing: a wrong secret, an event older than the window, not JSON.
    let before = count(&store, "SELECT COUNT(*) FROM cal_events").await;
    let other = cal_event("BOOKING_CREATED", "bk_2", &at(1), "2026-12-22T10:00:00Z");
    let r = post_cal(&app, &other, "wrong").await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_signature"
    );
    let old = cal_event(
        "BOOKING_CREATED",
        "bk_3",
        &at(8 * 24 * 60),
        "2026-12-22T10:00:00Z",
    );
    assert_eq!(post_cal(&app, &old, CAL_SECRET).await.status(), 400);
    assert_eq!(post_cal(&app, "{not json", CAL_SECRET).await.status(), 400);
    let ping: Value = post_cal(&app, r#"{"triggerEvent":"PING"}"#, CAL_SECRET)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ping["handled"], false);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM cal_events").await,
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_priority_notifications_go_in_one_digest() {
    let mock = MockEmail::start().await;
    let app = TestApp::spawn_with(Options::extra(&format!(
        "{}[notifications]\ndigest_period_secs = 1\n",
        config(&mock, "")
    )))
    .await;
    let store = app.store().await;
    let tenant = store.ensure_tenant("tenant-a").await.unwrap();
    notify::set_user_address(&store, &tenant.id, "u2", "u2@tenant-a.test")
        .await
        .unwrap();
    let queue = quartermaster::jobs::JobQueue::new(store.clone(), Default::default());
    let notices: Vec<Notice> = (0..3)
        .map(|i| {
            Notice::render(
                "notice",
                &tenant.id,
                format!("low:{i}"),
                json!({"subject": format!("Doc {i} synced"), "body": "from the CMS"}),
            )
            .unwrap()
            .for_user(Some("u2"))
            .priority(Priority::Low)
            .email(Some("u2@tenant-a.test"))
        })
        .collect();
    assert!(
        notices.iter().all(|n| n.mail.is_none()),
        "low priority waits for the digest"
    );
    notify::send(&store, &queue, &notices).await.unwrap();
    wait_for(15, "the digest is sent", || async {
        outbox(&store)
            .await
            .iter()
            .any(|r| r.template == "digest" && r.state == "sent")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // two more digest periods
    let digests: Vec<OutboxRow> = outbox(&store)
        .await
        .into_iter()
        .filter(|r| r.template == "digest")
        .collect();
    assert_eq!(digests.len(), 1, "one digest for the three");
    assert_eq!(digests[0].to_addr, "u2@tenant-a.test");
    let call = mock
        .calls()
        .into_iter()
        .find(|c| c.to == "u2@tenant-a.test")
        .unwrap();
    assert_eq!(call.subject, "3 notifications for tenant-a");
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM notifications WHERE priority = 'low' AND digested_at IS NULL"
        )
        .await,
        0
    );
}

/// Reads `notification` events from an SSE response into a channel.
fn follow(resp: reqwest::Response) -> tokio::sync::mpsc::UnboundedReceiver<(Instant, Value)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use futures::StreamExt;
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: "))
                    && event.contains("event: notification")
                {
                    let _ = tx.send((Instant::now(), serde_json::from_str(data).unwrap()));
                }
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notification_centre_pages_marks_and_streams() {
    let mock = MockEmail::start().await;
    let app = TestApp::spawn_with(Options::extra(&config(&mock, ""))).await;
    let stream = app.get("/v1/notifications/stream").send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut events = follow(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut latencies = vec![];
    for i in 0..5 {
        let sent = Instant::now();
        new_key(&app, json!({"tenant": "tenant-a", "name": format!("k{i}")})).await;
        let (at, event) = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("pushed")
            .unwrap();
        assert_eq!(event["kind"], "key_created");
        assert!(
            event["subject"]
                .as_str()
                .unwrap()
                .ends_with(&format!("k{i}"))
        );
        latencies.push(at - sent);
    }
    latencies.sort();
    println!(
        "notification push latency (SQLite, one replica): median {:?}",
        latencies[2]
    );

    // Six in all (the test's own key, and five): pages of two, unread first, each once.
    let first = app.get_json("/v1/notifications?limit=2").await;
    assert_eq!(first["unread"], 6);
    let ids: Vec<String> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        let r = app
            .post(&format!("/v1/notifications/{id}/read"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/notifications?limit=2&cursor={c}"),
            None => "/v1/notifications?limit=2".to_string(),
        };
        let page = app.get_json(&path).await;
        for n in page["data"].as_array().unwrap() {
            seen.push((
                n["id"].as_str().unwrap().to_string(),
                n["read_at"].is_null(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    let unread_flags: Vec<bool> = seen.iter().map(|(_, u)| *u).collect();
    assert_eq!(
        unread_flags,
        [true, true, true, true, false, false],
        "unread first"
    );
    let unique: std::collections::HashSet<_> = seen.iter().map(|(id, _)| id).collect();
    assert_eq!(unique.len(), 6);
    let unread_only = app.get_json("/v1/notifications?unread=true&limit=50").await;
    assert_eq!(unread_only["data"].as_array().unwrap().len(), 4);
    let r = app
        .post(&format!("/v1/notifications/{}/unread", ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["unread"], 5);
    let r = app.post("/v1/notifications/read-all").send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["marked"], 5);
    assert_eq!(
        app.post("/v1/notifications/ntf_nope/read")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        app.get("/v1/notifications?cursor=zzz")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    // An end user's personal key reads its own, and no one else's.
    let personal = new_key(
        &app,
        json!({"tenant": "tenant-a", "name": "mine", "user": "u1"}),
    )
    .await;
    let secret = personal["secret"].as_str().unwrap();
    let own = app.get_json_as("/v1/notifications", secret).await;
    assert_eq!(own["data"].as_array().unwrap().len(), 1);
    assert_eq!(own["data"][0]["priority"], "high");
    let r = app
        .get_as("/v1/notifications?user=u9", secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let theirs = app.get_json("/v1/notifications?user=u1").await;
    assert_eq!(
        theirs["data"][0]["id"], own["data"][0]["id"],
        "the tenant's backend reads for its user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_written_through_one_replica_reaches_a_stream_on_another() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let mock = MockEmail::start().await;
    let options = |db: &str| Options {
        extra: config(&mock, ""),
        db_url: Some(db.to_string()),
        config_file: false,
    };
    let a = TestApp::spawn_with(options(&db)).await;
    let b = TestApp::spawn_with(options(&db)).await;
    let mut events = follow(b.get("/v1/notifications/stream").send().await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = vec![];
    for i in 0..5 {
        let sent = Instant::now();
        new_key(&a, json!({"tenant": "tenant-a", "name": format!("r{i}")})).await;
        let (at, event) = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("pushed across replicas")
            .unwrap();
        assert!(
            event["subject"]
                .as_str()
                .unwrap()
                .ends_with(&format!("r{i}"))
        );
        latencies.push(at - sent);
    }
    latencies.sort();
    // The stream's own timer is 15 s on PostgreSQL: only NOTIFY explains a quick arrival.
    assert!(latencies[2] < Duration::from_secs(2), "{latencies:?}");
    println!(
        "notification push latency across replicas (PostgreSQL): median {:?}, max {:?}",
        latencies[2], latencies[4]
    );
}
