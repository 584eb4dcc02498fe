//! The email outbox under `kill -9`, and its throughput. Emails are written to the outbox
//! with their jobs in one transaction (as every event does); the real binary is killed while
//! it is sending them (requests in flight to the provider); after a restart every email is
//! sent, none is lost, and none is delivered twice (the outbox id is Resend's idempotency
//! key).

use crate::common::binary::Gateway;
use crate::common::mock_email::MockEmail;
use crate::common::{Options, TestApp, wait_for};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use quartermaster::jobs::JobQueue;
use quartermaster::notify::{self, Notice};
use quartermaster::store::{Store, on_pool};
use serde_json::json;

/// `n` emails to distinct addresses, written in one transaction.
async fn write_emails(store: &Store, n: usize, tag: &str) -> HashSet<String> {
    let tenant = store.ensure_tenant("acme").await.unwrap();
    let notices: Vec<Notice> = (0..n)
        .map(|i| {
            Notice::render(
                "notice",
                &tenant.id,
                format!("{tag}:{i}"),
                json!({"subject": format!("Hello {i}"), "body": "b"}),
            )
            .unwrap()
            .email(Some(&format!("user{i}@example.com")))
        })
        .collect();
    let ids = notices
        .iter()
        .map(|n| n.mail.as_ref().unwrap().id.clone())
        .collect();
    let queue = JobQueue::new(store.clone(), Default::default());
    notify::send(store, &queue, &notices).await.unwrap();
    ids
}

async fn states(store: &Store) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> = on_pool!(store, p => sqlx::query_as(
        "SELECT state, COUNT(*) FROM email_outbox GROUP BY state").fetch_all(p).await)
    .unwrap();
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_while_sending_loses_and_duplicates_no_email() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("mail.db").display());
    let mock = MockEmail::start().await;
    mock.state.delay_ms.store(150, Ordering::Relaxed);
    let store = Store::connect(&db, 2).await.unwrap();
    let ids = write_emails(&store, N, "kill").await;
    let config = format!(
        "[embeddings]\nenabled = false\n[local]\nenabled = false\n\
         [jobs]\npoll_interval_ms = 50\nbackoff_base_ms = 100\nbackoff_max_ms = 300\nlease_ms = 2000\n\
         [email]\nprovider = \"resend\"\nbase_url = \"{}\"\napi_key = \"re_kill\"\n",
        mock.url
    );
    let mut gateway = Gateway::start(dir.path(), &db, &config).await;
    let log = gateway.log.clone();
    wait_for(30, "some emails are sent", || async {
        mock.calls().len() >= 6
    })
    .await;
    gateway.kill9();
    let at_kill = states(&store).await;
    assert!(
        at_kill.get("queued").copied().unwrap_or(0) > 0,
        "killed before the end: {at_kill:?}"
    );
    let mut gateway = Gateway::start_with_key(dir.path(), &db, &config, gateway.key.clone()).await;
    let done = || async { states(&store).await.get("sent").copied() == Some(N as i64) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "not all sent: {:?}\n{}",
            states(&store).await,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.terminate(Duration::from_secs(10));
    let delivered: HashSet<String> = mock.delivered().into_keys().collect();
    assert_eq!(delivered, ids, "every email delivered, each once");
    let calls = mock.calls();
    let resent = calls.len() - delivered.len();
    assert!(
        resent >= 1,
        "some sends were in flight at the kill (accepted, answer lost) and went again"
    );
    println!(
        "kill -9 while sending: {N} emails, {at_kill:?} states at the kill, {} requests, {resent} re-sent with the same key, {} delivered",
        calls.len(),
        delivered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_throughput() {
    const N: usize = 400;
    let mock = MockEmail::start().await;
    let app = TestApp::spawn_with(Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[jobs]\npoll_interval_ms = 50\n\
         [email]\nprovider = \"resend\"\nbase_url = \"{}\"\napi_key = \"re_tp\"\n",
        mock.url
    )))
    .await;
    let store = app.store().await;
    let started = Instant::now();
    write_emails(&store, N, "tp").await;
    wait_for(120, "every email is sent", || async {
        states(&store).await.get("sent").copied() == Some(N as i64)
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(mock.delivered().len(), N);
    println!(
        "email throughput (SQLite, 4 job workers, a local Resend answering at once): {N} emails in {secs:.2} s = {:.0}/s",
        N as f64 / secs
    );
}
