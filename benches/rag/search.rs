//! Part 2: vector search at `QM_BENCH_RAG_CHUNKS` synthetic chunks through the `ChunkStore`
//! trait, on both stores, against an exact scan.

use std::ops::Range;
use std::time::Instant;

use pgvector::Vector;
use quartermaster::clock::now_ms;
use quartermaster::index::dot;
use quartermaster::rag::embedded::EmbeddedStore;
use quartermaster::rag::pg::PgVectorStore;
use quartermaster::rag::store::vector_to_bytes;
use quartermaster::rag::{ChunkStore, Filter, PgVectorParams, RagConfig, ScoredChunk};
use quartermaster::store::Store;
use rayon::prelude::*;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, QueryBuilder, Sqlite, SqlitePool};

use super::common::{DIM, Rng, Topics, env_or, normalise, pct, topic_dataset};
use super::{K, Report, TENANT, create_database, drop_database, sqlite_url};

/// Synthetic chunks per synthetic document.
const PER_DOC: usize = 100;
/// Synthetic documents per write transaction, and rows per INSERT statement.
const DOCS_PER_TX: usize = 10;
const ROWS_PER_INSERT: usize = 500;
/// Searches before the timed ones (connections, caches, statement preparation).
const WARMUP: usize = 20;
/// In-process exact scans timed (each scans every vector).
const SCANS_TIMED: usize = 200;
/// pgvector: searches whose use of the HNSW index is counted (more than PostgreSQL's five
/// custom plans, so a generic plan that skipped the index would show).
const PLAN_CHECKS: usize = 12;

const DOC_COLUMNS: &str = "INSERT INTO rag_documents (tenant_id, id, title, source, format, content_hash, metadata, chunk_count, created_at, updated_at) ";
const CHUNK_COLUMNS: &str = "INSERT INTO rag_chunks (tenant_id, id, document_id, idx, title, heading, content, content_hash, tokens, metadata, embedding) ";

/// The synthetic chunks: chunk `i` is chunk `i % PER_DOC` of document `i / PER_DOC`.
struct Corpus {
    vectors: Vec<Vec<f32>>,
    topic_of: Vec<usize>,
}

impl Corpus {
    fn documents(&self) -> usize {
        self.vectors.len().div_ceil(PER_DOC)
    }

    fn doc_range(&self, d: usize) -> Range<usize> {
        d * PER_DOC..((d + 1) * PER_DOC).min(self.vectors.len())
    }

    fn text(&self, i: usize) -> String {
        format!("synthetic chunk {i} of topic {}", self.topic_of[i])
    }
}

fn doc_id(d: usize) -> String {
    format!("d{d:06}")
}

fn doc_title(d: usize) -> String {
    format!("Synthetic document {d}")
}

fn chunk_id(i: usize) -> String {
    format!("{}#{}", doc_id(i / PER_DOC), i % PER_DOC)
}

/// The chunk number behind a chunk id (`d000123#45` → 12345).
fn chunk_index(id: &str) -> Option<usize> {
    let (d, j) = id.split_once('#')?;
    Some(d.strip_prefix('d')?.parse::<usize>().ok()? * PER_DOC + j.parse::<usize>().ok()?)
}

/// A query: a new point of a random topic (drawn like the stored ones, plus a little
/// isotropic noise), so its neighbours are related chunks, not a near-duplicate.
fn query(topics: &Topics, rng: &mut Rng) -> Vec<f32> {
    let t = topics.pick(rng);
    let p = topics.point(rng, t);
    let r = rng.unit(DIM);
    let mut q: Vec<f32> = p.iter().zip(&r).map(|(a, b)| a + 0.2 * b).collect();
    normalise(&mut q);
    q
}

/// Exact top-k by dot product (unit vectors: cosine), best first.
fn exact_top_k(q: &[f32], vectors: &[Vec<f32>], k: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (dot(q, v), i))
        .collect();
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
    scored.truncate(k);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// How many of `hits` are in the exact top-k.
fn overlap(hits: &[ScoredChunk], truth: &[usize]) -> usize {
    hits.iter()
        .filter_map(|h| chunk_index(&h.chunk_id))
        .filter(|i| truth.contains(i))
        .count()
}

