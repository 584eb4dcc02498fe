//! Tiered routing, retries and failover, circuit breakers, budgets, hot reload and the
//! operator views, against mock upstreams that fail in each way.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Options, TestApp, chat_body, wait_for};
use serde_json::{Value, json};

const ADMIN: &str = "adm_routing";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Tiers over the mock models; `tiers` is appended verbatim.
fn options(tiers: &str, more: &str) -> Options {
    Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[auth]\nkey_cache_ttl_ms = 0\n[admin]\napi_key = \"{ADMIN}\"\n\
         [models.mock-400]\nprovider = \"mock\"\n[models.mock-hang]\nprovider = \"mock\"\n\
         [models.mock-401]\nprovider = \"mock\"\n\
         [routing]\nexamples_path = \"{}\"\nmax_retries_per_target = 1\nretry_budget_ms = 5000\n\
         backoff_base_ms = 10\nbackoff_max_ms = 20\nbreaker_failures = 3\nbreaker_open_secs = 60\n\
         {tiers}\n{more}",
        root().join("prompts/router_examples.jsonl").display()
    ))
}

const TIERS: &str = "[tiers.cheap]\nmodels = [\"mock-500\", \"mock-ok\"]\n\
                     [tiers.strong]\nmodels = [\"aliased\"]\nfallback = \"cheap\"\n\
                     [tiers.flaky]\nmodels = [\"mock-429\", \"mock-ok\"]\n\
                     [tiers.hanging]\nmodels = [\"mock-hang\", \"mock-ok\"]\n\
                     [tiers.midfail]\nmodels = [\"mock-fail-mid\", \"mock-ok\"]\n\
                     [tiers.breaker]\nmodels = [\"mock-503\", \"mock-no-usage\"]\n\
                     [tiers.keyless]\nmodels = [\"mock-401\", \"mock-ok\"]\n";

