//! Typed configuration: a TOML file overlaid with `QM__SECTION__KEY` environment variables,
//! validated at load with path-precise messages. Unknown keys are rejected, secrets never
//! print. Everything has a default, so the gateway runs with no file at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

/// Environment variables with this prefix override file keys: `QM__SERVER__PORT=9000`.
pub const ENV_PREFIX: &str = "QM__";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub request_log: RequestLogConfig,
    /// The local embedding model.
    pub embeddings: crate::embed::EmbedConfig,
    /// The local chat model (the offline default).
    pub local: crate::providers::LocalConfig,
    /// Upstream providers by name.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Models the gateway serves, by the name clients send.
    pub models: BTreeMap<String, ModelConfig>,
    /// The operator API under `/admin`.
    pub admin: AdminConfig,
    /// The durable job queue (webhook processing, dunning, metering, housekeeping).
    pub jobs: crate::jobs::JobsConfig,
    /// `Idempotency-Key` on the POST endpoints.
    pub idempotency: crate::api::idempotency::IdempotencyConfig,
    /// Stripe webhooks and usage metering.
    pub stripe: crate::billing::StripeConfig,
    /// Dunning and what a tenant past due may still use.
    pub billing: crate::billing::BillingConfig,
    /// How `model: "auto"` is routed, retries, fallbacks and circuit breakers.
    pub routing: crate::route::RoutingConfig,
    /// Tiers by name: ordered models and a fallback tier.
    pub tiers: BTreeMap<String, crate::route::TierConfig>,
    /// Requests, tokens and spend per tenant and per key.
    pub limits: crate::budget::LimitsConfig,
    /// The exact + semantic response cache.
    pub cache: crate::cache::CacheConfig,
    /// Documents, retrieval and grounded chat.
    pub rag: crate::rag::RagConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The environment variable holding the admin key (sent as `Authorization: Bearer`).
    pub api_key_env: Option<String>,
    /// The key itself; prefer `api_key_env`. Without either the admin API answers 403.
    pub api_key: Option<SecretString>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            api_key_env: Some("QM_ADMIN_KEY".into()),
            api_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Largest accepted request body in bytes.
    pub body_limit_bytes: usize,
    /// How long in-flight requests may run after a shutdown signal before they are cut.
    pub shutdown_grace_secs: u64,
    /// How often the config file is checked for changes (hot reload; SIGHUP reloads at
    /// once); 0 = only on SIGHUP.
    pub config_poll_secs: u64,
    /// A request's header must arrive within this long once the connection is ready for it
    /// (new connections, and keep-alive connections between requests, are closed past it).
    pub header_read_timeout_secs: u64,
    /// A request's body must arrive whole within this long (408 past it).
    pub body_read_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            body_limit_bytes: 2 * 1024 * 1024,
            shutdown_grace_secs: 30,
            config_poll_secs: 2,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
        }
    }
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created if missing) or `postgres://...`.
    pub url: SecretString,
    pub max_connections: u32,
    /// Longest a query waits for a pooled connection before it fails.
    pub acquire_timeout_ms: u64,
    /// How often the health probe (a ping and a one-row write) runs.
    pub health_interval_ms: u64,
    /// SQLite: below this many free bytes on the database's filesystem the gateway reports
    /// itself not ready (writes are still tried).
    pub min_free_bytes: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://quartermaster.db"),
            max_connections: 8,
            acquire_timeout_ms: 3_000,
            health_interval_ms: 1_000,
            min_free_bytes: 32 << 20,
        }
    }
}

