//! A PostgreSQL outage: the real binary on a PostgreSQL of its own, which the test stops
//! abruptly and starts again. Through the outage chat keeps being served to keys verified
//! recently, what needs the database fails fast (503, no 10 s wait), `/readyz` and the
//! metrics say the store is down, and every request-log row is kept (memory, then the
//! spill file) and written once the database is back; a revocation made after it returns
//! takes effect within the key cache's lifetime.
//!
//! The outage lasts `QM_TEST_OUTAGE_SECS` (20 by default; README's figure is from 70).

use std::process::Command;
use std::time::{Duration, Instant};

use quartermaster::store::{Store, on_pool};
use serde_json::json;

use crate::common::MockUpstream;
use crate::common::binary::Gateway;

/// A PostgreSQL cluster of this test's own (scripts/pg.sh), stopped and deleted on drop.
struct OwnPostgres {
    url: String,
    env: Vec<(String, String)>,
}

impl OwnPostgres {
    fn start() -> Self {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
            .arg("start")
            // Commits acknowledged only once their WAL is written: the abrupt stop below
            // must not lose what the server said it committed.
            .env("QM_PG_DURABLE", "1")
            .output()
            .expect("scripts/pg.sh runs");
        assert!(
            out.status.success(),
            "scripts/pg.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let url = env
            .iter()
            .find(|(k, _)| k == "DATABASE_URL")
            .map(|(_, v)| v.clone())
            .expect("pg.sh prints DATABASE_URL");
        OwnPostgres { url, env }
    }

    fn run(&self, verb: &str) {
        let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
            .arg(verb)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .status()
            .expect("scripts/pg.sh runs");
        assert!(status.success(), "scripts/pg.sh {verb} failed");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
            .arg("stop")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .status();
    }
}

async fn chat(http: &reqwest::Client, gw: &Gateway, key: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(key)
        .json(&json!({"model": "mock-ok", "messages": [{"role": "user", "content": "Say hello"}]}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    (status, started.elapsed())
}

async fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", gw.url))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test]
async fn chat_is_served_through_a_database_outage_and_no_row_is_lost() {
    let outage = Duration::from_secs(
        std::env::var("QM_TEST_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let pg = OwnPostgres::start();
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "health_interval_ms = 250\n\
         [providers.mock]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-mock\"\n\
         [models.mock-ok]\nprovider = \"mock\"\n\
         [embeddings]\nenabled = false\n[local]\nenabled = false\n[rate_limit]\nenabled = false\n\
         [cache]\nenabled = true\nsemantic = false\n\
         [auth]\nkey_cache_ttl_ms = 1000\n\
         [request_log]\nmemory_rows = 50\nspill_dir = \"{}\"\n",
        mock.url,
        dir.path().join("spill").display()
    );
    let gw = Gateway::start(dir.path(), &pg.url, &config).await;
    let store = Store::connect(&pg.url, 2).await.unwrap();
    let second = quartermaster::auth::create_key(&store, "acme", "second")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    // Both keys verified once before the outage.
    assert_eq!(chat(&http, &gw, &gw.key).await.0, 200);
    assert_eq!(chat(&http, &gw, &second.secret).await.0, 200);
    let unknown_before = quartermaster::auth::create_key(&store, "acme", "never-used")
        .await
        .unwrap();
    crate::common::wait_for(10, "the first rows are written", || async {
        store.count_request_log().await.unwrap_or(0) >= 2
    })
    .await;
    store.close().await;

    pg.run("pause");
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut saw_down = false;
    while started.elapsed() < outage {
        for _ in 0..5 {
            let (status, took) = chat(&http, &gw, &gw.key).await;
            if status != 200 {
                failures.push(status);
            }
            latencies.push(took);
        }
        if !saw_down {
            let r = reqwest::get(format!("{}/readyz", gw.url)).await.unwrap();
            if r.status() == 503 {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["store_health"]["reachable"], false, "{body}");
                assert_eq!(metric(&gw, "qm_store_up").await, Some(0.0));
                saw_down = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let served = latencies.len();
    assert!(
        failures.is_empty(),
        "chat failed during the outage: {failures:?}\n{}",
        gw.log_text()
    );
    assert!(saw_down, "/readyz never reported the outage");
    // A key that was never verified cannot be checked: a fast 503, not a 401 or a wait.
    let t = Instant::now();
    let (status, _) = chat(&http, &gw, &unknown_before.secret).await;
    assert_eq!(status, 503);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    let log_status: serde_json::Value = reqwest::get(format!("{}/readyz", gw.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        log_status["request_log"]["state"], "retrying",
        "{log_status}"
    );

    pg.run("resume");
    let back = Instant::now();
    let store = Store::connect(&pg.url, 2).await.unwrap();
    let want = (2 + served) as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = store.count_request_log().await.unwrap_or(0);
        if rows >= want {
            break;
        }
        if Instant::now() > deadline {
            let ready = reqwest::get(format!("{}/readyz", gw.url))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let log = gw.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{rows} of {want} rows written; readyz {ready}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = store.count_request_log().await.unwrap();
    let distinct: i64 = on_pool!(&store, p => sqlx::query_scalar(
        "SELECT COUNT(DISTINCT id) FROM request_log").fetch_one(p).await.unwrap());
    assert_eq!(
        (rows, distinct),
        ((2 + served) as i64, rows),
        "rows lost or doubled"
    );
    let mut sorted = latencies.clone();
    sorted.sort();
    eprintln!(
        "outage {:?}: {served} chats served, p50 {:?}, p99 {:?}, max {:?}; all {rows} rows written {:?} after the database returned",
        outage,
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted[sorted.len() - 1],
        back.elapsed()
    );
    // A revocation made now takes effect within the key cache's second.
    store.revoke_key(&second.id).await.unwrap();
    crate::common::wait_for(10, "the revocation applies", || async {
        chat(&http, &gw, &second.secret).await.0 == 401
    })
    .await;
    store.close().await;
}
