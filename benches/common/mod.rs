//! Helpers shared by the benchmarks.
#![allow(dead_code)]

/// `QM_BENCH_THREADS` (default 2), with the global rayon pool sized to it: gemm, attention
/// and candle's CPU kernels all run on that pool.
pub fn init_threads() -> usize {
    let threads: usize = std::env::var("QM_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    threads
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
