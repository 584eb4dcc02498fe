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

/// The release gateway as a child process with its own SQLite file, behind `mock_url`
/// (model `m`), plus `extra` TOML; killed with SIGTERM when dropped.
pub struct Gateway {
    pub child: std::process::Child,
    pub url: String,
    pub key: String,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub fn start_gateway(mock_url: &str, extra: &str) -> Gateway {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nport = 0\n[log]\nlevel = \"warn,quartermaster::server=info\"\nformat = \"json\"\n\
             [database]\nurl = \"{db}\"\n[rate_limit]\nenabled = false\n\
             [providers.mock]\nkind = \"openai\"\nbase_url = \"{mock_url}\"\n[models.m]\nprovider = \"mock\"\n{extra}"
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_quartermaster");
    let out = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .args(["keys", "create", "--tenant", "bench"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("gateway output").unwrap();
        if line.contains("quartermaster listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break format!("http://{}", v["addr"].as_str().unwrap());
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Gateway {
        child,
        url,
        key,
        _dir: dir,
    }
}

/// Resident set size of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        })
        .unwrap_or(0)
}

/// The `p` quantile of sorted values (NaN when empty).
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A numeric environment variable, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
