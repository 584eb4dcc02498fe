//! The OpenAPI document against the running gateway, fuzzed by schemathesis (the
//! property-based API fuzzer, pinned in tests/python/requirements.txt): every operation gets
//! examples from its schemas and edge cases around them, and no answer may be a 5xx or fail
//! to match its documented schema. Bounded: a fixed number of cases per operation
//! (`QM_FUZZ_EXAMPLES`, default 25) and a fixed seed (`QM_FUZZ_SEED`), so a run is
//! reproducible and a failure names the case to replay.

use crate::common;

use std::path::PathBuf;

use common::TestApp;
use serde_json::Value;

const ADMIN: &str = "openapi-fuzz-admin-key-0123456789";

fn schemathesis() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/bin/schemathesis");
    if bin.exists() {
        return Some(bin);
    }
    if std::env::var("QM_SKIP_PYTHON").as_deref() == Ok("1") {
        eprintln!("SKIPPED the API fuzzer: QM_SKIP_PYTHON=1");
        return None;
    }
    panic!("schemathesis is missing: run scripts/py-env.sh");
}

/// One schemathesis run over the operations whose path matches `include`, sending `key`.
async fn fuzz(app: &TestApp, name: &str, include: &str, key: &str) {
    let Some(bin) = schemathesis() else { return };
    let examples = std::env::var("QM_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".into());
    let seed = std::env::var("QM_FUZZ_SEED").unwrap_or_else(|_| "20261206".into());
    let reports = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis");
    std::fs::create_dir_all(&reports).unwrap();
    let mut command = tokio::process::Command::new(bin);
    command
        .arg("run")
        .arg(format!("{}/openapi.json", app.url))
        .args(["--url", &app.url])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--workers", "1", "--request-timeout", "20"])
        .args(["--include-path-regex", include])
        // An open event stream never ends: its own tests cover it.
        .args(["--exclude-path", "/v1/notifications/stream"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--report", "junit"])
        .arg("--report-junit-path")
        .arg(reports.join(format!("{name}.xml")));
    if !key.is_empty() {
        command.args(["-H", &format!("Authorization: Bearer {key}")]);
    }
    let output = command.output().await.expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found failures ({name}):\n{stdout}\n{stderr}"
    );
    println!("{name}:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_its_schema() {
    // Every door and webhook on, so the fuzzer reaches their parsers rather than a 404.
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let mut app = TestApp::spawn_with(common::Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 2\n\
         [admin]\napi_key = \"{ADMIN}\"\n\
         [embeddings]\nmodel_dir = \"{}\"\n[cache]\nenabled = true\n\
         [stripe]\nwebhook_secrets = [\"whsec_fuzz\"]\n\
         [cms.sources.sanity]\nkind = \"sanity\"\nsecrets = [\"sanity-fuzz-secret\"]\ntenant = \"tenant-a\"\n\
         [cms.sources.contentful]\nkind = \"contentful\"\nsecrets = [\"contentful-fuzz-secret\"]\ntenant = \"tenant-a\"\n\
         [identity.webhooks.clerk]\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\ntenant = \"tenant-a\"\n\
         [email.webhooks]\nresend_secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\npostmark_basic_auth = [\"pm:fuzz\"]\n\
         [cal.sources.cal]\nsecrets = [\"cal-fuzz-secret\"]\ntenant = \"tenant-a\"\n",
        models.display()
    )))
    .await;
    // The document is served to anyone and is OpenAPI 3.1.
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // The tenant's API with a tenant key; the operator API with the admin key; the open
    // and signed endpoints with no credential (the webhooks refuse unsigned bodies).
    fuzz(&app, "tenant", "^/(v1|api)/", &app.key).await;
    fuzz(&app, "admin", "^/admin/", ADMIN).await;
    fuzz(
        &app,
        "open",
        "^/(webhooks/|healthz|readyz|metrics|openapi)",
        "",
    )
    .await;
    app.shutdown().await;
}
