//! End to end with the JavaScript clients real frontends use, against the real server
//! socket: the Vercel AI SDK (`ai`, `@ai-sdk/openai` on its default Responses path and on
//! chat completions, `@ai-sdk/openai-compatible`) and OpenAI's Node client. The packages are
//! pinned in tests/js/package.json (lockfile committed) and installed by scripts/setup.sh
//! (`npm ci --prefix tests/js`).

use crate::common;

use std::path::{Path, PathBuf};

use common::TestApp;

/// Runs `node tests/js/{script}`; asserts it succeeded with no failed check. Without the
/// installed packages it fails (not a silent pass) unless QM_SKIP_JS=1.
async fn run_script(script: &str, app: &TestApp) -> Option<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if !dir.join("node_modules/ai").exists() {
        if std::env::var("QM_SKIP_JS").as_deref() == Ok("1") {
            eprintln!("SKIPPED {script}: QM_SKIP_JS=1");
            return None;
        }
        panic!("tests/js/node_modules is missing: run scripts/setup.sh (npm ci --prefix tests/js)");
    }
    let env = [
        ("QM_BASE_URL", app.url.as_str()),
        ("QM_API_KEY", app.key.as_str()),
    ];
    Some(common::run_client_script(Path::new("node"), &dir.join(script), Some(&dir), &env).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_sdk_streams_text_and_tool_calls_on_every_path() {
    let mut app = TestApp::spawn().await;
    run_script("ai_sdk_e2e.mjs", &app).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_node_client_speaks_the_responses_api() {
    let mut app = TestApp::spawn().await;
    run_script("openai_node_e2e.mjs", &app).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_chat_reads_the_ui_message_stream_and_resumes_it() {
    // The embedder is on so the script can ground an answer on a document it ingests.
    let mut app = TestApp::spawn_with(common::Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[embeddings]\nmodel_dir = \"{}\"\n",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/all-MiniLM-L6-v2")
            .display()
    )))
    .await;
    run_script("ui_stream_e2e.mjs", &app).await;
    app.shutdown().await;
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_calls_the_gateway_across_origins() {
    let chromium = std::env::var("QM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        if std::env::var("QM_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("SKIPPED browser test: QM_SKIP_BROWSER=1");
            return;
        }
        panic!("{chromium} is missing: run scripts/setup.sh (apt-get install chromium)");
    }
    let (page, other) = (free_port(), free_port());
    let mut app = TestApp::spawn_with(common::Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[server.cors]\nallowed_origins = [\"http://localhost:{page}\"]\nallow_credentials = true\n"
    )))
    .await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let (page, other) = (page.to_string(), other.to_string());
    let env = [
        ("QM_BASE_URL", app.url.as_str()),
        ("QM_API_KEY", app.key.as_str()),
        ("QM_PAGE_PORT", page.as_str()),
        ("QM_OTHER_PORT", other.as_str()),
        ("QM_CHROMIUM", chromium.as_str()),
    ];
    common::run_client_script(
        Path::new("node"),
        &dir.join("browser_cors.mjs"),
        Some(&dir),
        &env,
    )
    .await;
    // The chat and the UI stream reached the upstream; the refused origin's POST did not.
    assert_eq!(app.mock.calls_for("mock-ok"), 2);
    app.shutdown().await;
}
