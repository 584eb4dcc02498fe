//! `quartermaster keys`: create, list and revoke API keys.

use secrecy::ExposeSecret;

use super::KeysAction;
use crate::audit::{AuditLog, Event};
use crate::auth;
use crate::config::Config;
use crate::store::Store;

pub async fn run(config: &Config, action: KeysAction) -> anyhow::Result<()> {
    let store = Store::connect(config.database.url.expose_secret(), 1).await?;
    let audit = AuditLog::new(store.clone(), None);
    match action {
        KeysAction::Create { tenant, name } => {
            let key = auth::create_key(&store, &tenant, &name).await?;
            audit
                .append(Event::new(
                    "cli",
                    "key.create",
                    Some(key.id.clone()),
                    serde_json::json!({"tenant": key.tenant.name, "name": name}),
                ))
                .await?;
            eprintln!(
                "created key {} for tenant {} (shown once; store it now):",
                key.id, key.tenant.name
            );
            println!("{}", key.secret);
        }
        KeysAction::List => {
            println!(
                "{:<40} {:<20} {:<16} {:<14} status",
                "id", "tenant", "name", "prefix"
            );
            for k in store.list_keys().await? {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<40} {:<20} {:<16} {:<14} {status}",
                    k.id, k.tenant_name, k.name, k.key_prefix
                );
            }
        }
        KeysAction::Revoke { id } => {
            let id = store.revoke_key(&id).await?;
            audit
                .append(Event::new(
                    "cli",
                    "key.revoke",
                    Some(id.clone()),
                    serde_json::Value::Null,
                ))
                .await?;
            println!("revoked {id}");
        }
    }
    store.close().await;
    Ok(())
}
