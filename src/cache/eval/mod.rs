//! `quartermaster eval cache --pairs FILE.tsv`: every text1 goes into one cache (a real
//! HNSW index, the gateway's embedder and verification stage), every text2 is asked. A hit
//! is right when the entry's text is the query's own text or a pair in the file labels the
//! two duplicates; it is a false hit when a pair labels them different, and also (counted
//! apart as "unjudged") when no label links them: a cache cannot assume those are right.

mod score;

use std::collections::HashMap;
use std::path::Path;

use super::verify::{self, Check, CrossVerifier, FEATURES, LearnedVerifier};
use super::{CROSS_FLOOR, CROSS_MAX_READ};
use crate::embed::EmbedModel;
use crate::index::{HnswIndex, HnswParams};

pub use score::{Score, calibrate_bound, tune_threshold};

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
/// Each but the first carries a hand verdict when one was given (`eval cache --verdicts`).
enum Judgement {
    /// The same text (after whitespace normalisation).
    Identical,
    /// A pair labeled duplicate.
    Duplicate(Option<Verdict>),
    /// A pair labeled not duplicate.
    Wrong(Option<Verdict>),
    /// No label links the two: counted as wrong (a cache cannot assume it is right).
    Unjudged(Option<Verdict>),
}

impl Judgement {
    fn right(&self) -> bool {
        matches!(self, Judgement::Identical | Judgement::Duplicate(_))
    }
    fn hand(&self) -> Option<Verdict> {
        match self {
            Judgement::Identical => None,
            Judgement::Duplicate(v) | Judgement::Wrong(v) | Judgement::Unjudged(v) => *v,
        }
    }
}

/// A hand verdict on a query and the cached question served for it: would one answer serve
/// both?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Same,
    Different,
    Unclear,
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

pub struct Evaluation {
    asked: Vec<Asked>,
    /// Normalised texts: each pair's query (text2) and each cached entry (text1).
    queries: Vec<String>,
    entry_texts: Vec<String>,
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
                        Judgement::Identical
                    } else {
                        match labels.get(&(query.clone(), cached.clone())) {
                            Some(true) => Judgement::Duplicate(None),
                            Some(false) => Judgement::Wrong(None),
                            None => Judgement::Unjudged(None),
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
            queries: pairs.iter().map(|p| norm(&p.text2)).collect(),
            entry_texts: texts1.iter().map(|t| norm(t)).collect(),
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
            .map(|c| (c.features, c.judgement.right()))
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
            let Some(hit) = hit(a, threshold, accept) else {
                continue;
            };
            s.hits += 1;
            let j = hit.judgement;
            if j.right() {
                s.correct += 1;
                if a.duplicate {
                    s.recalled += 1;
                }
            } else {
                s.false_hits += 1;
                if matches!(j, Judgement::Unjudged(_)) {
                    s.unjudged += 1;
                }
            }
            match (j.right(), j.hand()) {
                _ if j == Judgement::Identical => {}
                (_, None) => s.hand_unread += 1,
                (true, Some(Verdict::Different)) => s.hand_overturned += 1,
                (true, Some(Verdict::Unclear)) => s.hand_doubtful += 1,
                (false, Some(Verdict::Same)) => s.hand_same += 1,
                (false, Some(Verdict::Unclear)) => s.hand_unclear += 1,
                (false, Some(Verdict::Different)) => s.hand_different += 1,
                (true, Some(Verdict::Same)) => {}
            }
        }
        s
    }
}

/// The candidate the cache serves for `a` at `threshold` with `accept`, if any.
fn hit<'e>(a: &'e Asked, threshold: f32, accept: Acceptance<'_>) -> Option<&'e Cand> {
    let mut above = a.candidates.iter().filter(|c| c.similarity >= threshold);
    match accept {
        // As the cache does: the cross-encoder reads the best few candidates that pass the
        // rule checks, and the first it accepts is the hit.
        Acceptance::Cross { rules, .. } => above
            .filter(|c| !rules || c.verdict.is_ok())
            .take(CROSS_MAX_READ)
            .find(|c| accept.accepts(c)),
        _ => above.find(|c| accept.accepts(c)),
    }
}

impl Evaluation {
    /// Gives every candidate but an identical text the hand verdict `verdict(query,
    /// cached)` returns (normalised texts).
    pub fn set_verdicts(&mut self, verdict: impl Fn(&str, &str) -> Option<Verdict>) {
        for a in &mut self.asked {
            let query = &self.queries[a.pair];
            for c in &mut a.candidates {
                if let Judgement::Duplicate(v) | Judgement::Wrong(v) | Judgement::Unjudged(v) =
                    &mut c.judgement
                {
                    *v = verdict(query, &self.entry_texts[c.entry]);
                }
            }
        }
    }

    /// The hits a reader can judge (all but a cached text identical to the query) at
    /// `threshold` with `accept` on the selected pairs: (query, cached question, hand
    /// verdict), normalised.
    pub fn judgeable_hits(
        &self,
        threshold: f32,
        accept: Acceptance<'_>,
        select: impl Fn(usize) -> bool,
    ) -> Vec<(&str, &str, Option<Verdict>)> {
        self.asked
            .iter()
            .filter(|a| select(a.pair))
            .filter_map(|a| {
                let c = hit(a, threshold, accept)?;
                (c.judgement != Judgement::Identical).then(|| {
                    (
                        self.queries[a.pair].as_str(),
                        self.entry_texts[c.entry].as_str(),
                        c.judgement.hand(),
                    )
                })
            })
            .collect()
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

#[cfg(test)]
mod tests;
