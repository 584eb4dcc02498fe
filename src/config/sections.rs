//! The gateway's own sections: server, database, auth, rate limits, the request log and
//! the admin API (the other sections belong to the modules they configure).

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The environment variable holding the admin key (sent as `Authorization: Bearer`).
    pub api_key_env: Option<String>,
    /// The key itself; prefer `api_key_env`. Without either the admin API answers 403.
    pub api_key: Option<SecretString>,
    /// The operator console's built files (`scripts/setup.sh` builds them), served at
    /// `/console/`; relative paths are from the working directory.
    pub console_dir: std::path::PathBuf,
    /// How long a console session lasts.
    pub session_ttl_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            api_key_env: Some("QM_ADMIN_KEY".into()),
            api_key: None,
            console_dir: "console/dist".into(),
            session_ttl_secs: 12 * 3600,
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
    /// Browsers calling the gateway directly (`[server.cors]`): off unless origins are set.
    pub cors: CorsConfig,
}

/// Cross-origin requests from browsers: the origins allowed (exact, e.g.
/// `https://app.example.com`, or `*` for any origin without credentials), whether cookies
/// and `Authorization` may be sent, and how long a preflight's answer may be cached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    pub allowed_origins: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allow_credentials: false,
            max_age_secs: 600,
        }
    }
}

impl CorsConfig {
    pub fn validate(&self) -> Result<(), String> {
        for o in &self.allowed_origins {
            if o == "*" {
                if self.allow_credentials {
                    return Err("`*` cannot be combined with allow_credentials (browsers refuse it); list the origins".into());
                }
                continue;
            }
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            let ok = rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', ' ', '?', '#']));
            if !ok || axum::http::HeaderValue::from_str(o).is_err() {
                return Err(format!(
                    "`{o}` is not an origin (scheme://host[:port], no path)"
                ));
            }
        }
        Ok(())
    }
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
            cors: CorsConfig::default(),
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
    /// Identity providers whose tokens are accepted (`[auth.jwt.NAME]`).
    pub jwt: std::collections::BTreeMap<String, crate::auth::jwt::JwtIssuerConfig>,
    /// Auth.js sessions accepted as authentication (`[auth.authjs]`).
    pub authjs: Option<crate::auth::authjs::AuthJsConfig>,
    /// Scoped admin keys for operators: `[auth.operators.NAME] key_env = "...", role = "viewer"`.
    pub operators: std::collections::BTreeMap<String, crate::auth::roles::OperatorKey>,
    /// The roles claim value that makes a token's user an operator with that role (e.g.
    /// `{"org:admin" = "admin"}`); tokens with none of them are end users only.
    pub operator_roles: std::collections::BTreeMap<String, crate::auth::roles::Role>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: true,
            key_cache_ttl_ms: 5_000,
            stale_key_ttl_secs: 3_600,
            failed_per_ip_per_minute: 300,
            jwt: Default::default(),
            authjs: None,
            operators: Default::default(),
            operator_roles: Default::default(),
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
    /// Journal every row in the spill folder before its response is finished, so a process
    /// killed with rows in memory loses none (the next start on the folder replays them).
    pub journal: bool,
}

impl Default for RequestLogConfig {
    fn default() -> Self {
        Self {
            channel_capacity: 8192,
            batch_size: 256,
            flush_interval_ms: 50,
            memory_rows: 100_000,
            spill_dir: PathBuf::new(),
            journal: true,
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
            journal: self.journal,
        }
    }
}

/// `[responses]`: how long stored Responses API responses are kept (`previous_response_id`,
/// `GET /v1/responses/{id}`); the daily housekeeping job deletes older ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesConfig {
    pub retention_days: u64,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        // OpenAI keeps stored responses for 30 days.
        Self { retention_days: 30 }
    }
}