async fn auto(app: &TestApp, tier: Option<&str>, stream: bool) -> reqwest::Response {
    let mut req = app
        .post("/v1/chat/completions")
        .json(&chat_body("auto", stream));
    if let Some(t) = tier {
        req = req.header("x-quartermaster-tier", t);
    }
    req.send().await.unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_fail_over_and_never_after_the_first_byte() {
    let mut app = TestApp::spawn_with(options(TIERS, "")).await;
    // 5xx: one retry on mock-500, then mock-ok answers.
    let resp = auto(&app, None, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-quartermaster-model"), "mock-ok");
    assert_eq!(
        header(&resp, "x-quartermaster-route"),
        "tier=cheap; reason=default"
    );
    assert_eq!(app.mock.calls_for("mock-500"), 2, "first try + 1 retry");
    // The same for a stream: nothing had reached the client.
    let resp = auto(&app, None, true).await;
    assert_eq!(header(&resp, "x-quartermaster-model"), "mock-ok");
    assert!(resp.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    // 429 and a timeout before the first byte fail over too.
    let resp = auto(&app, Some("flaky"), false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.mock.calls_for("mock-429"), 2);
    let resp = auto(&app, Some("hanging"), true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-quartermaster-model"), "mock-ok");
    assert_eq!(app.mock.calls_for("mock-hang"), 2);
    // A failure after the first chunk is an SSE error event: no retry, no failover.
    let ok_before = app.mock.calls_for("mock-ok");
    let resp = auto(&app, Some("midfail"), true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-quartermaster-model"), "mock-fail-mid");
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("\"error\"") && !body.contains("[DONE]"),
        "{body}"
    );
    assert_eq!(app.mock.calls_for("mock-fail-mid"), 1);
    assert_eq!(app.mock.calls_for("mock-ok"), ok_before);
    // A 4xx is the request's fault: returned at once, not retried.
    let resp = app.chat(chat_body("mock-400", false)).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(app.mock.calls_for("mock-400"), 1);
    // The upstream refusing the gateway's own key (401) is not the client's fault: the next
    // model answers, without a retry of the refused key...
    let resp = auto(&app, Some("keyless"), false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-quartermaster-model"), "mock-ok");
    assert_eq!(app.mock.calls_for("mock-401"), 1);
    // ...and with no model left, the client sees a 502, never the upstream's 401.
    let resp = app.chat(chat_body("mock-401", false)).await;
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    assert_eq!(app.mock.calls_for("mock-401"), 2);
    // An explicit model bypasses routing (but is still retried).
    let resp = app.chat(chat_body("mock-ok", false)).await;
    assert_eq!(
        header(&resp, "x-quartermaster-route"),
        "tier=none; reason=explicit"
    );
    // An unknown tier hint is a 400 naming the tiers.
    let resp = auto(&app, Some("platinum"), false).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"].as_str().unwrap().contains("cheap"),
        "{err}"
    );
    app.shutdown().await;
}

/// An upstream's 429 with `Retry-After` longer than the router's backoff: the retry waits
/// for it (the mock sees the second call at least a second after the first), streamed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_from_the_upstream_is_honoured() {
    let mut app = TestApp::spawn_with(options(
        TIERS,
        "[models.mock-429-then-ok]\nprovider = \"mock\"\n",
    ))
    .await;
    for (round, stream) in [(1, false), (2, true)] {
        let resp = app
            .post("/v1/chat/completions")
            .json(&chat_body("mock-429-then-ok", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "stream={stream}");
        let body = resp.text().await.unwrap();
        if stream {
            assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
        } else {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["choices"][0]["message"]["content"], "Hello from the mock");
        }
        let arrivals = app.mock.arrivals_for("mock-429-then-ok");
        assert_eq!(arrivals.len(), 2 * round, "one 429, one retry");
        let gap = arrivals[2 * round - 1] - arrivals[2 * round - 2];
        // The router's own backoff here is at most 10 ms.
        assert!(
            gap >= Duration::from_millis(950),
            "stream={stream}: retried after {gap:?}, before the upstream's Retry-After of 1 s"
        );
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_stops_calling_a_failing_model() {
    let mut app = TestApp::spawn_with(options(TIERS, "")).await;
    // Breaker opens at the 3rd consecutive failure: request 1 fails twice (try + retry),
    // request 2 fails once more and the circuit opens.
    for _ in 0..2 {
        let resp = auto(&app, Some("breaker"), false).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-quartermaster-model"), "mock-no-usage");
    }
    assert_eq!(app.mock.calls_for("mock-503"), 3);
    for _ in 0..3 {
        let resp = auto(&app, Some("breaker"), false).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        app.mock.calls_for("mock-503"),
        3,
        "an open circuit is not called"
    );
    let metrics = app.get_text("/metrics").await;
    assert!(metrics.contains("qm_circuit_opened_total"), "{metrics}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_bounds_the_time_spent() {
    // The first attempt's timeout uses up a 300 ms budget: no retry, no failover.
    let mut opts = options(
        "[tiers.cheap]\nmodels = [\"mock-hang\", \"mock-ok\"]\n[tiers.strong]\nmodels = [\"mock-ok\"]\n",
        "",
    );
    opts.extra = opts
        .extra
        .replace("retry_budget_ms = 5000", "retry_budget_ms = 300");
    let mut app = TestApp::spawn_with(opts).await;
    let started = std::time::Instant::now();
    let resp = auto(&app, None, false).await;
    assert_eq!(resp.status(), 504, "the upstream's timeout, not a failover");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(app.mock.calls_for("mock-hang"), 1);
    assert_eq!(app.mock.calls_for("mock-ok"), 0);
    app.shutdown().await;
}

/// Seconds into the current minute: per-minute tests wait for a fresh minute if near its end.
async fn avoid_minute_boundary() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now % 60 > 50 {
        tokio::time::sleep(Duration::from_secs(61 - now % 60)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_limit_is_a_429_with_retry_after() {
    avoid_minute_boundary().await;
    let mut app = TestApp::spawn_with(options(
        TIERS,
        "[limits.key_default]\nrequests_per_minute = 3\n",
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 200);
    }
    let resp = app.chat(chat_body("mock-ok", false)).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = header(&resp, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "requests_per_minute_exceeded");
    assert_eq!(err["error"]["type"], "rate_limit_error");
    app.shutdown().await;
}

const PRICED: &str = "[models.priced]\nprovider = \"mock\"\nupstream_model = \"mock-ok\"\ninput_usd_per_mtok = 100000.0\noutput_usd_per_mtok = 100000.0\n";

fn priced_options(limits: &str) -> Options {
    // `priced` is mock-ok, which reports 11 + 4 tokens: $1.50 a request at these prices.
    let mut o = options("", &format!("{limits}\n"));
    o.extra = o
        .extra
        .replace("[models.mock-hang]", &format!("{PRICED}[models.mock-hang]"));
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_a_budget_threshold_notifies_the_tenant_once() {
    // $1.50 a request against $4.00 a day: 37.5 %, 75 %, then 112.5 %.
    let limits = "[limits.tenant_default]\nusd_per_day = 4.0\n[notifications]\nbudget_alert_percent = [50, 90, 100]\n";
    let app = TestApp::spawn_with(priced_options(limits)).await;
    let body = json!({"model": "priced", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]});
    let alerts = || async {
        let inbox = app.get_json("/v1/notifications?limit=50").await;
        let mut subjects: Vec<String> = inbox["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["kind"] == "budget_alert")
            .map(|n| {
                assert_eq!(n["priority"], "high");
                n["subject"].as_str().unwrap().to_string()
            })
            .collect();
        subjects.sort();
        subjects
    };
    assert_eq!(
        app.post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alerts().await.is_empty(), "37.5 % crosses nothing");
    assert_eq!(
        app.post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    common::wait_for(5, "the 50 % alert", || async { alerts().await.len() == 1 }).await;
    assert_eq!(
        alerts().await,
        ["50 % of the day budget used (tenant `tenant-a`)"]
    );
    // The third passes 90 and 100 at once: one alert, the highest.
    assert_eq!(
        app.post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    common::wait_for(5, "the 100 % alert", || async { alerts().await.len() == 2 }).await;
    assert_eq!(
        alerts().await,
        [
            "100 % of the day budget used (tenant `tenant-a`)",
            "50 % of the day budget used (tenant `tenant-a`)"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_budget_holds_under_concurrency_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("budget.db").display());
    let limits = "[limits.tenant_default]\nusd_per_day = 2.0\n";
    let mut opts = priced_options(limits);
    opts.db_url = Some(db_url.clone());
    let mut app = TestApp::spawn_with(opts).await;
    // 10 at once, each reserving $1.50 (15 tokens at most with max_tokens = 10): only the
    // first two fit under $2.00 + reserved.
    let body = json!({"model": "priced", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]});
    let sends = (0..10).map(|_| app.post("/v1/chat/completions").json(&body).send());
    let results = futures::future::join_all(sends).await;
    let mut ok = 0;
    for r in results {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                let err: Value = r.json().await.unwrap();
                assert_eq!(err["error"]["code"], "daily_budget_exceeded");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!((1..=2).contains(&ok), "{ok} admitted");
    app.shutdown().await;
    let store = app.store().await;
    let spent: f64 = quartermaster::store::on_pool!(&store, p => sqlx::query_scalar::<_, f64>(
        "SELECT CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) FROM request_log").fetch_one(p).await)
    .unwrap();
    assert!(
        spent <= 2.0 + 1.5 + 1e-9,
        "overspent by more than one request: {spent}"
    );
    assert!(spent >= 1.5 - 1e-9, "{spent}");
    // After a restart the spend is still there.
    let mut opts = priced_options(limits);
    opts.db_url = Some(db_url);
    let mut again = TestApp::spawn_with(opts).await;
    let send = || async {
        again
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    if spent >= 2.0 {
        let resp = send().await;
        assert_eq!(resp.status(), 429);
        assert!(header(&resp, "retry-after").parse::<u64>().unwrap() <= 86_400);
    } else {
        // One more fits, then the day's budget is gone.
        assert_eq!(send().await.status(), 200);
        assert_eq!(send().await.status(), 429);
    }
    // The operator view agrees.
    let usage = again.get_json_as("/admin/usage?by=model", ADMIN).await;
    let row = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "priced")
        .unwrap();
    assert!(row["spend_usd"].as_f64().unwrap() >= 1.5, "{usage}");
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_applies_valid_changes_and_keeps_the_config_on_errors() {
    avoid_minute_boundary().await;
    let mut opts = options(
        TIERS,
        "[server]\nconfig_poll_secs = 1\nshutdown_grace_secs = 2\n",
    );
    opts.config_file = true;
    let mut app = TestApp::spawn_with(opts).await;
    for _ in 0..3 {
        assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 200);
    }
    // Add a limit: applied without a restart.
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(
        &app.config_path,
        format!("{text}\n[limits.tenant_default]\nrequests_per_minute = 1\n"),
    )
    .unwrap();
    wait_for(6, "the new limit applied", || async {
        app.chat(chat_body("mock-ok", false)).await.status() == 429
    })
    .await;
    // A broken file is rejected; the running config (with the limit) stays.
    std::fs::write(
        &app.config_path,
        format!("{text}\n[tiers.bad]\nmodels = [\"nope\"]\n"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 429);
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("qm_config_reloads_total{outcome=\"rejected\"}"),
        "{metrics}"
    );
    // Tiers change too: `cheap` becomes mock-no-usage only.
    std::fs::write(
        &app.config_path,
        text.replace(
            "[tiers.cheap]\nmodels = [\"mock-500\", \"mock-ok\"]",
            "[tiers.cheap]\nmodels = [\"mock-no-usage\"]",
        ),
    )
    .unwrap();
    wait_for(6, "the new tiers applied", || async {
        header(&auto(&app, None, false).await, "x-quartermaster-model") == "mock-no-usage"
    })
    .await;
    // Each reload, applied or refused, is in the audit log with the file's hash.
    let rows = app
        .get_json_as("/admin/audit?action=config.reload", ADMIN)
        .await;
    let outcomes: Vec<&str> = rows["data"]
        .as_array()
        .expect("audit rows")
        .iter()
        .map(|r| r["detail"]["outcome"].as_str().unwrap_or(""))
        .collect();
    assert!(outcomes.contains(&"applied"), "{rows}");
    assert!(outcomes.contains(&"rejected"), "{rows}");
    assert!(
        rows["data"][0]["detail"]["sha256"]
            .as_str()
            .unwrap_or("")
            .len()
            == 64,
        "{rows}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifier_routes_easy_and_hard_prompts_and_operators_see_it() {
    let embed = format!(
        "[embeddings]\nmodel_dir = \"{}\"\n",
        root().join("models/all-MiniLM-L6-v2").display()
    );
    let mut app = TestApp::spawn_with(options(
        "[tiers.cheap]\nmodels = [\"mock-ok\"]\n[tiers.strong]\nmodels = [\"aliased\"]\nfallback = \"cheap\"\n",
        &embed,
    ))
    .await;
    wait_for(10, "the classifier trains at start", || async {
        app.get_json_as("/admin/routing", ADMIN).await["classifier_ready"] == true
    })
    .await;
    let ask = |text: &str| {
        app.post("/v1/chat/completions")
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": text}]}))
            .send()
    };
    let easy = ask("What is the capital of Portugal?").await.unwrap();
    let route = header(&easy, "x-quartermaster-route");
    assert!(
        route.starts_with("tier=cheap; reason=classifier; p_hard="),
        "{route}"
    );
    assert_eq!(header(&easy, "x-quartermaster-model"), "mock-ok");
    let hard = ask(
        "Design a fault-tolerant, multi-region payment ledger: compare consensus protocols, \
         explain how you would guarantee exactly-once settlement under network partitions, and \
         analyse the failure modes and their operational trade-offs.",
    )
    .await
    .unwrap();
    let route = header(&hard, "x-quartermaster-route");
    assert!(
        route.starts_with("tier=strong; reason=classifier"),
        "{route}"
    );
    assert_eq!(header(&hard, "x-quartermaster-model"), "aliased");
    // Rules come before the classifier.
    let code = ask("Why does this not compile?\n```rust\nlet x: u8 = 300;\n```")
        .await
        .unwrap();
    assert_eq!(
        header(&code, "x-quartermaster-route"),
        "tier=strong; reason=code_math"
    );
    let tools = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                      "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&tools, "x-quartermaster-route"),
        "tier=strong; reason=tools"
    );
    app.shutdown().await;
    // Decisions are in the request log, and in the operator view.
    let mut again = TestApp::spawn_with(Options {
        db_url: Some(app.db_url.clone()),
        ..options(
            "[tiers.cheap]\nmodels = [\"mock-ok\"]\n[tiers.strong]\nmodels = [\"aliased\"]\n",
            "",
        )
    })
    .await;
    let routing = again.get_json_as("/admin/routing", ADMIN).await;
    let count = |tier: &str, reason: &str| -> i64 {
        routing["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["tier"] == tier && r["reason"] == reason)
            .map(|r| r["requests"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(count("cheap", "classifier"), 1, "{routing}");
    assert_eq!(count("strong", "classifier"), 1, "{routing}");
    assert_eq!(count("strong", "code_math"), 1, "{routing}");
    assert_eq!(count("strong", "tools"), 1, "{routing}");
    let by_tenant = again.get_json_as("/admin/usage?by=tenant", ADMIN).await;
    assert!(
        by_tenant["data"][0]["requests"].as_i64().unwrap() >= 4,
        "{by_tenant}"
    );
    let bad = again
        .get_as("/admin/usage?by=planet", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    again.shutdown().await;
}

/// The router's offline evaluation (what `quartermaster eval router` prints): trained on
/// prompts/router_examples.jsonl, scored on a separate labeled set.
#[test]
fn router_classifier_generalises_to_the_held_out_set() {
    let model = quartermaster::embed::EmbedModel::load(
        &root().join("models/all-MiniLM-L6-v2"),
        quartermaster::embed::Backend::Fused,
        2,
        0,
    )
    .expect("run models/fetch.sh");
    let thresholds = [0.3, 0.5, 0.7];
    let report = quartermaster::route::classifier::evaluate_files(
        &model,
        &root().join("prompts/router_examples.jsonl"),
        &root().join("tests/fixtures/router_eval.jsonl"),
        &thresholds,
    )
    .unwrap();
    assert_eq!((report.train_examples, report.eval_examples), (200, 140));
    let at_half = &report.rows[1];
    assert!(at_half.accuracy >= 0.85, "{:?}", report.rows);
    // A lower threshold sends more to the strong tier.
    assert!(report.rows[0].strong_share >= report.rows[1].strong_share);
    assert!(report.rows[1].strong_share >= report.rows[2].strong_share);
}