struct Searched {
    p50: f64,
    p99: f64,
    recall: f64,
    /// The store's own exact path (`exact = true`): p50 and its agreement with the bench's.
    exact_p50: f64,
    exact_recall: f64,
    exact_queries: usize,
}

/// Searches through the trait: the timed approximate searches, then `exact_n` exact ones.
async fn measure(
    store: &dyn ChunkStore,
    warmup: &[Vec<f32>],
    queries: &[Vec<f32>],
    truth: &[Vec<usize>],
    exact_n: usize,
) -> anyhow::Result<Searched> {
    let filter = Filter::default();
    for q in warmup {
        store.vector_search(TENANT, q, K, &filter, false).await?;
    }
    let mut lat = Vec::with_capacity(queries.len());
    let mut found = 0;
    for (q, t) in queries.iter().zip(truth) {
        let started = Instant::now();
        let hits = store.vector_search(TENANT, q, K, &filter, false).await?;
        lat.push(ms_since(started));
        found += overlap(&hits, t);
    }
    lat.sort_by(f64::total_cmp);
    let exact_n = exact_n.min(queries.len());
    let mut exact_lat = Vec::with_capacity(exact_n);
    let mut exact_found = 0;
    for (q, t) in queries.iter().zip(truth).take(exact_n) {
        let started = Instant::now();
        let hits = store.vector_search(TENANT, q, K, &filter, true).await?;
        exact_lat.push(ms_since(started));
        exact_found += overlap(&hits, t);
    }
    exact_lat.sort_by(f64::total_cmp);
    let expected: usize = truth.iter().map(Vec::len).sum();
    let expected_exact: usize = truth.iter().take(exact_n).map(Vec::len).sum();
    Ok(Searched {
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        recall: found as f64 / expected.max(1) as f64,
        exact_p50: pct(&exact_lat, 0.5),
        exact_recall: exact_found as f64 / expected_exact.max(1) as f64,
        exact_queries: exact_n,
    })
}

