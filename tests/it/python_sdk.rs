//! End to end with the official `openai` Python package against the real server socket.
//! The interpreter is `.venv-tools/bin/python` (made by `scripts/py-env.sh`) or `QM_PYTHON`.

use crate::common;

use std::path::PathBuf;

use common::TestApp;

pub(crate) fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("QM_PYTHON") {
        return Some(p.into());
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/bin/python");
    venv.exists().then_some(venv)
}

/// Runs `tests/python/{script}` with `env`; asserts it succeeded with no failed case and
/// returns its output. `None` only when QM_SKIP_PYTHON=1 and no interpreter is found: the
/// suite demands the clients otherwise (not a silent pass).
pub async fn run_script(script: &str, env: &[(&str, &str)]) -> Option<String> {
    let Some(python) = python() else {
        if std::env::var("QM_SKIP_PYTHON").as_deref() == Ok("1") {
            eprintln!("SKIPPED {script}: QM_SKIP_PYTHON=1");
            return None;
        }
        panic!(
            "no Python with the openai and stripe packages: run scripts/py-env.sh (or set QM_PYTHON)"
        );
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    Some(common::run_client_script(&python, &path, None, env).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_client_end_to_end() {
    let mut app = TestApp::spawn().await;
    run_script(
        "openai_sdk_e2e.py",
        &[("QM_BASE_URL", &app.url), ("QM_API_KEY", &app.key)],
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_stripe_signatures_are_accepted_exactly_when_stripe_accepts_them() {
    let (old, new) = ("whsec_py_old_secret", "whsec_py_new_secret");
    let mut app = TestApp::spawn_with(common::Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[stripe]\nwebhook_secrets = [\"{old}\", \"{new}\"]\n"
    )))
    .await;
    let env = [
        ("QM_BASE_URL", app.url.as_str()),
        ("QM_WEBHOOK_SECRET", new),
        ("QM_OLD_SECRET", old),
    ];
    if let Some(stdout) = run_script("stripe_webhook_e2e.py", &env).await {
        assert!(stdout.contains("9 passed, 0 failed"), "{stdout}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_client_parses_cache_replays() {
    // The embedder is on so the script can also ground a chat on an ingested document.
    let mut app = TestApp::spawn_with(common::Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[cache]\nenabled = true\n[embeddings]\nmodel_dir = \"{}\"\n",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/all-MiniLM-L6-v2")
            .display()
    )))
    .await;
    if let Some(stdout) = run_script(
        "openai_cache_e2e.py",
        &[("QM_BASE_URL", &app.url), ("QM_API_KEY", &app.key)],
    )
    .await
    {
        // Live answers: the first, any polled before the write landed, the no-read, and
        // the two grounded ones.
        let polled: usize = stdout
            .lines()
            .find_map(|l| l.strip_prefix("polled_misses="))
            .and_then(|n| n.trim().parse().ok())
            .expect("the script reports its polls");
        assert_eq!(app.mock.calls_for("mock-ok"), 4 + polled);
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_client_speaks_the_responses_api() {
    let mut app = TestApp::spawn().await;
    run_script(
        "openai_responses_e2e.py",
        &[("QM_BASE_URL", &app.url), ("QM_API_KEY", &app.key)],
    )
    .await;
    app.shutdown().await;
}

/// tiktoken's `cl100k_base.tiktoken`, rebuilt from the ranks tiktoken-rs ships (base64 of
/// each token's bytes, then its rank, one per line; the script checks tiktoken accepts it,
/// and tiktoken checks its sha256).
fn cl100k_ranks_file() -> tempfile::NamedTempFile {
    use base64::Engine;
    use std::io::Write;
    let bpe = tiktoken_rs::cl100k_base().unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut out = String::new();
    // 100,256 ordinary ranks; the special tokens follow and are not in the file.
    for rank in 0..100_256u32 {
        let bytes = bpe.decode_bytes(&[rank]).unwrap();
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
        out.push(' ');
        out.push_str(&rank.to_string());
        out.push('\n');
    }
    file.write_all(out.as_bytes()).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langchain_openai_embeddings_default_call() {
    let mut app = TestApp::spawn_with(common::Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[embeddings]\nmodel_dir = \"{}\"\n",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/all-MiniLM-L6-v2")
            .display()
    )))
    .await;
    let ranks = cl100k_ranks_file();
    run_script(
        "langchain_embeddings_e2e.py",
        &[
            ("QM_BASE_URL", &app.url),
            ("QM_API_KEY", &app.key),
            ("QM_TIKTOKEN_CL100K", ranks.path().to_str().unwrap()),
        ],
    )
    .await;
    app.shutdown().await;
}
