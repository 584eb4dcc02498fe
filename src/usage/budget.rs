//! Admission against the limits and budgets of every scope (tenant, key, user): requests and
//! tokens per minute, spend per UTC day and month in USD.
//!
//! Spend is the request log's `cost_usd` (priced from the upstream's usage, or counted
//! tokens), so it is durable: after a restart each scope's totals are summed from the store
//! on first use. A request is admitted only while `spent + reserved` is under every limit,
//! and reserves its worst-case cost (prompt estimate + `max_tokens`, at the priciest model it
//! may be routed to) until it finishes and the reservation becomes the real cost: concurrent
//! requests therefore overspend a budget by at most the last admitted request's worth.
//! On PostgreSQL every replica also takes its allowance from counters shared in the
//! database (`lease.rs`), so the limits hold across replicas with the same bound.
//!
//! There is a state per tenant, key and end user seen, and the end users are whatever the
//! callers name. Past [`MAX_SCOPES`] states, the least recently used of those the store can
//! rebuild are dropped: nothing in flight, the minute's counts (kept only here) over, and any
//! spend of the current day or month settled long enough ago ([`SPENT_IDLE_MS`]) for the
//! request log to hold it, and none while the request log has rows waiting to be written. A
//! dropped scope is summed from the store again on its next request, like after a restart,
//! so its budget still holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::alerts::{AlertSink, Alerting, BudgetAlert};
use super::lease::{Leases, Taken};
use super::limits::{
    BudgetError, LimitsConfig, Scope, day_index, month_index, month_start_day, retry_after_secs,
};
use crate::clock::now_ms;
use crate::error::Code;
use crate::store::{Store, StoreError, on_pool};

/// The most scope states kept before idle ones are dropped. One is kept per end user seen,
/// so without a cap a tenant naming a new `user` on every request would grow the map
/// without end. Scopes still in use are never dropped, so the map can exceed the cap by
/// those.
const MAX_SCOPES: usize = 100_000;

/// How long a scope must have gone unused before it may be dropped: longer than a request
/// takes from loading its scopes to reserving in them, and than the minute its request and
/// token counts (kept only in memory) belong to.
const IDLE_MS: i64 = 60_000;

/// How long a scope with spend in the current day or month must have gone unused before it
/// may be dropped. The request log is written in batches after settlement, so a scope
/// summed from the store too soon could miss its latest requests; by this long after the
/// last settlement they are written unless the database has been failing, and then loading
/// the scope again fails too, refusing the request.
const SPENT_IDLE_MS: i64 = 15 * 60_000;

/// How many times a request loads its scopes when one of them is dropped before it could
/// reserve (which takes loading the others for longer than [`IDLE_MS`]).
const LOAD_ATTEMPTS: usize = 3;

#[derive(Debug, Default)]
struct ScopeState {
    /// What alerts need: the scope as last admitted.
    alerting: Option<Alerting>,
    loaded: bool,
    /// Reservations neither settled nor released: a scope with any is never dropped.
    in_flight: u64,
    /// When the scope was last loaded, reserved in or settled (Unix ms).
    last_used: i64,
    minute: i64,
    requests: u64,
    tokens: u64,
    day: i64,
    day_usd: f64,
    month: i64,
    month_usd: f64,
    reserved_usd: f64,
    reserved_tokens: u64,
}

impl ScopeState {
    /// Whether dropping this state at `now` loses nothing the store cannot give back: nothing
    /// is in flight, the minute's counts are over, and any spend in the current day or month
    /// was settled at least [`SPENT_IDLE_MS`] ago while the request log has no rows waiting
    /// (`log_current`: after an outage they wait in memory or the spill file).
    fn rebuildable(&self, now: i64, log_current: bool) -> bool {
        let day = day_index(now);
        let month = month_index(day);
        let spending = (self.day == day && self.day_usd > 0.0)
            || (self.month == month && self.month_usd > 0.0);
        if spending && !log_current {
            return false;
        }
        let idle = now.saturating_sub(self.last_used);
        self.in_flight == 0
            && self.minute != now.div_euclid(60_000)
            && idle >= if spending { SPENT_IDLE_MS } else { IDLE_MS }
    }

