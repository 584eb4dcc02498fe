//! The bound held on live traffic. `max_false_hit_rate` is calibrated offline, on pairs that
//! may not look like a tenant's questions. A tenant whose observed false-hit rate is over it
//! (the low end of the 95 % interval of the application's wrong verdicts on its semantic hits
//! over 7 days) is held to a stricter bound until the evidence says otherwise. The state is
//! derived from the store, so replicas agree and a restart reads it back.
//!
//! Re-asked hits are not evidence here: a fresh answer can differ for reasons of its own
//! (temperature, a changed model), which is why they do not demote entries either. They stay
//! in the estimate `GET /admin/cache` reports.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::{CALIBRATION, CROSS_CALIBRATION, calibrated};
use super::feedback::wilson;
use super::{Cache, VerifierMode};
use crate::clock::now_ms;
use crate::store::{StoreError, on_pool};

/// Verdicts and hits from this far back count.
pub const GUARD_WINDOW_MS: i64 = 7 * 86_400_000;

/// A tenant's bound is read again from the store after this long, in the background (other
/// replicas converge within it).
const REFRESH: Duration = Duration::from_secs(30);

/// Holding stops at a quarter of the configured bound.
const MIN_SHARE: f64 = 0.25;

/// One tenant's bound, as last read.
#[derive(Clone, Copy)]
struct Held {
    bound: f64,
    /// When the read that produced `bound` began (`None`: not read yet).
    read_started: Option<Instant>,
    /// When a refresh was last started (`None`: never).
    checked_at: Option<Instant>,
}

/// The tenants' bounds in force.
#[derive(Default)]
pub struct Guards {
    tenants: RwLock<HashMap<String, Held>>,
}

/// What a tenant's semantic lookups must meet now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InForce {
    /// The bound the tenant is held to: the configured one, or stricter.
    pub bound: f64,
    /// Whether that asks more of a candidate than the configured bound does.
    pub tightened: bool,
    /// The similarity a candidate needs (without a request's own threshold).
    pub threshold: f32,
    /// The cross-encoder's logit bar (`verifier = "cross"` only).
    pub cross_bar: Option<f32>,
}

/// The bound a tenant is held to: `bound` while the low end of its observed rate is within
/// it; past it, `bound² / observed` (the further over, the stricter), never below a quarter of
/// it. The calibration tables then give the row of the loosest bound within that, so the
/// acceptance tightens by whole rows.
pub fn held_bound(bound: f64, observed_low: f64) -> f64 {
    if observed_low > bound {
        (bound * bound / observed_low).max(bound * MIN_SHARE)
    } else {
        bound
    }
}

impl Cache {
    /// Whether the configured acceptance is one the guard can tighten: a calibrated bound,
    /// not an expert's raw threshold or probability, with the rule checks or the
    /// cross-encoder.
    fn guarded(&self) -> bool {
        self.config.tighten_on_feedback
            && self.config.threshold.is_none()
            && match self.config.verifier {
                VerifierMode::Rules => true,
                VerifierMode::Cross => self.config.min_probability.is_none(),
                VerifierMode::Learned | VerifierMode::None => false,
            }
    }

    /// What `tenant`'s lookups must meet, as last read. A stale value is refreshed in the
    /// background, never on a lookup's path; until the first read lands, the configured
    /// bound.
    pub fn in_force_now(self: &Arc<Self>, tenant: &str) -> InForce {
        let configured = self.config.max_false_hit_rate;
        if !self.guarded() {
            return self.in_force(configured);
        }
        let fresh = |h: &Held| h.checked_at.is_some_and(|t| t.elapsed() < REFRESH);
        if let Some(h) = self.guards.tenants.read().unwrap().get(tenant) {
            if fresh(h) {
                return self.in_force(h.bound);
            }
        }
        // Stale or unknown: mark it checked under the write lock, so one refresh runs at a
        // time per tenant, and read it again in the background.
        let bound = {
            let mut map = self.guards.tenants.write().unwrap();
            let held = map.entry(tenant.to_string()).or_insert(Held {
                bound: configured,
                read_started: None,
                checked_at: None,
            });
            if fresh(held) {
                return self.in_force(held.bound);
            }
            held.checked_at = Some(Instant::now());
            held.bound
        };
        let this = self.clone();
        let tenant = tenant.to_string();
        tokio::spawn(async move { this.refresh_or_warn(&tenant, "").await });
        self.in_force(bound)
    }

    /// `refresh_bound`, a failure logged (`when` says when the read was made).
    async fn refresh_or_warn(&self, tenant: &str, when: &str) {
        if let Err(e) = self.refresh_bound(tenant).await {
            tracing::warn!(error = %e, tenant, "cache guard: reading verdicts{when} failed");
        }
    }

