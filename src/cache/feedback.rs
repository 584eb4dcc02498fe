//! Feedback on hits: the application says whether an answer from the cache was right for
//! the question asked (a thumbs-down). A wrong semantic hit demotes its entry: it is no
//! longer served by meaning (its exact hits stay: its answer was its own question's). The
//! tenant's false-hit estimate is wrong hits over semantic hits served, with a 95 % interval;
//! too many wrong verdicts hold the tenant to a stricter bound (`guard.rs`).

use serde::Serialize;

use super::Cache;
use crate::clock::now_ms;
use crate::store::{StoreError, on_pool};

/// Where a verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The application (`POST /v1/cache/feedback`).
    User,
    /// A sampled hit asked again upstream and compared (`cache.reask_share`).
    Reask,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::User => "user",
            Source::Reask => "reask",
        }
    }
}

/// A tenant's false-hit estimate over a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FalseHitEstimate {
    pub semantic_hits: i64,
    /// The application's verdicts of wrong.
    pub wrong: i64,
    /// `wrong / semantic_hits` (0 with no hits).
    pub rate: f64,
    /// Wilson 95 % interval.
    pub low: f64,
    pub high: f64,
    /// Semantic hits re-asked upstream and compared (a random sample of them).
    pub reasked: i64,
    /// Of those, the ones whose fresh answer disagreed.
    pub reask_wrong: i64,
    /// `reask_wrong / reasked` (0 with none), with its Wilson 95 % interval.
    pub reask_rate: f64,
    pub reask_low: f64,
    pub reask_high: f64,
}

/// The Wilson score interval (95 %) of `k` successes in `n` trials.
pub fn wilson(k: i64, n: i64) -> (f64, f64) {
    if n <= 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let z = 1.959_963_984_540_054_f64;
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) / n) + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

impl Cache {
    /// Records a verdict on a hit of `entry` (the tenant's own: `false` when it has no such
    /// entry or feedback). The application's wrong verdict demotes the entry from semantic
    /// matching; a re-ask's is only recorded.
    pub async fn feedback(
        self: &std::sync::Arc<Self>,
        tenant: &str,
        entry: &str,
        request_id: Option<&str>,
        correct: bool,
        source: Source,
    ) -> Result<bool, StoreError> {
        let known: Option<String> = on_pool!(&self.store, p => sqlx::query_scalar(
            "SELECT id FROM cache_entries WHERE tenant_id = $1 AND id = $2")
            .bind(tenant).bind(entry).fetch_optional(p).await)?;
        // An entry deleted since may still be judged through feedback already on record.
        let judged_before: Option<String> = if known.is_none() {
            on_pool!(&self.store, p => sqlx::query_scalar(
                "SELECT id FROM cache_feedback WHERE tenant_id = $1 AND entry_id = $2 LIMIT 1")
                .bind(tenant).bind(entry).fetch_optional(p).await)?
        } else {
            None
        };
        if known.is_none() && judged_before.is_none() {
            return Ok(false);
        }
        let id = format!("cf_{}", uuid::Uuid::now_v7().simple());
        let now = now_ms();
        on_pool!(&self.store, p => sqlx::query(
            "INSERT INTO cache_feedback (id, tenant_id, entry_id, request_id, correct, source, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, request_id) DO UPDATE SET correct = excluded.correct, \
                 source = excluded.source, created_at = excluded.created_at, entry_id = excluded.entry_id")
            .bind(&id).bind(tenant).bind(entry).bind(request_id).bind(correct)
            .bind(source.as_str()).bind(now).execute(p).await.map(|_| ()))?;
        metrics::counter!("qm_cache_feedback_total", "correct" => if correct { "true" } else { "false" }, "source" => source.as_str())
            .increment(1);
        if !correct && known.is_some() && source == Source::User {
            on_pool!(&self.store, p => sqlx::query(
                "UPDATE cache_entries SET demoted_at = $1 WHERE tenant_id = $2 AND id = $3 AND demoted_at IS NULL")
                .bind(now).bind(tenant).bind(entry).execute(p).await.map(|_| ()))?;
            // Out of the index too, so it no longer takes a candidate's place.
            self.unindex(tenant, &[entry.to_string()]).await;
            metrics::counter!("qm_cache_demotions_total").increment(1);
        }
        // The bound this tenant is held to, at once on this replica (others at their next
        // refresh). Re-asks are not the guard's evidence.
        if source == Source::User {
            self.refresh_after_verdict(tenant).await;
        }
        Ok(true)
    }

    /// The tenant's false-hit estimate since `since_ms`: verdicts of wrong over the semantic
    /// hits the request log holds.
    pub async fn false_hit_estimate(
        &self,
        tenant: &str,
        since_ms: i64,
    ) -> Result<FalseHitEstimate, StoreError> {
        let hits: i64 = on_pool!(&self.store, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM request_log WHERE tenant_id = $1 AND created_at >= $2 AND route_reason = 'cache_semantic'")
            .bind(tenant).bind(since_ms).fetch_one(p).await)?;
        let wrong: i64 = on_pool!(&self.store, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM cache_feedback WHERE tenant_id = $1 AND created_at >= $2 AND NOT correct AND source = 'user'")
            .bind(tenant).bind(since_ms).fetch_one(p).await)?;
        let (reasked, reask_wrong): (i64, i64) = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN correct THEN 0 ELSE 1 END), 0) FROM cache_feedback \
             WHERE tenant_id = $1 AND created_at >= $2 AND source = 'reask'")
            .bind(tenant).bind(since_ms).fetch_one(p).await)?;
        let (reask_low, reask_high) = wilson(reask_wrong, reasked);
        // Verdicts on exact hits, or on hits older than the window, can outnumber them.
        let (low, high) = wilson(wrong, hits.max(wrong));
        Ok(FalseHitEstimate {
            semantic_hits: hits,
            wrong,
            rate: if hits > 0 {
                wrong as f64 / hits as f64
            } else {
                0.0
            },
            low,
            high,
            reasked,
            reask_wrong,
            reask_rate: if reasked > 0 {
                reask_wrong as f64 / reasked as f64
            } else {
                0.0
            },
            reask_low,
            reask_high,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_intervals() {
        // Known values: 0 of 10 -> [0, 0.2775]; 5 of 100 -> [0.0215, 0.1118].
        let (l, h) = wilson(0, 10);
        assert!(l == 0.0 && (h - 0.2775).abs() < 1e-3, "{l} {h}");
        let (l, h) = wilson(5, 100);
        assert!(
            (l - 0.0215).abs() < 1e-3 && (h - 0.1118).abs() < 1e-3,
            "{l} {h}"
        );
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }
}