    /// Starts a new minute, day or month window where one has begun since the last request.
    fn roll(&mut self, minute: i64, day: i64, month: i64) {
        if self.minute != minute {
            self.minute = minute;
            self.requests = 0;
            self.tokens = 0;
        }
        if self.day != day {
            self.day = day;
            self.day_usd = 0.0;
        }
        if self.month != month {
            self.month = month;
            self.month_usd = 0.0;
        }
    }

    /// The first of the scope's limits this state has reached, with when it resets.
    fn check(&self, scope: &Scope, now: i64) -> Result<(), BudgetError> {
        let (day, month) = (self.day, self.month);
        let l = &scope.limits;
        let to_next_minute =
            retry_after_secs(Code::RequestsPerMinuteExceeded, now, now.div_euclid(60_000));
        let to_next_day = retry_after_secs(Code::DailyBudgetExceeded, now, day);
        let to_next_month = retry_after_secs(Code::MonthlyBudgetExceeded, now, month);
        // (limit, in use, code, seconds until it resets): the first one reached refuses.
        let checks = [
            (
                l.requests_per_minute.map(|m| m as f64),
                self.requests as f64,
                Code::RequestsPerMinuteExceeded,
                to_next_minute,
            ),
            (
                l.tokens_per_minute.map(|m| m as f64),
                (self.tokens + self.reserved_tokens) as f64,
                Code::TokensPerMinuteExceeded,
                to_next_minute,
            ),
            (
                l.usd_per_day,
                self.day_usd + self.reserved_usd,
                Code::DailyBudgetExceeded,
                to_next_day,
            ),
            (
                l.usd_per_month,
                self.month_usd + self.reserved_usd,
                Code::MonthlyBudgetExceeded,
                to_next_month,
            ),
        ];
        for (max, used, code, retry_after) in checks {
            if let Some(max) = max.filter(|max| used >= *max) {
                let who = &scope.label;
                let message = match code {
                    Code::RequestsPerMinuteExceeded => {
                        format!("{who} is over its limit of {max} requests per minute")
                    }
                    Code::TokensPerMinuteExceeded => {
                        format!("{who} is over its limit of {max} tokens per minute")
                    }
                    Code::DailyBudgetExceeded => format!(
                        "{who} has spent ${:.4} of its ${max:.2} daily budget; it resets at 00:00 UTC",
                        self.day_usd
                    ),
                    _ => format!(
                        "{who} has spent ${:.4} of its ${max:.2} monthly budget; it resets on the 1st (UTC)",
                        self.month_usd
                    ),
                };
                return Err(BudgetError::Exceeded {
                    code,
                    message,
                    retry_after_secs: retry_after,
                });
            }
        }
        Ok(())
    }
}

pub struct Budgets {
    store: Store,
    alerts: std::sync::OnceLock<AlertSink>,
    scopes: Mutex<HashMap<String, ScopeState>>,
    /// The most states kept before idle ones are dropped ([`MAX_SCOPES`]).
    max_scopes: usize,
    /// The number of states at which the next look for idle ones is due (changed under the
    /// `scopes` lock).
    prune_at: AtomicUsize,
    /// The counters every replica shares (PostgreSQL).
    leases: Option<Arc<Leases>>,
    /// Request-log rows not yet in the store ([`Budgets::watch_unwritten`]).
    unwritten: std::sync::OnceLock<Box<dyn Fn() -> u64 + Send + Sync>>,
}

/// Held while a request runs; turned into real usage by [`Reservation::settle`], released
/// if dropped.
pub struct Reservation {
    budgets: Arc<Budgets>,
    scopes: Vec<String>,
    usd: f64,
    tokens: u64,
    /// What it took from the shared counters' leases.
    shared: Vec<Taken>,
    settled: bool,
}

