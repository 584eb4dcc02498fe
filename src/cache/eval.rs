//! `quartermaster eval cache --pairs FILE.tsv`: every text1 goes into one cache (a real
//! HNSW index, the gateway's embedder and verification stage), every text2 is asked. A hit
//! is right when the entry's text is the query's own text or a pair in the file labels the
//! two duplicates; it is a false hit when a pair labels them different, and also (counted
//! apart as "unjudged") when no label links them: a cache cannot assume those are right.

use std::collections::HashMap;
use std::path::Path;

use super::verify::{self, Check, CrossVerifier, FEATURES, LearnedVerifier};
use super::{CROSS_FLOOR, CROSS_MAX_READ};
use crate::embed::EmbedModel;
use crate::index::{HnswIndex, HnswParams};

/// One labeled pair.
#[derive(Debug, Clone)]
pub struct Pair {
    pub text1: String,
    pub text2: String,
    pub duplicate: bool,
}

/// Reads `text1<TAB>text2<TAB>label` lines; a header line is skipped.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 3 {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!(
                "{}:{}: expected 3 tab-separated columns",
                path.display(),
                n + 1
            ));
        }
        let label = cols[2].trim();
        let duplicate = match label {
            "1" => true,
            "0" => false,
            _ if n == 0 => continue, // header
            _ => {
                return Err(format!(
                    "{}:{}: label must be 0 or 1",
                    path.display(),
                    n + 1
                ));
            }
        };
        out.push(Pair {
            text1: cols[0].to_string(),
            text2: cols[1].to_string(),
            duplicate,
        });
    }
    if out.is_empty() {
        return Err(format!("{}: no pairs", path.display()));
    }
    Ok(out)
}

/// Whether serving cached entry `e` for a query is right, as far as the labels tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    /// The same text (after whitespace normalisation), or a pair labeled duplicate.
    Right,
    /// A pair labeled not duplicate.
    Wrong,
    /// No label links the two: counted as wrong (a cache cannot assume it is right).
    Unjudged,
}

/// One candidate entry for a query.
struct Cand {
    /// Index of the cached text (a text1).
    entry: usize,
    similarity: f32,
    verdict: Result<(), Check>,
    judgement: Judgement,
    features: [f32; FEATURES],
    /// The cross-encoder's logit (−∞ when it was not run: below `CROSS_FLOOR`).
    cross: f32,
}

/// A query's candidates, best first.
struct Asked {
    pair: usize,
    duplicate: bool,
    candidates: Vec<Cand>,
}

/// How a candidate above the similarity threshold is accepted.
#[derive(Debug, Clone, Copy)]
pub enum Acceptance<'a> {
    /// Similarity alone.
    Similarity,
    /// The given rule checks must pass.
    Rules(&'a [Check]),
    /// Every rule check must pass and the learned probability reach `min_probability`.
    Learned(&'a LearnedVerifier, f32),
    /// Every rule check must pass (when `rules`) and the cross-encoder's logit reach the bar.
    Cross { min_logit: f32, rules: bool },
}

impl Acceptance<'_> {
    fn accepts(&self, c: &Cand) -> bool {
        let rules = |checks: &[Check]| match c.verdict {
            Ok(()) => true,
            Err(check) => !checks.contains(&check),
        };
        match self {
            Acceptance::Similarity => true,
            Acceptance::Rules(checks) => rules(checks),
            Acceptance::Learned(v, p) => rules(&Check::ALL) && v.probability(&c.features) >= *p,
            Acceptance::Cross {
                min_logit,
                rules: r,
            } => (!r || rules(&Check::ALL)) && c.cross >= *min_logit,
        }
    }
}

/// Scores at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    pub threshold: f32,
    pub queries: usize,
    pub positives: usize,
    pub hits: usize,
    pub correct: usize,
    pub false_hits: usize,
    /// False hits on entries no label links to the query (included in `false_hits`).
    pub unjudged: usize,
    /// Duplicate-labeled queries answered with a right entry.
    pub recalled: usize,
}

impl Score {
    pub fn precision(&self) -> f64 {
        if self.hits == 0 {
            1.0
        } else {
            self.correct as f64 / self.hits as f64
        }
    }
    /// Precision over the hits a label judges (unjudged hits left out). Labels link only the
    /// pairs of the file, so many unjudged hits are duplicates no pair happens to name:
    /// `precision` is the lower end, this the estimate if they were right as often as the
    /// judged ones.
    pub fn judged_precision(&self) -> f64 {
        let judged = self.hits.saturating_sub(self.unjudged);
        if judged == 0 {
            1.0
        } else {
            self.correct as f64 / judged as f64
        }
    }
    pub fn recall(&self) -> f64 {
        if self.positives == 0 {
            0.0
        } else {
            self.recalled as f64 / self.positives as f64
        }
    }
    /// False hits per query asked.
    pub fn false_hit_rate(&self) -> f64 {
        if self.queries == 0 {
            0.0
        } else {
            self.false_hits as f64 / self.queries as f64
        }
    }
}