impl DatabaseConfig {
    pub fn connect_options(&self) -> crate::store::ConnectOptions {
        crate::store::ConnectOptions {
            max_connections: self.max_connections,
            acquire_timeout: std::time::Duration::from_millis(self.acquire_timeout_ms.max(1)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// When false every request is served as the tenant `default` (local development only).
    pub required: bool,
    /// How long a verified key is remembered in memory; a revocation takes effect within it.
    pub key_cache_ttl_ms: u64,
    /// While the database is unreachable, keys verified within this long keep working.
    pub stale_key_ttl_secs: u64,
    /// Failed authentications one client address may make per minute before it is refused
    /// (429) without a lookup; 0 = unlimited.
    pub failed_per_ip_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: true,
            key_cache_ttl_ms: 5_000,
            stale_key_ttl_secs: 3_600,
            failed_per_ip_per_minute: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second allowed for one API key.
    pub requests_per_second: u32,
    /// Requests one key may make in a burst above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            requests_per_second: 50,
            burst: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLogConfig {
    /// Capacity of the channel between request handlers and the log writer.
    pub channel_capacity: usize,
    /// Most rows the writer inserts in one transaction.
    pub batch_size: usize,
    /// How long the writer waits after the first row of a batch for more (0: writes at
    /// once). Rows reach the table at most this much later; a graceful shutdown still
    /// writes every row, waiting at most one interval.
    pub flush_interval_ms: u64,
    /// Rows held in memory while the database does not take them.
    pub memory_rows: usize,
    /// The folder where rows beyond `memory_rows` wait for the database (replayed when it
    /// is back, and at the next start); each process keeps a locked file of its own in it,
    /// so replicas may share it. Empty: beside a SQLite database file, else
    /// `quartermaster-spill` in the working folder.
    pub spill_dir: PathBuf,
}

impl Default for RequestLogConfig {
    fn default() -> Self {
        Self {
            channel_capacity: 8192,
            batch_size: 256,
            flush_interval_ms: 50,
            memory_rows: 100_000,
            spill_dir: PathBuf::new(),
        }
    }
}

impl RequestLogConfig {
    /// The writer's options; `database` places the default spill folder.
    pub fn options(&self, database: &crate::store::Store) -> crate::store::RequestLogOptions {
        let spill_dir = if !self.spill_dir.as_os_str().is_empty() {
            self.spill_dir.clone()
        } else {
            match database.file() {
                Some(file) => {
                    let mut name = file.file_name().unwrap_or_default().to_os_string();
                    name.push(".spill");
                    file.with_file_name(name)
                }
                None => PathBuf::from("quartermaster-spill"),
            }
        };
        crate::store::RequestLogOptions {
            channel_capacity: self.channel_capacity,
            batch_size: self.batch_size,
            flush_interval: std::time::Duration::from_millis(self.flush_interval_ms),
            memory_rows: self.memory_rows,
            spill_dir: Some(spill_dir),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible HTTP API: OpenAI, Groq, Together, vLLM, Ollama, ...
    Openai,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Name of the environment variable that holds the API key (preferred to `api_key`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The key itself; prefer `api_key_env` so the file holds no secret.
    #[serde(default)]
    pub api_key: Option<SecretString>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest silence between two reads from the upstream (a stalled stream fails after it).
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_read_timeout_ms() -> u64 {
    60_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A key of `[providers]`.
    pub provider: String,
    /// The model name sent upstream; defaults to the name clients use.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Price in USD per million input (prompt) tokens.
    #[serde(default)]
    pub input_usd_per_mtok: f64,
    /// Price in USD per million output (completion) tokens.
    #[serde(default)]
    pub output_usd_per_mtok: f64,
}

/// A configuration problem, with the path of the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid config at `{path}`: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    /// Loads `path` (a missing file is an error only when `required`), then the environment.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        Self::from_toml_and_env(&text, path, std::env::vars())
    }

    /// Parses TOML text, overlays `QM__...` variables from `env`, deserializes and validates.
    pub fn from_toml_and_env(
        text: &str,
        origin: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut root: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.into(),
            message: e.to_string(),
        })?;
        for (key, value) in env {
            if let Some(rest) = key.strip_prefix(ENV_PREFIX) {
                overlay_env(&mut root, rest, &value)?;
            }
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
                ConfigError::Invalid {
                    path: e.path().to_string(),
                    message: e.inner().message().to_string(),
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |path: &str, message: &str| ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        };
        if self.server.body_limit_bytes == 0 {
            return Err(invalid("server.body_limit_bytes", "must be greater than 0"));
        }
        if self.rate_limit.enabled
            && (self.rate_limit.requests_per_second == 0 || self.rate_limit.burst == 0)
        {
            return Err(invalid(
                "rate_limit",
                "requests_per_second and burst must be greater than 0",
            ));
        }
        if self.embeddings.enabled
            && (self.embeddings.queue_capacity == 0 || self.embeddings.max_batch_tokens == 0)
        {
            return Err(invalid(
                "embeddings",
                "queue_capacity and max_batch_tokens must be greater than 0",
            ));
        }
        if self.request_log.channel_capacity == 0 || self.request_log.batch_size == 0 {
            return Err(invalid(
                "request_log",
                "channel_capacity and batch_size must be greater than 0",
            ));
        }
        let url = secrecy::ExposeSecret::expose_secret(&self.database.url);
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite: or postgres://",
            ));
        }
        for (name, provider) in &self.providers {
            if name == "local" {
                return Err(invalid(
                    "providers.local",
                    "`local` is the built-in model's name; configure it under [local]",
                ));
            }
            if !(provider.base_url.starts_with("http://")
                || provider.base_url.starts_with("https://"))
            {
                return Err(invalid(
                    &format!("providers.{name}.base_url"),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if self.jobs.concurrency == 0 || self.jobs.lease_ms < 100 {
            return Err(invalid(
                "jobs",
                "concurrency must be greater than 0 and lease_ms at least 100",
            ));
        }
        if self.stripe.meter_interval_secs == 0 {
            return Err(invalid(
                "stripe.meter_interval_secs",
                "must be greater than 0",
            ));
        }
        if !(self.stripe.api_base.starts_with("http://")
            || self.stripe.api_base.starts_with("https://"))
        {
            return Err(invalid(
                "stripe.api_base",
                "must be an http:// or https:// URL",
            ));
        }
        if let Some(models) = &self.billing.limited_models {
            for m in models {
                if !self.serves_model(m) {
                    return Err(ConfigError::Invalid {
                        path: "billing.limited_models".into(),
                        message: format!("no model named `{m}`"),
                    });
                }
            }
        }
        self.validate_routing()?;
        self.cache.validate().map_err(|m| invalid("cache", &m))?;
        self.rag.validate().map_err(|m| invalid("rag", &m))?;
        if self.local.enabled && self.local.max_concurrent == 0 {
            return Err(invalid("local.max_concurrent", "must be greater than 0"));
        }
        for (name, model) in &self.models {
            if model.provider == "local" {
                if !self.local.enabled {
                    return Err(ConfigError::Invalid {
                        path: format!("models.{name}.provider"),
                        message: "provider `local` is disabled ([local] enabled = false)".into(),
                    });
                }
                continue;
            }
            if !self.providers.contains_key(&model.provider) {
                return Err(ConfigError::Invalid {
                    path: format!("models.{name}.provider"),
                    message: format!(
                        "no provider named `{}` in [providers] (nor `local`)",
                        model.provider
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether `name` is a model this config serves.
    pub fn serves_model(&self, name: &str) -> bool {
        self.models.contains_key(name) || (self.local.enabled && name == self.local.model_name)
    }

    fn validate_routing(&self) -> Result<(), ConfigError> {
        let invalid = |path: String, message: String| ConfigError::Invalid { path, message };
        for (name, tier) in &self.tiers {
            if tier.models.is_empty() {
                return Err(invalid(
                    format!("tiers.{name}.models"),
                    "must name at least one model".into(),
                ));
            }
            for m in &tier.models {
                if !self.serves_model(m) {
                    return Err(invalid(
                        format!("tiers.{name}.models"),
                        format!("no model named `{m}` in [models] (nor the local model)"),
                    ));
                }
            }
            if let Some(f) = &tier.fallback {
                if !self.tiers.contains_key(f) {
                    return Err(invalid(
                        format!("tiers.{name}.fallback"),
                        format!("no tier named `{f}`"),
                    ));
                }
            }
        }
        if !self.tiers.is_empty() {
            let r = &self.routing;
            let mut named = vec![
                ("routing.easy_tier", &r.easy_tier),
                ("routing.hard_tier", &r.hard_tier),
                ("routing.default_tier", &r.default_tier),
            ];
            if let Some(t) = &r.tools_tier {
                named.push(("routing.tools_tier", t));
            }
            for (path, tier) in named {
                if !self.tiers.contains_key(tier) {
                    return Err(invalid(
                        path.into(),
                        format!("no tier named `{tier}` in [tiers]"),
                    ));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.routing.threshold) {
            return Err(invalid(
                "routing.threshold".into(),
                "must be between 0 and 1".into(),
            ));
        }
        for alias in &self.routing.aliases {
            if self.serves_model(alias) {
                return Err(invalid(
                    "routing.aliases".into(),
                    format!("`{alias}` is also a model name"),
                ));
            }
        }
        for (name, m) in &self.models {
            if m.input_usd_per_mtok < 0.0 || m.output_usd_per_mtok < 0.0 {
                return Err(invalid(
                    format!("models.{name}"),
                    "prices cannot be negative".into(),
                ));
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> String {
        format!("{}:{}", self.server.host, self.server.port)
    }
}

/// Sets `a.b.c` (from `A__B__C`) in the table. The value is read as a TOML value when it
/// parses as one (numbers, booleans, arrays), else as a string.
fn overlay_env(root: &mut toml::Table, key: &str, raw: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = key.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Invalid {
            path: format!("{ENV_PREFIX}{key}"),
            message: "empty path segment".into(),
        });
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, parents) = path
        .split_last()
        .expect("split yields at least one segment");
    let mut table = root;
    for (i, segment) in parents.iter().enumerate() {
        let entry = table
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| ConfigError::Invalid {
            path: path[..=i].join("."),
            message: format!(
                "{ENV_PREFIX}{key} addresses a key inside a value that is not a table"
            ),
        })?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_and_env(
            text,
            Path::new("test.toml"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn empty_config_uses_defaults() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.server.body_limit_bytes, 2 * 1024 * 1024);
        assert!(c.auth.required);
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../quartermaster.example.toml");
        let c = parse(text, &[]).expect("example config parses");
        assert!(!c.models.is_empty(), "the example names at least one model");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path() {
        let err = parse("[server]\nprot = 1\n", &[]).unwrap_err().to_string();
        assert!(
            err.contains("server.prot") || err.contains("`server`"),
            "{err}"
        );
        assert!(err.contains("unknown field `prot`"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_path() {
        let err = parse("[server]\nport = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.port"), "{err}");
    }

    #[test]
    fn environment_overrides_file_with_typed_values() {
        let c = parse(
            "[server]\nport = 1\n",
            &[
                ("QM__SERVER__PORT", "9001"),
                ("QM__LOG__FORMAT", "json"),
                ("QM__AUTH__REQUIRED", "false"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.port, 9001);
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(!c.auth.required);
    }

    #[test]
    fn environment_unknown_key_is_rejected() {
        let err = parse("", &[("QM__SERVER__NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn model_must_name_a_known_provider() {
        let err = parse("[models.m]\nprovider = \"missing\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("models.m.provider"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let c = parse(
            "[database]\nurl = \"postgres://u:hunter2@h/db\"\n[providers.p]\nkind = \"openai\"\nbase_url = \"http://x\"\napi_key = \"sk-secret\"\n",
            &[],
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("sk-secret"),
            "{shown}"
        );
    }
}
