//! The cross-encoder's part of `quartermaster eval cache`: its curve over the bar, the best
//! precision each stage reaches at recall >= 30 %, and the calibration of its bar for each
//! false-hit bound on the quarter of the pairs it was not trained on.

use super::{FileEval, Knob, NONE, combined, header, print_bound_table, row, test_half};
use crate::cache::CROSS_FLOOR;
use crate::cache::eval::{Acceptance, Score, Verdict, calibrate_bound};
use crate::cache::verify::Check;

/// The cross-encoder trains on the pairs with i % 4 == 0; its bar is calibrated on these,
/// which it never saw.
pub(super) fn calibration_quarter(i: usize) -> bool {
    i % 4 == 2
}

pub(super) fn cross_at(min_logit: f32) -> Acceptance<'static> {
    Acceptance::Cross {
        min_logit,
        rules: true,
    }
}

/// The cross-encoder's bars (logits) the curves are printed at.
pub(super) const CURVE_BARS: [f32; 12] =
    [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];

/// The lowest cross-encoder bar (similarity floor `CROSS_FLOOR`, rule checks on) whose
/// false-hit rate on the selected pairs has the upper end of its 95 % interval under `max`,
/// and every bar above it too.
pub(super) fn calibrate_cross(evals: &[FileEval], max: f64, select: &dyn Fn(usize) -> bool) -> f32 {
    let best = calibrate_bound(max, (12.0, -6.0, 0.1), |bar| {
        combined(evals, &|e| e.score_with(CROSS_FLOOR, cross_at(bar), select))
    });
    (best * 10.0).round() / 10.0
}

pub(super) fn print_cross_calibration(evals: &[FileEval]) {
    print_bound_table(
        evals,
        &format!(
            "the cross-encoder, similarity floor {CROSS_FLOOR}, rule checks on): the bar chosen on the pairs with index % 4 == 2 of all files, which it was not trained on"
        ),
        &Knob {
            name: "bar (logit)",
            constant: "CROSS_CALIBRATION",
            calibration: ("calibration quarter", &calibration_quarter),
            calibrate: &|max| calibrate_cross(evals, max, &calibration_quarter),
            score: &|e, bar, select| e.score_with(CROSS_FLOOR, cross_at(bar), select),
            decimals: 1,
        },
    );
}

/// The highest-precision operating point whose recall reaches `recall`, over a family of
/// acceptance rules (one per knob value), on the selected pairs.
fn precision_at_recall(
    recall: f64,
    knobs: &mut dyn Iterator<Item = (f32, Score)>,
) -> Option<(f32, Score)> {
    knobs
        .filter(|(_, s)| s.recall() >= recall)
        .max_by(|a, b| a.1.precision().total_cmp(&b.1.precision()))
}

/// On the odd-numbered pairs (never trained or tuned on): the cross-encoder's curve over its
/// bar, and the best precision each stage reaches at recall >= 0.30. Returns the hits a
/// reader can judge at those best points (all but identical texts).
pub(super) fn print_cross_curve(evals: &[FileEval]) -> Vec<(&str, &str, Option<Verdict>)> {
    let mut judgeable = Vec::new();
    for f in evals {
        let e = &f.eval;
        println!(
            "\n## {} (odd-numbered pairs): the cross-encoder over its bar (similarity floor {CROSS_FLOOR}); it read the candidates of {} queries in {:.1} s\n",
            f.path.display(),
            e.pairs,
            e.cross_secs
        );
        header();
        for bar in CURVE_BARS {
            row(
                &format!("cross-encoder + rule checks, bar {bar:.1}"),
                &e.score_with(CROSS_FLOOR, cross_at(bar), test_half),
            );
        }
        println!("\nBest precision at recall >= 30 % (odd-numbered pairs):\n");
        println!(
            "| stage | knob | precision | recall | false-hit rate | unjudged hits | precision, judged hits | precision by hand verdicts: unclear as wrong / as right [95 % Wilson interval: lower bound with unclear as wrong, upper bound with unclear as right] (hits judged different, unclear, without a verdict) |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        let sims = || (0..=100).map(|k| 1.0 - k as f32 * 0.005);
        let bars = || (0..=160).map(|k| 10.0 - k as f32 * 0.1);
        // Each stage: its knob's values, and how a value reads (threshold, acceptance).
        type Stage<'a> = (
            &'a str,
            Vec<f32>,
            &'a dyn Fn(f32) -> (f32, Acceptance<'static>),
        );
        let stages: [Stage<'_>; 3] = [
            ("similarity only (threshold)", sims().collect(), &|t| {
                (t, Acceptance::Rules(NONE))
            }),
            ("+ rule checks (threshold)", sims().collect(), &|t| {
                (t, Acceptance::Rules(&Check::ALL))
            }),
            (
                "+ rule checks + cross-encoder (bar)",
                bars().collect(),
                &|b| (CROSS_FLOOR, cross_at(b)),
            ),
        ];
        for (label, knobs, at) in stages {
            let score = |k: f32| {
                let (t, accept) = at(k);
                e.score_with(t, accept, test_half)
            };
            match precision_at_recall(0.30, &mut knobs.into_iter().map(|k| (k, score(k)))) {
                Some((k, s)) => {
                    let (low, high) = s.hand_interval();
                    println!(
                        "| {label} | {k:.3} | {:.1} % | {:.1} % | {:.2} % | {} | {:.1} % | {:.1} / {:.1} % [{:.1}, {:.1}] ({}, {}, {}) |",
                        s.precision() * 100.0,
                        s.recall() * 100.0,
                        s.false_hit_rate() * 100.0,
                        s.unjudged,
                        s.judged_precision() * 100.0,
                        s.adjudicated_precision() * 100.0,
                        s.adjudicated_precision_high() * 100.0,
                        low * 100.0,
                        high * 100.0,
                        s.hand_different + s.hand_overturned,
                        s.hand_unclear + s.hand_doubtful,
                        s.hand_unread
                    );
                    let (t, accept) = at(k);
                    judgeable.extend(e.judgeable_hits(t, accept, test_half));
                }
                None => println!("| {label} | — | recall 30 % not reached | | | | | |"),
            }
        }
    }
    judgeable
}
