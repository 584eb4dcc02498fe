//! Server-side AI analytics against a mock PostHog batch endpoint on a real socket: every
//! door's requests become `$ai_generation` events with the request's figures; an outage is
//! ridden out (retried, nothing lost, no request slowed or failed) and recovered from; users
//! without consent (a header, their token, their stored preference) produce nothing, or an
//! anonymous event when so configured; content only with `capture_content`; a full queue
//! drops and counts, never blocks.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use common::{Options, TestApp, wait_for};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct PostHog {
    /// Events taken (each batch's, in order).
    events: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
    refused: Arc<Mutex<u32>>,
}

impl PostHog {
    async fn start() -> (Self, String) {
        async fn batch(
            State(p): State<PostHog>,
            body: axum::Json<Value>,
        ) -> axum::http::StatusCode {
            if p.down.load(Ordering::SeqCst) {
                *p.refused.lock().unwrap() += 1;
                return axum::http::StatusCode::SERVICE_UNAVAILABLE;
            }
            assert_eq!(body["api_key"], "phc_test", "the project key in the body");
            let batch = body["batch"].as_array().expect("a batch array").clone();
            p.events.lock().unwrap().extend(batch);
            axum::http::StatusCode::OK
        }
        let ph = PostHog::default();
        let app = Router::new()
            .route("/batch/", post(batch))
            .with_state(ph.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (ph, url)
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    fn of(&self, distinct_id: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["distinct_id"] == distinct_id)
            .collect()
    }
}

fn config(url: &str, more: &str) -> String {
    let batch = if more.contains("batch_size") {
        ""
    } else {
        "batch_size = 20\n"
    };
    format!(
        "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 2\n[cache]\nenabled = false\n\
         [analytics]\nprovider = \"posthog\"\nurl = \"{url}\"\napi_key = \"phc_test\"\n\
         flush_interval_ms = 50\n{batch}backoff_base_ms = 50\nbackoff_max_ms = 200\nmax_attempts = 200\n{more}"
    )
}

async fn chat_for(
    app: &TestApp,
    user: Option<&str>,
    consent: Option<&str>,
    text: &str,
) -> reqwest::Response {
    let mut req = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "mock-ok", "messages": [{"role": "user", "content": text}]}));
    if let Some(u) = user {
        req = req.header("x-quartermaster-user", u);
    }
    if let Some(c) = consent {
        req = req.header("x-quartermaster-analytics-consent", c);
    }
    req.send().await.unwrap()
}

