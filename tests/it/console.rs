//! The operator console: signing in for a console session, enrolling TOTP (the first code
//! confirms it, then it is required and a code is good once), an admin resetting it, roles
//! on the same admin API, the overview's figures, and the console itself in a real browser
//! (Debian's Chromium driven by Playwright: tests/js/console_e2e.mjs).

use crate::common;

use std::path::{Path, PathBuf};

use common::TestApp;
use common::mock_email::MockEmail;
use quartermaster::auth::totp;
use serde_json::{Value, json};

const ADMIN: &str = "console-admin-key-0123456789";
const OPS: &str = "console-operator-key-0123456789";
const OPS_ENV: &str = "QM_TEST_CONSOLE_OPS_KEY";

/// An admin key, an `operator` key, and `admin` (more of `[admin]`) and `more` sections.
fn admin_extra(admin: &str, more: &str) -> String {
    // SAFETY: set before the app reads it; every test of this file sets the same value.
    unsafe { std::env::set_var(OPS_ENV, OPS) };
    format!(
        "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 2\n\
         [admin]\napi_key = \"{ADMIN}\"\n{admin}\n\
         [auth.operators.ops]\nkey_env = \"{OPS_ENV}\"\nrole = \"operator\"\n{more}"
    )
}

/// The code of the current 30 s step, `offset` steps away.
fn code(secret: &str, offset: i64) -> String {
    let raw = totp::unbase32(secret).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let step = (now / totp::STEP_SECS) as i64 + offset;
    format!("{:06}", totp::code(&raw, step as u64))
}

