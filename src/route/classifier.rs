//! The learned half of the router: logistic regression over sentence embeddings, trained on
//! labeled prompts (`easy` / `hard`). Embeddings are L2-normalised already, so the features
//! need no scaling; training is full-batch gradient descent with L2 regularisation (a few
//! hundred examples, well under a millisecond per epoch).

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Example {
    pub prompt: String,
    pub label: String,
}

impl Example {
    pub fn is_hard(&self) -> Result<bool, String> {
        match self.label.as_str() {
            "hard" => Ok(true),
            "easy" => Ok(false),
            other => Err(format!("label must be `easy` or `hard`, not `{other}`")),
        }
    }
}

/// Reads JSON Lines of `{"prompt", "label"}`; blank lines are skipped; errors name the line.
pub fn load_examples(path: &Path) -> Result<Vec<Example>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ex: Example =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        ex.is_hard()
            .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        out.push(ex);
    }
    if out.is_empty() {
        return Err(format!("{} has no examples", path.display()));
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct Classifier {
    weights: Vec<f32>,
    bias: f32,
    /// Its scores on `routing.eval_path` at thresholds 0.1 to 0.9, when one is set.
    pub evaluation: Option<Vec<ThresholdRow>>,
}

impl Classifier {
    /// Trains on `features` (one embedding per example) and `hard` labels.
    pub fn train(features: &[Vec<f32>], hard: &[bool]) -> Self {
        assert_eq!(features.len(), hard.len());
        let dim = features.first().map_or(0, Vec::len);
        let n = features.len().max(1) as f32;
        let (mut w, mut b) = (vec![0f32; dim], 0f32);
        // Classes may be unbalanced: weight each so both count equally.
        let positives = hard.iter().filter(|h| **h).count().max(1) as f32;
        let negatives = (hard.len() as f32 - positives).max(1.0);
        let (lr, l2) = (2.0f32, 1e-3f32);
        let mut grad = vec![0f32; dim];
        for _ in 0..600 {
            grad.iter_mut().for_each(|g| *g = 0.0);
            let mut grad_b = 0.0;
            for (x, &y) in features.iter().zip(hard) {
                let p = sigmoid(dot(&w, x) + b);
                let weight = if y {
                    n / (2.0 * positives)
                } else {
                    n / (2.0 * negatives)
                };
                let err = (p - if y { 1.0 } else { 0.0 }) * weight;
                for (g, xi) in grad.iter_mut().zip(x) {
                    *g += err * xi;
                }
                grad_b += err;
            }
            for (wi, g) in w.iter_mut().zip(&grad) {
                *wi -= lr * (g / n + l2 * *wi);
            }
            b -= lr * grad_b / n;
        }
        Self {
            weights: w,
            bias: b,
            evaluation: None,
        }
    }

    /// P(hard) for one embedding.
    pub fn p_hard(&self, embedding: &[f32]) -> f32 {
        sigmoid(dot(&self.weights, embedding) + self.bias)
    }

    pub fn dimensions(&self) -> usize {
        self.weights.len()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Decision accuracy and the share routed to the strong tier at one threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ThresholdRow {
    pub threshold: f32,
    pub accuracy: f32,
    pub strong_share: f32,
    /// Hard prompts sent to the cheap tier (quality risk).
    pub hard_to_cheap: f32,
    /// Easy prompts sent to the strong tier (wasted cost).
    pub easy_to_strong: f32,
}

pub fn evaluate(scores: &[f32], hard: &[bool], thresholds: &[f32]) -> Vec<ThresholdRow> {
    let n = scores.len().max(1) as f32;
    let hard_n = hard.iter().filter(|h| **h).count().max(1) as f32;
    let easy_n = (hard.len() as f32 - hard_n).max(1.0);
    thresholds
        .iter()
        .map(|&t| {
            let (mut correct, mut strong, mut h2c, mut e2s) = (0, 0, 0, 0);
            for (&s, &h) in scores.iter().zip(hard) {
                let to_strong = s >= t;
                strong += to_strong as usize;
                correct += (to_strong == h) as usize;
                h2c += (h && !to_strong) as usize;
                e2s += (!h && to_strong) as usize;
            }
            ThresholdRow {
                threshold: t,
                accuracy: correct as f32 / n,
                strong_share: strong as f32 / n,
                hard_to_cheap: h2c as f32 / hard_n,
                easy_to_strong: e2s as f32 / easy_n,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_separable_problem() {
        // Points on either side of a hyperplane in 4-d.
        let mut xs = vec![];
        let mut ys = vec![];
        for i in 0..100 {
            let a = (i as f32 * 0.37).sin();
            let b = (i as f32 * 0.91).cos();
            let hard = a + 0.5 * b > 0.1;
            xs.push(vec![a, b, 0.3, -0.2]);
            ys.push(hard);
        }
        let c = Classifier::train(&xs, &ys);
        let scores: Vec<f32> = xs.iter().map(|x| c.p_hard(x)).collect();
        let row = &evaluate(&scores, &ys, &[0.5])[0];
        assert!(row.accuracy > 0.9, "{row:?}");
    }

    #[test]
    fn evaluation_counts() {
        let rows = evaluate(
            &[0.9, 0.2, 0.6, 0.4],
            &[true, false, false, true],
            &[0.5, 0.0, 1.0],
        );
        assert_eq!(rows[0].accuracy, 0.5);
        assert_eq!(rows[0].strong_share, 0.5);
        assert_eq!(rows[0].hard_to_cheap, 0.5);
        assert_eq!(rows[0].easy_to_strong, 0.5);
        assert_eq!(rows[1].strong_share, 1.0);
        assert_eq!(rows[2].strong_share, 0.0);
    }
}

/// The router's evaluation: trains on `examples`, scores `eval` (both labeled JSON Lines),
/// and reports each threshold. Also the rules alone, for comparison.
pub struct EvalReport {
    pub train_examples: usize,
    pub eval_examples: usize,
    pub rows: Vec<ThresholdRow>,
    /// Share of eval prompts a rule (code/math, long prompt) would route before the
    /// classifier is asked.
    pub rule_share: f32,
}

pub fn evaluate_files(
    model: &crate::embed::EmbedModel,
    examples: &Path,
    eval: &Path,
    thresholds: &[f32],
) -> Result<EvalReport, String> {
    let train = load_examples(examples)?;
    let test = load_examples(eval)?;
    let embed = |set: &[Example]| -> Result<Vec<Vec<f32>>, String> {
        let texts: Vec<&str> = set.iter().map(|e| e.prompt.as_str()).collect();
        Ok(model
            .embed(&texts, 16_384)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| e.vector)
            .collect())
    };
    let labels = |set: &[Example]| -> Vec<bool> {
        set.iter().map(|e| e.is_hard().unwrap_or(false)).collect()
    };
    let classifier = Classifier::train(&embed(&train)?, &labels(&train));
    let scores: Vec<f32> = embed(&test)?.iter().map(|x| classifier.p_hard(x)).collect();
    let rule_hits = test
        .iter()
        .filter(|e| super::has_code_or_math(&e.prompt))
        .count();
    Ok(EvalReport {
        train_examples: train.len(),
        eval_examples: test.len(),
        rows: evaluate(&scores, &labels(&test), thresholds),
        rule_share: rule_hits as f32 / test.len().max(1) as f32,
    })
}
