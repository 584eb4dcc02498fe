//! The bound held on live traffic. `max_false_hit_rate` is calibrated offline, on pairs that
//! may not look like a tenant's questions; a tenant whose observed false-hit rate is over it
//! (the low end of its 95 % interval, from the application's verdicts or from re-asked hits)
//! is held to a stricter bound until the evidence says otherwise. The state is derived from
//! the store's verdicts over a window, so replicas agree and a restart keeps it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::{CALIBRATION, CROSS_CALIBRATION, calibrated};
use super::{Cache, VerifierMode};
use crate::store::{StoreError, now_ms, on_pool};

/// Verdicts from this far back count.
pub const GUARD_WINDOW_MS: i64 = 7 * 86_400_000;

/// A tenant's bound is read again from the store after this long (replicas converge within it).
const REFRESH: Duration = Duration::from_secs(30);

/// Tightening stops here: at a quarter of the configured bound every table gives its
/// strictest value already.
const MIN_SHARE: f64 = 0.25;

/// The tenants' bounds in force, as last read.
#[derive(Default)]
pub struct Guards {
    tenants: Mutex<HashMap<String, (f64, Instant)>>,
}

/// The bound a tenant is held to: `bound` while the low end of its observed rate is within
/// it; past it, `bound² / observed` (the further over, the stricter), never below a quarter.
pub fn held_bound(bound: f64, observed_low: f64) -> f64 {
    if observed_low > bound {
        (bound * bound / observed_low).max(bound * MIN_SHARE)
    } else {
        bound
    }
}

impl Cache {
    /// Whether the configured acceptance is one the guard can tighten: a calibrated bound,
    /// not an expert's raw threshold or probability.
    fn guarded(&self) -> bool {
        self.config.tighten_on_feedback
            && self.config.threshold.is_none()
            && match self.config.verifier {
                VerifierMode::Rules => true,
                VerifierMode::Cross => self.config.min_probability.is_none(),
                VerifierMode::Learned | VerifierMode::None => false,
            }
    }

    /// The bound in force for `tenant`: the configured one, or stricter while its observed
    /// rate is over it. A stale value is refreshed in the background (never on a lookup's
    /// path).
    pub fn tenant_bound(self: &Arc<Self>, tenant: &str) -> f64 {
        let bound = self.config.max_false_hit_rate;
        if !self.guarded() {
            return bound;
        }
        let cached = self.guards.tenants.lock().unwrap().get(tenant).copied();
        match cached {
            Some((held, at)) if at.elapsed() < REFRESH => held,
            stale => {
                let this = self.clone();
                let tenant = tenant.to_string();
                // Mark it fresh now so one refresh runs at a time per tenant.
                let held = stale.map_or(bound, |(held, _)| held);
                self.guards
                    .tenants
                    .lock()
                    .unwrap()
                    .insert(tenant.clone(), (held, Instant::now()));
                tokio::spawn(async move {
                    if let Err(e) = this.refresh_bound(&tenant).await {
                        tracing::warn!(error = %e, tenant, "cache guard: reading verdicts failed");
                    }
                });
                held
            }
        }
    }

    /// Reads the tenant's verdicts over the window and sets the bound it is held to.
    pub async fn refresh_bound(&self, tenant: &str) -> Result<f64, StoreError> {
        let bound = self.config.max_false_hit_rate;
        if !self.guarded() {
            return Ok(bound);
        }
        let since = now_ms() - GUARD_WINDOW_MS;
        // Most tenants have no wrong verdict: one look at the verdicts' index, not a count of
        // their semantic hits.
        let wrong: i64 = on_pool!(&self.store, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM cache_feedback WHERE tenant_id = $1 AND created_at >= $2 AND NOT correct")
            .bind(tenant).bind(since).fetch_one(p).await)?;
        let observed = if wrong == 0 {
            0.0
        } else {
            let e = self.false_hit_estimate(tenant, since).await?;
            e.low.max(e.reask_low)
        };
        let held = held_bound(bound, observed);
        let before = self
            .guards
            .tenants
            .lock()
            .unwrap()
            .insert(tenant.to_string(), (held, Instant::now()));
        if held < bound && before.is_none_or(|(b, _)| b >= bound) {
            tracing::warn!(
                tenant,
                observed,
                bound,
                held,
                "cache: the tenant's observed false-hit rate is over the bound; its semantic hits are held to a stricter one"
            );
        }
        Ok(held)
    }

    /// The similarity threshold and the cross-encoder bar a lookup of this tenant must meet
    /// at least (`None` while it is held to the configured bound).
    pub fn tightened(self: &Arc<Self>, tenant: &str) -> Option<(f32, f32)> {
        let held = self.tenant_bound(tenant);
        (held < self.config.max_false_hit_rate).then(|| self.acceptance_for(held))
    }

    /// The similarity threshold and the cross-encoder bar calibrated for `bound`.
    pub fn acceptance_for(&self, bound: f64) -> (f32, f32) {
        match self.config.verifier {
            VerifierMode::Cross => (super::CROSS_FLOOR, calibrated(CROSS_CALIBRATION, bound)),
            _ => (calibrated(CALIBRATION, bound), f32::NEG_INFINITY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_over_the_bound_is_held_in_proportion_and_never_below_a_quarter() {
        // Within the bound (or no verdicts): the configured bound.
        assert_eq!(held_bound(0.01, 0.0), 0.01);
        assert_eq!(held_bound(0.01, 0.01), 0.01);
        // Twice over: half the bound; far over: a quarter.
        assert!((held_bound(0.01, 0.02) - 0.005).abs() < 1e-12);
        assert_eq!(held_bound(0.01, 0.2), 0.0025);
        // The stricter bound picks the stricter row of each table.
        assert_eq!(calibrated(CALIBRATION, held_bound(0.01, 0.02)), 0.985);
        assert_eq!(calibrated(CROSS_CALIBRATION, held_bound(0.01, 0.02)), 2.9);
        assert_eq!(calibrated(CALIBRATION, held_bound(0.01, 0.2)), 0.995);
    }
}
