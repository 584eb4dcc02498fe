//! Test harness: a gateway on port 0 with its own SQLite file, a mock upstream, an API key,
//! and helpers to read SSE streams.
#![allow(dead_code)]

pub mod binary;
pub mod mock_anthropic;
pub mod mock_email;
pub mod mock_stripe;
pub mod mock_upstream;
pub mod nginx;
pub mod scenario;

use std::path::{Path, PathBuf};

use quartermaster::config::Config;
use quartermaster::server::App;
use quartermaster::store::Store;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use mock_upstream::MockUpstream;

pub const MOCK_MODELS: &[&str] = &[
    "mock-ok",
    "mock-tools",
    "mock-slow",
    "mock-fail-mid",
    "mock-drop-mid",
    "mock-stall",
    "mock-429",
    "mock-500",
    "mock-503",
    "mock-no-usage",
];

pub struct TestApp {
    pub url: String,
    pub key: String,
    pub db_url: String,
    pub mock: MockUpstream,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// Where the config is written when `Options::config_file` is set.
    pub config_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// The TOML for a gateway in front of `mock_url`, plus `extra` (which may override sections).
pub fn config_text(mock_url: &str, db_url: &str, extra: &str) -> String {
    let mut text = format!(
        "[database]\nurl = \"{db_url}\"\n\n[providers.mock]\nkind = \"openai\"\nbase_url = \"{mock_url}\"\n\
         api_key = \"sk-mock\"\nconnect_timeout_ms = 1000\nread_timeout_ms = 400\n\n"
    );
    for m in MOCK_MODELS {
        text.push_str(&format!("[models.{m}]\nprovider = \"mock\"\n"));
    }
    text.push_str("[models.aliased]\nprovider = \"mock\"\nupstream_model = \"mock-ok\"\n");
    text.push_str(extra);
    if !extra.contains("[embeddings]") {
        text.push_str("\n[embeddings]\nenabled = false\n");
    }
    if !extra.contains("[local]") {
        text.push_str("\n[local]\nenabled = false\n");
    }
    // Tests of other features send the same request many times and count upstream calls:
    // the response cache is on only where a test turns it on.
    if !extra.contains("[cache]") {
        text.push_str("\n[cache]\nenabled = false\n");
    }
    text
}

pub fn parse_config(text: &str) -> Config {
    Config::from_toml_and_env(text, Path::new("test.toml"), std::iter::empty())
        .expect("test config parses")
}

pub struct Options {
    /// Extra TOML appended to the config.
    pub extra: String,
    /// Database URL; a fresh SQLite file when `None`.
    pub db_url: Option<String>,
    /// Write the config to a file the gateway watches (hot reload).
    pub config_file: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            extra: "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 2\n".into(),
            db_url: None,
            config_file: false,
        }
    }
}

impl Options {
    /// Only `extra`; the embedder stays off unless `extra` configures `[embeddings]`.
    pub fn extra(extra: &str) -> Self {
        Self {
            extra: extra.into(),
            db_url: None,
            config_file: false,
        }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        let mock = MockUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let db_url = match options.db_url {
            Some(url) => url,
            None => format!("sqlite://{}", dir.path().join("qm.db").display()),
        };
        let mut text = config_text(&mock.url, &db_url, &options.extra);
        if !options.extra.contains("[request_log]") {
            // Outage spill files stay in the test's own folder.
            text.push_str(&format!(
                "\n[request_log]\nspill_dir = \"{}\"\n",
                dir.path().join("spill").display()
            ));
        }
        let config = parse_config(&text);
        let mut app = App::build(config).await.expect("app builds");
        let config_path = dir.path().join("qm.toml");
        if options.config_file {
            std::fs::write(&config_path, &text).unwrap();
            app = app.with_config_path(&config_path);
        }
        let key = quartermaster::auth::create_key(&app.state.store, "tenant-a", "test")
            .await
            .unwrap()
            .secret;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.serve(listener, async move {
            let _ = rx.await;
        }));
        Self {
            url,
            key,
            db_url,
            mock,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
            config_path,
            _dir: Some(dir),
        }
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    /// A GET with another bearer token (an admin key, another tenant's key).
    pub fn get_as(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
    }

