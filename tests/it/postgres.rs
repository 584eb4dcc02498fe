//! The same gateway on PostgreSQL. Needs `QM_TEST_DATABASE_URL` (scripts/pg.sh starts a
//! throwaway server); under CI its absence is a failure, not a skip.

use crate::common;

use common::{Options, TestApp, chat_body, fresh_database};

#[tokio::test]
async fn gateway_on_postgres_keys_chat_and_request_log() {
    let Some(db_url) = fresh_database().await else {
        return;
    };
    let mut app = TestApp::spawn_with(Options {
        db_url: Some(db_url),
        extra: "[rate_limit]\nenabled = false\n[auth]\nkey_cache_ttl_ms = 0\n".into(),
        config_file: false,
    })
    .await;
    let resp = app.chat(chat_body("mock-ok", true)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 200);
    let store = app.store().await;
    assert_eq!(store.backend(), "postgres");
    let keys = store.list_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    store.revoke_key(&keys[0].id).await.unwrap();
    assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 401);
    app.shutdown().await;
    assert_eq!(store.count_request_log().await.unwrap(), 2);
}

/// Workers of two "replicas" claim concurrently: `FOR UPDATE SKIP LOCKED` hands each job
/// to exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_queue_on_postgres_claims_each_job_once() {
    use quartermaster::jobs::{JobError, JobQueue, JobsConfig, NewJob};
    let Some(db_url) = fresh_database().await else {
        return;
    };
    let store = quartermaster::store::Store::connect(&db_url, 8)
        .await
        .unwrap();
    let config = JobsConfig {
        max_attempts: 1,
        ..Default::default()
    };
    let replicas = [
        JobQueue::new(store.clone(), config.clone()),
        JobQueue::new(store.clone(), config.clone()),
    ];
    for i in 0..200 {
        replicas[0].enqueue(NewJob::new("k", &i)).await.unwrap();
    }
    let mut workers = vec![];
    for w in 0..4 {
        let q = replicas[w % 2].clone();
        workers.push(tokio::spawn(async move {
            let mut mine = vec![];
            loop {
                let jobs = q.claim(7).await.unwrap();
                if jobs.is_empty() {
                    break;
                }
                for j in jobs {
                    q.complete(&j.id).await.unwrap();
                    mine.push(j.payload);
                }
            }
            mine
        }));
    }
    let mut all = vec![];
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(n, 200, "every job claimed");
    assert_eq!(all.len(), 200, "no job claimed twice");
    // Dead letters and re-drive on PostgreSQL too.
    replicas[1].enqueue(NewJob::new("k", &"x")).await.unwrap();
    let job = replicas[1].claim(1).await.unwrap().remove(0);
    assert_eq!(
        replicas[1]
            .fail(&job, &JobError::Retry("no".into()))
            .await
            .unwrap(),
        "dead"
    );
    assert_eq!(replicas[0].list("dead", 10).await.unwrap().len(), 1);
    assert_eq!(replicas[0].redrive(None).await.unwrap(), 1);
    assert_eq!(replicas[0].claim(5).await.unwrap().len(), 1);
}

/// NUL is a valid character in JSON strings but not in PostgreSQL text: a question with NUL
/// is cached on PostgreSQL as on SQLite, and a NUL in a cache tag or a Stripe event id is a
/// 400, not a 500.
#[tokio::test]
async fn nul_characters_on_postgres() {
    let Some(db_url) = fresh_database().await else {
        return;
    };
    let secret = "whsec_nul_test";
    let app = TestApp::spawn_with(Options {
        db_url: Some(db_url),
        extra: format!(
            "[rate_limit]\nenabled = false\n[cache]\nenabled = true\nsemantic = false\n\
             [stripe]\nwebhook_secrets = [\"{secret}\"]\n"
        ),
        config_file: false,
    })
    .await;
    let body = serde_json::json!({"model": "mock-ok",
        "messages": [{"role": "user", "content": "Say hello\u{0}, please"}]});
    let first = app.chat(body.clone()).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-quartermaster-cache"], "miss");
    common::wait_for(10, "the answer is cached", || async {
        app.chat(body.clone()).await.headers()["x-quartermaster-cache"] == "hit"
    })
    .await;
    let r = app
        .post("/v1/cache/invalidate")
        .json(&serde_json::json!({"tags": ["doc\u{0}x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let event = serde_json::json!({"id": "evt_\u{0}1", "type": "customer.created"}).to_string();
    let t = quartermaster::store::now_ms() / 1000;
    let sig = quartermaster::integrations::stripe::signature::sign(event.as_bytes(), secret, t);
    let r = app
        .http
        .post(format!("{}/webhooks/stripe", app.url))
        .header("stripe-signature", format!("t={t},v1={sig}"))
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_request");
}