impl Reservation {
    pub fn settle(mut self, tokens: u64, usd: f64) {
        self.budgets
            .settle(&self.scopes, self.tokens, self.usd, tokens, usd);
        if let Some(l) = &self.budgets.leases {
            l.settle(&self.shared, tokens, usd);
        }
        self.settled = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.budgets
                .settle(&self.scopes, self.tokens, self.usd, 0, 0.0);
            if let Some(l) = &self.budgets.leases {
                l.put_back(&self.shared, false);
            }
        }
    }
}

impl Budgets {
    /// Budgets on `store`: shared by every replica on PostgreSQL, this process's own on
    /// SQLite.
    pub fn new(store: Store) -> Arc<Self> {
        let leases = (store.backend() == "postgres").then(|| Leases::new(store.clone()));
        Arc::new(Self {
            store,
            alerts: std::sync::OnceLock::new(),
            scopes: Mutex::new(HashMap::new()),
            max_scopes: MAX_SCOPES,
            prune_at: AtomicUsize::new(MAX_SCOPES),
            leases,
            unwritten: std::sync::OnceLock::new(),
        })
    }

    /// How many request-log rows are not yet in the store: while any are, no state with spend
    /// is dropped (summing it from the store would miss them).
    pub fn watch_unwritten(&self, probe: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.unwritten.set(Box::new(probe));
    }

    /// Sends a [`BudgetAlert`] to `tx` whenever settled spend crosses one of `percents` of a
    /// daily or monthly budget (set once, at startup).
    pub fn on_alert(
        &self,
        percents: Vec<u32>,
        tx: tokio::sync::mpsc::UnboundedSender<BudgetAlert>,
    ) {
        let _ = self.alerts.set(AlertSink { percents, tx });
    }

    /// The shared counters' leases (PostgreSQL): their upkeep task gives idle ones back.
    pub fn leases(&self) -> Option<&Arc<Leases>> {
        self.leases.as_ref()
    }

    /// The scopes (tenant, key, end user) with limits that apply to this caller.
    pub fn scopes(
        config: &LimitsConfig,
        tenant_id: &str,
        tenant_name: &str,
        key_id: &str,
        user: Option<&str>,
    ) -> Vec<Scope> {
        let mut out = vec![];
        let tenant = config
            .tenants
            .get(tenant_name)
            .unwrap_or(&config.tenant_default);
        if !tenant.is_empty() {
            out.push(Scope {
                key: format!("tenant:{tenant_id}"),
                column: "tenant_id",
                id: tenant_id.to_string(),
                label: format!("tenant `{tenant_name}`"),
                limits: tenant.clone(),
                within_tenant: None,
                tenant_id: tenant_id.to_string(),
            });
        }
        let key = config.keys.get(key_id).unwrap_or(&config.key_default);
        if !key.is_empty() {
            out.push(Scope {
                key: format!("key:{key_id}"),
                column: "key_id",
                id: key_id.to_string(),
                label: format!("key `{key_id}`"),
                limits: key.clone(),
                within_tenant: None,
                tenant_id: tenant_id.to_string(),
            });
        }
        if let Some(user) = user {
            let limits = config.users.get(user).unwrap_or(&config.user_default);
            if !limits.is_empty() {
                out.push(Scope {
                    key: format!("user:{tenant_id}:{user}"),
                    column: "user_id",
                    id: user.to_string(),
                    label: format!("user `{user}`"),
                    limits: limits.clone(),
                    within_tenant: Some(tenant_id.to_string()),
                    tenant_id: tenant_id.to_string(),
                });
            }
        }
        out
    }

