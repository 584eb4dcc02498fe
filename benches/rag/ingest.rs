//! Part 1: ingestion through the real pipeline, into both stores, with its peers (chunking
//! alone, embedding alone).

use std::path::PathBuf;
use std::time::Instant;

use quartermaster::embed::{EmbedConfig, EmbedService};
use quartermaster::rag::eval::{ingest_many, read_beir_corpus};
use quartermaster::rag::{IngestDoc, Rag, RagConfig, embed_input};
use quartermaster::store::Store;

use super::{Report, TENANT, create_database, drop_database, sqlite_url};

/// Documents in flight while ingesting (as `quartermaster eval retrieval` does).
const CONCURRENCY: usize = 16;

struct Ingested {
    documents: usize,
    chunks: usize,
    secs: f64,
}

/// The ingestion table's header (its rows: `ingest_row`).
pub(super) const TABLE_HEADER: &str = "| pipeline | documents | chunks | time | documents/s | chunks/s |\n| --- | --- | --- | --- | --- | --- |";

fn ingest_row(label: &str, documents: Option<usize>, chunks: usize, secs: f64) -> String {
    let (docs, docs_rate) = match documents {
        Some(d) => (d.to_string(), format!("{:.1}", d as f64 / secs)),
        None => ("—".into(), "—".into()),
    };
    format!(
        "| {label} | {docs} | {chunks} | {secs:.2} s | {docs_rate} | {:.1} |",
        chunks as f64 / secs
    )
}

/// Opens `Rag` on `store` and ingests `docs` through it, timed.
async fn ingest_into(
    store: &Store,
    docs: &[IngestDoc],
    embedder: &EmbedService,
    embed_config: &EmbedConfig,
) -> anyhow::Result<(Ingested, Rag)> {
    let rag = Rag::open(
        RagConfig::default(),
        store,
        embedder.clone(),
        embed_config,
        None,
    )
    .await?;
    // The model's first passes (page faults, buffers) are not the pipeline's cost.
    rag.embed(vec!["A sentence to warm the embedder up.".to_string(); 32])
        .await?;
    let batch = docs.to_vec();
    let started = Instant::now();
    let results = ingest_many(&rag, TENANT, batch, CONCURRENCY, |_, _| {}).await;
    let secs = started.elapsed().as_secs_f64();
    let mut documents = 0;
    let mut chunks = 0;
    let mut failed = Vec::new();
    for (id, r) in &results {
        match r {
            Ok(o) => {
                documents += 1;
                chunks += o.chunks;
            }
            Err(e) => failed.push(format!("{id}: {e}")),
        }
    }
    if !failed.is_empty() {
        eprintln!(
            "{} documents not ingested, e.g. {}",
            failed.len(),
            failed[0]
        );
    }
    Ok((
        Ingested {
            documents,
            chunks,
            secs,
        },
        rag,
    ))
}

pub(super) async fn bench_ingestion(
    report: &mut Report,
    pg_admin: Option<&str>,
    threads: usize,
    n: usize,
) -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = std::env::var("QM_BENCH_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/data/rag/dbpedia/corpus.jsonl"));
    if !corpus.is_file() {
        report.note(format!(
            "SKIPPED ingestion: no corpus at {} (QM_BENCH_CORPUS)",
            corpus.display()
        ));
        return Ok(());
    }
    let (mut docs, bad) = read_beir_corpus(&corpus)?;
    if !bad.is_empty() {
        eprintln!("{} corpus lines unreadable, e.g. {}", bad.len(), bad[0]);
    }
    docs.truncate(n);
    let embed_config = EmbedConfig {
        model_dir: root.join("models/all-MiniLM-L6-v2"),
        threads,
        ..EmbedConfig::default()
    };
    let embedder = match EmbedService::start(&embed_config) {
        Ok(e) => e,
        Err(e) => {
            report.note(format!("SKIPPED ingestion: {e}"));
            return Ok(());
        }
    };
    report.ingest_title = format!(
        "RAG ingestion: the first {} documents of {}, {CONCURRENCY} in flight, {threads} threads, \
         chunks of at most {} tokens",
        docs.len(),
        corpus.file_name().unwrap_or_default().to_string_lossy(),
        RagConfig::default().chunk_tokens
    );

    eprintln!("ingesting {} documents into the embedded store", docs.len());
    let dir = tempfile::tempdir()?;
    let sqlite = Store::connect(&sqlite_url(dir.path(), "ingest.db"), 4).await?;
    let (embedded, rag) = ingest_into(&sqlite, &docs, &embedder, &embed_config).await?;
    report.ingest.push(ingest_row(
        "`Rag::ingest` → embedded (SQLite + hnsw_rs + BM25)",
        Some(embedded.documents),
        embedded.chunks,
        embedded.secs,
    ));

    // The peers on the same texts: the chunker alone, then the embedder alone.
    eprintln!("chunking and embedding the same texts alone");
    let started = Instant::now();
    let mut inputs = Vec::new();
    for d in &docs {
        for c in rag.chunk(d.text.clone()).await? {
            inputs.push(embed_input(
                d.title.as_deref(),
                c.heading.as_deref(),
                &c.text,
            ));
        }
    }
    let chunk_secs = started.elapsed().as_secs_f64();
    let n_inputs = inputs.len();
    let started = Instant::now();
    let vectors = rag.embed(inputs).await?;
    let embed_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(vectors.len() == n_inputs, "the embedder lost inputs");
    let peers = [
        ingest_row(
            "chunking alone (`Rag::chunk`, one document at a time)",
            Some(docs.len()),
            n_inputs,
            chunk_secs,
        ),
        ingest_row(
            &format!(
                "embedding alone (`Rag::embed`, batches of {})",
                rag.config.embed_batch
            ),
            None,
            n_inputs,
            embed_secs,
        ),
    ];
    report.note(format!(
        "ingestion into the embedded store: embedding alone takes {:.0} % of its time, chunking {:.0} %",
        100.0 * embed_secs / embedded.secs,
        100.0 * chunk_secs / embedded.secs
    ));
    drop(rag);
    sqlite.close().await;

    match pg_admin {
        None => report.note("SKIPPED pgvector ingestion: QM_BENCH_DATABASE_URL is not set".into()),
        Some(admin) => {
            eprintln!("ingesting {} documents into pgvector", docs.len());
            let result = pg_ingest(admin, &docs, &embedder, &embed_config).await;
            match result {
                Ok(pg) => report.ingest.push(ingest_row(
                    "`Rag::ingest` → pgvector (HNSW + GIN maintained per insert)",
                    Some(pg.documents),
                    pg.chunks,
                    pg.secs,
                )),
                Err(e) => report.error("pgvector ingestion", e),
            }
        }
    }
    report.ingest.extend(peers);
    Ok(())
}

/// Ingestion into pgvector, in a fresh database dropped afterwards.
async fn pg_ingest(
    admin: &str,
    docs: &[IngestDoc],
    embedder: &EmbedService,
    embed_config: &EmbedConfig,
) -> anyhow::Result<Ingested> {
    let (name, url) = create_database(admin, "qm_bench_ingest").await?;
    let result = async {
        let store = Store::connect(&url, 8).await?;
        let (pg, rag) = ingest_into(&store, docs, embedder, embed_config).await?;
        drop(rag);
        store.close().await;
        anyhow::Ok(pg)
    }
    .await;
    drop_database(admin, &name).await;
    result
}
