//! The job queue survives `kill -9`: the real binary is killed while a job is mid-flight
//! (its HTTP call to Stripe sent, no answer yet); after a restart the job runs again, with
//! the same idempotency key, and the usage is counted once.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mock_stripe::{self, MockStripe};
use quartermaster::clock::now_ms;
use quartermaster::store::{Store, on_pool};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_quartermaster"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("QM_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("binary starts")
}

async fn wait_for(secs: u64, what: &str, log: &std::path::Path, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("timed out waiting for: {what}\n--- gateway log ---\n{log}");
}

async fn job_state(store: &Store) -> Vec<(String, String, i64)> {
    on_pool!(store, p => sqlx::query_as::<_, (String, String, i64)>(
        "SELECT kind, status, attempts FROM jobs WHERE kind = 'stripe.meter_usage' ORDER BY created_at")
        .fetch_all(p).await)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_run_runs_again_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("kill.db").display());
    let store = Store::connect(&db, 2).await.unwrap();
    let tenant = store.ensure_tenant("acme").await.unwrap();
    // One logged request of 1234 tokens, and the tenant linked to a Stripe customer.
    on_pool!(&store, p => async {
        sqlx::query("UPDATE tenants SET stripe_customer_id = 'cus_kill' WHERE id = $1")
            .bind(&tenant.id).execute(p).await?;
        sqlx::query(
            "INSERT INTO request_log (id, request_id, tenant_id, key_id, model, provider, stream, status, http_status, \
             tokens_in, tokens_out, latency_ms, created_at, logged_at) \
             VALUES ('log_1', 'req_1', $1, 'key_1', 'm', 'p', FALSE, 'ok', 200, 1000, 234, 5.0, $2, $2)")
            .bind(&tenant.id).bind(now_ms() - 10_000).execute(p).await?;
        Ok::<_, sqlx::Error>(())
    }.await)
    .unwrap();

    let stripe = MockStripe::start().await;
    stripe.set_mode(mock_stripe::STALL_FIRST);
    let config = dir.path().join("qm.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nport = {}\n[database]\nurl = \"{db}\"\n[embeddings]\nenabled = false\n[local]\nenabled = false\n\
             [stripe]\napi_base = \"{}\"\nsecret_key = \"sk_test_kill\"\nmeter_interval_secs = 1\nmeter_settle_secs = 0\n\
             [jobs]\npoll_interval_ms = 50\nlease_ms = 1500\nbackoff_base_ms = 50\nbackoff_max_ms = 200\n",
            free_port(),
            stripe.url
        ),
    )
    .unwrap();

    let (log1, log2) = (dir.path().join("first.log"), dir.path().join("second.log"));
    let mut first = start(&config, &log1);
    wait_for(30, "the meter push to reach Stripe", &log1, || {
        stripe
            .state
            .stalled
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
    })
    .await;
    // Mid-flight: the job is running, Stripe has the request, nobody has an answer.
    let running = job_state(&store).await;
    assert!(
        running.iter().any(|(_, status, _)| status == "running"),
        "{running:?}"
    );
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let pending: i64 = on_pool!(&store, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM meter_pushes WHERE state = 'pending'").fetch_one(p).await)
    .unwrap();
    assert_eq!(pending, 1, "the push was recorded before it was sent");

    let mut second = start(&config, &log2);
    wait_for(30, "the push retried and accepted", &log2, || {
        !stripe.events().is_empty()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sent: i64 = on_pool!(&store, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM meter_pushes WHERE state = 'sent'").fetch_one(p).await)
        .unwrap();
        let jobs = job_state(&store).await;
        if sent == 1 && jobs.iter().all(|(_, s, _)| s == "done") && !jobs.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.kill().unwrap();
    second.wait().unwrap();

    let calls = stripe.calls();
    assert!(calls.len() >= 2, "{calls:?}");
    // The retry is the same push: same identifier and idempotency key, same value.
    assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
    assert_eq!(calls[0].form, calls[1].form);
    assert_eq!(calls[1].form["payload[value]"], "1234");
    let events = stripe.events();
    assert_eq!(events.len(), 1, "counted once: {events:?}");
    // The killed job itself was taken over after its lease lapsed (attempt 2), or a later
    // window's job pushed the pending record first; either way nothing ran twice at Stripe.
    let jobs = job_state(&store).await;
    assert!(jobs.iter().all(|(_, s, _)| s == "done"), "{jobs:?}");
    assert!(
        jobs.iter().any(|(_, _, attempts)| *attempts >= 2),
        "{jobs:?}"
    );
}
