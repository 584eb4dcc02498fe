//! Counting an evaluation: the scores at one setting, and the calibration of the bound and
//! of a raw threshold from them.

use crate::cache::feedback::wilson;

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
    /// False hits (labeled different or unjudged) a hand verdict calls the same question
    /// (still in `false_hits`).
    pub hand_same: usize,
    /// False hits a hand verdict calls unclear.
    pub hand_unclear: usize,
    /// False hits a hand verdict calls different too.
    pub hand_different: usize,
    /// Right hits on a labeled duplicate a hand verdict calls different (still in `correct`).
    pub hand_overturned: usize,
    /// Right hits on a labeled duplicate a hand verdict calls unclear.
    pub hand_doubtful: usize,
    /// Hits without a hand verdict (a cached text identical to the query needs none).
    pub hand_unread: usize,
    /// Duplicate-labeled queries answered with a right entry.
    pub recalled: usize,
}

/// `num / den`, or `empty` when nothing was counted.
fn ratio(num: usize, den: usize, empty: f64) -> f64 {
    if den == 0 {
        empty
    } else {
        num as f64 / den as f64
    }
}

impl Score {
    pub fn precision(&self) -> f64 {
        ratio(self.correct, self.hits, 1.0)
    }
    /// Precision over the hits a label judges (unjudged hits left out). Labels link only the
    /// pairs of the file, so many unjudged hits are duplicates no pair happens to name:
    /// `precision` is the lower end, this the estimate if they were right as often as the
    /// judged ones.
    pub fn judged_precision(&self) -> f64 {
        ratio(self.correct, self.hits.saturating_sub(self.unjudged), 1.0)
    }
    /// Precision by the hand verdicts, hits judged unclear counted wrong: a hit is right
    /// when judged the same question; a hit without a verdict keeps the labels' reading.
    pub fn adjudicated_precision(&self) -> f64 {
        self.by_hand(false)
    }
    /// The same, with the hits judged unclear counted right (the upper end).
    pub fn adjudicated_precision_high(&self) -> f64 {
        self.by_hand(true)
    }
    fn by_hand(&self, unclear_right: bool) -> f64 {
        ratio(self.right_by_hand(unclear_right), self.hits, 1.0)
    }
    /// The hits right by the hand verdicts (a hit without one keeps the labels' reading),
    /// those judged unclear counted right or wrong.
    pub fn right_by_hand(&self, unclear_right: bool) -> usize {
        let (gained, lost) = if unclear_right {
            (self.hand_same + self.hand_unclear, self.hand_overturned)
        } else {
            (self.hand_same, self.hand_overturned + self.hand_doubtful)
        };
        (self.correct + gained).saturating_sub(lost)
    }
    /// A 95 % Wilson interval around the two hand-verdict precisions: the lower bound of
    /// [`Score::adjudicated_precision`] (unclear hits wrong) and the upper bound of
    /// [`Score::adjudicated_precision_high`] (unclear hits right); (0, 1) without hits.
    pub fn hand_interval(&self) -> (f64, f64) {
        let interval = |right: usize| wilson(right as i64, self.hits as i64);
        (
            interval(self.right_by_hand(false)).0,
            interval(self.right_by_hand(true)).1,
        )
    }
    pub fn recall(&self) -> f64 {
        ratio(self.recalled, self.positives, 0.0)
    }
    /// False hits per query asked.
    pub fn false_hit_rate(&self) -> f64 {
        ratio(self.false_hits, self.queries, 0.0)
    }
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
        self.hand_same += o.hand_same;
        self.hand_unclear += o.hand_unclear;
        self.hand_different += o.hand_different;
        self.hand_overturned += o.hand_overturned;
        self.hand_doubtful += o.hand_doubtful;
        self.hand_unread += o.hand_unread;
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
        let (_, high) = wilson(s.false_hits as i64, s.queries as i64);
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
