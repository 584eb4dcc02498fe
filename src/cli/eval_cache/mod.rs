//! `quartermaster eval cache`: caches every text1 of labeled pairs, asks every text2, and
//! prints precision, recall and false-hit rate per acceptance stage, the curve over
//! thresholds, and a threshold tuned on half the pairs and tested on the other half.

use std::path::PathBuf;

use super::CacheEvalArgs;
use crate::cache::eval::{
    Acceptance, Evaluation, Score, calibrate_bound, read_pairs, tune_threshold,
};
use crate::cache::verify::{Check, CrossVerifier, LearnedVerifier};
use crate::cache::{CROSS_FLOOR, CacheConfig, VerifierMode};
use crate::config::Config;

mod cross;
mod verdicts;
use cross::{
    CURVE_BARS, calibrate_cross, calibration_quarter, cross_at, print_cross_calibration,
    print_cross_curve,
};

/// Candidates below this similarity are never served, whatever the learned verifier says.
const LEARNED_FLOOR: f32 = 0.70;

/// One pairs file, evaluated.
struct FileEval {
    path: PathBuf,
    positives: usize,
    eval: Evaluation,
}

const NONE: &[Check] = &[];

fn all(_: usize) -> bool {
    true
}
fn tune_half(i: usize) -> bool {
    i % 2 == 0
}
fn test_half(i: usize) -> bool {
    i % 2 == 1
}
pub fn run(config: &Config, args: CacheEvalArgs) -> anyhow::Result<()> {
    let model = super::load_embed_model(config)?;
    let cross = match &args.cross_weights {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("--cross-weights {}: {e}", path.display()))?;
            CrossVerifier::from_weights(&config.embeddings.model_dir, &bytes)?
        }
        None => CrossVerifier::load(&config.embeddings.model_dir)?,
    };
    let c = &config.cache;
    let hand = args.verdicts.as_deref().map(verdicts::read).transpose()?;
    let mut evals = Vec::new();
    for path in &args.pairs {
        let pairs = read_pairs(path).map_err(anyhow::Error::msg)?;
        let mut eval = Evaluation::run(&model, &pairs, c.candidates, Some(&cross))
            .map_err(anyhow::Error::msg)?;
        if let Some(v) = &hand {
            eval.set_verdicts(|query, cached| v.get(&verdicts::key(query, cached)).copied());
        }
        let positives = pairs.iter().filter(|p| p.duplicate).count();
        evals.push(FileEval {
            path: path.clone(),
            positives,
            eval,
        });
    }
    for f in &evals {
        print_file(f, c, args.threshold, &args.curve);
    }
    print_unseen(&evals, args.max_false_hit_rate, args.fit);
    let judgeable = print_cross_curve(&evals);
    if let Some(path) = &args.list_to_judge {
        let n = verdicts::write_unread(path, judgeable)?;
        println!("\n{n} hits without a verdict written to {}", path.display());
    }
    if args.calibrate {
        print_calibration(&evals);
        print_cross_calibration(&evals);
    }
    if let Some(path) = &args.traps {
        print_traps(&model, &cross, path, c, args.threshold)?;
    }
    Ok(())
}

