//! The semantic cache's speed and size.
//!
//! 1. The vector index (in process): hnsw_rs graphs of N unit vectors in 384 dimensions
//!    (synthetic, with topic structure like sentence embeddings), queried with paraphrase-like
//!    neighbours of stored entries: search p50/p99, recall@1 against an exact scan of the same vectors (the peer,
//!    timed in the same run), build rate, and resident memory per entry.
//! 2. End to end: the release binary with the cache on its embedded defaults (SQLite store,
//!    MiniLM embedder, HNSW), a local mock upstream; the time from request to the last byte
//!    of a full SSE replay, for exact hits and for semantic hits (which embed the query), with
//!    the rule checks and with the cross-encoder verifier.
//!
//! 3. With `QM_BENCH_DATABASE_URL` (a PostgreSQL with pgvector, e.g. from `scripts/pg.sh
//!    start`): the same vectors and queries in the `pgvector` backend's table (what replicas
//!    share), its search p50/p99 and recall@1 against the same exact scan.
//!
//! `cargo bench --bench cache` (env: QM_BENCH_HNSW_SIZES=100000[,1000000],
//! QM_BENCH_QUERIES=1000, QM_BENCH_HITS=300, QM_BENCH_EF_CONSTRUCTION=200,
//! QM_BENCH_DATABASE_URL).

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::post;
use quartermaster::cache::{HnswIndex, HnswParams};
use quartermaster::index::dot;
use rayon::prelude::*;
use serde_json::{Value, json};

use common::{DIM, Gateway, Rng, dataset, env_or, normalise, pct, rss_kib, start_gateway};

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn params() -> HnswParams {
    HnswParams {
        ef_construction: env_or(
            "QM_BENCH_EF_CONSTRUCTION",
            HnswParams::default().ef_construction,
        ),
        ..HnswParams::default()
    }
}

/// Paraphrase-like queries of stored entries (cosine about 0.96 to their source).
fn queries_of(data: &[Vec<f32>], queries: usize) -> Vec<Vec<f32>> {
    let n = data.len();
    let mut rng = Rng(42);
    (0..queries)
        .map(|_| {
            let src = &data[(rng.next() % n as u64) as usize];
            let mut r: Vec<f32> = (0..DIM).map(|_| rng.gauss()).collect();
            normalise(&mut r);
            let mut q: Vec<f32> = src.iter().zip(&r).map(|(x, y)| x + 0.3 * y).collect();
            normalise(&mut q);
            q
        })
        .collect()
}

/// The nearest stored vector of each query, by an exact scan.
fn exact_nearest(data: &[Vec<f32>], qs: &[Vec<f32>]) -> Vec<usize> {
    qs.par_iter()
        .map(|q| {
            (0..data.len())
                .max_by(|&a, &b| dot(q, &data[a]).partial_cmp(&dot(q, &data[b])).unwrap())
                .unwrap()
        })
        .collect()
}

