//! Retrieval (RAG) speed, for both stores in one run.
//!
//! 1. Ingestion through the real pipeline (`Rag::ingest`: chunking, the local MiniLM
//!    embedder, one transaction per document; 16 documents in flight): the first
//!    `QM_BENCH_INGEST_DOCS` DBpedia documents into the embedded store (a SQLite file +
//!    hnsw_rs + BM25) and into PostgreSQL + pgvector; documents/s and chunks/s. The peers, on
//!    the same texts: chunking alone and embedding alone, so the share of ingestion that is
//!    the embedder shows.
//! 2. Vector search at `QM_BENCH_RAG_CHUNKS` chunks through the `ChunkStore` trait (top-10):
//!    synthetic 384-d unit vectors with topic structure (the generator of `benches/cache.rs`),
//!    queried with new points of random topics (not copies of stored vectors). Per store:
//!    search p50/p99, recall@10 against an exact top-10 computed in the bench, the time to
//!    write the rows and to build the index (embedded: `EmbeddedStore::open`, which reads
//!    the rows and bulk-inserts them into hnsw_rs in parallel; pgvector: `CREATE INDEX ...
//!    USING hnsw`, run by `PgVectorStore::open` after the rows are in). The peers: an exact
//!    scan over the same vectors in the bench process, and each store's own exact path
//!    (`vector_search(.., exact = true)`).
//!
//! `scripts/rag_bench.sh` (starts a throwaway PostgreSQL, then runs
//! `cargo bench --bench rag`). Env: QM_BENCH_THREADS=2, QM_BENCH_INGEST_DOCS=300 (0 skips
//! ingestion), QM_BENCH_CORPUS=../shared/data/rag/dbpedia/corpus.jsonl,
//! QM_BENCH_RAG_CHUNKS=100000 (0 skips retrieval), QM_BENCH_RAG_QUERIES=500,
//! QM_BENCH_RAG_EXACT_QUERIES=50 (queries timed on each store's exact path),
//! QM_BENCH_DATABASE_URL=postgres://... (a server with pgvector; each part runs in a fresh
//! database created there and dropped afterwards; unset = pgvector skipped),
//! QM_BENCH_PG_MAINTENANCE_WORK_MEM (e.g. `1GB`: set on the fresh databases; unset = the
//! server's setting, printed with the results).
//!
//! Progress goes to stderr; the tables (markdown, ready for the README) to stdout at the end.

#[path = "../common/mod.rs"]
mod common;
mod ingest;
mod search;

use std::path::Path;

use anyhow::Context;
use sqlx::AssertSqlSafe;

use common::env_or;
use ingest::bench_ingestion;
use search::bench_search;

const TENANT: &str = "bench";
/// Top-k of every search.
const K: usize = 10;

/// What the run found: table rows and notes, printed at the end.
#[derive(Default)]
struct Report {
    ingest_title: String,
    ingest: Vec<String>,
    search_title: String,
    search: Vec<String>,
    notes: Vec<String>,
    failed: bool,
}

impl Report {
    fn note(&mut self, line: String) {
        eprintln!("{line}");
        self.notes.push(line);
    }

    /// A part that failed: said with the results, and the run exits non-zero at the end.
    fn error(&mut self, part: &str, e: anyhow::Error) {
        self.note(format!("ERROR {part}: {e:#}"));
        self.failed = true;
    }
}

fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: a fresh database per part, dropped afterwards.

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (url, None),
    };
    let base = main.rsplit_once('/').map_or(main, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Creates an empty database on the server of `admin_url`; returns its name and URL.
async fn create_database(admin_url: &str, prefix: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to QM_BENCH_DATABASE_URL")?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    if let Ok(mem) = std::env::var("QM_BENCH_PG_MAINTENANCE_WORK_MEM") {
        let mem = mem.replace('\'', "''");
        sqlx::query(AssertSqlSafe(format!(
            "ALTER DATABASE {name} SET maintenance_work_mem = '{mem}'"
        )))
        .execute(&mut admin)
        .await?;
    }
    admin.close().await?;
    let url = with_database(admin_url, &name);
    Ok((name, url))
}

async fn drop_database(admin_url: &str, name: &str) {
    use sqlx::Connection;
    let result = async {
        let mut admin = sqlx::PgConnection::connect(admin_url).await?;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("could not drop the bench database {name}: {e}");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let threads = common::init_threads();
    let pg_admin = std::env::var("QM_BENCH_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    let mut report = Report::default();

    let docs = env_or("QM_BENCH_INGEST_DOCS", 300usize);
    if docs > 0 {
        bench_ingestion(&mut report, pg_admin.as_deref(), threads, docs).await?;
    }
    let chunks = env_or("QM_BENCH_RAG_CHUNKS", 100_000usize);
    if chunks > 0 {
        bench_search(&mut report, pg_admin.as_deref(), chunks).await?;
    }

    if !report.ingest.is_empty() {
        println!("\n{}:\n", report.ingest_title);
        println!("{}", ingest::TABLE_HEADER);
        for row in &report.ingest {
            println!("{row}");
        }
    }
    if !report.search.is_empty() {
        println!("\n{}:\n", report.search_title);
        println!("{}", search::table_header());
        for row in &report.search {
            println!("{row}");
        }
    }
    if !report.notes.is_empty() {
        println!();
        for note in &report.notes {
            println!("- {note}");
        }
    }
    anyhow::ensure!(
        !report.failed,
        "a part of the benchmark failed (see ERROR above)"
    );
    Ok(())
}
