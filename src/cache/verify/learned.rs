//! The learned verifier: features of a (query, cached query, similarity) triple and a
//! logistic regression over them, fitted offline by `quartermaster eval cache --fit`.

use super::lexicon::{QUESTION_WORDS, is_stopword};
use super::*;

/// Features of a (query, cached query, similarity) triple for the learned verifier.
pub const FEATURES: usize = 11;

/// Reads the whole of both texts, in n log n time. On the request path it runs only on a
/// candidate that passed [`verify`] with every check, [`Check::Length`] among them, so
/// neither text is longer than [`MAX_VERIFY_CHARS`] there.
pub fn features(query: &str, cached: &str, similarity: f32) -> [f32; FEATURES] {
    let a = words(query);
    let b = words(cached);
    let content = |ws: &[Word]| -> BTreeSet<String> {
        ws.iter()
            .map(|w| w.lower.trim_end_matches("'s").to_string())
            .filter(|w| !is_stopword(w))
            .collect()
    };
    let (ca, cb) = (content(&a), content(&b));
    let jaccard = |x: &BTreeSet<String>, y: &BTreeSet<String>| {
        let union = x.union(y).count();
        if union == 0 {
            1.0
        } else {
            x.intersection(y).count() as f32 / union as f32
        }
    };
    let trigrams = |t: &str| -> BTreeSet<String> {
        let chars: Vec<char> = t
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric())
            .collect();
        chars.windows(3).map(|w| w.iter().collect()).collect()
    };
    let (ta, tb) = (trigrams(query), trigrams(cached));
    let (la, lb) = (a.len().max(1) as f32, b.len().max(1) as f32);
    fn qwords(ws: &[Word]) -> BTreeSet<&str> {
        ws.iter()
            .map(|w| w.lower.as_str())
            .filter(|w| QUESTION_WORDS.contains(w))
            .collect()
    }
    let (qa, qb) = (qwords(&a), qwords(&b));
    let flag = |x: bool| if x { 1.0 } else { 0.0 };
    [
        similarity,
        similarity * similarity,
        jaccard(&ca, &cb),
        jaccard(&ta, &tb),
        la.min(lb) / la.max(lb),
        flag(numbers(&a) != numbers(&b)),
        flag(negated(&a) != negated(&b)),
        flag(has_antonym_swap(&a, &b)),
        flag(!same_targets(&a, &b)),
        flag(!same_order(&a, &b)),
        flag(!qa.is_empty() && !qb.is_empty() && qa.is_disjoint(&qb)),
    ]
}

/// Logistic regression over [`features`]: the probability that serving the cached answer
/// is right. Weights come from `quartermaster eval cache --fit` on labeled pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnedVerifier {
    pub weights: [f32; FEATURES],
    pub bias: f32,
}

impl LearnedVerifier {
    pub fn probability(&self, f: &[f32; FEATURES]) -> f32 {
        let z: f32 = self.bias + self.weights.iter().zip(f).map(|(w, x)| w * x).sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }

    /// Fits by Newton's method (iteratively reweighted least squares) with a small ridge
    /// penalty: converges in a few iterations, deterministic.
    pub fn fit(samples: &[([f32; FEATURES], bool)]) -> Self {
        const D: usize = FEATURES + 1; // + bias
        let mut beta = [0f64; D];
        if samples.is_empty() {
            return Self {
                weights: [0.0; FEATURES],
                bias: 0.0,
            };
        }
        let row = |x: &[f32; FEATURES]| {
            let mut r = [1f64; D];
            for i in 0..FEATURES {
                r[i] = f64::from(x[i]);
            }
            r
        };
        let ridge = 1e-3 * samples.len() as f64 / 1000.0;
        for _ in 0..50 {
            let mut h = [[0f64; D]; D];
            let mut g = [0f64; D];
            for (x, y) in samples {
                let r = row(x);
                let z: f64 = r.iter().zip(&beta).map(|(a, b)| a * b).sum();
                let p = 1.0 / (1.0 + (-z).exp());
                let w = (p * (1.0 - p)).max(1e-9);
                let err = (if *y { 1.0 } else { 0.0 }) - p;
                for i in 0..D {
                    g[i] += err * r[i];
                    for j in 0..D {
                        h[i][j] += w * r[i] * r[j];
                    }
                }
            }
            for i in 0..D {
                g[i] -= ridge * beta[i];
                h[i][i] += ridge;
            }
            let Some(step) = solve(h, g) else { break };
            let mut change = 0f64;
            for i in 0..D {
                beta[i] += step[i];
                change = change.max(step[i].abs());
            }
            if change < 1e-6 {
                break;
            }
        }
        let mut weights = [0f32; FEATURES];
        for i in 0..FEATURES {
            weights[i] = beta[i] as f32;
        }
        Self {
            weights,
            bias: beta[FEATURES] as f32,
        }
    }
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting.
fn solve<const D: usize>(mut a: [[f64; D]; D], mut b: [f64; D]) -> Option<[f64; D]> {
    for col in 0..D {
        let pivot = (col..D).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in col + 1..D {
            let f = a[r][col] / a[col][col];
            for c in col..D {
                a[r][c] -= f * a[col][c];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0f64; D];
    for r in (0..D).rev() {
        let s: f64 = (r + 1..D).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}