/// Calls `get` until `done` holds for its answer (at most `secs`); returns that answer.
async fn poll<F, Fut>(secs: u64, what: &str, get: F, done: impl Fn(&Value) -> bool) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let v = get().await;
        if done(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: {what}: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn sign_in(app: &TestApp, key: &str, code: Option<&str>) -> (u16, Value) {
    let body = match code {
        Some(c) => json!({"code": c}),
        None => json!({}),
    };
    let r = app
        .post_as("/admin/session", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn sessions_and_a_second_factor_guard_the_admin_api() {
    let mut app = TestApp::spawn_with(common::Options::extra(&admin_extra("", ""))).await;

    // The admin key signs in without a code (no enrolment): a session with its role.
    let (status, admin) = sign_in(&app, ADMIN, None).await;
    assert_eq!(status, 200, "{admin}");
    let admin_token = admin["token"].as_str().unwrap().to_string();
    assert!(admin_token.starts_with("qms_"));
    assert_eq!(admin["role"], "admin");
    let me = app.get_json_as("/admin/me", &admin_token).await;
    assert_eq!(me["actor"], "admin-key");
    assert_eq!(me["mfa"]["enrolled"], false);
    let (status, _) = sign_in(&app, "not-a-key-at-all-0000000", None).await;
    assert_eq!(status, 401);
    // A session cannot mint another.
    let (status, _) = sign_in(&app, &admin_token, None).await;
    assert_eq!(status, 400);

    // The operator enrols: a secret and its otpauth URI; a wrong code does not confirm.
    let (status, ops) = sign_in(&app, OPS, None).await;
    assert_eq!(status, 200, "{ops}");
    let ops_token = ops["token"].as_str().unwrap().to_string();
    let enrol = app
        .post_json_as("/admin/mfa/enroll", &ops_token, &json!({}))
        .await;
    let secret = enrol["secret"].as_str().unwrap().to_string();
    let uri = enrol["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Quartermaster:operator%3Aops?secret=")
            && uri.contains(&secret),
        "{uri}"
    );
    let me = app.get_json_as("/admin/me", &ops_token).await;
    assert_eq!(me["mfa"], json!({"enrolled": false, "pending": true}));
    let wrong = app
        .post_as("/admin/mfa/confirm", &ops_token)
        .json(&json!({"code": "000000"}))
        .send()
        .await
        .unwrap();
    // (A one-in-a-million chance that 000000 is the right code is not worth a retry loop.)
    assert_eq!(wrong.status(), 401);
    assert_eq!(error_code(&wrong.json().await.unwrap()), "invalid_mfa_code");
    // A session opened with the key alone before the enrolment (a stolen key's, say).
    let (_, other) = sign_in(&app, OPS, None).await;
    let other = other["token"].as_str().unwrap().to_string();
    let first = code(&secret, 0);
    let ok = app
        .post_json_as("/admin/mfa/confirm", &ops_token, &json!({"code": first}))
        .await;
    assert_eq!(ok["enrolled"], true, "{ok}");
    let gone = app.get_as("/admin/me", &other).send().await.unwrap();
    assert_eq!(gone.status(), 401, "the enrolment ends every other session");
    let again = app
        .post_as("/admin/mfa/enroll", &ops_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        409,
        "an enrolment is not replaced by its holder"
    );

    let operators = app.get_json_as("/admin/operators", &admin_token).await;
    assert_eq!(
        operators["data"],
        json!([{"actor": "admin-key", "role": "admin", "mfa": "none"},
               {"actor": "operator:ops", "role": "operator", "mfa": "enrolled"}])
    );

    // From now on the raw key only signs in, and only with a fresh code.
    let raw = app.get_as("/admin/jobs/stats", OPS).send().await.unwrap();
    assert_eq!(raw.status(), 401);
    assert_eq!(error_code(&raw.json().await.unwrap()), "mfa_required");
    let (status, body) = sign_in(&app, OPS, None).await;
    assert_eq!((status, error_code(&body)), (401, "mfa_required"));
    let (status, body) = sign_in(&app, OPS, Some(&first)).await;
    assert_eq!(
        (status, error_code(&body)),
        (401, "invalid_mfa_code"),
        "a code is good once"
    );
    let (status, body) = sign_in(&app, OPS, Some(&code(&secret, 1))).await;
    assert_eq!(status, 200, "the next step's code (clock drift): {body}");
    assert_eq!(
        app.post_as("/admin/session", ADMIN)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .headers()["cache-control"],
        "no-store"
    );
    let session = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["mfa"]["enrolled"], true);

    // The session carries the operator's role: reading and re-driving, not keys.
    let stats = app
        .get_as("/admin/jobs/stats", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    let key = app
        .post_as("/admin/keys", &session)
        .json(&json!({"tenant": "acme", "name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(key.status(), 403);

    // Signing out ends the session everywhere.
    let out = app
        .delete_as("/admin/session", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let gone = app.get_as("/admin/me", &session).send().await.unwrap();
    assert_eq!(gone.status(), 401);

    // Guessing is slowed: five wrong codes lock the account's codes out, good ones too.
    for _ in 0..5 {
        let (status, _) = sign_in(&app, OPS, Some("000000")).await;
        assert_eq!(status, 401);
    }
    let (status, body) = sign_in(&app, OPS, Some(&code(&secret, 0))).await;
    assert_eq!(
        (status, error_code(&body)),
        (429, "too_many_failed_authentications"),
        "{body}"
    );

    // An admin resets a lost authenticator: the operator's sessions end, the key works.
    let reset = app
        .delete_as("/admin/operators/operator:ops/mfa", &admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    let old = app.get_as("/admin/me", &ops_token).send().await.unwrap();
    assert_eq!(old.status(), 401, "sessions of a reset account end");
    let raw = app.get_as("/admin/jobs/stats", OPS).send().await.unwrap();
    assert_eq!(raw.status(), 200);
    // Only an admin resets: the operator cannot reset anyone's.
    let (_, ops) = sign_in(&app, OPS, None).await;
    let denied = app
        .delete_as(
            "/admin/operators/admin-key/mfa",
            ops["token"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);

    // Sign-ins are in the audit log, with their outcome.
    let audit = app.get_json_as("/admin/audit", &admin_token).await;
    let sign_ins = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == "/admin/session")
        .count();
    assert!(sign_ins >= 5, "{audit}");
    let newest = app
        .get_json_as("/admin/audit?order=desc&limit=2", &admin_token)
        .await;
    let seqs: Vec<i64> = newest["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.len() == 2 && seqs[0] > seqs[1], "{newest}");
    let bad = app
        .get_as("/admin/audit?order=sideways", &admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    app.shutdown().await;
}

#[tokio::test]
async fn the_overview_charts_requests_errors_and_latency() {
    // Priced, with a daily budget: the tenants' listing shows both.
    let limits = "[limits.tenant_default]\nusd_per_day = 5.0\n\
                  [models.priced]\nprovider = \"mock\"\nupstream_model = \"mock-ok\"\n\
                  input_usd_per_mtok = 1000.0\noutput_usd_per_mtok = 1000.0\n";
    let mut app = TestApp::spawn_with(common::Options::extra(&admin_extra("", limits))).await;
    for model in ["priced", "priced", "priced", "mock-500"] {
        let _ = app.chat(common::chat_body(model, false)).await;
    }
    let token = sign_in(&app, ADMIN, None).await.1["token"]
        .as_str()
        .unwrap()
        .to_string();
    let overview = poll(
        10,
        "the request log has the four requests",
        || app.get_json_as("/admin/overview", &token),
        |o| o["totals"]["requests"].as_u64() == Some(4),
    )
    .await;
    let totals = &overview["totals"];
    assert_eq!(totals["errors"], 1, "{overview}");
    assert!(totals["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(totals["p99_ms"].as_f64().unwrap() >= totals["p50_ms"].as_f64().unwrap());
    let series = overview["series"].as_array().unwrap();
    assert!(series.len() <= 60 && !series.is_empty(), "{}", series.len());
    let charted: u64 = series.iter().map(|b| b["requests"].as_u64().unwrap()).sum();
    assert_eq!(charted, 4);
    let models: Vec<&str> = overview["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["priced", "mock-500"], "the busiest first");
    assert_eq!(overview["by_tenant"][0]["key"], "tenant-a");
    // One tenant's and one model's, and a window with nothing in it.
    let one = app
        .get_json_as("/admin/overview?model=mock-500&tenant=tenant-a", &token)
        .await;
    assert_eq!(one["totals"]["requests"], 1);
    let empty = app
        .get_json_as("/admin/overview?since_ms=1000&until_ms=2000", &token)
        .await;
    assert_eq!(empty["totals"]["requests"], 0);
    assert_eq!(empty["totals"]["p50_ms"], Value::Null);
    // Tenants carry their limits and what they spent in the budgets' windows.
    let tenants = app.get_json_as("/admin/tenants", &token).await;
    let a = &tenants["data"][0];
    assert_eq!(a["name"], "tenant-a", "{tenants}");
    assert_eq!(a["limits"]["usd_per_day"], 5.0);
    assert!(a["spend_today_usd"].as_f64().unwrap() > 0.0, "{a}");
    assert!(a["spend_month_usd"].as_f64().unwrap() >= a["spend_today_usd"].as_f64().unwrap());
    for query in [
        "bucket_ms=1",
        "bucket_ms=9223372036854775807",
        "since_ms=5&until_ms=4",
    ] {
        let bad = app
            .get_as(&format!("/admin/overview?{query}"), &token)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400, "{query}");
    }
    app.shutdown().await;
}

/// The console in Chromium: sign-in, tenants with their budgets, a key created and listed, a
/// document uploaded, a grounded playground answer streamed with its citations and one through
/// a picked tier, a dead job re-driven, the cache and audit pages (newest first), the
/// operators list, and an operator's TOTP enrolment, sign-in with a code and reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dist = root.join("console/dist");
    if !dist.join("index.html").exists() {
        if std::env::var("QM_SKIP_JS").as_deref() == Ok("1") {
            eprintln!("SKIPPED the console browser test: QM_SKIP_JS=1");
            return;
        }
        panic!("console/dist is missing: run scripts/setup.sh (scripts/console-env.sh builds it)");
    }
    let email = MockEmail::start().await;
    let models = root.join("models/all-MiniLM-L6-v2");
    let more = format!(
        "[embeddings]\nmodel_dir = \"{}\"\n\
         [cache]\nenabled = true\n\
         [routing]\neval_path = \"{}\"\nexamples_path = \"{}\"\n\
         [tiers.cheap]\nmodels = [\"mock-ok\"]\n[tiers.strong]\nmodels = [\"mock-ok\"]\n\
         [jobs]\npoll_interval_ms = 50\nbackoff_base_ms = 50\nbackoff_max_ms = 100\n\
         [email]\nprovider = \"resend\"\nbase_url = \"{}\"\napi_key = \"re_test\"\nfrom = \"QM <noreply@qm.test>\"\n",
        models.display(),
        root.join("tests/fixtures/router_eval.jsonl").display(),
        root.join("prompts/router_examples.jsonl").display(),
        email.url,
    );
    let console_dir = format!("console_dir = \"{}\"", dist.display());
    let extra = admin_extra(&console_dir, &more);
    let mut app = TestApp::spawn_with(common::Options::extra(&extra)).await;
    let store = app.store().await;
    store.ensure_tenant("acme").await.unwrap();

    // Traffic for the overview's charts.
    for model in ["mock-ok", "mock-ok", "mock-500", "auto"] {
        let _ = app.chat(common::chat_body(model, false)).await;
    }
    // The routing page's curve: the classifier scored on the evaluation prompts.
    let routing = poll(
        60,
        "the classifier is trained and scored",
        || app.get_json_as("/admin/routing", ADMIN),
        |r| r["curve"].is_array(),
    )
    .await;
    assert_eq!(routing["curve"].as_array().unwrap().len(), 9, "{routing}");

    // A dead job: the tenant's key notice, its provider down for every attempt.
    let contact = app
        .http
        .put(format!("{}/admin/tenants/acme/contact", app.url))
        .bearer_auth(ADMIN)
        .json(&json!({"email": "ops@acme.test"}))
        .send()
        .await
        .unwrap();
    assert!(contact.status().is_success(), "{}", contact.status());
    email.fail_next(&[(503, None); 8]);
    let seed = app
        .post_json_as(
            "/admin/keys",
            ADMIN,
            &json!({"tenant": "acme", "name": "seed"}),
        )
        .await;
    assert!(seed["secret"].is_string(), "{seed}");
    poll(
        20,
        "the refused email's job is dead",
        || app.get_json_as("/admin/jobs/stats", ADMIN),
        |s| s["counts"]["dead"].as_u64().unwrap_or(0) > 0,
    )
    .await;
    let screenshots = match std::env::var("QM_UPDATE_SCREENSHOTS").as_deref() {
        Ok("1") => root.join("docs/console"),
        _ => std::env::temp_dir().join(format!("qm-console-{}", std::process::id())),
    };
    let failures = root.join("target/console-failures");
    std::fs::create_dir_all(&screenshots).unwrap();
    std::fs::create_dir_all(&failures).unwrap();
    let out = common::node_script(
        "console_e2e.mjs",
        &[
            ("QM_BASE_URL", app.url.as_str()),
            ("QM_ADMIN_KEY", ADMIN),
            ("QM_OPERATOR_KEY", OPS),
            ("QM_SCREENSHOTS", &screenshots.display().to_string()),
            ("QM_FAILURE_DIR", &failures.display().to_string()),
        ],
    )
    .await;
    if let Some(out) = out {
        assert!(out.contains("passed, 0 failed"), "{out}");
        for page in ["overview", "keys", "jobs", "playground"] {
            assert!(
                Path::new(&screenshots).join(format!("{page}.png")).exists(),
                "{page}.png"
            );
        }
    }
    // What the browser did went through the admin API: the re-driven job was delivered.
    common::wait_for(20, "the re-driven email is delivered", || {
        let email = &email;
        async move { !email.delivered().is_empty() }
    })
    .await;
    app.shutdown().await;
}
