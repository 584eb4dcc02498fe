//! Limits and budgets shared by every replica on one PostgreSQL database, without a
//! database round trip per request: each replica takes allowance in leases from the shared
//! counters (`store/limits.rs`) and admits requests from what it holds; only when its lease
//! cannot cover a request does it ask for more. A lease is at most a quarter of what is left
//! (and `chunk`, a sixteenth of the limit), so leases shrink as the limit nears and the last
//! one granted is only its request's worth: through any number of replicas the total
//! overspends by at most one request, as one process does.
//!
//! What a request reserved but did not use goes back into its replica's lease; a lease idle
//! for [`IDLE`] is given back to the counter, and every lease at shutdown, so other replicas
//! can use it. A replica killed with leases out takes them with it until their window ends
//! (at most a sixteenth of each limit per replica).
//!
//! The local counters of `budget.rs` run as well: they refuse what this replica alone has
//! already used up, and while the database is unreachable they are what is enforced (each
//! replica then allows the full limit; counted in `qm_limit_lease_failures_total`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::limits::{
    BudgetError, Limits, Scope, day_index, month_index, month_start_day, retry_after_secs,
};
use crate::clock::now_ms;
use crate::error::Code;
use crate::store::limits::{CounterKey, CounterStart, LeaseAsk};
use crate::store::{Store, StoreError};

/// A lease unused this long is given back.
const IDLE: Duration = Duration::from_secs(2);
/// The largest lease, as a share of the limit.
const CHUNK_DIVISOR: f64 = 16.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Requests,
    Tokens,
    UsdDay,
    UsdMonth,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Requests, Kind::Tokens, Kind::UsdDay, Kind::UsdMonth];

    fn name(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::UsdDay => "usd_day",
            Kind::UsdMonth => "usd_month",
        }
    }

    fn limit(self, l: &Limits) -> Option<f64> {
        match self {
            Kind::Requests => l.requests_per_minute.map(|x| x as f64),
            Kind::Tokens => l.tokens_per_minute.map(|x| x as f64),
            Kind::UsdDay => l.usd_per_day,
            Kind::UsdMonth => l.usd_per_month,
        }
    }

    /// The window `now` falls in: the minute, day or month index.
    fn window(self, now: i64) -> i64 {
        match self {
            Kind::Requests | Kind::Tokens => now.div_euclid(60_000),
            Kind::UsdDay => day_index(now),
            Kind::UsdMonth => month_index(day_index(now)),
        }
    }

    /// When the window began (ms), for a budget's spend so far.
    fn window_start_ms(self, window: i64) -> i64 {
        match self {
            Kind::Requests | Kind::Tokens => window * 60_000,
            Kind::UsdDay => window * 86_400_000,
            Kind::UsdMonth => month_start_day(window) * 86_400_000,
        }
    }

    fn code(self) -> Code {
        match self {
            Kind::Requests => Code::RequestsPerMinuteExceeded,
            Kind::Tokens => Code::TokensPerMinuteExceeded,
            Kind::UsdDay => Code::DailyBudgetExceeded,
            Kind::UsdMonth => Code::MonthlyBudgetExceeded,
        }
    }

    /// What a request asks of this kind.
    fn need(self, tokens: u64, usd: f64) -> f64 {
        match self {
            Kind::Requests => 1.0,
            Kind::Tokens => tokens as f64,
            Kind::UsdDay | Kind::UsdMonth => usd,
        }
    }
}

/// What this replica holds of one counter.
#[derive(Debug)]
struct Held {
    window: i64,
    /// Allowance held and not yet used (negative: used beyond it, owed to the counter).
    available: f64,
    /// The counter exists in the database for this window.
    started: bool,
    last_used: Instant,
}

/// One part of a request's reservation: from which counter, for which window, how much.
#[derive(Debug, Clone)]
pub(super) struct Taken {
    scope: String,
    kind: Kind,
    window: i64,
    amount: f64,
}

pub struct Leases {
    store: Store,
    held: Mutex<HashMap<(String, Kind), Held>>,
}

/// A lease still to be asked for.
struct Wanted<'a> {
    scope: &'a Scope,
    kind: Kind,
    window: i64,
    /// What the request takes.
    need: f64,
    /// What to lease for it: its need, less what is held, plus what is owed (a request that
    /// used more than it reserved leaves a debt, paid with the next lease).
    lease: f64,
    limit: f64,
    started: bool,
}