pub struct Evaluation {
    asked: Vec<Asked>,
    pub pairs: usize,
    pub entries: usize,
    pub embed_secs: f64,
    /// Time the cross-encoder took over every candidate it read.
    pub cross_secs: f64,
}

impl Evaluation {
    /// Embeds and indexes every text1, asks every text2 for its `k` nearest candidates; with
    /// a cross-encoder, it reads every candidate at or above `CROSS_FLOOR`.
    pub fn run(
        model: &EmbedModel,
        pairs: &[Pair],
        k: usize,
        cross: Option<&CrossVerifier>,
    ) -> Result<Self, String> {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut texts1: Vec<&str> = Vec::new();
        for p in pairs {
            ids.entry(p.text1.as_str()).or_insert_with(|| {
                texts1.push(p.text1.as_str());
                texts1.len() - 1
            });
        }
        let started = std::time::Instant::now();
        let e1 = model.embed(&texts1, 8192).map_err(|e| e.to_string())?;
        let texts2: Vec<&str> = pairs.iter().map(|p| p.text2.as_str()).collect();
        let e2 = model.embed(&texts2, 8192).map_err(|e| e.to_string())?;
        let embed_secs = started.elapsed().as_secs_f64();
        let index = HnswIndex::new(HnswParams::default(), texts1.len());
        let items = e1
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i.to_string(), "fp".to_string(), e.vector))
            .collect();
        index.load_tenant("eval", items);
        // Every label in the file, both ways round, on normalised text.
        let norm = super::key::normalise;
        let mut labels: HashMap<(String, String), bool> = HashMap::new();
        for p in pairs {
            let (a, b) = (norm(&p.text1), norm(&p.text2));
            labels.insert((a.clone(), b.clone()), p.duplicate);
            labels.insert((b, a), p.duplicate);
        }
        let mut asked = Vec::with_capacity(pairs.len());
        for (i, (p, e)) in pairs.iter().zip(e2).enumerate() {
            let query = norm(&p.text2);
            let candidates = index
                .search_sync("eval", "fp", &e.vector, k)
                .into_iter()
                .map(|c| {
                    let id: usize = c.entry_id.parse().expect("numeric ids");
                    let cached = norm(texts1[id]);
                    let judgement = if cached == query {
                        Judgement::Right
                    } else {
                        match labels.get(&(query.clone(), cached.clone())) {
                            Some(true) => Judgement::Right,
                            Some(false) => Judgement::Wrong,
                            None => Judgement::Unjudged,
                        }
                    };
                    Cand {
                        entry: id,
                        similarity: c.similarity,
                        verdict: verify::verify(&query, &cached, &Check::ALL),
                        judgement,
                        features: verify::features(&query, &cached, c.similarity),
                        cross: f32::NEG_INFINITY,
                    }
                })
                .collect();
            asked.push(Asked {
                pair: i,
                duplicate: p.duplicate,
                candidates,
            });
        }
        let mut cross_secs = 0.0;
        if let Some(cross) = cross {
            let started = std::time::Instant::now();
            cross_logits(cross, &mut asked, pairs, &texts1)?;
            cross_secs = started.elapsed().as_secs_f64();
        }
        Ok(Self {
            asked,
            pairs: pairs.len(),
            entries: texts1.len(),
            embed_secs,
            cross_secs,
        })
    }

    /// Scores at `threshold` over the pairs `select` keeps, with the given checks.
    pub fn score(&self, threshold: f32, checks: &[Check], select: impl Fn(usize) -> bool) -> Score {
        self.score_with(threshold, Acceptance::Rules(checks), select)
    }

    /// Training samples for the learned verifier: every candidate at or above `floor` of
    /// the selected queries, labeled right or not.
    pub fn samples(
        &self,
        floor: f32,
        select: impl Fn(usize) -> bool,
    ) -> Vec<([f32; FEATURES], bool)> {
        self.asked
            .iter()
            .filter(|a| select(a.pair))
            .flat_map(|a| a.candidates.iter())
            .filter(|c| c.similarity >= floor)
            .map(|c| (c.features, c.judgement == Judgement::Right))
            .collect()
    }

    /// Scores at `threshold` with any acceptance rule.
    pub fn score_with(
        &self,
        threshold: f32,
        accept: Acceptance<'_>,
        select: impl Fn(usize) -> bool,
    ) -> Score {
        let mut s = Score {
            threshold,
            ..Score::default()
        };
        for a in self.asked.iter().filter(|a| select(a.pair)) {
            s.queries += 1;
            if a.duplicate {
                s.positives += 1;
            }
            let mut above = a.candidates.iter().filter(|c| c.similarity >= threshold);
            let hit = match accept {
                // As the cache does: the cross-encoder reads the best few candidates that
                // pass the rule checks, and the first it accepts is the hit.
                Acceptance::Cross { rules, .. } => above
                    .filter(|c| !rules || c.verdict.is_ok())
                    .take(CROSS_MAX_READ)
                    .find(|c| accept.accepts(c)),
                _ => above.find(|c| accept.accepts(c)),
            };
            if let Some(Cand { judgement, .. }) = hit {
                s.hits += 1;
                match judgement {
                    Judgement::Right => {
                        s.correct += 1;
                        if a.duplicate {
                            s.recalled += 1;
                        }
                    }
                    Judgement::Wrong => s.false_hits += 1,
                    Judgement::Unjudged => {
                        s.false_hits += 1;
                        s.unjudged += 1;
                    }
                }
            }
        }
        s
    }
}

