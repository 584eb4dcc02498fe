//! Operators and their roles. The admin API accepts the admin key (role `admin`), scoped
//! operator keys (`[auth.operators.NAME]`, each with a role) and identity providers' tokens
//! whose roles claim maps to an operator role (`auth.operator_roles`). A `viewer` reads;
//! an `operator` may also change the running service (cache invalidation, job re-drives);
//! an `admin` may do anything (keys, users and their deletion included).

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// `[auth.operators.NAME]`: a key for one operator, with a role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorKey {
    /// The environment variable holding the key.
    pub key_env: String,
    pub role: Role,
}

/// Who is operating, with what role (attached to admin requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// `admin-key`, `operator:NAME`, `user:ISSUER:SUB`: the audit log's actor.
    pub actor: String,
    pub role: Role,
}

/// The operator keys by the SHA-256 of their secret.
pub fn operator_keys(
    operators: &std::collections::BTreeMap<String, OperatorKey>,
) -> anyhow::Result<Vec<([u8; 32], Operator)>> {
    operators
        .iter()
        .map(|(name, o)| {
            let key = std::env::var(&o.key_env).map_err(|_| {
                anyhow::anyhow!(
                    "auth.operators.{name}: the variable {} is not set",
                    o.key_env
                )
            })?;
            anyhow::ensure!(
                key.trim().len() >= 16,
                "auth.operators.{name}: the key must have at least 16 characters"
            );
            Ok((
                Sha256::digest(key.trim().as_bytes()).into(),
                Operator {
                    actor: format!("operator:{name}"),
                    role: o.role,
                },
            ))
        })
        .collect()
}

/// The highest operator role a token's roles map to, if any.
pub fn role_of(
    roles: &[String],
    mapping: &std::collections::BTreeMap<String, Role>,
) -> Option<Role> {
    roles.iter().filter_map(|r| mapping.get(r)).max().copied()
}

/// The least role a request to the admin API needs: reading is for viewers, changing the
/// running service for operators, keys and users for admins.
pub fn required(method: &http::Method, path: &str) -> Role {
    // Reading, and an operator's own console session and second factor.
    if method == http::Method::GET
        || method == http::Method::HEAD
        || path == "/admin/session"
        || path == "/admin/mfa/enroll"
        || path == "/admin/mfa/confirm"
    {
        return Role::Viewer;
    }
    if path.starts_with("/admin/users")
        || path.starts_with("/admin/keys")
        || path.starts_with("/admin/operators")
    {
        Role::Admin
    } else {
        Role::Operator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_and_requirements() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        let mut m = std::collections::BTreeMap::new();
        m.insert("org:admin".to_string(), Role::Admin);
        m.insert("org:member".to_string(), Role::Viewer);
        assert_eq!(
            role_of(&["org:member".into(), "org:admin".into()], &m),
            Some(Role::Admin)
        );
        assert_eq!(role_of(&["other".into()], &m), None);
        assert_eq!(
            required(&http::Method::GET, "/admin/users/u1/deletion"),
            Role::Viewer
        );
        assert_eq!(
            required(&http::Method::POST, "/admin/cache/invalidate"),
            Role::Operator
        );
        assert_eq!(
            required(&http::Method::DELETE, "/admin/users/u1"),
            Role::Admin
        );
        // Anyone signs themself in and out and enrols their own second factor; only an
        // admin resets someone's; a look-alike path is not the exemption.
        for (m, p) in [
            (http::Method::POST, "/admin/session"),
            (http::Method::DELETE, "/admin/session"),
            (http::Method::POST, "/admin/mfa/enroll"),
            (http::Method::POST, "/admin/mfa/confirm"),
        ] {
            assert_eq!(required(&m, p), Role::Viewer, "{m} {p}");
        }
        assert_eq!(
            required(&http::Method::DELETE, "/admin/operators/operator:ops/mfa"),
            Role::Admin
        );
        assert_eq!(
            required(&http::Method::POST, "/admin/sessions/x"),
            Role::Operator
        );
    }
}
