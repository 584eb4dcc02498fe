//! `[cache]`: what the cache does, its thresholds and the shipped verifier's weights.

use serde::Deserialize;

use super::{HnswParams, pgvector, qdrant, verify};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexBackend {
    #[default]
    Hnsw,
    Qdrant,
    /// A table in the PostgreSQL store, shared by every replica.
    Pgvector,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Look up by meaning as well as exactly (needs the local embedder).
    pub semantic: bool,
    /// The error bound: the share of semantic lookups that may be answered with a wrong
    /// entry. The similarity threshold is the one calibrated for it (`CALIBRATION`, from
    /// `quartermaster eval cache --calibrate`: chosen on held-out pairs with the upper end of
    /// its 95 % interval under the bound).
    pub max_false_hit_rate: f64,
    /// For experts: a raw cosine similarity threshold, overriding `max_false_hit_rate`.
    pub threshold: Option<f32>,
    /// The verification stage for semantic candidates: `cross` (rule checks, then the
    /// cross-encoder reading both questions, its bar calibrated for `max_false_hit_rate`),
    /// `learned` (rule checks, then a logistic regression over features), `rules` (rule checks
    /// only) or `none`.
    pub verifier: VerifierMode,
    /// For experts: the probability a candidate needs from the `cross` or `learned` verifier,
    /// overriding the calibrated one (`cross`) or the shipped default (`learned`).
    pub min_probability: Option<f32>,
    /// Nearest candidates considered per lookup.
    pub candidates: usize,
    /// The share of semantic hits asked again upstream in the background (cache off, logged
    /// and charged as requests of their own) and compared with the served answer, so the
    /// false-hit estimate does not rest only on users' complaints. 0 (default): none.
    pub reask_share: f64,
    /// Cosine similarity of the two answers' embeddings at or above which a re-asked hit
    /// counts as right.
    pub reask_agreement: f32,
    /// Hold a tenant whose observed false-hit rate (the low end of the 95 % interval of the
    /// application's wrong verdicts on its semantic hits over 7 days) is over
    /// `max_false_hit_rate` to a stricter bound until it is not (`guard.rs`). Not with a raw
    /// `threshold` or `min_probability`, nor the `learned` verifier or `none`.
    pub tighten_on_feedback: bool,
    pub default_ttl_secs: u64,
    /// Upper bound for `x-quartermaster-cache-ttl`.
    pub max_ttl_secs: u64,
    /// Least recently used entries beyond this are evicted, per tenant.
    pub max_entries_per_tenant: u64,
    /// How often expired and surplus entries are removed and graphs rebuilt.
    pub sweep_interval_secs: u64,
    /// Characters per content chunk when a hit is replayed as a stream.
    pub replay_chunk_chars: usize,
    /// Longest a lookup may take, per stage (the exact lookup in the store, the query's
    /// embedding for the semantic one); past it the stage is skipped (a miss) rather than
    /// waited for: a slow store or a busy embedder never holds a chat back for long.
    pub lookup_deadline_ms: u64,
    pub backend: IndexBackend,
    pub hnsw: HnswParams,
    pub qdrant: qdrant::QdrantConfig,
    pub pgvector: pgvector::PgvectorCacheConfig,
    /// With the in-process `hnsw` backend on PostgreSQL: replicas tell each other of new and
    /// removed entries (LISTEN/NOTIFY), each applying them to its own graph.
    pub sync: bool,
    /// Where the `hnsw` backend's graphs are saved (at shutdown, and every
    /// `snapshot_interval_secs` when they changed) and loaded from at start. Empty: beside a
    /// SQLite database file (`<file>.cache-graphs`); with PostgreSQL, not saved unless set
    /// (each replica needs a folder of its own).
    pub snapshot_dir: std::path::PathBuf,
    /// 0: only at shutdown.
    pub snapshot_interval_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            semantic: true,
            max_false_hit_rate: DEFAULT_MAX_FALSE_HIT_RATE,
            threshold: None,
            verifier: VerifierMode::Rules,
            min_probability: None,
            candidates: 5,
            reask_share: 0.0,
            reask_agreement: 0.85,
            tighten_on_feedback: true,
            default_ttl_secs: 24 * 3600,
            max_ttl_secs: 30 * 24 * 3600,
            max_entries_per_tenant: 100_000,
            sweep_interval_secs: 30,
            replay_chunk_chars: 24,
            lookup_deadline_ms: 250,
            backend: IndexBackend::Hnsw,
            hnsw: HnswParams::default(),
            qdrant: qdrant::QdrantConfig::default(),
            pgvector: pgvector::PgvectorCacheConfig::default(),
            sync: true,
            snapshot_dir: std::path::PathBuf::new(),
            snapshot_interval_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VerifierMode {
    Cross,
    Learned,
    #[default]
    Rules,
    None,
}

/// The error bound by default.
pub const DEFAULT_MAX_FALSE_HIT_RATE: f64 = 0.01;

/// The similarity threshold (rule checks on) for each false-hit bound, from `quartermaster
/// eval cache --calibrate` on the even-numbered development pairs (README: "Response cache").
pub const CALIBRATION: &[(f64, f32)] = &[
    (0.002, 0.995),
    (0.005, 0.985),
    (0.01, 0.975),
    (0.02, 0.955),
    (0.03, 0.94),
    (0.05, 0.91),
];

impl CacheConfig {
    /// The similarity a semantic candidate needs: `threshold` when set, else the calibrated
    /// threshold of the tightest bound in `CALIBRATION` that is within `max_false_hit_rate`
    /// (the strictest threshold when the bound is below every entry). With the learned
    /// verifier, its own similarity floor; with the cross-encoder, never below its floor.
    pub fn effective_threshold(&self) -> f32 {
        match (self.threshold, self.verifier) {
            (Some(t), _) => self.floored(t),
            (None, VerifierMode::Learned) => DEFAULT_LEARNED_FLOOR,
            (None, VerifierMode::Cross) => CROSS_FLOOR,
            (None, _) => calibrated(CALIBRATION, self.max_false_hit_rate),
        }
    }

    /// A threshold asked for (configured, or a request's header) as it applies: the
    /// cross-encoder's bar is calibrated on candidates at or above `CROSS_FLOOR`, so a lower
    /// threshold does not take it below.
    pub fn floored(&self, threshold: f32) -> f32 {
        match self.verifier {
            VerifierMode::Cross => threshold.max(CROSS_FLOOR),
            _ => threshold,
        }
    }
}

/// The cross-encoder's first stage: candidates at least this similar that pass the rule
/// checks are read by it, the best `CROSS_MAX_READ` of them.
pub const CROSS_FLOOR: f32 = 0.70;

/// At most this many candidates per lookup are read by the cross-encoder (each adds a pair
/// to its pass): the most similar of those that pass the rule checks.
pub const CROSS_MAX_READ: usize = 2;

/// The cross-encoder's logit bar for each false-hit bound (similarity floor `CROSS_FLOOR`,
/// rule checks on), from `quartermaster eval cache --calibrate` on the calibration quarter of
/// the development pairs, which the cross-encoder was not trained on (README: "Response
/// cache"). 12.0 is the scan's start: no bar held the 0.2 % bound there, so below 0.5 %
/// the cross-encoder serves no semantic hit.
pub const CROSS_CALIBRATION: &[(f64, f32)] = &[
    (0.002, 12.0),
    (0.005, 2.9),
    (0.01, 2.3),
    (0.02, 2.0),
    (0.03, 1.6),
    (0.05, 1.3),
];

/// The value a calibration table (higher is stricter) gives `bound`: that of the loosest bound
/// in the table within it, or the strictest value when the bound is below every entry.
pub(super) fn calibrated(table: &[(f64, f32)], bound: f64) -> f32 {
    let values = || table.iter().map(|(_, t)| *t);
    table
        .iter()
        .filter(|(b, _)| *b <= bound + 1e-12)
        .map(|(_, t)| *t)
        .reduce(f32::min)
        .unwrap_or_else(|| values().fold(f32::NEG_INFINITY, f32::max))
}

impl CacheConfig {
    /// The logit the cross-encoder must reach: `min_probability` when set, else the bar
    /// calibrated for `max_false_hit_rate`.
    pub fn cross_min_logit(&self) -> f32 {
        match self.min_probability {
            Some(p) => (p / (1.0 - p)).ln(),
            None => calibrated(CROSS_CALIBRATION, self.max_false_hit_rate),
        }
    }

    /// The learned verifier's acceptance probability (`verifier = "learned"`).
    pub fn learned_min_probability(&self) -> f32 {
        self.min_probability.unwrap_or(DEFAULT_MIN_PROBABILITY)
    }
}

/// The learned verifier's similarity floor (`verifier = "learned"`).
pub const DEFAULT_LEARNED_FLOOR: f32 = 0.70;

/// The learned verifier's settings, chosen on the development pairs by `quartermaster eval
/// cache --fit` (see README: "Response cache"). With `verifier = "learned"`, the similarity
/// floor is `DEFAULT_LEARNED_FLOOR` and a candidate needs this probability.
pub const DEFAULT_MIN_PROBABILITY: f32 = 0.71;
/// Learned verifier weights, fitted by `quartermaster eval cache --fit` on the development
/// pairs (order: see `verify::features`).
pub const DEFAULT_VERIFIER: verify::LearnedVerifier = verify::LearnedVerifier {
    weights: [
        6.547_084,
        3.461_952,
        -0.057_357_74,
        -0.076_338_96,
        -0.495_568_7,
        -0.287_422_5,
        -0.059_873_436,
        -1.211_162,
        -0.541_645_6,
        0.050_568_29,
        -0.254_710_35,
    ],
    bias: -8.115_519,
};

impl CacheConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self
            .min_probability
            .is_some_and(|p| !(0.0..=1.0).contains(&p))
        {
            return Err("cache.min_probability must be between 0 and 1".into());
        }
        if self.threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return Err("cache.threshold must be between 0 and 1".into());
        }
        if !(self.max_false_hit_rate > 0.0 && self.max_false_hit_rate < 1.0) {
            return Err("cache.max_false_hit_rate must be between 0 and 1 (e.g. 0.01)".into());
        }
        if !(0.0..=1.0).contains(&self.reask_share) {
            return Err("cache.reask_share must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.reask_agreement) {
            return Err("cache.reask_agreement must be between 0 and 1".into());
        }
        if self.candidates == 0 || self.candidates > 100 {
            return Err("cache.candidates must be between 1 and 100".into());
        }
        if self.default_ttl_secs == 0 || self.default_ttl_secs > self.max_ttl_secs {
            return Err("cache.default_ttl_secs must be between 1 and max_ttl_secs".into());
        }
        if self.max_entries_per_tenant == 0 || self.sweep_interval_secs == 0 {
            return Err("cache.max_entries_per_tenant and sweep_interval_secs must be > 0".into());
        }
        if self.replay_chunk_chars == 0 {
            return Err("cache.replay_chunk_chars must be > 0".into());
        }
        if self.hnsw.m < 2 || self.hnsw.m > 255 || self.hnsw.ef_search == 0 {
            return Err("cache.hnsw.m must be 2..=255 and ef_search > 0".into());
        }
        if self.backend == IndexBackend::Qdrant && self.qdrant.url.is_empty() {
            return Err("cache.qdrant.url is required when cache.backend = \"qdrant\"".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_bound_picks_its_calibrated_threshold() {
        let at = |bound: f64| {
            CacheConfig {
                max_false_hit_rate: bound,
                ..Default::default()
            }
            .effective_threshold()
        };
        assert_eq!(at(0.01), 0.975);
        assert_eq!(at(0.015), 0.975, "between two bounds: the tighter one's");
        assert_eq!(at(0.05), 0.91);
        assert_eq!(at(0.5), 0.91);
        assert_eq!(
            at(0.001),
            0.995,
            "below every bound: the strictest threshold"
        );
        let expert = CacheConfig {
            threshold: Some(0.9),
            ..Default::default()
        };
        assert_eq!(expert.effective_threshold(), 0.9);
        let learned = CacheConfig {
            verifier: VerifierMode::Learned,
            ..Default::default()
        };
        assert_eq!(learned.effective_threshold(), DEFAULT_LEARNED_FLOOR);
        assert_eq!(learned.learned_min_probability(), DEFAULT_MIN_PROBABILITY);
        // The cross-encoder: its floor, and the bar of the bound's calibrated entry.
        let cross = |bound: f64, p: Option<f32>| CacheConfig {
            verifier: VerifierMode::Cross,
            max_false_hit_rate: bound,
            min_probability: p,
            ..Default::default()
        };
        assert_eq!(cross(0.01, None).effective_threshold(), CROSS_FLOOR);
        // A lower threshold, configured or asked for, does not undercut the floor; a higher
        // one applies, and other verifiers take any threshold as it is.
        let low = CacheConfig {
            threshold: Some(0.5),
            ..cross(0.01, None)
        };
        assert_eq!(low.effective_threshold(), CROSS_FLOOR);
        assert_eq!(low.floored(0.9), 0.9);
        assert_eq!(expert.floored(0.5), 0.5);
        let bar_of = |b: f64| CROSS_CALIBRATION.iter().find(|(x, _)| *x == b).unwrap().1;
        assert_eq!(cross(0.01, None).cross_min_logit(), bar_of(0.01));
        assert_eq!(cross(0.015, None).cross_min_logit(), bar_of(0.01));
        assert_eq!(cross(0.9, None).cross_min_logit(), bar_of(0.05));
        assert_eq!(cross(0.0001, None).cross_min_logit(), bar_of(0.002));
        // An expert's probability is the bar, as a logit.
        assert!((cross(0.01, Some(0.5)).cross_min_logit()).abs() < 1e-6);
        assert!((cross(0.01, Some(0.9)).cross_min_logit() - 9f32.ln()).abs() < 1e-5);
        // The ends: every candidate refused, every candidate (that passed the rules) served.
        assert_eq!(cross(0.01, Some(1.0)).cross_min_logit(), f32::INFINITY);
        assert_eq!(cross(0.01, Some(0.0)).cross_min_logit(), f32::NEG_INFINITY);
        assert!(cross(0.01, Some(1.0)).validate().is_ok());
        assert!(cross(0.01, Some(1.5)).validate().is_err());
        assert!(
            CROSS_CALIBRATION
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 >= w[1].1)
        );
        // The table is ordered: a looser bound never needs a stricter threshold.
        assert!(
            CALIBRATION
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 >= w[1].1)
        );
    }
}