/// Traps answered wrongly (a hit on another question than their own text) and paraphrases
/// answered rightly, over the similarity threshold, with each acceptance; then per kind at
/// the configured threshold.
fn print_traps(
    model: &crate::embed::EmbedModel,
    cross: &CrossVerifier,
    path: &std::path::Path,
    c: &CacheConfig,
    asked: Option<f32>,
) -> anyhow::Result<()> {
    let pairs = read_pairs(path).map_err(anyhow::Error::msg)?;
    let kinds: Vec<String> = std::fs::read_to_string(path)?
        .lines()
        .skip(1)
        .filter(|l| l.split('\t').count() >= 3)
        .map(|l| l.split('\t').nth(3).unwrap_or("").to_string())
        .collect();
    anyhow::ensure!(
        kinds.len() == pairs.len(),
        "{}: every row needs a kind",
        path.display()
    );
    let eval =
        Evaluation::run(model, &pairs, c.candidates, Some(cross)).map_err(anyhow::Error::msg)?;
    let is_trap: Vec<bool> = pairs.iter().map(|p| !p.duplicate).collect();
    let shipped = crate::cache::DEFAULT_VERIFIER;
    let rates = |t: f32, accept: Acceptance<'_>, keep: &dyn Fn(usize) -> bool| {
        let traps = eval.score_with(t, accept, |i| is_trap[i] && keep(i));
        let paras = eval.score_with(t, accept, |i| !is_trap[i] && keep(i));
        (
            traps.false_hits as f64 / traps.queries.max(1) as f64,
            paras.recall(),
            traps.queries,
            paras.queries,
        )
    };
    let (_, _, n_traps, n_paras) = rates(1.0, Acceptance::Similarity, &|_| true);
    println!(
        "\n## Trap set {}: {n_traps} traps, {n_paras} paraphrases\n",
        path.display()
    );
    println!(
        "| threshold | similarity only: traps hit / paraphrases hit | + rule checks | + rule checks + learned verifier (p >= {}) |",
        c.learned_min_probability()
    );
    println!("| --- | --- | --- | --- |");
    let mut t = 0.98f32;
    while t >= 0.699 {
        let cell = |a: Acceptance<'_>| {
            let (tr, pa, _, _) = rates(t, a, &|_| true);
            format!("{:.1} % / {:.1} %", tr * 100.0, pa * 100.0)
        };
        println!(
            "| {t:.2} | {} | {} | {} |",
            cell(Acceptance::Similarity),
            cell(Acceptance::Rules(&Check::ALL)),
            cell(Acceptance::Learned(&shipped, c.learned_min_probability()))
        );
        t -= 0.02;
    }
    println!(
        "\nThe cross-encoder over the logit bar (similarity floor {CROSS_FLOOR}): traps hit / paraphrases hit\n"
    );
    println!("| bar (logit) | cross-encoder alone | + rule checks |");
    println!("| --- | --- | --- |");
    let cross_rates = |bar: f32, rules: bool| {
        rates(
            CROSS_FLOOR,
            Acceptance::Cross {
                min_logit: bar,
                rules,
            },
            &|_| true,
        )
    };
    for bar in CURVE_BARS {
        let cell = |rules: bool| {
            let (tr, pa, _, _) = cross_rates(bar, rules);
            format!("{:.1} % / {:.1} %", tr * 100.0, pa * 100.0)
        };
        println!("| {bar:.1} | {} | {} |", cell(false), cell(true));
    }
    // The highest bar (8.0 down to -8.0 in steps of 0.05) at which 80 % of the paraphrases
    // are answered, and the traps hit there.
    for rules in [false, true] {
        let bar = (0..=320)
            .map(|k| 8.0 - k as f32 * 0.05)
            .find(|&bar| cross_rates(bar, rules).1 >= 0.80)
            .unwrap_or(-8.0);
        let (tr, pa, _, _) = cross_rates(bar, rules);
        println!(
            "\nCross-encoder{}: at the bar {bar:.2}, {:.1} % of paraphrases answered and {:.1} % of traps hit.",
            if rules { " + rule checks" } else { " alone" },
            pa * 100.0,
            tr * 100.0
        );
    }
    let t = threshold_for(c, c.verifier, asked);
    let accept = match c.verifier {
        VerifierMode::Cross => cross_at(c.cross_min_logit()),
        VerifierMode::Learned => Acceptance::Learned(&shipped, c.learned_min_probability()),
        VerifierMode::Rules => Acceptance::Rules(&Check::ALL),
        VerifierMode::None => Acceptance::Similarity,
    };
    println!(
        "\nPer kind at the configured settings (threshold {t:.3}, verifier {:?}): share answered (traps: with another question's answer; paraphrases: with the right entry)\n",
        c.verifier
    );
    println!("| kind | rows | answered |");
    println!("| --- | --- | --- |");
    let mut names: Vec<&String> = kinds.iter().collect();
    names.sort();
    names.dedup();
    for k in names {
        let keep = |i: usize| &kinds[i] == k;
        let (tr, pa, nt, np) = rates(t, accept, &keep);
        let (share, n) = if nt > 0 { (tr, nt) } else { (pa, np) };
        println!("| {k} | {n} | {:.1} % |", share * 100.0);
    }
    Ok(())
}

/// The bounds the shipped table covers.
const BOUNDS: [f64; 6] = [0.002, 0.005, 0.01, 0.02, 0.03, 0.05];

/// The lowest similarity threshold (rule checks on) whose false-hit rate on the selected
/// pairs has the upper end of its 95 % interval under `max`.
fn calibrate(evals: &[FileEval], max: f64, select: &dyn Fn(usize) -> bool) -> f32 {
    let best = calibrate_bound(max, (1.0, 0.5, 0.005), |t| {
        combined(evals, &|e| e.score(t, &Check::ALL, select))
    });
    (best * 1000.0).round() / 1000.0
}

fn interval(s: &Score) -> String {
    let (low, high) = crate::cache::feedback::wilson(s.false_hits as i64, s.queries as i64);
    format!(
        "{:.2} % [{:.2}, {:.2}]",
        s.false_hit_rate() * 100.0,
        low * 100.0,
        high * 100.0
    )
}

