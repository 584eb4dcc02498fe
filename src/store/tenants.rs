//! Every query on tenants and their API keys: creating and finding tenants, the operator's
//! listing, and the key table behind authentication.

use super::{Store, StoreError, on_pool};
use crate::clock::now_ms;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct ApiKeyRow {
    pub id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub name: String,
    pub key_prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// The end user a personal key was issued to.
    pub user_id: Option<String>,
}

/// An active key as authentication sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveKey {
    pub key_id: String,
    pub tenant: Tenant,
    pub billing_status: String,
    pub user_id: Option<String>,
}

/// A tenant as the operator sees it: its plan and billing state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub billing_status: String,
    pub past_due_since: Option<i64>,
    pub credit_cents: i64,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
}

impl Store {
    /// A tenant's name by its id.
    pub async fn tenant_name(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            on_pool!(self, p => sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
            .bind(id).fetch_optional(p).await)?,
        )
    }

    /// Returns the tenant with this name, creating it if needed.
    pub async fn ensure_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        let id = format!("ten_{}", uuid::Uuid::now_v7().simple());
        on_pool!(self, p => sqlx::query(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(&id).bind(name).bind(now_ms()).execute(p).await.map(|_| ()))?;
        let id: String = on_pool!(self, p => sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
            .bind(name).fetch_one(p).await)?;
        Ok(Tenant {
            id,
            name: name.to_string(),
        })
    }

    /// The id of the tenant with this name, if there is one.
    /// A tenant by name, and whether it is limited (past its dunning grace period).
    pub async fn tenant_by_name(&self, name: &str) -> Result<Option<(Tenant, bool)>, StoreError> {
        let row: Option<(String, String, String)> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, name, billing_status FROM tenants WHERE name = $1")
            .bind(name).fetch_optional(p).await)?;
        Ok(row.map(|(id, name, status)| (Tenant { id, name }, status == "limited")))
    }

    pub async fn tenant_id_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            on_pool!(self, p => sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
            .bind(name).fetch_optional(p).await)?,
        )
    }

    /// The active (not revoked) key with this hash: its id, tenant, the tenant's billing
    /// status (`active`, `past_due`, `limited`) and the end user it was issued to.
    pub async fn find_active_key(&self, key_hash: &str) -> Result<Option<ActiveKey>, StoreError> {
        const SQL: &str = "SELECT k.id, t.id, t.name, t.billing_status, k.user_id FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
                           WHERE k.key_hash = $1 AND k.revoked_at IS NULL";
        let row: Option<(String, String, String, String, Option<String>)> =
            on_pool!(self, p => sqlx::query_as(SQL).bind(key_hash).fetch_optional(p).await)?;
        Ok(
            row.map(|(key_id, id, name, billing_status, user_id)| ActiveKey {
                key_id,
                tenant: Tenant { id, name },
                billing_status,
                user_id,
            }),
        )
    }

    /// Revokes the keys issued to a user; how many were active.
    pub async fn revoke_user_keys(
        &self,
        tenant_id: &str,
        user_id: &str,
    ) -> Result<u64, StoreError> {
        Ok(on_pool!(self, p => sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND user_id = $3 AND revoked_at IS NULL")
            .bind(now_ms()).bind(tenant_id).bind(user_id).execute(p).await.map(|r| r.rows_affected()))?)
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        const SQL: &str = "SELECT k.id, k.tenant_id, t.name AS tenant_name, k.name, k.key_prefix, k.created_at, k.revoked_at, k.user_id \
                           FROM api_keys k JOIN tenants t ON t.id = k.tenant_id ORDER BY k.created_at, k.id";
        type KeyTuple = (
            String,
            String,
            String,
            String,
            String,
            i64,
            Option<i64>,
            Option<String>,
        );
        let rows: Vec<KeyTuple> = on_pool!(self, p => sqlx::query_as(SQL).fetch_all(p).await)?;
        let rows = rows
            .into_iter()
            .map(
                |(
                    id,
                    tenant_id,
                    tenant_name,
                    name,
                    key_prefix,
                    created_at,
                    revoked_at,
                    user_id,
                )| {
                    ApiKeyRow {
                        id,
                        tenant_id,
                        tenant_name,
                        name,
                        key_prefix,
                        created_at,
                        revoked_at,
                        user_id,
                    }
                },
            )
            .collect();
        Ok(rows)
    }

    /// Revokes a key by id or by its displayed prefix. Revoking twice is not an error.
    pub async fn revoke_key(&self, id_or_prefix: &str) -> Result<String, StoreError> {
        let found: Vec<String> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT id FROM api_keys WHERE id = $1 OR key_prefix = $1")
            .bind(id_or_prefix).fetch_all(p).await)?;
        let id = match found.as_slice() {
            [id] => id.clone(),
            [] => {
                return Err(StoreError::NotFound(format!(
                    "no API key with id or prefix `{id_or_prefix}`"
                )));
            }
            _ => {
                return Err(StoreError::Conflict(format!(
                    "`{id_or_prefix}` matches several keys; use the key id"
                )));
            }
        };
        on_pool!(self, p => sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms()).bind(&id).execute(p).await.map(|_| ()))?;
        Ok(id)
    }

    /// One tenant with its billing state.
    pub async fn tenant_row(&self, id: &str) -> Result<Option<TenantRow>, StoreError> {
        Ok(self.list_tenants_where(Some(id)).await?.into_iter().next())
    }

    /// Every tenant with its billing state, by name.
    pub async fn list_tenants(&self) -> Result<Vec<TenantRow>, StoreError> {
        self.list_tenants_where(None).await
    }

    async fn list_tenants_where(&self, id: Option<&str>) -> Result<Vec<TenantRow>, StoreError> {
        type Row = (
            String,
            String,
            String,
            String,
            Option<i64>,
            i64,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, name, plan, billing_status, past_due_since, credit_cents, stripe_customer_id, stripe_subscription_id \
             FROM tenants WHERE $1 IS NULL OR id = $1 ORDER BY name").bind(id).fetch_all(p).await)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, name, plan, billing_status, past_due_since, credit_cents, customer, sub)| {
                    TenantRow {
                        id,
                        name,
                        plan,
                        billing_status,
                        past_due_since,
                        credit_cents,
                        stripe_customer_id: customer,
                        stripe_subscription_id: sub,
                    }
                },
            )
            .collect())
    }

    /// The id of the tenant whose id or name this is, if there is one.
    pub async fn find_tenant_id(&self, id_or_name: &str) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(self, p => sqlx::query_scalar(
            "SELECT id FROM tenants WHERE id = $1 OR name = $1")
            .bind(id_or_name).fetch_optional(p).await)?)
    }
}
