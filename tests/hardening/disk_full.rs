//! A full disk under SQLite: the real binary with its database on a small tmpfs that the
//! test fills and frees. While it is full, writes fail with a 503 and `/readyz` says not
//! ready; once space is back the store recovers on its own (no "database is locked"
//! minutes later); every webhook and document that was answered 2xx is in the database
//! after a restart, and nothing that failed shows up in retrieval; SIGTERM is prompt.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use quartermaster::store::{Store, on_pool};
use serde_json::{Value, json};

use crate::common::binary::{Gateway, model_dir};

const SECRET: &str = "whsec_disk_full_test";

/// A tmpfs of `mib` MiB mounted on a fresh folder, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs (it needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the filesystem refuses more.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        for size in [1 << 20, 4096, 512, 1] {
            let block = vec![0u8; size];
            while f.write_all(&block).is_ok() {}
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn signed_event(id: &str, kind: &str) -> (String, String) {
    let body = json!({"id": id, "type": kind, "object": "event",
        "data": {"object": {"id": "cus_disk", "customer": "cus_disk"}}})
    .to_string();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sig = quartermaster::integrations::stripe::signature::sign(body.as_bytes(), SECRET, t);
    (body, format!("t={t},v1={sig}"))
}

async fn webhook(gw: &Gateway, id: &str, kind: &str) -> u16 {
    let (body, header) = signed_event(id, kind);
    reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", gw.url))
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| {
            eprintln!("{id}: {e:?}");
            0
        })
}

fn doc_text(id: &str) -> String {
    format!("Record {id}: the archive vault for {id} opens with the phrase {id} {id}.")
}

