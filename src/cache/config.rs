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
    /// Cosine similarity a semantic candidate needs (from `quartermaster eval cache`).
    pub threshold: f32,
    /// The verification stage for semantic candidates: `learned` (rule checks, then the
    /// learned verifier's probability), `rules` (rule checks only) or `none`.
    pub verifier: VerifierMode,
    /// The learned verifier's acceptance probability.
    pub min_probability: f32,
    /// Nearest candidates considered per lookup.
    pub candidates: usize,
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
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            semantic: true,
            threshold: DEFAULT_THRESHOLD,
            verifier: VerifierMode::Rules,
            min_probability: DEFAULT_MIN_PROBABILITY,
            candidates: 5,
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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VerifierMode {
    Learned,
    #[default]
    Rules,
    None,
}

/// The defaults, chosen on the development pairs by `quartermaster eval cache --fit` (see
/// README: "Semantic cache").
/// With the rule checks (the default verifier): the lowest similarity keeping the false-hit
/// rate at most 0.8 % on the tuning half of the development pairs (a margin under the 1 %
/// goal: tuned for 1 %, the held-out half landed at 1.04-1.32 %).
pub const DEFAULT_THRESHOLD: f32 = 0.97;
/// With `verifier = "learned"`, use `threshold = 0.70` and this probability.
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
        if !(0.0..=1.0).contains(&self.min_probability) {
            return Err("cache.min_probability must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err("cache.threshold must be between 0 and 1".into());
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
