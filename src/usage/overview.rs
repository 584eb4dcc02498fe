//! The console's overview: requests, errors, spend, cache hits and savings, and latency
//! percentiles (total and time to first token), over time and per tenant, model and
//! routing tier, from the request log's rows.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::RequestSample;

/// The figures of a set of requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub spend_usd: f64,
    pub cache_hits: u64,
    pub savings_usd: f64,
    pub cache_hit_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
}

/// Figures with what they are of: a bucket's start (`t`) or a group's name (`key`).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Labelled<L: Serialize> {
    #[serde(flatten)]
    pub label: L,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct At {
    pub t: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Key {
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Overview {
    pub since_ms: i64,
    pub until_ms: i64,
    pub bucket_ms: i64,
    /// Whether there were more requests in the window than were read (the newest kept).
    pub truncated: bool,
    pub totals: Figures,
    pub series: Vec<Labelled<At>>,
    pub by_tenant: Vec<Labelled<Key>>,
    pub by_model: Vec<Labelled<Key>>,
    pub by_route: Vec<Labelled<Key>>,
}

/// A bucket width (a round number of minutes) giving at most `max_buckets` over the window.
pub fn bucket_for(window_ms: i64, max_buckets: i64) -> i64 {
    const MINUTE: i64 = 60_000;
    let raw = (window_ms.max(1) as u64).div_ceil(max_buckets.max(1) as u64);
    (raw.div_ceil(MINUTE as u64).max(1) as i64) * MINUTE
}

/// Aggregates `samples` (each in `[since_ms, until_ms)`) into buckets of `bucket_ms`.
pub fn overview(
    samples: &[RequestSample],
    since_ms: i64,
    until_ms: i64,
    bucket_ms: i64,
    truncated: bool,
) -> Overview {
    let bucket_ms = bucket_ms.max(1);
    let mut series: BTreeMap<i64, Acc> = BTreeMap::new();
    // Every bucket of the window is listed, empty ones too, so charts keep their time axis.
    let mut t = since_ms;
    while t < until_ms && series.len() < 10_000 {
        series.insert(t, Acc::default());
        let Some(next) = t.checked_add(bucket_ms) else {
            break;
        };
        t = next;
    }
    let (mut total, mut tenants, mut models, mut routes) = (
        Acc::default(),
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
    );
    for s in samples {
        let start = since_ms + (s.at_ms - since_ms).div_euclid(bucket_ms) * bucket_ms;
        series.entry(start).or_default().add(s);
        total.add(s);
        tenants
            .entry(s.tenant.clone())
            .or_insert_with(Acc::default)
            .add(s);
        models
            .entry(s.model.clone())
            .or_insert_with(Acc::default)
            .add(s);
        routes
            .entry(s.tier.clone())
            .or_insert_with(Acc::default)
            .add(s);
    }
    let keyed = |groups: BTreeMap<String, Acc>| {
        let mut v: Vec<_> = groups
            .into_iter()
            .map(|(key, acc)| Labelled {
                label: Key { key },
                figures: acc.figures(),
            })
            .collect();
        v.sort_by(|a, b| b.figures.requests.cmp(&a.figures.requests));
        v
    };
    Overview {
        since_ms,
        until_ms,
        bucket_ms,
        truncated,
        totals: total.figures(),
        series: series
            .into_iter()
            .map(|(t, acc)| Labelled {
                label: At { t },
                figures: acc.figures(),
            })
            .collect(),
        by_tenant: keyed(tenants),
        by_model: keyed(models),
        by_route: keyed(routes),
    }
}

#[derive(Default)]
struct Acc {
    requests: u64,
    errors: u64,
    spend: f64,
    hits: u64,
    savings: f64,
    latencies: Vec<f64>,
    ttfts: Vec<f64>,
}

impl Acc {
    fn add(&mut self, s: &RequestSample) {
        self.requests += 1;
        match s.status.as_str() {
            "ok" => {}
            "cache_hit" => self.hits += 1,
            _ => self.errors += 1,
        }
        self.spend += s.cost_usd;
        self.savings += s.saved_usd;
        self.latencies.push(s.latency_ms);
        self.ttfts.extend(s.ttft_ms);
    }

    fn figures(mut self) -> Figures {
        Figures {
            requests: self.requests,
            errors: self.errors,
            spend_usd: self.spend,
            cache_hits: self.hits,
            savings_usd: self.savings,
            cache_hit_rate: if self.requests == 0 {
                0.0
            } else {
                self.hits as f64 / self.requests as f64
            },
            p50_ms: percentile(&mut self.latencies, 0.50),
            p99_ms: percentile(&mut self.latencies, 0.99),
            ttft_p50_ms: percentile(&mut self.ttfts, 0.50),
            ttft_p99_ms: percentile(&mut self.ttfts, 0.99),
        }
    }
}

/// The nearest-rank percentile (`q` in 0..=1); `None` for no values.
fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    // The epsilon keeps 0.99 * 100 (99.00000000000001 in floating point) at rank 99.
    let rank = ((q * values.len() as f64 - 1e-9).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, tenant: &str, status: &str, latency_ms: f64) -> RequestSample {
        RequestSample {
            at_ms,
            tenant: tenant.into(),
            model: "m".into(),
            tier: "cheap".into(),
            status: status.into(),
            latency_ms,
            ttft_ms: Some(latency_ms / 2.0),
            cost_usd: 0.5,
            saved_usd: if status == "cache_hit" { 0.25 } else { 0.0 },
        }
    }

    #[test]
    fn buckets_groups_and_percentiles() {
        let samples: Vec<_> = (0..100)
            .map(|i| {
                let status = match i % 10 {
                    0 => "cache_hit",
                    1 => "upstream_error",
                    _ => "ok",
                };
                sample(
                    i * 1_000,
                    if i < 60 { "a" } else { "b" },
                    status,
                    (i + 1) as f64,
                )
            })
            .collect();
        let o = overview(&samples, 0, 120_000, 60_000, false);
        assert_eq!(o.series.len(), 2, "empty buckets are listed too");
        assert_eq!(o.series[0].figures.requests, 60);
        assert_eq!(o.series[1].figures.requests, 40);
        assert_eq!(o.totals.requests, 100);
        assert_eq!((o.totals.cache_hits, o.totals.errors), (10, 10));
        assert!((o.totals.cache_hit_rate - 0.1).abs() < 1e-9);
        assert!((o.totals.spend_usd - 50.0).abs() < 1e-9);
        assert!((o.totals.savings_usd - 2.5).abs() < 1e-9);
        assert_eq!(o.totals.p50_ms, Some(50.0));
        assert_eq!(o.totals.p99_ms, Some(99.0));
        assert_eq!(o.totals.ttft_p50_ms, Some(25.0));
        assert_eq!(o.by_tenant[0].label.key, "a", "the busiest group first");
        assert_eq!(o.by_tenant[0].figures.requests, 60);
        let empty = overview(&[], 0, 60_000, 60_000, false);
        assert_eq!(empty.totals.p50_ms, None);
        assert_eq!(empty.totals.cache_hit_rate, 0.0);
    }

    #[test]
    fn bucket_width_keeps_to_the_maximum() {
        assert_eq!(bucket_for(24 * 3_600_000, 60), 24 * 60_000);
        assert_eq!(bucket_for(1_000, 60), 60_000, "at least a minute");
        assert!(24 * 3_600_000 / bucket_for(24 * 3_600_000 + 1, 60) <= 60);
    }
}
