//! Logs (pretty or JSON, through `tracing`), the Prometheus recorder, and request traces
//! (OpenTelemetry spans: `trace.rs`, exported over OTLP by `otlp.rs`; the GenAI attribute
//! names in `genai.rs`).

pub mod genai;
pub mod otlp;
pub mod trace;

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `quartermaster=debug,tower_http=info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

/// Installs the global subscriber; `RUST_LOG` wins over the configured level.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&config.level))
        // hnsw_rs logs every graph allocation at info.
        .add_directive("hnsw_rs=warn".parse().expect("valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr);
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Standard error that never fails: a log line that cannot be written (the disk holding the
/// log is full, the pipe is gone) is dropped and counted. tracing-subscriber reports a
/// failed write with `eprintln!`, which panics when standard error fails too: a full log
/// disk would otherwise take the gateway down with it.
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().write_all(buf).is_err() {
            metrics::counter!("qm_log_lines_dropped_total").increment(1);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Latencies from 0.5 ms (cache hits, overhead) to 2 minutes (long generations).
            let latency = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 120.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            // Histogram samples queue in the recorder until a scrape or an upkeep drains them
            // into buckets: without this, a gateway nobody scrapes grows by ~24 bytes per
            // request. A plain thread, so it runs whichever runtime (or none) is current.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("qm-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start the metrics upkeep thread");
            }
            handle
        })
        .clone()
}

/// Metric handles kept by name (a route, a model), made on first use. Past `max` names, new
/// ones are made afresh on every call instead of kept.
pub struct Kept<T> {
    map: std::sync::OnceLock<std::sync::RwLock<std::collections::HashMap<String, Arc<T>>>>,
    max: usize,
}

impl<T> Kept<T> {
    pub const fn new(max: usize) -> Self {
        Self {
            map: std::sync::OnceLock::new(),
            max,
        }
    }

    pub fn get(&self, name: &str, make: impl FnOnce() -> T) -> Arc<T> {
        let map = self.map.get_or_init(Default::default);
        if let Some(t) = map.read().unwrap_or_else(|e| e.into_inner()).get(name) {
            return t.clone();
        }
        let mut map = map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get(name) {
            return t.clone();
        }
        let t = Arc::new(make());
        if map.len() < self.max {
            map.insert(name.to_string(), t.clone());
        }
        t
    }
}