fn print_calibration(evals: &[FileEval]) {
    print_bound_table(
        evals,
        "rule checks on): the threshold chosen on the even-numbered pairs of all files",
        &Knob {
            name: "threshold",
            constant: "CALIBRATION",
            calibration: ("even (calibration)", &tune_half),
            calibrate: &|max| calibrate(evals, max, &tune_half),
            score: &|e, t, select| e.score(t, &Check::ALL, select),
            decimals: 3,
        },
    );
}

/// One calibration of the error bound: the knob it sets and how it is chosen and scored.
struct Knob<'a> {
    /// Its column in the table, and its table's name in src/cache/config.rs.
    name: &'a str,
    constant: &'a str,
    /// The pairs it is chosen on (their column's label, and which they are).
    calibration: (&'a str, &'a dyn Fn(usize) -> bool),
    /// Its value for a bound, chosen on those pairs.
    calibrate: &'a dyn Fn(f64) -> f32,
    /// The scores at a value on the selected pairs of one file.
    score: &'a dyn Fn(&Evaluation, f32, &dyn Fn(usize) -> bool) -> Score,
    decimals: usize,
}

/// For each bound: the knob's value, its false-hit rate with a 95 % interval on the pairs it
/// was chosen on and on the odd-numbered pairs, and the table to ship.
fn print_bound_table(evals: &[FileEval], how: &str, k: &Knob<'_>) {
    let (label, chosen_on) = k.calibration;
    println!(
        "\n## Calibration of cache.max_false_hit_rate ({how} (the upper end of the 95 % interval of its false-hit rate under the bound), then the odd-numbered pairs it never saw\n"
    );
    println!(
        "| bound | {} | false-hit rate, {label} [95 % interval] | false-hit rate, odd (unseen) [95 % interval] | recall, odd | precision, odd | odd under the bound |",
        k.name
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut table = Vec::new();
    for max in BOUNDS {
        let v = (k.calibrate)(max);
        let cal = combined(evals, &|e| (k.score)(e, v, chosen_on));
        let odd = combined(evals, &|e| (k.score)(e, v, &test_half));
        println!(
            "| {:.1} % | {v:.prec$} | {} | {} | {:.1} % | {:.1} % | {} |",
            max * 100.0,
            interval(&cal),
            interval(&odd),
            odd.recall() * 100.0,
            odd.precision() * 100.0,
            if odd.false_hit_rate() <= max {
                "yes"
            } else {
                "no"
            },
            prec = k.decimals
        );
        table.push((max, v));
    }
    println!(
        "\nFor src/cache/config.rs:\n\npub const {}: &[(f64, f32)] = &[",
        k.constant
    );
    for (max, v) in table {
        println!("    ({max}, {v:?}),");
    }
    println!("];");
}

fn header() {
    println!(
        "| | threshold | precision | recall | false-hit rate | hits | unjudged false hits | precision, judged hits |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
}

fn row(label: &str, s: &Score) {
    println!(
        "| {label} | {:.3} | {:.1} % | {:.1} % | {:.2} % | {} | {} | {:.1} % |",
        s.threshold,
        s.precision() * 100.0,
        s.recall() * 100.0,
        s.false_hit_rate() * 100.0,
        s.hits,
        s.unjudged,
        s.judged_precision() * 100.0
    );
}

/// The similarity threshold the gateway would apply with `verifier` and this config (a
/// `--threshold` given on the command line standing in for `cache.threshold`): each verifier
/// has its own first stage, and the cross-encoder's is never below its floor.
fn threshold_for(c: &CacheConfig, verifier: VerifierMode, threshold: Option<f32>) -> f32 {
    CacheConfig {
        verifier,
        threshold: threshold.or(c.threshold),
        ..c.clone()
    }
    .effective_threshold()
}

/// One file at the configured settings, what each rule check gains, and the curve.
fn print_file(f: &FileEval, c: &CacheConfig, asked: Option<f32>, curve: &[f32]) {
    let shipped = crate::cache::DEFAULT_VERIFIER;
    let threshold = threshold_for(c, VerifierMode::Rules, asked);
    let learned_threshold = threshold_for(c, VerifierMode::Learned, asked);
    let cross_threshold = threshold_for(c, VerifierMode::Cross, asked);
    let eval = &f.eval;
    println!(
        "\n## {}: {} pairs ({} duplicates), {} cached entries, embedded in {:.1} s",
        f.path.display(),
        eval.pairs,
        f.positives,
        eval.entries,
        eval.embed_secs
    );
    println!(
        "\nAt the configured settings (similarity threshold {threshold}, learned verifier p >= {} over similarity {learned_threshold}, cross-encoder bar {:.1} over similarity {cross_threshold}):\n",
        c.learned_min_probability(),
        c.cross_min_logit()
    );
    header();
    row("similarity only", &eval.score(threshold, NONE, all));
    row("+ rule checks", &eval.score(threshold, &Check::ALL, all));
    row(
        "+ rule checks + learned verifier",
        &eval.score_with(
            learned_threshold,
            Acceptance::Learned(&shipped, c.learned_min_probability()),
            all,
        ),
    );
    row(
        "+ rule checks + cross-encoder",
        &eval.score_with(cross_threshold, cross_at(c.cross_min_logit()), all),
    );
    println!("\nWhat each rule check gains (rule checks without it):\n");
    println!("| without | precision | recall | false-hit rate |");
    println!("| --- | --- | --- | --- |");
    for skip in Check::ALL {
        let checks: Vec<Check> = Check::ALL.iter().copied().filter(|c| *c != skip).collect();
        let s = eval.score(threshold, &checks, all);
        println!(
            "| {} | {:.1} % | {:.1} % | {:.2} % |",
            skip.as_str(),
            s.precision() * 100.0,
            s.recall() * 100.0,
            s.false_hit_rate() * 100.0
        );
    }
    println!("\nPrecision/recall curve over the similarity threshold:\n");
    header();
    for &t in curve {
        row("similarity only", &eval.score(t, NONE, all));
        row("+ rule checks", &eval.score(t, &Check::ALL, all));
        row(
            "+ rule checks + learned verifier",
            &eval.score_with(
                t,
                Acceptance::Learned(&shipped, c.learned_min_probability()),
                all,
            ),
        );
    }
}

/// Every file's score summed.
fn combined(evals: &[FileEval], f: &dyn Fn(&Evaluation) -> Score) -> Score {
    evals
        .iter()
        .fold(Score::default(), |acc, e| acc.add(&f(&e.eval)))
}

fn fit_on(evals: &[FileEval], select: &dyn Fn(usize) -> bool) -> LearnedVerifier {
    let samples: Vec<_> = evals
        .iter()
        .flat_map(|e| e.eval.samples(LEARNED_FLOOR, select))
        .collect();
    LearnedVerifier::fit(&samples)
}

/// The learned verifier's two knobs (the similarity floor, the probability) with the best
/// recall under the false-hit bound.
fn best_learned(
    evals: &[FileEval],
    v: &LearnedVerifier,
    max: f64,
    select: &dyn Fn(usize) -> bool,
) -> (f32, f32) {
    let mut best = (0.0f64, 1.0f32, 1.0f32);
    for floor in [0.70f32, 0.75, 0.80, 0.85, 0.90] {
        let p = tune_threshold(max, |q| {
            combined(evals, &|e| {
                e.score_with(floor, Acceptance::Learned(v, q), select)
            })
        });
        let recall = combined(evals, &|e| {
            e.score_with(floor, Acceptance::Learned(v, p), select)
        })
        .recall();
        if recall > best.0 {
            best = (recall, floor, p);
        }
    }
    (best.1, best.2)
}

/// Unseen data: everything is tuned (and the verifier fitted) on the even-numbered pairs of
/// every file together, and scored on the odd-numbered pairs it never saw.
fn print_unseen(evals: &[FileEval], max: f64, fit: bool) {
    let t_sim = tune_threshold(max, |t| combined(evals, &|e| e.score(t, NONE, tune_half)));
    let t_rules = tune_threshold(max, |t| {
        combined(evals, &|e| e.score(t, &Check::ALL, tune_half))
    });
    let half_model = fit_on(evals, &tune_half);
    let (floor, p) = best_learned(evals, &half_model, max, &tune_half);
    let bar = calibrate_cross(evals, max, &calibration_quarter);
    println!(
        "\n## Unseen pairs: tuned for a false-hit rate <= {:.1} % on the even-numbered pairs of all files, scored on the odd-numbered ones\n",
        max * 100.0
    );
    for f in evals {
        println!("\n{}:\n", f.path.display());
        header();
        row("similarity only", &f.eval.score(t_sim, NONE, test_half));
        row(
            "+ rule checks",
            &f.eval.score(t_rules, &Check::ALL, test_half),
        );
        row(
            &format!("+ rule checks + learned verifier (p >= {p:.2})"),
            &f.eval
                .score_with(floor, Acceptance::Learned(&half_model, p), test_half),
        );
        row(
            &format!("+ rule checks + cross-encoder (bar {bar:.1}, from the calibration quarter)"),
            &f.eval.score_with(CROSS_FLOOR, cross_at(bar), test_half),
        );
    }
    if fit {
        let full = fit_on(evals, &all);
        let (floor, p) = best_learned(evals, &full, max, &all);
        println!(
            "\nFitted on every pair (for src/cache/mod.rs): threshold = {floor}, min_probability = {p:.2}\n{full:?}"
        );
    }
}