    async fn load(&self, scope: &Scope, now: i64) -> Result<(), StoreError> {
        if let Some(s) = self
            .scopes
            .lock()
            .expect("budget lock")
            .get_mut(&scope.key)
            .filter(|s| s.loaded)
        {
            s.last_used = now_ms();
            return Ok(());
        }
        let day = day_index(now);
        let month = month_index(day);
        let month_start = month_start_day(month) * 86_400_000;
        let day_start = day * 86_400_000;
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(CASE WHEN created_at >= $2 THEN cost_usd ELSE 0 END), 0) AS DOUBLE PRECISION), \
                    CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) \
             FROM request_log WHERE {} = $1 AND created_at >= $3 AND ($4 = '' OR tenant_id = $4)",
            scope.column
        );
        let within = scope.within_tenant.clone().unwrap_or_default();
        let (day_usd, month_usd): (f64, f64) = on_pool!(&self.store, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(&scope.id).bind(day_start).bind(month_start).bind(&within).fetch_one(p).await)?;
        let mut scopes = self.scopes.lock().expect("budget lock");
        if !scopes.contains_key(&scope.key) {
            self.make_room(&mut scopes);
        }
        let s = scopes.entry(scope.key.clone()).or_default();
        s.last_used = now_ms();
        if !s.loaded {
            s.loaded = true;
            s.day = day;
            s.month = month;
            // Spend recorded in memory before the load finished is already in the log sum.
            s.day_usd = day_usd;
            s.month_usd = month_usd;
        }
        Ok(())
    }

    /// Past the cap, drops the least recently used states the store can rebuild, down to
    /// three quarters of the cap. The next look comes a quarter of the cap later, so the scan
    /// costs a constant per state added, however many states are busy.
    fn make_room(&self, states: &mut HashMap<String, ScopeState>) {
        if states.len() < self.prune_at.load(Ordering::Relaxed) {
            return;
        }
        let now = now_ms();
        let log_current = self.unwritten.get().is_none_or(|rows| rows() == 0);
        let keep = self.max_scopes / 4 * 3;
        let dropped: Vec<String> = {
            let mut idle: Vec<(i64, &String)> = states
                .iter()
                .filter(|(_, s)| s.rebuildable(now, log_current))
                .map(|(key, s)| (s.last_used, key))
                .collect();
            let excess = states.len().saturating_sub(keep).min(idle.len());
            if excess > 0 && excess < idle.len() {
                // The `excess` least recently used first.
                idle.select_nth_unstable(excess);
            }
            idle[..excess]
                .iter()
                .map(|(_, key)| (*key).clone())
                .collect()
        };
        for key in &dropped {
            states.remove(key);
        }
        let next = (states.len() + self.max_scopes / 4).max(self.max_scopes);
        self.prune_at.store(next, Ordering::Relaxed);
        if !dropped.is_empty() {
            tracing::debug!(
                dropped = dropped.len(),
                kept = states.len(),
                "budget: idle scopes dropped"
            );
        }
    }

    /// Admits a request expected to use at most `tokens` and cost at most `usd`, or says
    /// which limit it hits and when to retry.
    pub async fn admit(
        self: &Arc<Self>,
        scopes: &[Scope],
        tokens: u64,
        usd: f64,
    ) -> Result<Option<Reservation>, BudgetError> {
        if scopes.is_empty() {
            return Ok(None);
        }
        let mut reserved = false;
        for _ in 0..LOAD_ATTEMPTS {
            let now = now_ms();
            for scope in scopes {
                self.load(scope, now).await?;
            }
            if self.reserve_locally(scopes, now, tokens, usd)? {
                reserved = true;
                break;
            }
        }
        if !reserved {
            return Err(StoreError::Unavailable(
                "the spend so far was dropped from memory while it loaded".into(),
            )
            .into());
        }
        let mut reservation = Reservation {
            budgets: self.clone(),
            scopes: scopes.iter().map(|s| s.key.clone()).collect(),
            usd,
            tokens,
            shared: Vec::new(),
            settled: false,
        };
        if let Some(leases) = &self.leases {
            match leases.take(scopes, tokens, usd).await {
                Ok(taken) => reservation.shared = taken,
                // Dropping the reservation releases what it holds here.
                Err(Ok(refused)) => return Err(refused),
                Err(Err(e)) => {
                    // The database is unreachable: this replica's own counters decide.
                    tracing::warn!(error = %e, "shared limits unavailable; enforcing this replica's counters only");
                }
            }
        }
        Ok(Some(reservation))
    }

    /// Checks this process's counters and reserves in them (no await while the lock is held).
    /// `Ok(false)` when a scope was dropped since its load: it must be loaded again, not
    /// checked against an empty state.
    fn reserve_locally(
        &self,
        scopes: &[Scope],
        now: i64,
        tokens: u64,
        usd: f64,
    ) -> Result<bool, BudgetError> {
        let minute = now.div_euclid(60_000);
        let day = day_index(now);
        let month = month_index(day);
        let mut states = self.scopes.lock().expect("budget lock");
        for scope in scopes {
            let Some(s) = states.get_mut(&scope.key).filter(|s| s.loaded) else {
                return Ok(false);
            };
            s.roll(minute, day, month);
            s.check(scope, now)?;
        }
        for scope in scopes {
            let s = states.get_mut(&scope.key).expect("entry checked above");
            if s.alerting.is_none() {
                let user = scope.within_tenant.as_ref().map(|_| scope.id.clone());
                s.alerting = Some(Alerting {
                    limits: scope.limits.clone(),
                    tenant_id: scope.tenant_id.clone(),
                    user,
                    label: scope.label.clone(),
                });
            }
            s.requests += 1;
            s.reserved_tokens += tokens;
            s.reserved_usd += usd;
            s.in_flight += 1;
            s.last_used = now;
        }
        Ok(true)
    }

    fn settle(
        &self,
        scopes: &[String],
        reserved_tokens: u64,
        reserved_usd: f64,
        tokens: u64,
        usd: f64,
    ) {
        let sink = self.alerts.get();
        let now = now_ms();
        let mut states = self.scopes.lock().expect("budget lock");
        for key in scopes {
            // Never dropped while its reservation is in flight.
            if let Some(s) = states.get_mut(key) {
                s.in_flight = s.in_flight.saturating_sub(1);
                s.last_used = now;
                s.reserved_tokens = s.reserved_tokens.saturating_sub(reserved_tokens);
                s.reserved_usd = (s.reserved_usd - reserved_usd).max(0.0);
                s.tokens += tokens;
                s.day_usd += usd;
                s.month_usd += usd;
                if let (Some(sink), Some(alerting)) = (sink, &s.alerting)
                    && usd > 0.0
                {
                    let spent = [(s.day, s.day_usd), (s.month, s.month_usd)];
                    for alert in alerting.crossed(key, usd, spent, &sink.percents) {
                        let _ = sink.tx.send(alert);
                    }
                }
            }
        }
    }
}