impl Leases {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Takes what a request may use (`tokens`, `usd`, and the request itself) from every
    /// limit of every scope, leasing more where what is held does not cover it. `Err(Ok(_))`
    /// is a refusal; `Err(Err(_))` the database failing (nothing is kept taken either way).
    pub(super) async fn take(
        &self,
        scopes: &[Scope],
        tokens: u64,
        usd: f64,
    ) -> Result<Vec<Taken>, Result<BudgetError, StoreError>> {
        let now = now_ms();
        let mut taken = Vec::new();
        let mut wanted = Vec::new();
        {
            let mut held = self.held.lock().expect("lease lock");
            for scope in scopes {
                for kind in Kind::ALL {
                    let Some(limit) = kind.limit(&scope.limits) else {
                        continue;
                    };
                    let (window, need) = (kind.window(now), kind.need(tokens, usd));
                    let h = held.entry((scope.key.clone(), kind)).or_insert(Held {
                        window,
                        available: 0.0,
                        started: false,
                        last_used: Instant::now(),
                    });
                    if h.window != window {
                        *h = Held {
                            window,
                            available: 0.0,
                            started: false,
                            last_used: Instant::now(),
                        };
                    }
                    h.last_used = Instant::now();
                    if h.available >= need && need > 0.0 {
                        h.available -= need;
                        taken.push(Taken {
                            scope: scope.key.clone(),
                            kind,
                            window,
                            amount: need,
                        });
                    } else if need > 0.0 {
                        let started = h.started;
                        wanted.push(Wanted {
                            scope,
                            kind,
                            window,
                            need,
                            lease: need - h.available,
                            limit,
                            started,
                        });
                    }
                }
            }
        }
        for w in wanted {
            match self.lease(&w, now).await {
                Ok(granted) if granted > 0.0 => {
                    let mut held = self.held.lock().expect("lease lock");
                    let h = held
                        .get_mut(&(w.scope.key.clone(), w.kind))
                        .expect("made above");
                    h.started = true;
                    if h.window == w.window {
                        h.available += granted - w.need;
                    }
                    taken.push(Taken {
                        scope: w.scope.key.clone(),
                        kind: w.kind,
                        window: w.window,
                        amount: w.need,
                    });
                }
                Ok(_) if self.take_held(&w) => taken.push(Taken {
                    scope: w.scope.key.clone(),
                    kind: w.kind,
                    window: w.window,
                    amount: w.need,
                }),
                Ok(_) => {
                    self.put_back(&taken, true);
                    return Err(Ok(refusal(w.scope, w.kind, w.window, w.limit, now)));
                }
                Err(e) => {
                    self.put_back(&taken, true);
                    metrics::counter!("qm_limit_lease_failures_total").increment(1);
                    return Err(Err(e));
                }
            }
        }
        Ok(taken)
    }

    /// Takes `w.need` from what this replica holds, if it holds enough now: the counter had
    /// nothing left, but leases that concurrent requests of this replica took meanwhile may
    /// cover it.
    fn take_held(&self, w: &Wanted<'_>) -> bool {
        let mut held = self.held.lock().expect("lease lock");
        match held.get_mut(&(w.scope.key.clone(), w.kind)) {
            Some(h) if h.window == w.window && h.available >= w.need => {
                h.available -= w.need;
                true
            }
            _ => false,
        }
    }

    /// One lease from the database, starting the window's counter when it is new.
    async fn lease(&self, w: &Wanted<'_>, now: i64) -> Result<f64, StoreError> {
        let key = CounterKey {
            scope: &w.scope.key,
            kind: w.kind.name(),
            window: w.window,
        };
        let ask = LeaseAsk {
            limit: w.limit,
            need: w.lease,
            chunk: w.limit / CHUNK_DIVISOR,
        };
        if w.started
            && let Some(lease) = self.store.lease(key, ask).await?
        {
            return Ok(lease.granted);
        }
        let start = match w.kind {
            Kind::Requests | Kind::Tokens => CounterStart::Zero,
            Kind::UsdDay | Kind::UsdMonth => CounterStart::LoggedSpend {
                column: w.scope.column,
                id: &w.scope.id,
                within_tenant: w.scope.within_tenant.as_deref(),
                since_ms: w.kind.window_start_ms(w.window).min(now),
            },
        };
        self.store.start_counter(key, start).await?;
        Ok(self
            .store
            .lease(key, ask)
            .await?
            .map_or(0.0, |lease| lease.granted))
    }

