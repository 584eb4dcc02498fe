use std::time::Duration;

use super::*;

async fn queue(config: JobsConfig) -> (tempfile::TempDir, JobQueue) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    (dir, JobQueue::new(store, config))
}

#[tokio::test]
async fn backoff_is_bounded_and_grows() {
    let q = JobQueue {
        store: Store::from_pool(crate::store::Pool::Sqlite(
            sqlx::sqlite::SqlitePool::connect_lazy("sqlite::memory:").unwrap(),
        )),
        config: Arc::new(JobsConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..Default::default()
        }),
        notify: Arc::new(Notify::new()),
        worker_id: "w".into(),
    };
    for attempt in 1..50 {
        let cap = (100u64 << (attempt - 1).min(40)).min(1_000);
        for _ in 0..20 {
            assert!(q.backoff_ms(attempt) <= cap);
        }
    }
    // Jitter: not always the same value.
    let draws: std::collections::HashSet<u64> = (0..50).map(|_| q.backoff_ms(5)).collect();
    assert!(draws.len() > 5);
}

#[tokio::test]
async fn dedupe_delay_claim_retry_dead_and_redrive() {
    let (_dir, q) = queue(JobsConfig {
        backoff_base_ms: 1,
        backoff_max_ms: 1,
        max_attempts: 2,
        ..Default::default()
    })
    .await;
    assert!(q.enqueue(NewJob::new("k", &1).dedupe("a")).await.unwrap());
    assert!(!q.enqueue(NewJob::new("k", &2).dedupe("a")).await.unwrap());
    assert!(
        q.enqueue(NewJob::new("k", &3).delay_ms(60_000))
            .await
            .unwrap()
    );
    let claimed = q.claim(10).await.unwrap();
    assert_eq!(claimed.len(), 1, "the delayed job is not due");
    assert_eq!(claimed[0].payload, "1");
    assert_eq!(claimed[0].attempts, 1);
    assert!(
        q.claim(10).await.unwrap().is_empty(),
        "running jobs are not claimed twice"
    );
    assert_eq!(
        q.fail(&claimed[0], &JobError::Retry("x".into()))
            .await
            .unwrap(),
        "queued"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = q.claim(10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(
        q.fail(&again[0], &JobError::Retry("boom".into()))
            .await
            .unwrap(),
        "dead"
    );
    let dead = q.list("dead", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("boom"));
    assert_eq!(q.redrive(Some(&dead[0].id)).await.unwrap(), 1);
    let redriven = q.claim(10).await.unwrap();
    assert_eq!(redriven.len(), 1);
    assert_eq!(
        redriven[0].attempts, 1,
        "a re-driven job gets fresh attempts"
    );
    q.complete(&redriven[0].id).await.unwrap();
    assert_eq!(
        q.get(&redriven[0].id).await.unwrap().unwrap().status,
        "done"
    );
}

#[tokio::test]
async fn permanent_errors_skip_retries() {
    let (_dir, q) = queue(JobsConfig::default()).await;
    q.enqueue(NewJob::new("k", &"x")).await.unwrap();
    let job = q.claim(1).await.unwrap().remove(0);
    assert_eq!(
        q.fail(&job, &JobError::Permanent("bad".into()))
            .await
            .unwrap(),
        "dead"
    );
}

#[tokio::test]
async fn lapsed_lease_is_claimed_again() {
    let (_dir, q) = queue(JobsConfig {
        lease_ms: 20,
        ..Default::default()
    })
    .await;
    q.enqueue(NewJob::new("k", &"x")).await.unwrap();
    let first = q.claim(1).await.unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(40)).await;
    // Another worker (a restarted process) takes it over.
    let other = JobQueue::new(q.store.clone(), (*q.config).clone());
    let second = other.claim(1).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2);
    // The first worker's late completion does not count: it no longer holds the job.
    q.complete(&first[0].id).await.unwrap();
    assert_eq!(
        q.get(&first[0].id).await.unwrap().unwrap().status,
        "running"
    );
}
