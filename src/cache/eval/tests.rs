//! The evaluation's counting: acceptance, calibration of the bound, hand verdicts.

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
fn hand_verdicts_move_the_hand_count_both_ways_and_never_the_labels_count() {
    let cand = |entry, judgement| Cand {
        entry,
        similarity: 0.9,
        verdict: Ok(()),
        judgement,
        features: [0.0; FEATURES],
        cross: 0.0,
    };
    let asked = |pair, c| Asked {
        pair,
        duplicate: true,
        candidates: vec![c],
    };
    let texts = |n: usize, p: &str| (0..n).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    // Query qi hits entry ei. Labels: q0 identical text, q1-q3 labeled duplicates, q4
    // labeled different, q5-q8 unjudged.
    let mut e = Evaluation {
        asked: vec![
            asked(0, cand(0, Judgement::Identical)),
            asked(1, cand(1, Judgement::Duplicate(None))),
            asked(2, cand(2, Judgement::Duplicate(None))),
            asked(3, cand(3, Judgement::Duplicate(None))),
            asked(4, cand(4, Judgement::Wrong(None))),
            asked(5, cand(5, Judgement::Unjudged(None))),
            asked(6, cand(6, Judgement::Unjudged(None))),
            asked(7, cand(7, Judgement::Unjudged(None))),
            asked(8, cand(8, Judgement::Unjudged(None))),
        ],
        queries: texts(9, "q"),
        entry_texts: texts(9, "e"),
        pairs: 9,
        entries: 9,
        embed_secs: 0.0,
        cross_secs: 0.0,
    };
    let rules = Acceptance::Rules(&Check::ALL);
    let before = e.score_with(0.5, rules, all);
    assert_eq!((before.hits, before.correct, before.unjudged), (9, 4, 4));
    // Without verdicts the hand reading is the labels'; an identical text needs none.
    assert_eq!(before.hand_unread, 8);
    assert_eq!(before.adjudicated_precision(), before.precision());
    assert_eq!(before.adjudicated_precision_high(), before.precision());
    e.set_verdicts(|q, c| match (q, c) {
        ("q0", "e0") => panic!("an identical text is never judged"),
        ("q1", "e1") | ("q4", "e4") | ("q5", "e5") => Some(Verdict::Same),
        ("q2", "e2") | ("q8", "e8") => Some(Verdict::Different),
        ("q3", "e3") | ("q6", "e6") => Some(Verdict::Unclear),
        _ => None,
    });
    let after = e.score_with(0.5, rules, all);
    // The labels' counts do not move.
    assert_eq!((after.correct, after.false_hits, after.unjudged), (4, 5, 4));
    assert_eq!(
        (after.hand_same, after.hand_unclear, after.hand_different),
        (2, 1, 1)
    );
    assert_eq!((after.hand_overturned, after.hand_doubtful), (1, 1));
    assert_eq!(after.hand_unread, 1);
    // Right by hand, unclear wrong: q0, q1, q4, q5 (q7 unread: wrong, as labeled).
    assert_eq!(after.adjudicated_precision(), 4.0 / 9.0);
    // Unclear right too: + q3, q6.
    assert_eq!(after.adjudicated_precision_high(), 6.0 / 9.0);
    assert_eq!(
        (after.right_by_hand(false), after.right_by_hand(true)),
        (4, 6)
    );
    // Wilson at 95 %: 4 of 9 right (lower bound), 6 of 9 right (upper bound).
    let (low, high) = after.hand_interval();
    assert!((low - 0.188_779).abs() < 1e-5, "{low}");
    assert!((high - 0.879_416).abs() < 1e-5, "{high}");
    assert_eq!(Score::default().hand_interval(), (0.0, 1.0));
    // The list to judge: every hit but the identical text, with its verdict.
    let listed = e.judgeable_hits(0.5, rules, all);
    assert_eq!(listed.len(), 8);
    assert!(listed.contains(&("q7", "e7", None)));
    assert!(listed.contains(&("q2", "e2", Some(Verdict::Different))));
    assert!(!listed.iter().any(|(q, _, _)| *q == "q0"));
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
        judgement: Judgement::Duplicate(None),
        features: [0.0; FEATURES],
        cross,
    };
    let eval = |candidates| Evaluation {
        asked: vec![Asked {
            pair: 0,
            duplicate: true,
            candidates,
        }],
        queries: vec![String::new()],
        entry_texts: vec![String::new(); 10],
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
