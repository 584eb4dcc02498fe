//! `quartermaster ingest`: files and folders with a clear error per bad file (the rest still
//! ingested), unchanged files skipped on a second run, and `kill -9` in the middle of a
//! batch leaving every document whole (one transaction per document).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quartermaster::store::{Store, on_pool};

fn qm(db: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quartermaster"));
    c.env("QM__DATABASE__URL", db)
        .env(
            "QM__EMBEDDINGS__MODEL_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2"),
        )
        .env_remove("QM_CONFIG")
        .env("RUST_LOG", "warn");
    c
}

/// Runs `ingest` with `args` then `path`, which must succeed; its stdout.
fn ingest_ok(db: &str, args: &[&str], path: &Path) -> String {
    let out = qm(db).arg("ingest").args(args).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rag")
}

async fn tenant_docs(db: &str, tenant_name: &str) -> Vec<(String, i64, i64)> {
    let store = Store::connect(db, 1).await.unwrap();
    // Without --tenant the documents belong to the built-in tenant "default"; a named
    // tenant must have been created by the ingest.
    let tenant = match store.tenant_id_by_name(tenant_name).await.unwrap() {
        Some(id) => id,
        None if tenant_name == "default" => "default".into(),
        None => panic!("tenant {tenant_name} was not created"),
    };
    // (id, chunk_count, chunk rows)
    let rows: Vec<(String, i64, i64)> = on_pool!(&store, p => sqlx::query_as(
        "SELECT d.id, d.chunk_count, (SELECT COUNT(*) FROM rag_chunks c WHERE c.tenant_id = d.tenant_id AND c.document_id = d.id)
           FROM rag_documents d WHERE d.tenant_id = $1 ORDER BY d.id")
        .bind(&tenant).fetch_all(p).await)
    .unwrap();
    store.close().await;
    rows
}

#[tokio::test]
async fn ingest_reports_each_bad_file_and_ingests_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("i.db").display());
    let out = qm(&db)
        .args(["ingest", "--tenant", "acme", "--quiet"])
        .arg(fixtures())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "failures make the exit status non-zero"
    );
    // handbook.md, faq.html, notes.txt, sample.pdf, 5 corpus.jsonl lines, 2 good bad.jsonl lines.
    assert!(
        stdout.contains("ingested 11 documents (0 unchanged) into the embedded store"),
        "{stdout}"
    );
    for bad in [
        "corrupt.pdf",
        "empty.txt",
        "data.xyz",
        "bad.jsonl (document 2)",
    ] {
        assert!(
            stderr.contains(&format!("error: {}", fixtures().join(bad).display())),
            "{bad}: {stderr}"
        );
    }
    assert!(
        stderr.contains("4 of 15 documents or files failed"),
        "{stderr}"
    );
    let docs = tenant_docs(&db, "acme").await;
    assert_eq!(docs.len(), 11, "{docs:?}");
    assert!(
        docs.iter().all(|(_, n, rows)| n == rows && *n > 0),
        "{docs:?}"
    );
    assert!(docs.iter().any(|(id, _, _)| id.ends_with("handbook.md")));

    // Again: nothing changed, nothing embedded.
    let stdout = ingest_ok(
        &db,
        &["--tenant", "acme", "--quiet"],
        &fixtures().join("handbook.md"),
    );
    assert!(
        stdout.contains("ingested 1 documents (1 unchanged)") && stdout.contains("0 embedded"),
        "{stdout}"
    );
}

/// A document of `paragraphs` paragraphs (several chunks each).
fn write_corpus(dir: &Path, docs: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for d in 0..docs {
        let mut text = format!("# Report {d}\n\n");
        for p in 0..6 {
            text.push_str(&format!("## Part {p}\n\n"));
            for s in 0..8 {
                text.push_str(&format!(
                    "Report {d} part {p} sentence {s} describes rocket stage {} and its fuel. ",
                    d * 7 + s
                ));
            }
            text.push_str("\n\n");
        }
        std::fs::write(dir.join(format!("report-{d:03}.md")), text).unwrap();
    }
}

#[tokio::test]
async fn killed_mid_batch_every_document_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    let corpus = dir.path().join("corpus");
    write_corpus(&corpus, 120);
    // Migrate before the CLI starts: the polls below open the same file, and two processes
    // applying the first migration at once collide.
    Store::connect(&db, 1).await.unwrap().close().await;
    let mut child = qm(&db)
        .args(["ingest", "--quiet", "--concurrency", "4"])
        .arg(&corpus)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some documents are in, then kill -9 while others are being written.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = tenant_docs(&db, "default").await.len();
        if n >= 8 {
            break;
        }
        assert!(Instant::now() < deadline, "ingestion did not progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "ingestion ended before the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let docs = tenant_docs(&db, "default").await;
    assert!(
        docs.len() >= 8 && docs.len() < 120,
        "killed mid-batch: {}",
        docs.len()
    );
    for (id, n, rows) in &docs {
        assert_eq!(n, rows, "{id} is half-written");
        assert!(*n >= 6, "{id}: every section is at least one chunk");
    }
    // A second run finishes the batch; what was whole is left alone.
    let stdout = ingest_ok(&db, &["--quiet"], &corpus);
    assert!(
        stdout.contains(&format!(
            "ingested 120 documents ({} unchanged)",
            docs.len()
        )),
        "{stdout}"
    );
    let all = tenant_docs(&db, "default").await;
    assert_eq!(all.len(), 120);
    assert!(all.iter().all(|(_, n, rows)| n == rows));
}