async fn document(gw: &Gateway, id: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/documents", gw.url))
        .bearer_auth(&gw.key)
        .json(&json!({"id": id, "title": id, "text": doc_text(id)}))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    match r {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

async fn ready(gw: &Gateway) -> u16 {
    reqwest::get(format!("{}/readyz", gw.url))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn wait_ready(gw: &Gateway, want: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    while ready(gw).await != want {
        assert!(
            started.elapsed() < limit,
            "/readyz never answered {want}:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

async fn retrieved_documents(gw: &Gateway, query: &str) -> Vec<String> {
    let v: Value = reqwest::Client::new()
        .post(format!("{}/v1/retrieve", gw.url))
        .bearer_auth(&gw.key)
        .json(&json!({"query": query, "top_k": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .filter_map(|h| h["document_id"].as_str().map(str::to_string))
        .collect()
}

fn config() -> String {
    format!(
        "health_interval_ms = 200\nmin_free_bytes = 65536\n\
         [embeddings]\nmodel_dir = \"{}\"\n[local]\nenabled = false\n[cache]\nenabled = false\n\
         [rate_limit]\nenabled = false\n[stripe]\nwebhook_secrets = [\"{SECRET}\"]\n",
        model_dir().display()
    )
}

#[tokio::test]
async fn a_full_disk_fails_writes_cleanly_and_the_store_recovers() {
    let disk = SmallDisk::mount(48);
    // Config and logs elsewhere: only the database is on the small disk.
    let home = tempfile::tempdir().unwrap();
    let db_path = disk.path().join("qm.db");
    let db = format!("sqlite://{}", db_path.display());
    let mut gw = Gateway::start(home.path(), &db, &config()).await;
    assert_eq!(webhook(&gw, "evt_before", "customer.created").await, 200);
    assert_eq!(document(&gw, "doc_before").await.0, 200);
    wait_ready(&gw, 200, Duration::from_secs(10)).await;

    let filler = disk.fill();
    let mut acked_events = vec!["evt_before".to_string()];
    let mut refused_events = Vec::new();
    let mut created_docs = vec!["doc_before".to_string()];
    let mut refused_docs = Vec::new();
    for i in 0..12 {
        let id = format!("evt_full_{i}");
        let kind = if i % 2 == 0 {
            "customer.created"
        } else {
            "invoice.paid"
        };
        match webhook(&gw, &id, kind).await {
            200 => acked_events.push(id),
            status => {
                assert!(
                    status == 503,
                    "{id}: {status} (alive: {})\n{}",
                    gw.alive(),
                    gw.log_text()
                );
                refused_events.push(id);
            }
        }
        let id = format!("doc_full_{i}");
        match document(&gw, &id).await {
            (200, body) => {
                assert_eq!(body["data"][0]["status"], "created", "{body}");
                created_docs.push(id);
            }
            (status, body) => {
                assert!(
                    status == 503,
                    "{id}: {status} {body} (alive: {})\n{}",
                    gw.alive(),
                    gw.log_text()
                );
                refused_docs.push(id);
            }
        }
    }
    assert!(
        !refused_events.is_empty() && !refused_docs.is_empty(),
        "the full disk refused nothing: the test filled nothing"
    );
    wait_ready(&gw, 503, Duration::from_secs(10)).await;
    let body: Value = reqwest::get(format!("{}/readyz", gw.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["store_health"]["writable"], false, "{body}");

    // Space comes back: the store heals without a restart.
    std::fs::remove_file(&filler).unwrap();
    let took = wait_ready(&gw, 200, Duration::from_secs(30)).await;
    eprintln!("ready again {took:?} after the space came back");
    for i in 0..4 {
        let id = format!("evt_after_{i}");
        assert_eq!(
            webhook(&gw, &id, "invoice.paid").await,
            200,
            "{}",
            gw.log_text()
        );
        acked_events.push(id);
        let id = format!("doc_after_{i}");
        let (status, body) = document(&gw, &id).await;
        assert_eq!(status, 200, "{body}\n{}", gw.log_text());
        created_docs.push(id);
    }
    // Retrieval shows only what the database holds.
    for id in &refused_docs {
        assert!(
            !retrieved_documents(&gw, &doc_text(id)).await.contains(id),
            "{id} was refused but is retrieved"
        );
        let r = reqwest::Client::new()
            .get(format!("{}/v1/documents/{id}", gw.url))
            .bearer_auth(&gw.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{id}");
    }
    let took = gw.terminate(Duration::from_secs(20));
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");

    // After a restart every acknowledged write is there.
    let store = Store::connect(&db, 1).await.unwrap();
    for id in &acked_events {
        let n: i64 = on_pool!(&store, p => sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events WHERE id = $1")
            .bind(id).fetch_one(p).await.unwrap());
        assert_eq!(n, 1, "{id} was acknowledged but is not stored");
    }
    for id in &created_docs {
        let n: i64 = on_pool!(&store, p => sqlx::query_scalar("SELECT COUNT(*) FROM rag_documents WHERE id = $1")
            .bind(id).fetch_one(p).await.unwrap());
        assert_eq!(n, 1, "{id} was answered created but is not stored");
    }
    store.close().await;
    let gw = Gateway::start_with_key(home.path(), &db, &config(), gw.key.clone()).await;
    for id in &created_docs {
        assert!(
            retrieved_documents(&gw, &doc_text(id)).await.contains(id),
            "{id} is not retrieved after the restart"
        );
    }
}

/// Logs on a full disk: lines that cannot be written are dropped, the gateway keeps serving
/// (tracing-subscriber's report of a failed write used to panic the thread that logged).
#[tokio::test]
async fn a_full_log_disk_does_not_stop_the_gateway() {
    let disk = SmallDisk::mount(8);
    let home = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", home.path().join("qm.db").display());
    // The config and the log on the small disk, the database elsewhere.
    let mut gw = Gateway::start(disk.path(), &db, &config()).await;
    disk.fill();
    for i in 0..20 {
        let id = format!("evt_log_{i}");
        assert_eq!(webhook(&gw, &id, "customer.created").await, 200, "{id}");
        assert!(gw.alive());
    }
    let metrics = reqwest::get(format!("{}/metrics", gw.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("qm_log_lines_dropped_total"),
        "no dropped lines counted"
    );
    gw.terminate(Duration::from_secs(20));
}