/// The search table's header (its rows: `search_row`).
pub(super) fn table_header() -> String {
    format!(
        "| store | chunks | rows written | index build | search p50 / p99 | store's exact path p50 | in-process exact scan p50 | recall@{K} |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// One row of the search table.
fn search_row(
    label: &str,
    n: usize,
    write_secs: f64,
    build_secs: f64,
    s: &Searched,
    scan_p50: f64,
) -> String {
    format!(
        "| {label} | {n} | {write_secs:.1} s ({:.0} rows/s) | {build_secs:.1} s ({:.0} chunks/s) | {:.2} / {:.2} ms | {:.1} ms | {scan_p50:.1} ms | {:.3} |",
        n as f64 / write_secs,
        n as f64 / build_secs,
        s.p50,
        s.p99,
        s.exact_p50,
        s.recall
    )
}

/// The rows as `EmbeddedStore::put` writes them, in batches, without touching any index.
async fn write_rows_sqlite(pool: &SqlitePool, corpus: &Corpus) -> anyhow::Result<()> {
    let now = now_ms();
    let docs: Vec<usize> = (0..corpus.documents()).collect();
    for group in docs.chunks(DOCS_PER_TX) {
        let mut tx = pool.begin().await?;
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(DOC_COLUMNS);
        qb.push_values(group, |mut b, &d| {
            b.push_bind(TENANT)
                .push_bind(doc_id(d))
                .push_bind(doc_title(d))
                .push_bind("synthetic")
                .push_bind("text")
                .push_bind(format!("synthetic-document-{d}"))
                .push_bind("{}")
                .push_bind(corpus.doc_range(d).len() as i64)
                .push_bind(now)
                .push_bind(now);
        });
        qb.build().execute(&mut *tx).await?;
        let rows: Vec<usize> = group.iter().flat_map(|&d| corpus.doc_range(d)).collect();
        for batch in rows.chunks(ROWS_PER_INSERT) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(CHUNK_COLUMNS);
            qb.push_values(batch, |mut b, &i| {
                b.push_bind(TENANT)
                    .push_bind(chunk_id(i))
                    .push_bind(doc_id(i / PER_DOC))
                    .push_bind((i % PER_DOC) as i64)
                    .push_bind(doc_title(i / PER_DOC))
                    .push_bind(None::<String>)
                    .push_bind(corpus.text(i))
                    .push_bind(format!("synthetic-chunk-{i}"))
                    .push_bind(8i64)
                    .push_bind("{}")
                    .push_bind(vector_to_bytes(&corpus.vectors[i]));
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// The rows as `PgVectorStore::put` writes them, in batches.
async fn write_rows_pg(pool: &PgPool, corpus: &Corpus) -> anyhow::Result<()> {
    let now = now_ms();
    let docs: Vec<usize> = (0..corpus.documents()).collect();
    for group in docs.chunks(DOCS_PER_TX) {
        let mut tx = pool.begin().await?;
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(DOC_COLUMNS);
        qb.push_values(group, |mut b, &d| {
            b.push_bind(TENANT)
                .push_bind(doc_id(d))
                .push_bind(doc_title(d))
                .push_bind("synthetic")
                .push_bind("text")
                .push_bind(format!("synthetic-document-{d}"))
                .push_bind("{}")
                .push_unseparated("::jsonb")
                .push_bind(corpus.doc_range(d).len() as i32)
                .push_bind(now)
                .push_bind(now);
        });
        qb.build().execute(&mut *tx).await?;
        let rows: Vec<usize> = group.iter().flat_map(|&d| corpus.doc_range(d)).collect();
        for batch in rows.chunks(ROWS_PER_INSERT) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(CHUNK_COLUMNS);
            qb.push_values(batch, |mut b, &i| {
                b.push_bind(TENANT)
                    .push_bind(chunk_id(i))
                    .push_bind(doc_id(i / PER_DOC))
                    .push_bind((i % PER_DOC) as i32)
                    .push_bind(doc_title(i / PER_DOC))
                    .push_bind(None::<String>)
                    .push_bind(corpus.text(i))
                    .push_bind(format!("synthetic-chunk-{i}"))
                    .push_bind(8i32)
                    .push_bind("{}")
                    .push_unseparated("::jsonb")
                    .push_bind(Vector::from(corpus.vectors[i].clone()));
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Scans of the HNSW index counted by PostgreSQL for this session, made current first
/// (counters are flushed when the session goes idle; forced here).
async fn hnsw_index_scans(pool: &PgPool) -> anyhow::Result<i64> {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await?;
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT sum(idx_scan)::int8 FROM pg_stat_user_indexes WHERE indexrelname LIKE 'rag_chunks_hnsw_%'",
    )
    .fetch_one(pool)
    .await?;
    Ok(n.unwrap_or(0))
}

/// How many of `PLAN_CHECKS` searches through the store's own query walked the HNSW index
/// (a plan without it would be an exact scan: recall 1, latency of a scan). One connection,
/// so the counters read are the searches' own.
async fn pg_index_use(
    url: &str,
    params: PgVectorParams,
    queries: &[Vec<f32>],
) -> anyhow::Result<(i64, usize)> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let store = PgVectorStore::open(pool.clone(), params).await?;
    let before = hnsw_index_scans(&pool).await?;
    let n = PLAN_CHECKS.min(queries.len());
    for q in &queries[..n] {
        store
            .vector_search(TENANT, q, K, &Filter::default(), false)
            .await?;
    }
    let after = hnsw_index_scans(&pool).await?;
    pool.close().await;
    Ok((after - before, n))
}

/// What the pgvector part needs from the shared setup.
struct SearchSetup<'a> {
    corpus: &'a Corpus,
    warmup: &'a [Vec<f32>],
    queries: &'a [Vec<f32>],
    truth: &'a [Vec<usize>],
    exact_n: usize,
    scan_p50: f64,
}

/// The pgvector part, in a fresh database dropped afterwards.
async fn pg_search(report: &mut Report, admin: &str, s: &SearchSetup<'_>) -> anyhow::Result<()> {
    let (name, url) = create_database(admin, "qm_bench_search").await?;
    let result = pg_search_in(report, &url, s).await;
    drop_database(admin, &name).await;
    result
}

async fn pg_search_in(report: &mut Report, url: &str, s: &SearchSetup<'_>) -> anyhow::Result<()> {
    let n = s.corpus.vectors.len();
    let store = Store::connect(url, 8).await?;
    let quartermaster::store::Pool::Postgres(pool) = store.pool() else {
        anyhow::bail!("QM_BENCH_DATABASE_URL did not open PostgreSQL");
    };
    let existing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'rag_chunks' AND indexname LIKE 'rag_chunks_hnsw_%'",
    )
    .fetch_one(pool)
    .await?;
    anyhow::ensure!(existing == 0, "a fresh database already has an HNSW index");
    eprintln!("pgvector: writing {n} rows");
    let started = Instant::now();
    write_rows_pg(pool, s.corpus).await?;
    let write_secs = started.elapsed().as_secs_f64();
    sqlx::query("ANALYZE rag_documents, rag_chunks")
        .execute(pool)
        .await?;
    let version: String =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            .fetch_one(pool)
            .await?;
    let mem: String = sqlx::query_scalar("SELECT current_setting('maintenance_work_mem')")
        .fetch_one(pool)
        .await?;
    let workers: String =
        sqlx::query_scalar("SELECT current_setting('max_parallel_maintenance_workers')")
            .fetch_one(pool)
            .await?;
    let params = RagConfig::default().pgvector;
    eprintln!(
        "pgvector: building the HNSW index (maintenance_work_mem {mem}, max_parallel_maintenance_workers {workers})"
    );
    let started = Instant::now();
    let pg = PgVectorStore::open(pool.clone(), params).await?;
    let build_secs = started.elapsed().as_secs_f64();
    eprintln!("pgvector: searching");
    let searched = measure(&pg, s.warmup, s.queries, s.truth, s.exact_n).await?;
    report.search.push(search_row(
        &format!(
            "pgvector {version} HNSW (m {}, ef_construction {}, ef_search {})",
            params.m, params.ef_construction, params.ef_search
        ),
        n,
        write_secs,
        build_secs,
        &searched,
        s.scan_p50,
    ));
    report.note(format!(
        "pgvector: index built with maintenance_work_mem {mem}, max_parallel_maintenance_workers {workers} \
         (QM_BENCH_PG_MAINTENANCE_WORK_MEM sets the first); exact path (enable_indexscan off) on {} queries \
         agrees with the bench's exact top-10 on {:.3}",
        searched.exact_queries, searched.exact_recall
    ));
    match pg_index_use(url, params, s.queries).await {
        Ok((used, of)) if used >= of as i64 => report.note(format!(
            "pgvector: {of} of {of} searches on one connection walked the HNSW index (PostgreSQL's counters)"
        )),
        Ok((used, of)) => report.note(format!(
            "WARNING pgvector: only {used} of {of} searches walked the HNSW index: the planner chose \
             another plan for the rest (their latency and recall are an exact scan's)"
        )),
        Err(e) => report.note(format!("pgvector: could not count HNSW index scans: {e}")),
    }
    drop(pg);
    store.close().await;
    Ok(())
}

pub(super) async fn bench_search(
    report: &mut Report,
    pg_admin: Option<&str>,
    n: usize,
) -> anyhow::Result<()> {
    let nq = env_or("QM_BENCH_RAG_QUERIES", 500usize).max(1);
    let exact_n = env_or("QM_BENCH_RAG_EXACT_QUERIES", 50usize);
    eprintln!("generating {n} synthetic chunks and {nq} queries");
    let (topics, data) = topic_dataset(n, 0x5EED ^ n as u64);
    let (topic_of, vectors): (Vec<usize>, Vec<Vec<f32>>) = data.into_iter().unzip();
    let corpus = Corpus { vectors, topic_of };
    let mut rng = Rng(0xC0FFEE ^ n as u64);
    let all: Vec<Vec<f32>> = (0..WARMUP + nq).map(|_| query(&topics, &mut rng)).collect();
    let (warmup, queries) = all.split_at(WARMUP);

    eprintln!("exact top-{K} of every query (ground truth)");
    let truth: Vec<Vec<usize>> = queries
        .par_iter()
        .map(|q| exact_top_k(q, &corpus.vectors, K))
        .collect();
    // The in-process peer: the same exact top-k, one thread, as one search would run.
    let mut scans = Vec::new();
    for q in queries.iter().take(SCANS_TIMED) {
        let started = Instant::now();
        std::hint::black_box(exact_top_k(q, &corpus.vectors, K));
        scans.push(ms_since(started));
    }
    scans.sort_by(f64::total_cmp);
    let scan_p50 = pct(&scans, 0.5);
    let (mut first, mut last) = (0.0f64, 0.0f64);
    for (q, t) in queries.iter().zip(&truth) {
        if let (Some(&a), Some(&b)) = (t.first(), t.last()) {
            first += dot(q, &corpus.vectors[a]) as f64;
            last += dot(q, &corpus.vectors[b]) as f64;
        }
    }
    let embedded_params = RagConfig::default().hnsw;
    report.search_title = format!(
        "RAG vector search: {n} synthetic {DIM}-d chunks ({} topics, {PER_DOC} chunks per document), \
         {nq} queries (new points of random topics; mean cosine to the nearest chunk {:.2}, to the {K}th {:.2}), \
         top-{K} through `ChunkStore::vector_search`; recall@{K} against the exact top-{K}",
        topics.centres.len(),
        first / nq as f64,
        last / nq as f64
    );

    // The embedded store: rows written with SQL, then `open` reads them and builds the graph.
    let dir = tempfile::tempdir()?;
    let store = Store::connect(&sqlite_url(dir.path(), "search.db"), 4).await?;
    let quartermaster::store::Pool::Sqlite(pool) = store.pool() else {
        anyhow::bail!("a sqlite:// URL did not open SQLite");
    };
    eprintln!("embedded: writing {n} rows");
    let started = Instant::now();
    write_rows_sqlite(pool, &corpus).await?;
    let write_secs = started.elapsed().as_secs_f64();
    eprintln!("embedded: opening the store (reads the rows, builds hnsw_rs and BM25)");
    let started = Instant::now();
    let snapshots = dir.path().join("graphs");
    let embedded =
        EmbeddedStore::open(pool.clone(), embedded_params, Some(snapshots.clone())).await?;
    let build_secs = started.elapsed().as_secs_f64();
    // The graph saved (as at shutdown), then loaded by a second open (as at the next start).
    let started = Instant::now();
    embedded.save_snapshot().await;
    let save_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let reopened = EmbeddedStore::open(pool.clone(), embedded_params, Some(snapshots)).await?;
    let reopen_secs = started.elapsed().as_secs_f64();
    let searched_reopened = measure(&reopened, warmup, queries, &truth, exact_n).await?;
    drop(reopened);
    report.note(format!(
        "embedded graph snapshot at {n} chunks: saved in {save_secs:.1} s; the next open (rows read, BM25, \
         the graph loaded from its snapshot) took {reopen_secs:.1} s against {build_secs:.1} s building it, \
         recall@{K} after the reload {:.3}",
        searched_reopened.recall
    ));
    eprintln!("embedded: searching");
    let searched = measure(&embedded, warmup, queries, &truth, exact_n).await?;
    report.search.push(search_row(
        &format!(
            "embedded: hnsw_rs (m {}, ef_construction {}, ef_search {})",
            embedded_params.m, embedded_params.ef_construction, embedded_params.ef_search
        ),
        n,
        write_secs,
        build_secs,
        &searched,
        scan_p50,
    ));
    report.note(format!(
        "embedded: \"index build\" is `EmbeddedStore::open` (read every row from SQLite, BM25, hnsw_rs \
         parallel insert); its exact path (every row read from SQLite) on {} queries agrees with the \
         bench's exact top-{K} on {:.3}",
        searched.exact_queries, searched.exact_recall
    ));
    drop(embedded);
    store.close().await;
    drop(dir);

    let Some(admin) = pg_admin else {
        report.note("SKIPPED pgvector: QM_BENCH_DATABASE_URL is not set".into());
        return Ok(());
    };
    let setup = SearchSetup {
        corpus: &corpus,
        warmup,
        queries,
        truth: &truth,
        exact_n,
        scan_p50,
    };
    let result = pg_search(report, admin, &setup).await;
    if let Err(e) = result {
        report.error("pgvector search", e);
    }
    Ok(())
}
