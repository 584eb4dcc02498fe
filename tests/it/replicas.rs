//! Several replicas on one PostgreSQL behind a real load balancer: two gateway processes
//! (the real binary) and Debian's nginx in front (round robin), driven by the official
//! `openai` client (tests/python/replicas_e2e.py: limits, the shared cache, invalidation,
//! idempotency across replicas); then `kill -9` of one replica under load: the survivor
//! keeps serving, the killed one's in-flight Stripe job runs on the survivor after its lease,
//! and once the killed replica is back on its folder every request that got a whole answer
//! has its row in the request log. Also measured: how long a cache write and an
//! invalidation take to reach the other replica (`-- --nocapture` prints p50 / p99).

use crate::common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::binary::{Gateway, model_dir};
use common::mock_stripe::{self, MockStripe};
use common::nginx::Nginx;
use common::{MockUpstream, fresh_database};
use quartermaster::clock::now_ms;
use quartermaster::store::{Store, on_pool};
use serde_json::json;

fn replica_config(mock: &str, stripe: &str, spill: &std::path::Path, limited: &[String]) -> String {
    let mut c = format!(
        "[providers.mock]\nkind = \"openai\"\nbase_url = \"{mock}\"\napi_key = \"sk-mock\"\n\
         [models.mock-ok]\nprovider = \"mock\"\n[models.mock-slow]\nprovider = \"mock\"\n\
         [rate_limit]\nenabled = false\n[local]\nenabled = false\n\
         [embeddings]\nmodel_dir = \"{}\"\n\
         [cache]\nenabled = true\n\
         [request_log]\nspill_dir = \"{}\"\n\
         [stripe]\napi_base = \"{stripe}\"\nsecret_key = \"sk_test_replicas\"\nmeter_interval_secs = 1\nmeter_settle_secs = 0\n\
         [jobs]\npoll_interval_ms = 50\nlease_ms = 1500\nbackoff_base_ms = 50\nbackoff_max_ms = 200\n",
        model_dir().display(),
        spill.display()
    );
    for id in limited {
        c.push_str(&format!(
            "[limits.keys.\"{id}\"]\ntokens_per_minute = 200\n"
        ));
    }
    c
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn meter_jobs(store: &Store) -> Vec<(String, i64)> {
    on_pool!(store, p => sqlx::query_as::<_, (String, i64)>(
        "SELECT status, attempts FROM jobs WHERE kind = 'stripe.meter_usage' ORDER BY created_at")
        .fetch_all(p).await)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_nginx_share_limits_cache_jobs_and_survive_kill_9() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&db, 2).await.unwrap();
    // The metered tenant (its usage is what the Stripe job pushes) is not the one the
    // requests run as, so the load adds nothing to meter.
    let tenant = store.ensure_tenant("metered").await.unwrap();
    let main = quartermaster::auth::create_key(&store, "acme", "main")
        .await
        .unwrap();
    let single = quartermaster::auth::create_key(&store, "acme", "single")
        .await
        .unwrap();
    let through = quartermaster::auth::create_key(&store, "acme", "lb")
        .await
        .unwrap();
    // A metered tenant with one closed window of usage: the meter job's Stripe call is what
    // a replica is killed in the middle of.
    on_pool!(&store, p => async {
        sqlx::query("UPDATE tenants SET stripe_customer_id = 'cus_replicas' WHERE id = $1")
            .bind(&tenant.id).execute(p).await?;
        sqlx::query(
            "INSERT INTO request_log (id, request_id, tenant_id, key_id, model, provider, stream, status, http_status, \
             tokens_in, tokens_out, latency_ms, created_at, logged_at) \
             VALUES ('log_seed', 'req_seed', $1, 'key_seed', 'm', 'p', FALSE, 'ok', 200, 1000, 234, 5.0, $2, $2)")
            .bind(&tenant.id).bind(now_ms() - 10_000).execute(p).await?;
        Ok::<_, sqlx::Error>(())
    }.await)
    .unwrap();

    let mock = MockUpstream::start().await;
    let stripe = MockStripe::start().await;
    stripe.set_mode(mock_stripe::STALL_FIRST);
    let limited = [single.id.clone(), through.id.clone()];
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let config_a = replica_config(&mock.url, &stripe.url, &dir_a.join("spill"), &limited);
    let config_b = replica_config(&mock.url, &stripe.url, &dir_b.join("spill"), &limited);

    // A first: it takes the meter job and is left hanging on Stripe's answer.
    let mut a = Gateway::start_with_key(&dir_a, &db, &config_a, main.secret.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stripe.state.stalled.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no meter push reached Stripe:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = Gateway::start_with_key(&dir_b, &db, &config_b, main.secret.clone()).await;
    let lb = Nginx::start(dir.path(), &[a.url.clone(), b.url.clone()]).await;

    // The official client through nginx and at each replica.
    let out = crate::python_sdk::run_script(
        "replicas_e2e.py",
        &[
            ("QM_LB_URL", lb.url.as_str()),
            ("QM_A_URL", a.url.as_str()),
            ("QM_B_URL", b.url.as_str()),
            ("QM_API_KEY", main.secret.as_str()),
            ("QM_LIMITED_SINGLE_KEY", single.secret.as_str()),
            ("QM_LIMITED_LB_KEY", through.secret.as_str()),
        ],
    )
    .await;
    if let Some(out) = out {
        println!("{}", out.trim());
    }

    // Propagation: a write through A until a semantic hit through B; an invalidation
    // through A until B misses.
    let http = reqwest::Client::new();
    let ask = |url: String, text: String, headers: Vec<(&'static str, &'static str)>| {
        let http = http.clone();
        let key = main.secret.clone();
        async move {
            let mut r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(
                    &json!({"model": "mock-ok", "messages": [{"role": "user", "content": text}]}),
                );
            for (k, v) in headers {
                r = r.header(k, v);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let h = r.headers().clone();
            let _ = r.bytes().await;
            h
        }
    };
    let (mut write_ms, mut invalidate_ms) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let q = format!("Where is the audit log of project number {i} kept?");
        let paraphrase = format!("Where's the audit log of project number {i} kept?");
        let written = ask(a.url.clone(), q.clone(), vec![]).await;
        assert_eq!(written["x-quartermaster-cache"], "miss");
        let t = Instant::now();
        let entry = loop {
            let h = ask(
                b.url.clone(),
                paraphrase.clone(),
                vec![
                    ("x-quartermaster-cache", "no-write"),
                    ("x-quartermaster-cache-threshold", "0.8"),
                ],
            )
            .await;
            if h["x-quartermaster-cache"] == "hit" {
                break h["x-quartermaster-cache-entry"]
                    .to_str()
                    .unwrap()
                    .to_string();
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "never a hit through B"
            );
        };
        write_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let r = http
            .delete(format!("{}/v1/cache/entries/{entry}", a.url))
            .bearer_auth(&main.secret)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let t = Instant::now();
        loop {
            let h = ask(
                b.url.clone(),
                paraphrase.clone(),
                vec![
                    ("x-quartermaster-cache", "no-write"),
                    ("x-quartermaster-cache-threshold", "0.8"),
                ],
            )
            .await;
            if h["x-quartermaster-cache"] == "miss" {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "still a hit through B"
            );
        }
        invalidate_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "cross-replica propagation over 20 entries: cache write to a semantic hit on the other replica p50 {:.1} ms, p99 {:.1} ms; invalidation to a miss p50 {:.1} ms, p99 {:.1} ms",
        pct(&mut write_ms, 0.5),
        pct(&mut write_ms, 0.99),
        pct(&mut invalidate_ms, 0.5),
        pct(&mut invalidate_ms, 0.99)
    );

    // kill -9 of A under load through nginx.
    let finished = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = Vec::new();
    for w in 0..8 {
        let (http, url, key) = (http.clone(), lb.url.clone(), main.secret.clone());
        let (finished, failures, sent) = (finished.clone(), failures.clone(), sent.clone());
        load.push(tokio::spawn(async move {
            for i in 0..40 {
                sent.fetch_add(1, Ordering::SeqCst);
                let body = json!({"model": "mock-ok", "stream": (w + i) % 2 == 0,
                    "messages": [{"role": "user", "content": format!("load {w} {i}")}]});
                let r = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .header("x-quartermaster-cache", "off")
                    .json(&body)
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) if r.status() == 200 => {
                        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
                        match r.text().await {
                            // A whole answer: the last event, or a whole completion.
                            Ok(t) if t.ends_with("data: [DONE]\n\n") || t.ends_with('}') => {
                                finished.lock().unwrap().push(id);
                                true
                            }
                            _ => false,
                        }
                    }
                    _ => false,
                };
                if !ok {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    while sent.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill9();
    let killed_at = sent.load(Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    let finished = finished.lock().unwrap().clone();
    let failed = failures.load(Ordering::SeqCst);
    println!(
        "kill -9 under load: {} requests finished, {failed} failed (A killed after {killed_at} were sent)",
        finished.len()
    );
    // Only requests in flight at the kill may fail; the survivor serves the rest.
    assert!(failed <= 16, "{failed} failed");
    assert!(finished.len() >= 300, "{} finished", finished.len());
    let after = ask(
        lb.url.clone(),
        "still there?".into(),
        vec![("x-quartermaster-cache", "off")],
    )
    .await;
    assert_eq!(after["x-quartermaster-model"], "mock-ok");

    // The meter job A held runs on B after its lease (or a later window's job pushes the
    // pending record first): counted at Stripe exactly once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = meter_jobs(&store).await;
        if stripe.events().len() == 1 && jobs.first().is_some_and(|(s, _)| s == "done") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the meter job was not taken over: {jobs:?}\n{}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stripe.events().len(), 1, "counted once");

    // A comes back on its folder and replays its journal: every finished request has a row.
    let a2 = Gateway::start_with_key(&dir_a, &db, &config_a, main.secret.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logged: Vec<String> = on_pool!(&store, p => sqlx::query_scalar::<_, String>(
            "SELECT request_id FROM request_log").fetch_all(p).await)
        .unwrap();
        let logged: std::collections::HashSet<String> = logged.into_iter().collect();
        let missing: Vec<&String> = finished.iter().filter(|id| !logged.contains(*id)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} finished requests have no log row, e.g. {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(3)],
            a2.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dupes: i64 = on_pool!(&store, p => sqlx::query_scalar(
        "SELECT COUNT(*) - COUNT(DISTINCT id) FROM request_log").fetch_one(p).await)
    .unwrap();
    assert_eq!(dupes, 0, "no row written twice");
    drop(lb);
    drop(b);
    drop(a2);
}
