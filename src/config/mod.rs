//! Typed configuration: a TOML file overlaid with `QM__SECTION__KEY` environment variables,
//! validated at load with path-precise messages. Unknown keys are rejected, secrets never
//! print. Everything has a default, so the gateway runs with no file at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod env;
pub mod reload;
mod sections;

pub use crate::providers::{ModelConfig, ProviderConfig, ProviderKind};
pub use crate::telemetry::{LogConfig, LogFormat};
pub use sections::{
    AdminConfig, AuthConfig, CorsConfig, DatabaseConfig, RateLimitConfig, RequestLogConfig,
    ResponsesConfig, ServerConfig,
};

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
    pub idempotency: crate::idempotency::IdempotencyConfig,
    /// Stripe webhooks and usage metering.
    pub stripe: crate::integrations::stripe::StripeConfig,
    /// Dunning and what a tenant past due may still use.
    pub billing: crate::integrations::stripe::BillingConfig,
    /// How `model: "auto"` is routed, retries, fallbacks and circuit breakers.
    pub routing: crate::route::RoutingConfig,
    /// Tiers by name: ordered models and a fallback tier.
    pub tiers: BTreeMap<String, crate::route::TierConfig>,
    /// Requests, tokens and spend per tenant and per key.
    pub limits: crate::usage::LimitsConfig,
    /// The exact + semantic response cache.
    pub cache: crate::cache::CacheConfig,
    /// Documents, retrieval and grounded chat.
    pub rag: crate::rag::RagConfig,
    /// Stored Responses API responses.
    pub responses: ResponsesConfig,
    /// The audit log (and its forwarding to a SIEM).
    pub audit: crate::audit::AuditConfig,
    /// Identity providers' webhooks and what a user's deletion reaches.
    pub identity: crate::integrations::identity::IdentityConfig,
    /// Server-side AI analytics (PostHog, or a Segment-style collector).
    pub analytics: crate::integrations::analytics::AnalyticsConfig,
    /// The usage facts exported as Parquet for a warehouse.
    pub warehouse: crate::integrations::warehouse::WarehouseConfig,
    /// Headless CMS webhooks into retrieval, the cache and the site.
    pub cms: crate::integrations::cms::CmsConfig,
    pub notifications: crate::notify::NotifyConfig,
    pub email: crate::integrations::email::EmailConfig,
    pub cal: crate::integrations::cal::CalConfig,
    /// OpenTelemetry traces over OTLP (off by default).
    pub tracing: crate::telemetry::otlp::TracingConfig,
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
                env::overlay(&mut root, rest, &value)?;
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
        self.validate_sizes()?;
        self.validate_urls()?;
        self.validate_models()?;
        self.validate_routing()?;
        let invalid = |path: &str, message: String| ConfigError::Invalid {
            path: path.into(),
            message,
        };
        self.cache.validate().map_err(|m| invalid("cache", m))?;
        self.rag.validate().map_err(|m| invalid("rag", m))?;
        self.email.validate().map_err(|m| invalid("email", m))?;
        self.tracing.validate().map_err(|m| invalid("tracing", m))?;
        self.server
            .cors
            .validate()
            .map_err(|m| invalid("server.cors", m))?;
        Ok(())
    }

    /// Capacities, batch sizes and intervals that must not be zero.
    fn validate_sizes(&self) -> Result<(), ConfigError> {
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
        if self.local.enabled && self.local.max_concurrent == 0 {
            return Err(invalid("local.max_concurrent", "must be greater than 0"));
        }
        // Shorter, and a retry could take over a key whose request is still running.
        if self.idempotency.pending_lease_secs < 60 {
            return Err(invalid(
                "idempotency.pending_lease_secs",
                "must be at least 60 (longer than any request runs)",
            ));
        }
        Ok(())
    }

    /// The database URL's scheme and every upstream's base URL.
    fn validate_urls(&self) -> Result<(), ConfigError> {
        let invalid = |path: &str, message: &str| ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        };
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
        if !(self.stripe.api_base.starts_with("http://")
            || self.stripe.api_base.starts_with("https://"))
        {
            return Err(invalid(
                "stripe.api_base",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }

    /// Every model names a provider that exists; limited tenants' models exist.
    fn validate_models(&self) -> Result<(), ConfigError> {
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
            let p = m.price();
            if [p.input, p.output, p.cache_read, p.cache_write]
                .iter()
                .any(|x| *x < 0.0 || !x.is_finite())
            {
                return Err(invalid(
                    format!("models.{name}"),
                    "prices cannot be negative".into(),
                ));
            }
        }
        Ok(())
    }

    /// The hot-reloadable settings (no classifier yet).
    pub fn live(&self) -> crate::route::Live {
        let prices = self
            .models
            .iter()
            .map(|(name, m)| (name.clone(), m.price()))
            .collect();
        crate::route::Live::new(
            self.routing.clone(),
            self.tiers.clone(),
            self.limits.clone(),
            prices,
        )
    }

    pub fn listen_addr(&self) -> String {
        format!("{}:{}", self.server.host, self.server.port)
    }
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
        let text = include_str!("../../quartermaster.example.toml");
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