/// The price of `tokens_in` + `tokens_out` at per-million-token prices.
pub fn cost_usd(tokens_in: u64, tokens_out: u64, price_in: f64, price_out: f64) -> f64 {
    (tokens_in as f64 * price_in + tokens_out as f64 * price_out) / 1e6
}

/// A model's prices in USD per million tokens. Prompt tokens read from or written to the
/// upstream's prompt cache have prices of their own (Anthropic: reads ~0.1×, writes 1.25× the
/// input price); unset, they cost the input price.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

impl Price {
    /// What `usage` costs: `prompt_tokens` counts cache reads and writes, priced apart.
    pub fn cost(&self, usage: &crate::types::Usage) -> f64 {
        let read = usage.cached_tokens().min(usage.prompt_tokens);
        let write = usage
            .cache_write_tokens()
            .min(usage.prompt_tokens.saturating_sub(read));
        let plain = usage.prompt_tokens - read - write;
        (plain as f64 * self.input
            + read as f64 * self.cache_read
            + write as f64 * self.cache_write
            + usage.completion_tokens as f64 * self.output)
            / 1e6
    }

    /// The most `prompt` + `output` tokens can cost (every prompt token at the dearest of the
    /// input prices), for reservations.
    pub fn worst(&self, prompt: u64, output: u64) -> f64 {
        let input = self.input.max(self.cache_write).max(self.cache_read);
        cost_usd(prompt, output, input, self.output)
    }
}

#[cfg(test)]
mod tests;