    /// A POST with another bearer token.
    pub fn post_as(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
    }

    /// The JSON body of a GET with `token`.
    pub async fn get_json_as(&self, path: &str, token: &str) -> Value {
        self.get_as(path, token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The JSON body of a GET with the app's own key.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get_json_as(path, &self.key).await
    }

    /// A DELETE with `token`.
    pub fn delete_as(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(format!("{}{path}", self.url))
            .bearer_auth(token)
    }

    /// The JSON answer to a POST of `body` with `token`.
    pub async fn post_json_as(&self, path: &str, token: &str, body: &Value) -> Value {
        self.post_as(path, token)
            .json(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    /// The body of an unauthenticated GET (`/metrics`, `/healthz`, ...).
    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Triggers graceful shutdown and waits for it (including the request log drain).
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().expect("clean shutdown");
        }
    }

    /// Opens the gateway's store (for assertions after shutdown).
    pub async fn store(&self) -> Store {
        Store::connect(&self.db_url, 1).await.unwrap()
    }

    pub fn db_path(&self) -> Option<PathBuf> {
        self.db_url.strip_prefix("sqlite://").map(PathBuf::from)
    }
}

pub fn chat_body(model: &str, stream: bool) -> Value {
    serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello"}]})
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.trim_start())
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// Parsed JSON events of an SSE body, and whether it ended with `[DONE]`.
pub fn sse_json(body: &str) -> (Vec<Value>, bool) {
    let data = sse_data(body);
    let done = data.last().is_some_and(|d| d == "[DONE]");
    let events = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("SSE data is JSON"))
        .collect();
    (events, done)
}

/// A fresh database on the PostgreSQL at `QM_TEST_DATABASE_URL` (scripts/pg.sh starts one).
/// `None` outside CI when the variable is unset; under CI its absence is a failure.
pub async fn fresh_database() -> Option<String> {
    use sqlx::Connection;
    let Ok(url) = std::env::var("QM_TEST_DATABASE_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must set QM_TEST_DATABASE_URL (scripts/pg.sh start)"
        );
        eprintln!("SKIPPED postgres test: QM_TEST_DATABASE_URL is not set");
        return None;
    };
    let name = format!("qm_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("connect to QM_TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').expect("URL names a database");
    Some(format!("{base}/{name}"))
}

/// Polls `check` every 50 ms until it holds; fails the test after `secs`.
pub async fn wait_for<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Runs a client script (`program script`, in `dir`, with `env`) and asserts it succeeded
/// and printed `N passed, 0 failed`; returns its output. The Python and JavaScript client
/// tests share this.
pub async fn run_client_script(
    program: &std::path::Path,
    script: &std::path::Path,
    dir: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> String {
    let mut command = tokio::process::Command::new(program);
    command.arg(script).envs(env.iter().copied());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command.output().await.expect("the client runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed:\n{stdout}\n{stderr}",
        script.display()
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
    stdout
}

/// Runs `tests/js/{script}` with Node and `env`; asserts it succeeded and returns its
/// stdout. `None` only when `tests/js/node_modules` is missing and QM_SKIP_JS=1: the suite
/// demands the JavaScript libraries otherwise (not a silent pass).
pub async fn node_script(script: &str, env: &[(&str, &str)]) -> Option<String> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if !dir.join("node_modules").exists() {
        if std::env::var("QM_SKIP_JS").as_deref() == Ok("1") {
            eprintln!("SKIPPED {script}: QM_SKIP_JS=1");
            return None;
        }
        panic!("tests/js/node_modules is missing: run scripts/setup.sh (npm ci --prefix tests/js)");
    }
    let out = tokio::process::Command::new("node")
        .arg(script)
        .current_dir(&dir)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("UTF-8 output"))
}
