//! The same gateway on PostgreSQL. Needs `QM_TEST_DATABASE_URL` (scripts/pg.sh starts a
//! throwaway server); under CI its absence is a failure, not a skip.

mod common;

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
