//! The real gateway binary as a child process, for tests that need what only a process
//! shows: crashes, memory, signals, `kill -9`, a full disk.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The embedding model the repository fetches (models/fetch.sh).
pub fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

pub struct Gateway {
    pub child: Child,
    pub url: String,
    pub key: String,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Gateway {
    /// Writes `config` (which must not set `[server]` host/port: they are added) to
    /// `dir/qm.toml`, creates an API key for tenant `acme` in `database_url`, and starts the
    /// binary; returns once it answers.
    pub async fn start(dir: &Path, database_url: &str, config: &str) -> Gateway {
        quartermaster::install_crypto_provider();
        let store = quartermaster::store::Store::connect(database_url, 1)
            .await
            .unwrap();
        let key = quartermaster::auth::create_key(&store, "acme", "test")
            .await
            .unwrap()
            .secret;
        store.close().await;
        Self::start_with_key(dir, database_url, config, key).await
    }

    pub async fn start_with_key(
        dir: &Path,
        database_url: &str,
        config: &str,
        key: String,
    ) -> Gateway {
        quartermaster::install_crypto_provider();
        let port = free_port();
        let path = dir.join("qm.toml");
        let text = format!(
            "[database]\nurl = \"{database_url}\"\n{config}\n[server]\nhost = \"127.0.0.1\"\nport = {port}\n{}",
            if config.contains("shutdown_grace_secs") {
                ""
            } else {
                "shutdown_grace_secs = 5\n"
            }
        );
        std::fs::write(&path, text).unwrap();
        let log = dir.join(format!("gateway-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_quartermaster"))
            .arg("--config")
            .arg(&path)
            .arg("serve")
            .current_dir(dir)
            .env_remove("QM_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("binary starts");
        let gateway = Gateway {
            child,
            url: format!("http://127.0.0.1:{port}"),
            key,
            config: path,
            log,
        };
        gateway.wait_until_up(Duration::from_secs(60)).await;
        gateway
    }

    pub async fn wait_until_up(&self, limit: Duration) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        loop {
            let up = http
                .get(format!("{}/healthz", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// SIGTERM, then waits (up to `limit`) for the exit; returns how long it took.
    pub fn terminate(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "no exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
