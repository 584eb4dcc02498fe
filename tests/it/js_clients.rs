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
    let mut app = TestApp::spawn().await;
    run_script("ui_stream_e2e.mjs", &app).await;
    app.shutdown().await;
}