/// The `pgvector` backend at `n` entries: bulk-loaded, the HNSW index built, then searched.
async fn bench_pgvector(url: &str, n: usize, queries: usize) {
    use quartermaster::cache::VectorIndex;
    use quartermaster::cache::pgvector::{PgVectorIndex, PgvectorCacheConfig};
    let store = quartermaster::store::Store::connect(url, 4).await.unwrap();
    let quartermaster::store::Pool::Postgres(pool) = store.pool().clone() else {
        panic!("QM_BENCH_DATABASE_URL must be PostgreSQL");
    };
    let data = dataset(n, 0x5EED ^ n as u64);
    for sql in [
        "DELETE FROM cache_entries WHERE tenant_id = 'bench'",
        "DROP INDEX IF EXISTS cache_vectors_hnsw",
        "SET maintenance_work_mem = '512MB'",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let ids: Vec<String> = chunk.iter().map(|i| format!("ce_{i:032x}")).collect();
        let vectors: Vec<pgvector::Vector> = chunk
            .iter()
            .map(|&i| pgvector::Vector::from(data[i].clone()))
            .collect();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO cache_entries (id, tenant_id, exact_key, fingerprint, query_text, model, response, checksum, cost_usd, created_at, expires_at, last_hit_at) \
             SELECT id, 'bench', id, 'fp', '', 'm', '{}', '', 0, 0, 9223372036854775807, 0 FROM UNNEST($1::text[]) AS id",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO cache_vectors (entry_id, tenant_id, fingerprint, embedding) \
             SELECT id, 'bench', 'fp', v FROM UNNEST($1::text[], $2::vector[]) AS t(id, v)",
        )
        .bind(&ids)
        .bind(&vectors)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let load = t.elapsed().as_secs_f64();
    let t = Instant::now();
    sqlx::query("SET maintenance_work_mem = '512MB'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "CREATE INDEX cache_vectors_hnsw ON cache_vectors USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)",
    )
    .execute(&pool)
    .await
    .unwrap();
    // The planner's statistics, as autovacuum keeps them: without them it takes the
    // (tenant, fingerprint) index and sorts every row instead of walking the HNSW graph.
    sqlx::query("ANALYZE cache_vectors")
        .execute(&pool)
        .await
        .unwrap();
    let build = t.elapsed().as_secs_f64();
    let index = PgVectorIndex::new(&store, PgvectorCacheConfig::default()).unwrap();
    let qs = queries_of(&data, queries);
    let exact = exact_nearest(&data, &qs);
    for q in qs.iter().take(20) {
        index.search("bench", "fp", q, 1).await.unwrap(); // warm the pages
    }
    let mut lat = Vec::with_capacity(queries);
    let mut hits = 0;
    for (q, e) in qs.iter().zip(&exact) {
        let t = Instant::now();
        let r = index.search("bench", "fp", q, 1).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        if r.first().map(|c| c.entry_id.as_str()) == Some(format!("ce_{e:032x}").as_str()) {
            hits += 1;
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "| {n} | pgvector (m 16, ef_construction 64, ef_search {}), through the pool | {:.3} ms | {:.3} ms | {:.2} % | load {load:.1} s, index build {build:.1} s |",
        PgvectorCacheConfig::default().ef_search,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        hits as f64 * 100.0 / queries as f64,
    );
    sqlx::query("DELETE FROM cache_entries WHERE tenant_id = 'bench'")
        .execute(&pool)
        .await
        .unwrap();
    store.close().await;
}

fn bench_index(n: usize, queries: usize) {
    let me = std::process::id();
    let data = dataset(n, 0x5EED ^ n as u64);
    let items: Vec<(String, String, Vec<f32>)> = data
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("ce_{i:032x}"), "fp".to_string(), v.clone()))
        .collect();
    // Everything the index copies in is counted; the input (already resident) is not.
    let before = rss_kib(me);
    let index = HnswIndex::new(params(), n);
    let t = Instant::now();
    index.load_tenant("bench", items);
    let build = t.elapsed().as_secs_f64();
    let after = rss_kib(me);
    let qs = queries_of(&data, queries);
    let mut lat = Vec::with_capacity(queries);
    let mut found = Vec::with_capacity(queries);
    for q in &qs {
        let t = Instant::now();
        let r = index.search_sync("bench", "fp", q, 1);
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        found.push(r.first().map(|c| c.entry_id.clone()));
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // The peer: an exact scan over the same vectors with the same (vectorized) dot
    // product, one thread, like a search.
    let mut exact_lat = Vec::with_capacity(queries.min(200));
    let exact = exact_nearest(&data, &qs);
    for q in qs.iter().take(200) {
        let t = Instant::now();
        let best = (0..n)
            .max_by(|&a, &b| dot(q, &data[a]).partial_cmp(&dot(q, &data[b])).unwrap())
            .unwrap();
        std::hint::black_box(best);
        exact_lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    exact_lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let hits = found
        .iter()
        .zip(&exact)
        .filter(|(f, e)| f.as_deref() == Some(format!("ce_{:032x}", e).as_str()))
        .count();
    let bytes_per_entry = (after.saturating_sub(before) as f64 * 1024.0) / n as f64;
    println!(
        "| {n} | {:.3} ms | {:.3} ms | {:.2} ms | {:.1}× | {:.2} % | {:.0} /s | {:.0} B |",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&exact_lat, 0.5),
        pct(&exact_lat, 0.5) / pct(&lat, 0.5),
        hits as f64 * 100.0 / queries as f64,
        n as f64 / build,
        bytes_per_entry
    );
}

