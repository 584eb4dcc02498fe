//! What limits and budgets are: the limits of a scope (a tenant, a key, a user), the
//! configuration that sets them, why a request is refused, and the UTC windows they count in.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Code, ErrorCode};
use crate::store::StoreError;

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// A limit or budget is used up until `retry_after_secs` from now.
    #[error("{message}")]
    Exceeded {
        code: Code,
        message: String,
        retry_after_secs: u64,
    },
    /// The spend so far could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for BudgetError {
    fn error_code(&self) -> Code {
        match self {
            BudgetError::Exceeded { code, .. } => *code,
            BudgetError::Store(s) => s.error_code(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub usd_per_day: Option<f64>,
    pub usd_per_month: Option<f64>,
}

impl Limits {
    pub(super) fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Every tenant's limits unless `tenants.NAME` says otherwise.
    pub tenant_default: Limits,
    /// Every key's limits unless `keys.KEY_ID` says otherwise.
    pub key_default: Limits,
    pub tenants: BTreeMap<String, Limits>,
    pub keys: BTreeMap<String, Limits>,
    /// Every end user's limits (within their tenant) unless `users.ID` says otherwise.
    pub user_default: Limits,
    pub users: BTreeMap<String, Limits>,
}

/// Seconds from `now` until the window of a limit's code ends (`window`: the minute, day or
/// month index), at least 1.
pub(super) fn retry_after_secs(code: Code, now: i64, window: i64) -> u64 {
    let end = match code {
        Code::DailyBudgetExceeded => (window + 1) * 86_400_000,
        Code::MonthlyBudgetExceeded => month_start_day(window + 1) * 86_400_000,
        _ => (window + 1) * 60_000,
    };
    ((end - now).max(0) as u64).div_ceil(1000).max(1)
}

/// The start (ms) of the UTC day and of the UTC month `now` is in: the budgets' windows.
pub fn budget_windows(now: i64) -> (i64, i64) {
    let day = day_index(now);
    (
        day * 86_400_000,
        month_start_day(month_index(day)) * 86_400_000,
    )
}

impl LimitsConfig {
    /// A tenant's limits: its own (`tenants.NAME`) or the default.
    pub fn for_tenant(&self, name: &str) -> &Limits {
        self.tenants.get(name).unwrap_or(&self.tenant_default)
    }
}

// UTC calendar helpers (no time zone database needed).

/// The day index (days since 1970-01-01, UTC) of a time in milliseconds.
pub(super) fn day_index(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// (year * 12 + month0) of a day index.
pub(super) fn month_index(day: i64) -> i64 {
    let (y, m, _) = crate::clock::civil_from_days(day);
    y * 12 + (i64::from(m) - 1)
}

/// Day index of the first day of a month index.
pub(super) fn month_start_day(month: i64) -> i64 {
    let (y, m) = (month.div_euclid(12), month.rem_euclid(12) + 1);
    crate::clock::days_from_civil(y, m as u32, 1)
}

#[derive(Debug, Clone)]
pub struct Scope {
    /// `tenant:ID` or `key:ID`.
    pub(super) key: String,
    /// The request log's column for the scope's id (`tenant_id`, `key_id`).
    pub(super) column: &'static str,
    pub(super) id: String,
    pub(super) label: String,
    pub(super) limits: Limits,
    /// A user's scope: the tenant its id belongs to (ids are the tenant's own).
    pub(super) within_tenant: Option<String>,
    /// The caller's tenant (whom alerts about this scope go to).
    pub(super) tenant_id: String,
}