/// The cross-encoder's logit for every candidate at or above `CROSS_FLOOR`, on the
/// normalised texts the gateway stores and asks with, in packed batches.
fn cross_logits(
    cross: &CrossVerifier,
    asked: &mut [Asked],
    pairs: &[Pair],
    texts1: &[&str],
) -> Result<(), String> {
    let norm = super::key::normalise;
    let mut todo: Vec<(usize, usize, String, String, f32)> = Vec::new();
    for (a, q) in asked.iter().enumerate() {
        let query = norm(&pairs[q.pair].text2);
        for (c, cand) in q.candidates.iter().enumerate() {
            if cand.similarity >= CROSS_FLOOR {
                let cached = norm(texts1[cand.entry]);
                todo.push((a, c, cached, query.clone(), cand.similarity));
            }
        }
    }
    for chunk in todo.chunks(64) {
        let batch: Vec<(&str, &str, f32)> = chunk
            .iter()
            .map(|(_, _, cached, query, s)| (cached.as_str(), query.as_str(), *s))
            .collect();
        let logits = cross.logits(&batch).map_err(|e| e.to_string())?;
        for ((a, c, _, _, _), logit) in chunk.iter().zip(logits) {
            asked[*a].candidates[*c].cross = logit;
        }
    }
    Ok(())
}

impl Score {
    /// Two scores' counts together (several files).
    pub fn add(mut self, o: &Score) -> Score {
        self.queries += o.queries;
        self.positives += o.positives;
        self.hits += o.hits;
        self.correct += o.correct;
        self.false_hits += o.false_hits;
        self.unjudged += o.unjudged;
        self.recalled += o.recalled;
        self
    }
}

/// The error bound's calibration: scanning a knob (a similarity threshold, a verifier's bar)
/// from its strictest value `from` towards `to` in steps of `step`, the loosest value such
/// that it and every stricter one keep the upper end of the 95 % (Wilson) interval of
/// `score(knob)`'s false-hit rate at most `max`: on held-out pairs, the bound then holds with
/// 95 % confidence, not just on average. `from` when even it does not.
pub fn calibrate_bound(
    max: f64,
    (from, to, step): (f32, f32, f32),
    score: impl Fn(f32) -> Score,
) -> f32 {
    let steps = ((from - to) / step).round().max(0.0) as u32;
    let mut best = from;
    for k in 0..=steps {
        let knob = from - k as f32 * step;
        let s = score(knob);
        let (_, high) = super::feedback::wilson(s.false_hits as i64, s.queries as i64);
        if high > max {
            break;
        }
        best = knob;
    }
    best
}