async fn mock(body: Bytes) -> axum::response::Response {
    let req: Value = serde_json::from_slice(&body).unwrap();
    let words = ["Paris", " is", " the", " capital", " of", " France", "."];
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        let c = json!({"id":"x","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":{"content":w},"finish_reason": if i == words.len() - 1 {json!("stop")} else {Value::Null}}]});
        out.push_str(&format!("data: {c}\n\n"));
    }
    out.push_str("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":7,\"total_tokens\":16}}\n\ndata: [DONE]\n\n");
    assert!(
        req["stream"].as_bool().unwrap_or(false),
        "the bench streams"
    );
    let stream = futures::stream::iter([Ok::<_, Infallible>(Bytes::from(out))]);
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn timed_stream(
    client: &reqwest::Client,
    gw: &Gateway,
    text: &str,
    headers: &[(&str, &str)],
) -> (f64, String) {
    let body = json!({"model":"m","stream":true,"messages":[{"role":"user","content":text}]});
    let t = Instant::now();
    let mut req = client
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&gw.key)
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r
        .headers()
        .get("x-quartermaster-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    (t.elapsed().as_secs_f64() * 1e3, status)
}

async fn bench_hits(n: usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            Router::new().route("/v1/chat/completions", post(mock)),
        )
        .await
        .unwrap()
    });
    let gw = start_gateway(&mock_url, "");
    // The same, with the cross-encoder reading each semantic candidate (its bar set low so
    // every paraphrase below is served: the pass costs the same whatever it decides).
    let gw_cross = start_gateway(
        &mock_url,
        "[cache]\nverifier = \"cross\"\nmin_probability = 0.0001\n",
    );
    let client = reqwest::Client::new();
    let question = "What is the capital of France?";
    for g in [&gw, &gw_cross] {
        let (_, status) = timed_stream(&client, g, question, &[]).await;
        assert_eq!(status, "miss");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paraphrases = [
        "What's the capital of France?",
        "what is the capital city of France?",
        "Which city is the capital of France?",
        "What is France's capital?",
        "Tell me the capital of France.",
    ];
    let mut rows = Vec::new();
    for (label, g, semantic) in [
        ("exact hit", &gw, false),
        ("semantic hit (embeds the query), rule checks", &gw, true),
        (
            "semantic hit, rule checks + cross-encoder (verifier = \"cross\")",
            &gw_cross,
            true,
        ),
    ] {
        let mut lat = Vec::with_capacity(n);
        for i in 0..n + 20 {
            let text = if semantic {
                paraphrases[i % paraphrases.len()]
            } else {
                question
            };
            let (ms, status) = timed_stream(
                &client,
                g,
                text,
                &[
                    ("x-quartermaster-cache", "no-write"),
                    ("x-quartermaster-cache-threshold", "0.80"),
                ],
            )
            .await;
            assert_eq!(status, "hit", "{label}: {text}");
            if i >= 20 {
                lat.push(ms); // the first 20 warm up connections and caches
            }
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        rows.push((label, pct(&lat, 0.5), pct(&lat, 0.99)));
    }
    // The peer: the same question answered live (cache off for the request) by a mock
    // upstream that answers at once.
    let mut live = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let (ms, status) =
            timed_stream(&client, &gw, question, &[("x-quartermaster-cache", "off")]).await;
        assert_eq!(status, "bypass");
        if i >= 20 {
            live.push(ms);
        }
    }
    live.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows.push((
        "live answer, zero-latency mock upstream",
        pct(&live, 0.5),
        pct(&live, 0.99),
    ));
    println!("\n| request in, full SSE out ({n} sequential requests) | p50 | p99 |");
    println!("| --- | --- | --- |");
    for (label, p50, p99) in rows {
        println!("| {label} | {p50:.2} ms | {p99:.2} ms |");
    }
}

#[tokio::main]
async fn main() {
    quartermaster::install_crypto_provider();
    common::init_threads();
    let sizes = env_list("QM_BENCH_HNSW_SIZES", "100000");
    let queries = env_or::<usize>("QM_BENCH_QUERIES", 1000);
    println!(
        "HNSW (m = {}, ef_construction = {}, ef_search = {}), {DIM} dimensions, {queries} paraphrase-like queries, top-1:\n",
        params().m,
        params().ef_construction,
        params().ef_search
    );
    println!(
        "| entries | HNSW p50 | HNSW p99 | exact scan p50 | speed-up | recall@1 vs exact | build | memory per entry |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for &n in &sizes {
        bench_index(n, queries);
    }
    if let Ok(url) = std::env::var("QM_BENCH_DATABASE_URL") {
        println!("\nThe pgvector backend (shared by replicas), the same vectors and queries:\n");
        println!("| entries | index | p50 | p99 | recall@1 vs exact | load |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for &n in &sizes {
            bench_pgvector(&url, n, queries).await;
        }
    }
    bench_hits(env_or::<usize>("QM_BENCH_HITS", 300)).await;
}
