//! Identity providers' side of the gateway: their `user.deleted` webhooks (Clerk's and
//! Supabase's are Standard Webhooks, verified by `signatures::standard_webhooks`) and the
//! deletion cascade they, or an operator, start (`deletion.rs`).

pub mod deletion;
pub mod webhook;

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[identity]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Webhook senders by name (`POST /webhooks/identity/NAME`).
    pub webhooks: BTreeMap<String, WebhookSource>,
    /// What a user's deletion also reaches.
    pub deletion: deletion::DeletionConfig,
}

/// `[identity.webhooks.NAME]`: a Standard Webhooks sender (Clerk, Supabase).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSource {
    /// Its signing secrets (`whsec_...`; several while one is rotated out).
    #[serde(default)]
    pub secrets: Vec<secrecy::SecretString>,
    /// Or the environment variable holding them, comma-separated.
    #[serde(default)]
    pub secrets_env: Option<String>,
    /// The tenant the sender's users belong to.
    pub tenant: String,
    /// Oldest accepted `webhook-timestamp`, in seconds from now either way.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: i64,
}

fn default_tolerance() -> i64 {
    300
}

impl WebhookSource {
    /// The HMAC keys of its secrets.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, String> {
        crate::integrations::signatures::secret_texts(&self.secrets, self.secrets_env.as_deref())
            .iter()
            .map(|t| {
                crate::integrations::signatures::standard_webhooks::secret_key(t)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }
}