/// The lowest threshold in 1.0, 0.995, ... 0.5 such that it and every threshold above it
/// keep `score(t)`'s false-hit rate at most `max_fhr`.
pub fn tune_threshold(max_fhr: f64, score: impl Fn(f32) -> Score) -> f32 {
    let mut best = 1.0f32;
    let mut t = 1.0f32;
    while t >= 0.5 {
        if score(t).false_hit_rate() > max_fhr {
            break;
        }
        best = t;
        t -= 0.005;
    }
    (best * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A family of knobs whose false-hit rate grows as the knob loosens.
    fn score_of(knob: f32, false_hits: impl Fn(f32) -> usize) -> Score {
        Score {
            threshold: knob,
            queries: 10_000,
            false_hits: false_hits(knob),
            ..Score::default()
        }
    }

    fn upper(s: &Score) -> f64 {
        crate::cache::feedback::wilson(s.false_hits as i64, s.queries as i64).1
    }

    #[test]
    fn judged_precision_leaves_the_unjudged_hits_out() {
        let s = Score {
            hits: 10,
            correct: 6,
            false_hits: 4,
            unjudged: 2,
            ..Score::default()
        };
        assert_eq!(s.precision(), 0.6);
        assert_eq!(s.judged_precision(), 0.75);
        let none_judged = Score {
            hits: 2,
            false_hits: 2,
            unjudged: 2,
            ..Score::default()
        };
        assert_eq!(none_judged.judged_precision(), 1.0);
        assert_eq!(Score::default().judged_precision(), 1.0);
    }

    #[test]
    fn the_bound_is_calibrated_on_the_upper_end_of_the_interval() {
        // 1 false hit per 1,000 queries for every 0.01 below 1.0.
        let fh = |t: f32| ((1.0 - t) * 1000.0).round() as usize;
        let grid = (1.0, 0.5, 0.005);
        for max in [0.005, 0.01, 0.03, 0.05] {
            let t = calibrate_bound(max, grid, |t| score_of(t, fh));
            assert!(upper(&score_of(t, fh)) <= max, "{max}: {t}");
            // One step looser breaks the bound: the loosest that holds was chosen.
            assert!(upper(&score_of(t - 0.005, fh)) > max, "{max}: {t}");
            // The point estimate is under the bound with room: the interval, not the mean.
            assert!(score_of(t, fh).false_hit_rate() < max * 0.95, "{max}: {t}");
        }
        // Looser bounds never give stricter knobs.
        let ts: Vec<f32> = [0.005, 0.01, 0.03, 0.05]
            .iter()
            .map(|&m| calibrate_bound(m, grid, |t| score_of(t, fh)))
            .collect();
        assert!(ts.windows(2).all(|w| w[0] >= w[1]), "{ts:?}");
    }

    #[test]
    fn the_scan_stops_at_the_first_knob_that_breaks_the_bound() {
        // A spike at 0.9 (say, a cluster of look-alikes): looser knobs with fewer false hits
        // further down do not count, since every knob stricter than the chosen one must hold.
        let fh = |t: f32| if (t - 0.9).abs() < 1e-4 { 500 } else { 0 };
        let t = calibrate_bound(0.01, (1.0, 0.5, 0.005), |t| score_of(t, fh));
        assert!((t - 0.905).abs() < 1e-4, "{t}");
        // With no queries nothing can be claimed: the strictest knob.
        let empty = calibrate_bound(0.5, (1.0, 0.5, 0.005), |t| Score {
            threshold: t,
            ..Score::default()
        });
        assert_eq!(empty, 1.0);
        // Bars (logits) scan downwards the same way.
        let bar = calibrate_bound(0.01, (12.0, -6.0, 0.1), |b| {
            score_of(b, |b| if b < 2.0 { 1_000 } else { 0 })
        });
        assert!((bar - 2.0).abs() < 1e-3, "{bar}");
    }

    #[test]
    fn the_cross_encoder_reads_the_best_candidates_that_pass_the_rules_and_no_more() {
        let cand = |entry, similarity, verdict, cross| Cand {
            entry,
            similarity,
            verdict,
            judgement: Judgement::Right,
            features: [0.0; FEATURES],
            cross,
        };
        let eval = |candidates| Evaluation {
            asked: vec![Asked {
                pair: 0,
                duplicate: true,
                candidates,
            }],
            pairs: 1,
            entries: 4,
            embed_secs: 0.0,
            cross_secs: 0.0,
        };
        let bar = |min_logit| Acceptance::Cross {
            min_logit,
            rules: true,
        };
        let hits = |e: &Evaluation| e.score_with(CROSS_FLOOR, bar(1.0), all).hits;
        // A rule veto does not use up a read: the accepted candidate is the second read.
        let mut cands = vec![
            cand(0, 0.95, Ok(()), -3.0),
            cand(1, 0.93, Err(Check::Numbers), 9.0),
            cand(2, 0.90, Ok(()), 4.0),
        ];
        assert_eq!(hits(&eval(cands)), 1);
        // Past the first CROSS_MAX_READ that pass the rules, a candidate is not read.
        cands = (0..CROSS_MAX_READ)
            .map(|i| cand(i, 0.95 - i as f32 * 0.01, Ok(()), -3.0))
            .chain([cand(9, 0.80, Ok(()), 4.0)])
            .collect();
        assert_eq!(hits(&eval(cands)), 0);
        // Below the floor nothing is read, whatever its logit.
        let below = eval(vec![cand(0, CROSS_FLOOR - 0.01, Ok(()), 9.0)]);
        assert_eq!(hits(&below), 0);
        // The cross-encoder alone (no rules) reads vetoed candidates too.
        let alone = eval(vec![cand(1, 0.93, Err(Check::Numbers), 9.0)]);
        let score = alone.score_with(
            CROSS_FLOOR,
            Acceptance::Cross {
                min_logit: 1.0,
                rules: false,
            },
            all,
        );
        assert_eq!(score.hits, 1);
    }

    fn all(_: usize) -> bool {
        true
    }
}
