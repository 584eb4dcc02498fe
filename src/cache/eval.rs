//! `quartermaster eval cache --pairs FILE.tsv`: every text1 goes into one cache (a real
//! HNSW index, the gateway's embedder and verification stage), every text2 is asked, and a
//! hit counts as correct only when it returns the same pair's text1 and the pair is labeled
//! a duplicate. Everything else answered from the cache is a false hit.

use std::collections::HashMap;
use std::path::Path;

use super::index::{HnswIndex, HnswParams};
use super::verify::{self, Check};
use crate::embed::EmbedModel;

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

/// A query's candidates: (text1 id, similarity, passes verification / the check that vetoed).
struct Asked {
    pair: usize,
    own: usize,
    duplicate: bool,
    candidates: Vec<(usize, f32, Result<(), Check>)>,
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
}

impl Score {
    pub fn precision(&self) -> f64 {
        if self.hits == 0 {
            1.0
        } else {
            self.correct as f64 / self.hits as f64
        }
    }
    pub fn recall(&self) -> f64 {
        if self.positives == 0 {
            0.0
        } else {
            self.correct as f64 / self.positives as f64
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
}

impl Evaluation {
    /// Embeds and indexes every text1, asks every text2 for its `k` nearest candidates.
    pub fn run(model: &EmbedModel, pairs: &[Pair], k: usize) -> Result<Self, String> {
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
        let mut asked = Vec::with_capacity(pairs.len());
        for (i, (p, e)) in pairs.iter().zip(e2).enumerate() {
            let candidates = index
                .search_sync("eval", "fp", &e.vector, k)
                .into_iter()
                .map(|c| {
                    let id: usize = c.entry_id.parse().expect("numeric ids");
                    let cached = super::key::normalise(texts1[id]);
                    let query = super::key::normalise(&p.text2);
                    (
                        id,
                        c.similarity,
                        verify::verify(&query, &cached, &Check::ALL),
                    )
                })
                .collect();
            asked.push(Asked {
                pair: i,
                own: ids[p.text1.as_str()],
                duplicate: p.duplicate,
                candidates,
            });
        }
        Ok(Self {
            asked,
            pairs: pairs.len(),
            entries: texts1.len(),
            embed_secs,
        })
    }

    /// Scores at `threshold` over the pairs `select` keeps, with the given checks.
    pub fn score(&self, threshold: f32, checks: &[Check], select: impl Fn(usize) -> bool) -> Score {
        let mut s = Score {
            threshold,
            ..Score::default()
        };
        for a in self.asked.iter().filter(|a| select(a.pair)) {
            s.queries += 1;
            if a.duplicate {
                s.positives += 1;
            }
            let hit = a.candidates.iter().find(|(_, sim, verdict)| {
                *sim >= threshold
                    && match verdict {
                        Ok(()) => true,
                        Err(c) => !checks.contains(c),
                    }
            });
            if let Some((id, _, _)) = hit {
                s.hits += 1;
                if *id == a.own && a.duplicate {
                    s.correct += 1;
                } else {
                    s.false_hits += 1;
                }
            }
        }
        s
    }

    /// The lowest threshold (most recall) such that it and every threshold above it keep
    /// the false-hit rate at most `max_fhr` on the selected pairs (steps of 0.005).
    pub fn tune(
        &self,
        max_fhr: f64,
        checks: &[Check],
        select: impl Fn(usize) -> bool + Copy,
    ) -> f32 {
        let mut best = 1.0f32;
        let mut t = 1.0f32;
        while t >= 0.5 {
            if self.score(t, checks, select).false_hit_rate() > max_fhr {
                break;
            }
            best = t;
            t -= 0.005;
        }
        (best * 1000.0).round() / 1000.0
    }
}