fn metric(text: &str, outcome: &str) -> u64 {
    text.lines()
        .find(|l| {
            l.starts_with("qm_analytics_events_total")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_emits_generations_through_an_outage_and_respects_consent() {
    let (ph, url) = PostHog::start().await;
    let mut app = TestApp::spawn_with(Options::extra(&config(&url, ""))).await;

    // A request becomes one event with its figures, under its end user.
    let r = chat_for(&app, Some("u1"), None, "hello analytics").await;
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    wait_for(10, "u1's event", || async { !ph.of("u1").is_empty() }).await;
    let e = &ph.of("u1")[0];
    assert_eq!(e["event"], "$ai_generation");
    let p = &e["properties"];
    assert_eq!(p["$ai_model"], "mock-ok");
    assert_eq!(p["$ai_provider"], "mock");
    assert!(p["$ai_input_tokens"].as_u64().unwrap() > 0, "{e}");
    assert!(p["$ai_output_tokens"].as_u64().unwrap() > 0, "{e}");
    assert!(p["$ai_latency"].as_f64().unwrap() > 0.0);
    assert_eq!(p["$ai_http_status"], 200);
    assert_eq!(p["$ai_is_error"], false);
    assert_eq!(p["$ai_trace_id"], request_id.as_str());
    assert_eq!(p["qm_cache"], "miss");
    assert!(
        p.get("$ai_input").is_none(),
        "no content unless capture_content: {e}"
    );
    assert!(
        e["uuid"].as_str().unwrap().len() == 36 && e["timestamp"].as_str().unwrap().ends_with('Z')
    );

    // The other doors too: the Messages API (its user from metadata.user_id), Responses,
    // and the UI message stream.
    let r = app
        .post("/v1/messages")
        .json(
            &json!({"model": "mock-ok", "max_tokens": 20, "metadata": {"user_id": "u-msg"},
                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .post("/v1/responses")
        .header("x-quartermaster-user", "u-resp")
        .json(&json!({"model": "mock-ok", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    let r = app
        .post("/api/chat")
        .header("x-quartermaster-user", "u-ui")
        .json(&json!({"id": "chat-1", "trigger": "submit-message", "model": "mock-ok",
                      "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    for who in ["u-msg", "u-resp", "u-ui"] {
        wait_for(10, who, || async { !ph.of(who).is_empty() }).await;
    }
    assert_eq!(ph.of("u-resp")[0]["properties"]["$ai_stream"], true);

    // No consent: the header's denial, the stored preference's: nothing sent.
    assert_eq!(
        chat_for(&app, Some("u2"), Some("denied"), "no thanks")
            .await
            .status(),
        200
    );
    let r = app
        .http
        .put(format!("{}/v1/users/u3/consent", app.url))
        .bearer_auth(&app.key)
        .json(&json!({"analytics": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        chat_for(&app, Some("u3"), None, "stored refusal")
            .await
            .status(),
        200
    );
    // A grant in the request does not override the user's stored refusal.
    assert_eq!(
        chat_for(&app, Some("u3"), Some("granted"), "granted?")
            .await
            .status(),
        200
    );
    let stored: Value = app.get_json("/v1/users/u3/consent").await;
    assert_eq!(stored["analytics"], false);

    // An outage: requests are not slowed or failed; their events arrive after recovery.
    ph.down.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    for i in 0..5 {
        assert_eq!(
            chat_for(&app, Some("u-outage"), None, &format!("during outage {i}"))
                .await
                .status(),
            200
        );
    }
    let during = started.elapsed();
    wait_for(10, "batches refused during the outage", || async {
        *ph.refused.lock().unwrap() >= 2
    })
    .await;
    assert!(ph.of("u-outage").is_empty());
    ph.down.store(false, Ordering::SeqCst);
    wait_for(15, "every event of the outage delivered", || async {
        ph.of("u-outage").len() == 5
    })
    .await;
    assert!(
        during < Duration::from_secs(5),
        "requests during the outage took {during:?}"
    );

    // Nothing of the refusing users, ever; the counters say so.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        ph.of("u2").is_empty() && ph.of("u3").is_empty(),
        "{:?}",
        ph.events()
    );
    let metrics = app.get_text("/metrics").await;
    assert_eq!(metric(&metrics, "suppressed_no_consent"), 3, "{metrics}");
    assert!(metric(&metrics, "sent") >= 9, "{metrics}");

    // The tenant's own usage view, for its agents: by end user and by day, its tenant only.
    let usage: Value = app.get_json("/v1/usage?by=user").await;
    let rows = usage["data"].as_array().unwrap();
    let outage = rows
        .iter()
        .find(|r| r["user"].as_str().unwrap().ends_with("/u-outage"))
        .expect("u-outage's row");
    assert_eq!(outage["requests"], 5, "{usage}");
    let by_day: Value = app.get_json("/v1/usage?by=day").await;
    let total: i64 = by_day["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_i64().unwrap())
        .sum();
    assert!(total >= 11, "{by_day}");
    assert_eq!(
        by_day["data"][0]["day"].as_str().unwrap().len(),
        10,
        "{by_day}"
    );
    let r = app.get("/v1/usage?by=tenant").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let other = quartermaster::auth::create_key(&app.store().await, "tenant-other", "k")
        .await
        .unwrap();
    let theirs: Value = app.get_json_as("/v1/usage?by=model", &other.secret).await;
    assert_eq!(
        theirs["data"].as_array().unwrap().len(),
        0,
        "another tenant sees none: {theirs}"
    );
    // A personal key speaks for its user only: its own usage, its own consent, and it
    // cannot name another user in the header.
    let mine =
        quartermaster::auth::create_user_key(&app.store().await, "tenant-a", "u1's", Some("u1"))
            .await
            .unwrap();
    let own: Value = app.get_json_as("/v1/usage?by=user", &mine.secret).await;
    let users: Vec<&str> = own["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user"].as_str().unwrap())
        .collect();
    assert!(users.iter().all(|u| u.ends_with("/u1")), "{own}");
    let put = |user: &str| {
        app.http
            .put(format!("{}/v1/users/{user}/consent", app.url))
            .bearer_auth(&mine.secret)
            .json(&json!({"analytics": true}))
            .send()
    };
    assert_eq!(put("u3").await.unwrap().status(), 403);
    assert_eq!(put("u1").await.unwrap().status(), 200);
    let r = app
        .post_as("/v1/chat/completions", &mine.secret)
        .header("x-quartermaster-user", "u2")
        .json(&json!({"model": "mock-ok", "messages": [{"role": "user", "content": "as whom?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for(10, "the personal key's request logged as u1", || async {
        let v: Value = app.get_json("/v1/usage?by=user").await;
        v["data"].as_array().unwrap().iter().any(|r| {
            r["user"].as_str().unwrap().ends_with("/u1") && r["requests"].as_i64() == Some(2)
        })
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_required_content_opt_in_anonymous_events_and_a_full_queue() {
    let (ph, url) = PostHog::start().await;
    let mut app = TestApp::spawn_with(Options::extra(&config(
        &url,
        "capture_content = true\nrequire_consent = true\nwithout_consent = \"anonymous\"\n",
    )))
    .await;
    // Granted: the prompt and the answer are sent.
    assert_eq!(
        chat_for(&app, Some("u-yes"), Some("granted"), "the secret prompt")
            .await
            .status(),
        200
    );
    wait_for(10, "u-yes's event", || async { !ph.of("u-yes").is_empty() }).await;
    let p = ph.of("u-yes")[0]["properties"].clone();
    assert_eq!(p["$ai_input"][0]["content"], "the secret prompt", "{p}");
    assert!(
        p["$ai_output_choices"][0]["content"]
            .as_str()
            .unwrap()
            .len()
            > 0,
        "{p}"
    );
    // Unstated, with consent required: an anonymous event without the user, the ids or
    // the content.
    assert_eq!(
        chat_for(&app, Some("u-unsaid"), None, "another secret")
            .await
            .status(),
        200
    );
    wait_for(10, "the anonymous event", || async {
        !ph.of("anonymous").is_empty()
    })
    .await;
    let anon = ph.of("anonymous")[0].clone();
    let text = anon.to_string();
    assert!(
        !text.contains("u-unsaid") && !text.contains("another secret"),
        "{anon}"
    );
    assert_eq!(anon["properties"]["$process_person_profile"], false);
    assert!(anon["properties"].get("$ai_trace_id").is_none(), "{anon}");
    assert_eq!(anon["properties"]["$ai_model"], "mock-ok");
    app.shutdown().await;

    // A full queue drops (and counts) instead of waiting: PostHog down, room for 2.
    let (ph, url) = PostHog::start().await;
    ph.down.store(true, Ordering::SeqCst);
    let mut app = TestApp::spawn_with(Options::extra(&config(
        &url,
        "queue_capacity = 2\nbatch_size = 1\n",
    )))
    .await;
    let started = std::time::Instant::now();
    for i in 0..12 {
        assert_eq!(
            chat_for(&app, Some("u-many"), None, &format!("q {i}"))
                .await
                .status(),
            200
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let metrics = app.get_text("/metrics").await;
    assert!(metric(&metrics, "dropped_queue_full") >= 8, "{metrics}");
    app.shutdown().await;
}
