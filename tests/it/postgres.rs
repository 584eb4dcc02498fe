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
    let t = quartermaster::clock::now_ms() / 1000;
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

/// Limits shared through PostgreSQL: three "replicas" (each its own `Budgets`, as each
/// process has) admit concurrently from one key's tokens-per-minute limit and one tenant's
/// daily budget; the total admitted overshoots each limit by at most one request, as one
/// process does, and a replica's unused lease goes back to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_budgets_hold_across_replicas() {
    use quartermaster::usage::{Budgets, Limits, LimitsConfig};
    let Some(db_url) = fresh_database().await else {
        return;
    };
    let store = quartermaster::store::Store::connect(&db_url, 8)
        .await
        .unwrap();
    let config = LimitsConfig {
        tenant_default: Limits {
            usd_per_day: Some(0.05),
            ..Default::default()
        },
        key_default: Limits {
            tokens_per_minute: Some(2_000),
            requests_per_minute: Some(1_000),
            ..Default::default()
        },
        ..Default::default()
    };
    let scopes = Budgets::scopes(&config, "t1", "acme", "k1", None);
    let replicas: Vec<_> = (0..3).map(|_| Budgets::new(store.clone())).collect();
    // Each request reserves 30 tokens and $0.001, then uses 20 tokens and $0.0008.
    let (reserve_tokens, reserve_usd, use_tokens, use_usd) = (30u64, 0.001, 20u64, 0.0008);
    // Waves of 30 concurrent requests (10 per replica) until the budget is used up.
    let mut admitted = 0u64;
    for _wave in 0..8 {
        let mut tasks = Vec::new();
        for i in 0..30 {
            let b = replicas[i % 3].clone();
            let scopes = scopes.clone();
            tasks.push(tokio::spawn(async move {
                match b.admit(&scopes, reserve_tokens, reserve_usd).await {
                    Ok(Some(r)) => {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        r.settle(use_tokens, use_usd);
                        true
                    }
                    Ok(None) => unreachable!("limits apply"),
                    Err(_) => false,
                }
            }));
        }
        for t in tasks {
            admitted += u64::from(t.await.unwrap());
        }
    }
    eprintln!("shared limits: {admitted} of 240 requests admitted through 3 replicas");
    // Tokens: 2,000 a minute at 20 used each once settled (30 reserved while running):
    // at most 2,000 / 20 + 1 requests; spend: $0.05 at $0.0008 each, at most 62 + 1.
    let by_tokens = 2_000 / use_tokens + 1;
    let by_usd = (0.05f64 / use_usd).floor() as u64 + 1;
    assert!(
        admitted <= by_tokens.min(by_usd),
        "{admitted} admitted through 3 replicas; one process allows at most {}",
        by_tokens.min(by_usd)
    );
    // And not far below it: what a replica leased but did not use serves its own later
    // requests, and idle leases go back to the others.
    assert!(admitted >= 55, "only {admitted} admitted");
    // The daily budget is used up for every replica, whichever admitted the requests.
    for b in &replicas {
        let refused = b.admit(&scopes, reserve_tokens, reserve_usd).await;
        assert!(
            refused.is_err(),
            "a replica still admits past the shared budget"
        );
    }
}

/// The semantic cache shared by replicas on PostgreSQL, for both ways of sharing it: the
/// `pgvector` backend (one index in the store) and the in-process `hnsw` graphs kept in step
/// over LISTEN/NOTIFY. An entry written through one "replica" (its own `Cache`) is found by
/// meaning through the other; removed through one, it is gone from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_semantic_cache_is_shared_by_replicas() {
    use quartermaster::cache::{
        Cache, CacheConfig, CacheKeys, IndexBackend, NewEntry, StoredAnswer,
    };
    let Some(db_url) = fresh_database().await else {
        return;
    };
    let store = quartermaster::store::Store::connect(&db_url, 8)
        .await
        .unwrap();
    for backend in [IndexBackend::Pgvector, IndexBackend::Hnsw] {
        let config = CacheConfig {
            backend,
            verifier: quartermaster::cache::VerifierMode::None,
            ..Default::default()
        };
        let one = std::sync::Arc::new(Cache::new(config.clone(), store.clone()).await.unwrap());
        let two = std::sync::Arc::new(Cache::new(config, store.clone()).await.unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(two.clone().run_sync(stop.clone()));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await; // listening
        let tenant = format!("t_{backend:?}");
        let mut v = vec![0.0f32; 384];
        v[0] = 1.0;
        let keys = CacheKeys {
            exact: format!("exact-{backend:?}"),
            fingerprint: "fp".into(),
            query: "How do I rotate a key?".into(),
        };
        let id = one
            .insert(NewEntry {
                tenant: tenant.clone(),
                user: None,
                keys: keys.clone(),
                vector: Some(v.clone()),
                answer: StoredAnswer {
                    model: "m".into(),
                    content: "Like this.".into(),
                    finish_reason: "stop".into(),
                    usage: quartermaster::types::Usage::new(3, 2),
                    message_extra: Default::default(),
                    citations: None,
                },
                cost_usd: 0.0,
                ttl_secs: 600,
                tags: vec![],
                sources_read_at: None,
            })
            .await
            .unwrap()
            .expect("stored");
        // A near vector, asked through the other replica.
        let mut q = v.clone();
        q[1] = 0.1;
        let norm = q.iter().map(|x| x * x).sum::<f32>().sqrt();
        q.iter_mut().for_each(|x| *x /= norm);
        let asked = CacheKeys {
            exact: "other".into(),
            query: "How can I rotate a key?".into(),
            ..keys.clone()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let hit = loop {
            if let Some(h) = two.lookup_semantic(&tenant, &asked, &q, 0.9).await.unwrap() {
                break h;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{backend:?}: no hit through the other replica"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(hit.entry_id, id);
        assert_eq!(hit.answer.content, "Like this.");
        assert!(one.invalidate_entry(&tenant, &id).await.unwrap());
        assert!(
            two.lookup_semantic(&tenant, &asked, &q, 0.9)
                .await
                .unwrap()
                .is_none(),
            "{backend:?}: removed through one, gone through the other"
        );
        if backend == IndexBackend::Hnsw {
            // The removal reached the other graph too (a tombstone, not a stale node).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while two.index_stats().0 != 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the other graph kept the entry"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        stop.cancel();
    }
}
