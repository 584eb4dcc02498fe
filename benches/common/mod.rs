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
    v.sort_by(|a, b| a.total_cmp(b));
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

/// The gateway's database: `QM_BENCH_DATABASE_URL` (PostgreSQL, e.g. from `scripts/pg.sh
/// start`) or a fresh SQLite file. With `QM_BENCH_LIMITS=1` every key and tenant has limits
/// and budgets (far above what a run uses): each request is admitted against them, shared
/// across replicas on PostgreSQL.
pub fn start_gateway(mock_url: &str, extra: &str) -> Gateway {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let db = std::env::var("QM_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let limits = if std::env::var("QM_BENCH_LIMITS").as_deref() == Ok("1") {
        "[limits.key_default]\nrequests_per_minute = 100000000\ntokens_per_minute = 100000000000\n\
         [limits.tenant_default]\nusd_per_day = 1000000.0\nusd_per_month = 10000000.0\n"
    } else {
        ""
    };
    let extra = format!("{extra}\n{limits}");
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
    // QM_BENCH_GATEWAY=PATH runs another build of the gateway (an older commit's, to compare
    // two builds in one run of the same bench).
    let bin = std::env::var("QM_BENCH_GATEWAY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_quartermaster").to_string());
    let bin = bin.as_str();
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

/// CPU time (user + system) a process has used so far, seconds; `None` when it cannot be
/// read.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    // Fields 14 and 15 of /proc/PID/stat, in clock ticks (the command name, field 2, may hold
    // spaces: count from the closing parenthesis).
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })?;
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let hz = HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    });
    Some(ticks as f64 / hz)
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

/// Dimensions of the synthetic embeddings (all-MiniLM-L6-v2's).
pub const DIM: usize = 384;

/// xorshift64*: deterministic, fast, good enough for synthetic data.
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Approximately standard normal (sum of 4 uniforms, scaled).
    pub fn gauss(&mut self) -> f32 {
        let s: f64 = (0..4)
            .map(|_| (self.next() >> 11) as f64 / (1u64 << 53) as f64)
            .sum();
        ((s - 2.0) * (3.0f64).sqrt()) as f32
    }

    /// A random unit vector, uniform in direction.
    pub fn unit(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| self.gauss()).collect();
        normalise(&mut v);
        v
    }
}

pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// Dimensions of the subspace that same-topic variation is drawn from.
const LATENT: usize = 32;

/// The structure of synthetic embeddings shaped like real ones: random unit topic centres
/// (mutually near-orthogonal, as unrelated sentences are), and per point its topic's centre
/// plus a variation drawn from a shared 32-dimensional subspace (same-topic cosine about
/// 0.6-0.7). Uniformly random 384-d vectors would be an unrealistically hard case for any
/// graph index (no neighbourhood structure at all).
pub struct Topics {
    pub centres: Vec<Vec<f32>>,
    basis: Vec<Vec<f32>>,
}

impl Topics {
    pub fn new(rng: &mut Rng, topics: usize) -> Self {
        let centres: Vec<Vec<f32>> = (0..topics.max(1)).map(|_| rng.unit(DIM)).collect();
        let basis: Vec<Vec<f32>> = (0..LATENT).map(|_| rng.unit(DIM)).collect();
        Self { centres, basis }
    }

    /// A topic drawn uniformly.
    pub fn pick(&self, rng: &mut Rng) -> usize {
        (rng.next() % self.centres.len() as u64) as usize
    }

    /// A new point of topic `t`: its centre plus 0.7 × a unit variation from the shared
    /// subspace, normalised.
    pub fn point(&self, rng: &mut Rng, t: usize) -> Vec<f32> {
        let z = rng.unit(LATENT);
        let mut w: Vec<f32> = (0..DIM)
            .map(|d| z.iter().zip(&self.basis).map(|(zi, b)| zi * b[d]).sum())
            .collect();
        normalise(&mut w);
        let mut v: Vec<f32> = self.centres[t]
            .iter()
            .zip(&w)
            .map(|(a, b)| a + 0.7 * b)
            .collect();
        normalise(&mut v);
        v
    }
}

/// `n` synthetic embeddings over `n / 100` topics (see [`Topics`]), each with its topic,
/// and the topics themselves (to draw new points from).
pub fn topic_dataset(n: usize, seed: u64) -> (Topics, Vec<(usize, Vec<f32>)>) {
    let mut rng = Rng(seed);
    let topics = Topics::new(&mut rng, n / 100);
    let data = (0..n)
        .map(|_| {
            let t = topics.pick(&mut rng);
            (t, topics.point(&mut rng, t))
        })
        .collect();
    (topics, data)
}

/// `n` synthetic embeddings (see [`Topics`]).
pub fn dataset(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let (_, data) = topic_dataset(n, seed);
    data.into_iter().map(|(_, v)| v).collect()
}