    /// Returns what `taken` holds to this replica's leases: all of it (`with_requests`), or
    /// all but the requests themselves (a request that ran counts against its limit).
    pub(super) fn put_back(&self, taken: &[Taken], with_requests: bool) {
        let mut held = self.held.lock().expect("lease lock");
        for t in taken {
            if t.kind == Kind::Requests && !with_requests {
                continue;
            }
            if let Some(h) = held.get_mut(&(t.scope.clone(), t.kind))
                && h.window == t.window
            {
                h.available += t.amount;
            }
        }
    }

    /// Settles a finished request: what it reserved becomes what it used (`tokens`, `usd`);
    /// the difference goes back into the leases (or is owed, when it used more).
    pub(super) fn settle(&self, taken: &[Taken], tokens: u64, usd: f64) {
        let mut held = self.held.lock().expect("lease lock");
        for t in taken {
            let used = match t.kind {
                Kind::Requests => continue,
                Kind::Tokens => tokens as f64,
                Kind::UsdDay | Kind::UsdMonth => usd,
            };
            if let Some(h) = held.get_mut(&(t.scope.clone(), t.kind))
                && h.window == t.window
            {
                h.available += t.amount - used;
            }
        }
    }

    /// Gives back leases idle for [`IDLE`] (all of them once `shutdown` is cancelled, then
    /// ends), and forgets those of windows that are over. Every second.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purged = Instant::now();
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = shutdown.cancelled() => true,
            };
            self.give_back_idle(if last { Duration::ZERO } else { IDLE })
                .await;
            if last {
                return;
            }
            if purged.elapsed() > Duration::from_secs(600) {
                purged = Instant::now();
                if let Err(e) = self.store.purge_counters().await {
                    tracing::debug!(error = %e, "could not purge old limit counters");
                }
            }
        }
    }

    async fn give_back_idle(&self, idle: Duration) {
        let now = now_ms();
        let returns: Vec<(String, Kind, i64, f64)> = {
            let mut held = self.held.lock().expect("lease lock");
            held.retain(|(_, kind), h| h.window == kind.window(now));
            held.iter_mut()
                .filter(|(_, h)| h.available != 0.0 && h.last_used.elapsed() >= idle)
                .map(|((scope, kind), h)| {
                    let amount = std::mem::take(&mut h.available);
                    (scope.clone(), *kind, h.window, amount)
                })
                .collect()
        };
        for (scope, kind, window, amount) in returns {
            let key = CounterKey {
                scope: &scope,
                kind: kind.name(),
                window,
            };
            if let Err(e) = self.store.give_back(key, amount).await {
                // Kept: it is given back on a later round.
                tracing::debug!(error = %e, "could not give back a limit lease");
                if let Some(h) = self
                    .held
                    .lock()
                    .expect("lease lock")
                    .get_mut(&(scope, kind))
                    && h.window == window
                {
                    h.available += amount;
                }
            }
        }
    }
}

/// The refusal for a limit the shared counter has no allowance left under.
fn refusal(scope: &Scope, kind: Kind, window: i64, limit: f64, now: i64) -> BudgetError {
    let retry_after_secs = retry_after_secs(kind.code(), now, window);
    let who = &scope.label;
    let message = match kind {
        Kind::Requests => format!("{who} is over its limit of {limit} requests per minute"),
        Kind::Tokens => format!("{who} is over its limit of {limit} tokens per minute"),
        Kind::UsdDay => format!(
            "{who} has used its ${limit:.2} daily budget (across every replica); it resets at 00:00 UTC"
        ),
        Kind::UsdMonth => format!(
            "{who} has used its ${limit:.2} monthly budget (across every replica); it resets on the 1st (UTC)"
        ),
    };
    BudgetError::Exceeded {
        code: kind.code(),
        message,
        retry_after_secs,
    }
}
