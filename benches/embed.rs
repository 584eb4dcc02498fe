//! Embedding speed on this machine, on the same inputs as `scripts/st_bench.py` (the
//! sentence-transformers peer): p50 latency of one 12-token query, and sentences/s over the
//! first 2,048 QQP questions in batches of 32.
//!
//! `cargo bench --bench embed` (env: QM_BENCH_THREADS=2, QM_BENCH_SENTENCES=path to one
//! sentence per line, QM_BENCH_BACKENDS=fused,candle). `scripts/embed_bench.sh` runs both
//! peers in one go and prints the ratios.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{init_threads, median};
use quartermaster::embed::{Backend, EmbedModel};

const QUERY: &str = "What is the best way to learn Rust quickly?"; // 12 tokens with [CLS]/[SEP]
const QQP: &str = "../shared/data/cache/qqp-dev.tsv";

fn sentences() -> Vec<String> {
    if let Ok(path) = std::env::var("QM_BENCH_SENTENCES") {
        return std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(2048)
            .map(String::from)
            .collect();
    }
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(QQP))
        .expect("qqp-dev.tsv");
    text.lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .take(2048)
        .map(String::from)
        .collect()
}

fn main() {
    let threads = init_threads();
    let backends = std::env::var("QM_BENCH_BACKENDS").unwrap_or_else(|_| "fused,candle".into());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let sentences = sentences();
    for name in backends.split(',') {
        let backend = match name {
            "fused" => Backend::Fused,
            "candle" => Backend::Candle,
            other => panic!("unknown backend {other}"),
        };
        let model = EmbedModel::load(&dir, backend, threads, 0).expect("run models/fetch.sh");
        let q = model.embed(&[QUERY], 1 << 20).unwrap();
        assert_eq!(q[0].tokens, 12);
        for _ in 0..20 {
            model.embed(&[QUERY], 1 << 20).unwrap();
        }
        let lat: Vec<f64> = (0..200)
            .map(|_| {
                let t = Instant::now();
                model.embed(&[QUERY], 1 << 20).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        // Like sentence-transformers' encode(batch_size=32): sort all by length, then batches of 32.
        let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
        let lens: Vec<usize> = model
            .tokenize(&refs)
            .unwrap()
            .iter()
            .map(|(ids, _)| ids.len())
            .collect();
        let mut order: Vec<usize> = (0..refs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        let sorted: Vec<&str> = order.iter().map(|&i| refs[i]).collect();
        model.embed(&sorted[..32], 1 << 20).unwrap();
        let t = Instant::now();
        for chunk in sorted.chunks(32) {
            model.embed(chunk, 1 << 20).unwrap();
        }
        let sorted_rate = refs.len() as f64 / t.elapsed().as_secs_f64();
        // And in file order, mixed lengths in every batch.
        let t = Instant::now();
        for chunk in refs.chunks(32) {
            model.embed(chunk, 1 << 20).unwrap();
        }
        let unsorted_rate = refs.len() as f64 / t.elapsed().as_secs_f64();
        let query_p50 = median(lat);
        println!(
            "{{\"impl\":\"quartermaster-{name}\",\"threads\":{threads},\"single_p50_ms\":{:.3},\"batch32_sentences_per_s\":{:.1},\"batch32_unsorted_sentences_per_s\":{:.1}}}",
            query_p50, sorted_rate, unsorted_rate
        );
        if name == "fused" {
            cross_row(&dir, query_p50);
        }
    }
}

/// The cache's cross-encoder (`cache.verifier = "cross"`) beside the query's embedding in the
/// same run: one pass over one candidate pair, and over `CROSS_MAX_READ` of them.
fn cross_row(dir: &std::path::Path, query_p50: f64) {
    use quartermaster::cache::{CROSS_MAX_READ, CrossVerifier};
    let cross = CrossVerifier::load(dir).expect("cross-encoder");
    let cached = "What's the quickest way to learn Rust?";
    let p50 = |n: usize| {
        let pairs = vec![(cached, QUERY, 0.9f32); n];
        for _ in 0..20 {
            cross.logits(&pairs).unwrap();
        }
        median(
            (0..200)
                .map(|_| {
                    let t = Instant::now();
                    cross.logits(&pairs).unwrap();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        )
    };
    let (one, most) = (p50(1), p50(CROSS_MAX_READ));
    println!(
        "{{\"impl\":\"quartermaster-cross-encoder\",\"one_pair_p50_ms\":{one:.3},\"{CROSS_MAX_READ}_pairs_p50_ms\":{most:.3},\"one_pair_vs_query_embedding\":{:.2}}}",
        one / query_p50
    );
}