    /// Reads the tenant's verdicts over the window and sets the bound it is held to. A read
    /// that began before the one already recorded changes nothing.
    pub async fn refresh_bound(&self, tenant: &str) -> Result<f64, StoreError> {
        let configured = self.config.max_false_hit_rate;
        if !self.guarded() {
            return Ok(configured);
        }
        let started = Instant::now();
        let since = now_ms() - GUARD_WINDOW_MS;
        // The application's wrong verdicts on this tenant's semantic hits (not on exact ones,
        // whose answer was their own question's).
        // (A client may send its own request id, so one id can have several log rows: each
        // verdict counts once.)
        let wrong: i64 = on_pool!(&self.store, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM cache_feedback f \
             WHERE f.tenant_id = $1 AND f.created_at >= $2 AND NOT f.correct AND f.source = 'user' \
               AND EXISTS (SELECT 1 FROM request_log r WHERE r.tenant_id = f.tenant_id \
                   AND r.request_id = f.request_id AND r.route_reason = 'cache_semantic')")
            .bind(tenant).bind(since).fetch_one(p).await)?;
        let observed = if wrong == 0 {
            0.0 // most tenants: no need to count their hits
        } else {
            let hits: i64 = on_pool!(&self.store, p => sqlx::query_scalar(
                "SELECT COUNT(*) FROM request_log WHERE tenant_id = $1 AND created_at >= $2 \
                 AND route_reason = 'cache_semantic'")
                .bind(tenant).bind(since).fetch_one(p).await)?;
            wilson(wrong, hits.max(wrong)).0
        };
        let bound = held_bound(configured, observed);
        let newly_held = {
            let mut map = self.guards.tenants.write().unwrap();
            let held = map.entry(tenant.to_string()).or_insert(Held {
                bound: configured,
                read_started: None,
                checked_at: Some(started),
            });
            if held.read_started.is_some_and(|t| t > started) {
                return Ok(held.bound); // a later read landed first
            }
            let newly_held = bound < configured && held.bound >= configured;
            *held = Held {
                bound,
                read_started: Some(started),
                checked_at: held.checked_at.max(Some(started)),
            };
            newly_held
        };
        // Told once the lock is released.
        if newly_held {
            tracing::warn!(
                tenant,
                observed,
                configured,
                bound,
                "cache: the tenant's observed false-hit rate is over the bound; its semantic hits are held to a stricter one"
            );
        }
        Ok(bound)
    }

    /// After a verdict: the bound read now, and once more a second later for a hit whose
    /// log row was still on its way (the request log is written in batches).
    pub(super) async fn refresh_after_verdict(self: &Arc<Self>, tenant: &str) {
        self.refresh_or_warn(tenant, "").await;
        let this = self.clone();
        let tenant = tenant.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            this.refresh_or_warn(&tenant, " again").await;
        });
    }

    /// What lookups held to `bound` must meet.
    pub fn in_force(&self, bound: f64) -> InForce {
        let threshold = self.config.effective_threshold();
        let cross = self.config.verifier == VerifierMode::Cross;
        let bar = self.config.cross_min_logit();
        if !self.guarded() || bound >= self.config.max_false_hit_rate {
            return InForce {
                bound: self.config.max_false_hit_rate,
                tightened: false,
                threshold,
                cross_bar: cross.then_some(bar),
            };
        }
        let (held_threshold, held_bar) = if cross {
            (threshold, bar.max(calibrated(CROSS_CALIBRATION, bound)))
        } else {
            (threshold.max(calibrated(CALIBRATION, bound)), bar)
        };
        InForce {
            bound,
            tightened: held_threshold > threshold || (cross && held_bar > bar),
            threshold: held_threshold,
            cross_bar: cross.then_some(held_bar),
        }
    }

    /// Reads back, at start, the bounds of tenants with wrong verdicts in the window.
    pub(super) async fn load_guards(&self) -> Result<(), StoreError> {
        if !self.guarded() {
            return Ok(());
        }
        let tenants: Vec<String> = on_pool!(&self.store, p => sqlx::query_scalar(
            "SELECT DISTINCT tenant_id FROM cache_feedback WHERE created_at >= $1 AND NOT correct AND source = 'user'")
            .bind(now_ms() - GUARD_WINDOW_MS).fetch_all(p).await)?;
        for t in tenants {
            // One tenant's failed read does not leave the others unread.
            self.refresh_or_warn(&t, " at start").await;
        }
        Ok(())
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
        // Cross-encoder: under 0.5 % no bar held, so semantic hits stop (12.0).
        assert_eq!(calibrated(CROSS_CALIBRATION, held_bound(0.01, 0.2)), 12.0);
    }
}
