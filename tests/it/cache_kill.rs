//! The cache survives `kill -9`: the real binary is killed mid-stream (nothing may be
//! stored) and right after answers finish, while their entries are being written (each is
//! then whole or absent). After every restart a hit must return exactly the live answer.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{MockUpstream, sse_json};
use quartermaster::store::{Store, on_pool};
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway {
    child: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(config: &std::path::Path, url: &str, key: &str) -> Gateway {
    let child = Command::new(env!("CARGO_BIN_EXE_quartermaster"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("QM_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = http
            .get(format!("{url}/v1/models"))
            .bearer_auth(key)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return Gateway { child };
        }
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": text}]})
}

fn text_of(body: &str) -> String {
    let (events, _) = sse_json(body);
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_never_leaves_a_partial_or_corrupt_entry() {
    quartermaster::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("kill.db").display());
    let mock = MockUpstream::start().await;
    let port = free_port();
    let config = dir.path().join("qm.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nport = {port}\n[database]\nurl = \"{db}\"\n[embeddings]\nenabled = false\n\
             [local]\nenabled = false\n[rate_limit]\nenabled = false\n[cache]\nenabled = true\n\
             [providers.mock]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk\"\n\
             [models.mock-ok]\nprovider = \"mock\"\n[models.mock-slow]\nprovider = \"mock\"\n",
            mock.url
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quartermaster"))
        .arg("--config")
        .arg(&config)
        .args(["keys", "create", "--tenant", "kill"])
        .output()
        .unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let chat = |body: Value, header: Option<&'static str>| {
        let mut r = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body);
        if let Some(h) = header {
            r = r.header("x-quartermaster-cache", h);
        }
        r.send()
    };

    // 1. Killed mid-stream: the answer never finished, so nothing is stored.
    let mut gw = start(&config, &url, &key).await;
    let r = chat(ask("mock-slow", "A long story, please."), None)
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    use futures::StreamExt;
    let _ = body.next().await;
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    drop(body);

    // 2. Killed 0-30 ms after answers end: while the entry is (or is not yet) written.
    let mut live: Vec<(String, String)> = Vec::new();
    for i in 0..6u64 {
        let mut gw = start(&config, &url, &key).await;
        let question = format!("Kill test question {i}?");
        let r = chat(ask("mock-ok", &question), None).await.unwrap();
        let text = text_of(&r.text().await.unwrap());
        assert!(!text.is_empty());
        live.push((question, text));
        tokio::time::sleep(Duration::from_millis(i * 6)).await;
        gw.child.kill().unwrap();
        gw.child.wait().unwrap();
    }

    let store = Store::connect(&db, 1).await.unwrap();
    let check: String =
        on_pool!(&store, p => sqlx::query_scalar("PRAGMA integrity_check").fetch_one(p).await)
            .unwrap();
    assert_eq!(check, "ok");
    let slow: i64 = on_pool!(&store, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM cache_entries WHERE query_text = 'A long story, please.'").fetch_one(p).await)
    .unwrap();
    assert_eq!(slow, 0, "an unfinished answer was stored");

    // After a restart every question is a whole hit or a clean miss, never a wrong answer.
    let _gw = start(&config, &url, &key).await;
    let mut hits = 0;
    for (question, text) in &live {
        let r = chat(ask("mock-ok", question), Some("no-write"))
            .await
            .unwrap();
        let status = r
            .headers()
            .get("x-quartermaster-cache")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let body = r.text().await.unwrap();
        let (_, done) = sse_json(&body);
        assert!(done, "{question}: {body}");
        assert_eq!(&text_of(&body), text, "{question} ({status})");
        if status == "hit" {
            hits += 1;
        } else {
            assert_eq!(status, "miss");
        }
    }
    // The later kills came after the write: at least those entries are there.
    assert!(hits >= 1, "no entry survived any kill");
    eprintln!("{hits} of {} entries survived their kill", live.len());
}
