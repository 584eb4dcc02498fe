//! The hot-reloadable part of the configuration: tiers, routing thresholds, prices, limits,
//! and the trained classifier. Requests read one snapshot (`ArcSwap`), so a reload is
//! atomic: a request sees the old settings or the new ones, never a mix.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::{Classifier, RoutingConfig, TierConfig};
use crate::usage::{LimitsConfig, Price};

#[derive(Clone)]
pub struct Live {
    pub routing: RoutingConfig,
    pub tiers: BTreeMap<String, TierConfig>,
    pub limits: LimitsConfig,
    /// Prices by model name.
    pub prices: HashMap<String, Price>,
    pub classifier: Option<Arc<Classifier>>,
    /// The examples file the classifier was trained on, with its mtime and length.
    pub trained_on: Option<(PathBuf, Option<SystemTime>, u64)>,
}

impl Live {
    /// Settings without a classifier (it is trained and installed afterwards).
    pub fn new(
        routing: RoutingConfig,
        tiers: BTreeMap<String, TierConfig>,
        limits: LimitsConfig,
        prices: HashMap<String, Price>,
    ) -> Self {
        Self {
            routing,
            tiers,
            limits,
            prices,
            classifier: None,
            trained_on: None,
        }
    }

    /// A model's prices; unpriced models (the local one) cost 0.
    pub fn price(&self, model: &str) -> Price {
        self.prices.get(model).copied().unwrap_or_default()
    }

    pub fn is_alias(&self, model: &str) -> bool {
        self.routing.aliases.iter().any(|a| a == model)
    }
}

/// The identity of the examples file now (to know whether a reload must retrain).
pub fn file_stamp(path: &Path) -> (PathBuf, Option<SystemTime>, u64) {
    let meta = std::fs::metadata(path).ok();
    (
        path.to_path_buf(),
        meta.as_ref().and_then(|m| m.modified().ok()),
        meta.map_or(0, |m| m.len()),
    )
}
