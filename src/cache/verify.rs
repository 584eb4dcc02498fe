//! The verification stage after a vector match. Sentence embeddings place "flights from New
//! York to Florida" right next to "flights from Florida to New York", and "in Python" next
//! to "in Rust": a similarity threshold alone cannot tell them apart. These checks are cheap
//! (a few microseconds: tokenising two short strings) and each catches one kind of false
//! hit; `quartermaster eval cache` reports what each one gains.

use std::collections::{BTreeMap, BTreeSet};

/// The checks, each of which can veto a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// The numbers differ ("3 bedrooms" vs "4 bedrooms", "top five" vs "top ten").
    Numbers,
    /// One is negated and the other is not.
    Negation,
    /// A word is replaced by its antonym ("cheapest" vs "most expensive", "buy" vs "sell").
    Antonym,
    /// Named entities or targets differ ("in Python" vs "in Rust", "Paris" vs "Rome").
    Entities,
    /// The same entities in another order ("from New York to Florida" vs the reverse).
    Order,
}

impl Check {
    pub const ALL: [Check; 5] = [
        Check::Numbers,
        Check::Negation,
        Check::Antonym,
        Check::Entities,
        Check::Order,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Numbers => "numbers",
            Check::Negation => "negation",
            Check::Antonym => "antonym",
            Check::Entities => "entities",
            Check::Order => "order",
        }
    }
}

const NEGATIONS: &[&str] = &[
    "not", "no", "never", "nobody", "nothing", "none", "neither", "nor", "without", "cannot",
    "nowhere", "hardly",
];

/// Pairs whose swap flips the meaning. Matched on whole lowercase words.
const ANTONYMS: &[(&str, &str)] = &[
    ("increase", "decrease"),
    ("increasing", "decreasing"),
    ("raise", "lower"),
    ("buy", "sell"),
    ("buying", "selling"),
    ("before", "after"),
    ("best", "worst"),
    ("better", "worse"),
    ("cheap", "expensive"),
    ("cheapest", "expensive"),
    ("cheaper", "expensive"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("largest", "smallest"),
    ("biggest", "smallest"),
    ("highest", "lowest"),
    ("high", "low"),
    ("longest", "shortest"),
    ("oldest", "youngest"),
    ("oldest", "newest"),
    ("first", "last"),
    ("up", "down"),
    ("open", "close"),
    ("start", "stop"),
    ("win", "lose"),
    ("won", "lost"),
    ("add", "remove"),
    ("enable", "disable"),
    ("true", "false"),
    ("hot", "cold"),
    ("fast", "slow"),
    ("faster", "slower"),
    ("import", "export"),
    ("encrypt", "decrypt"),
    ("encode", "decode"),
    ("upload", "download"),
    ("push", "pull"),
    ("positive", "negative"),
    ("pros", "cons"),
    ("advantages", "disadvantages"),
    ("benefits", "drawbacks"),
    ("north", "south"),
    ("east", "west"),
    ("male", "female"),
    ("men", "women"),
    ("boy", "girl"),
    ("love", "hate"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("safe", "unsafe"),
    ("ascending", "descending"),
    ("left", "right"),
    ("inside", "outside"),
    ("above", "below"),
    ("more", "less"),
    ("most", "least"),
    ("early", "late"),
    ("earliest", "latest"),
    ("morning", "evening"),
    ("day", "night"),
    ("summer", "winter"),
    ("rich", "poor"),
    ("easy", "hard"),
    ("easiest", "hardest"),
    ("strong", "weak"),
    ("strongest", "weakest"),
    ("good", "bad"),
    ("success", "failure"),
    ("accept", "reject"),
    ("allow", "deny"),
    ("include", "exclude"),
    ("input", "output"),
    ("sender", "receiver"),
    ("client", "server"),
    ("frontend", "backend"),
    ("debit", "credit"),
    ("profit", "loss"),
    ("gain", "lose"),
];

/// Lowercase words that name a target (a language, a platform, a product) and so change
/// the answer when swapped, even uncapitalised.
const TARGETS: &[&str] = &[
    "python",
    "rust",
    "java",
    "javascript",
    "typescript",
    "golang",
    "ruby",
    "php",
    "perl",
    "kotlin",
    "swift",
    "scala",
    "haskell",
    "c",
    "c++",
    "c#",
    "cpp",
    "csharp",
    "sql",
    "bash",
    "powershell",
    "r",
    "matlab",
    "julia",
    "elixir",
    "erlang",
    "lua",
    "dart",
    "html",
    "css",
    "react",
    "angular",
    "vue",
    "django",
    "flask",
    "rails",
    "spring",
    "node",
    "nodejs",
    "linux",
    "windows",
    "mac",
    "macos",
    "ios",
    "android",
    "ubuntu",
    "debian",
    "iphone",
    "postgres",
    "postgresql",
    "mysql",
    "sqlite",
    "mongodb",
    "redis",
    "kafka",
    "docker",
    "kubernetes",
    "aws",
    "azure",
    "gcp",
    "excel",
    "word",
    "chrome",
    "firefox",
    "safari",
];

const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("thirteen", "13"),
    ("fourteen", "14"),
    ("fifteen", "15"),
    ("twenty", "20"),
    ("thirty", "30"),
    ("forty", "40"),
    ("fifty", "50"),
    ("hundred", "100"),
    ("thousand", "1000"),
    ("million", "1000000"),
    ("billion", "1000000000"),
    ("second", "2nd"),
    ("third", "3rd"),
    ("fourth", "4th"),
    ("fifth", "5th"),
    ("tenth", "10th"),
];

/// Words that start a sentence capitalised or are capitalised by convention without naming
/// anything ("I", "What").
fn is_function_word(w: &str) -> bool {
    const W: &[&str] = &[
        "i", "what", "how", "why", "when", "where", "which", "who", "whom", "whose", "is", "are",
        "was", "were", "do", "does", "did", "can", "could", "should", "would", "will", "the", "a",
        "an", "in", "on", "of", "to", "for", "and", "or", "if", "my", "your", "it", "its", "this",
        "that", "these", "those", "there", "as", "at", "by", "with", "from", "be", "have", "has",
        "had", "any", "some", "all", "me", "we", "you", "he", "she", "they", "them", "our",
        "their", "his", "her", "so", "but", "than", "then", "also", "about", "into", "after",
        "before", "am", "not", "no", "yes", "please", "tell", "give", "explain", "describe",
        "list", "find", "show", "write", "quora", "hi", "hello", "hey", "thanks", "ok", "okay",
        "vs", "versus",
    ];
    W.contains(&w)
}

/// One word of the text, with where it came from.
#[derive(Debug, Clone)]
struct Word {
    lower: String,
    /// Capitalised and not the first word of a sentence.
    proper: bool,
}

fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut sentence_start = true;
    let mut current = String::new();
    let flush = |current: &mut String, out: &mut Vec<Word>, sentence_start: &mut bool| {
        if current.is_empty() {
            return;
        }
        let first = current.chars().next().unwrap_or(' ');
        let lower = current.to_lowercase();
        let caps = first.is_uppercase();
        let all_caps = current.chars().filter(|c| c.is_alphabetic()).count() >= 2
            && current.chars().all(|c| !c.is_lowercase());
        let proper = (caps && !*sentence_start) || all_caps;
        out.push(Word { lower, proper });
        *sentence_start = false;
        current.clear();
    };
    for ch in text.chars() {
        // "c++" and "c#" are words; "2+2" is two numbers.
        let symbol_suffix = (ch == '+' || ch == '#')
            && current
                .chars()
                .last()
                .is_some_and(|c| c.is_alphabetic() || c == '+');
        if ch.is_alphanumeric() || ch == '\'' || ch == '’' || symbol_suffix {
            current.push(if ch == '’' { '\'' } else { ch });
        } else if (ch == '.' || ch == ',')
            && current.chars().last().is_some_and(|c| c.is_ascii_digit())
        {
            current.push(ch); // 3.5, 1,000
        } else {
            // Trailing separators belong to the sentence, not the number: "costs 5."
            while current.ends_with('.') || current.ends_with(',') {
                current.pop();
            }
            flush(&mut current, &mut out, &mut sentence_start);
            if matches!(ch, '.' | '?' | '!' | '\n' | ':' | ';' | '"' | '(') {
                sentence_start = true;
            }
        }
    }
    while current.ends_with('.') || current.ends_with(',') {
        current.pop();
    }
    flush(&mut current, &mut out, &mut sentence_start);
    out
}

/// Normalised numbers: "1,000" → "1000", "five" → "5", "3.50" → "3.5"; and identifiers
/// that carry digits ("w1", "v2.1", "ipv6", "3a"), whole, since versions and ids are
/// numbers too: "outage-X w1 i1" is not "outage-X w0 i1".
fn numbers(ws: &[Word]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for w in ws {
        let t = w.lower.as_str();
        let n = if let Some((_, d)) = NUMBER_WORDS.iter().find(|(word, _)| *word == t) {
            Some((*d).to_string())
        } else if !t.chars().next().is_some_and(|c| c.is_ascii_digit())
            && t.chars().any(|c| c.is_ascii_digit())
        {
            Some(t.to_string())
        } else if t.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            let digits: String = t.chars().filter(|c| *c != ',').collect();
            let digits = if digits.contains('.') {
                digits
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            } else {
                digits
            };
            Some(digits)
        } else {
            None
        };
        if let Some(n) = n {
            *out.entry(n).or_insert(0) += 1;
        }
    }
    out
}

fn negated(ws: &[Word]) -> bool {
    ws.iter()
        .any(|w| NEGATIONS.contains(&w.lower.as_str()) || w.lower.ends_with("n't"))
}

fn key_terms(ws: &[Word]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in ws {
        let is_target = TARGETS.contains(&w.lower.as_str());
        if (w.proper && !is_function_word(&w.lower)) || is_target {
            let t = w.lower.trim_end_matches("'s").to_string();
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// Checks a candidate's cached query against the new query; `Err` names the first check
/// that vetoes it.
pub fn verify(query: &str, cached: &str, checks: &[Check]) -> Result<(), Check> {
    let a = words(query);
    let b = words(cached);
    for &check in checks {
        let ok = match check {
            Check::Numbers => numbers(&a) == numbers(&b),
            Check::Negation => negated(&a) == negated(&b),
            Check::Antonym => !has_antonym_swap(&a, &b),
            Check::Entities => same_targets(&a, &b),
            Check::Order => same_order(&a, &b),
        };
        if !ok {
            return Err(check);
        }
    }
    Ok(())
}

fn has_antonym_swap(a: &[Word], b: &[Word]) -> bool {
    let sa: BTreeSet<&str> = a.iter().map(|w| w.lower.as_str()).collect();
    let sb: BTreeSet<&str> = b.iter().map(|w| w.lower.as_str()).collect();
    ANTONYMS.iter().any(|(x, y)| {
        let swapped = |p: &BTreeSet<&str>, q: &BTreeSet<&str>| {
            p.contains(x) && !p.contains(y) && q.contains(y) && !q.contains(x)
        };
        swapped(&sa, &sb) || swapped(&sb, &sa)
    })
}

/// Entities may be added on one side ("Trump" vs "Donald Trump"), but not swapped for
/// others; a target (a language, a platform) may not appear on one side only.
fn same_targets(a: &[Word], b: &[Word]) -> bool {
    let ta: BTreeSet<String> = key_terms(a).into_iter().collect();
    let tb: BTreeSet<String> = key_terms(b).into_iter().collect();
    let only_a: Vec<&String> = ta.difference(&tb).collect();
    let only_b: Vec<&String> = tb.difference(&ta).collect();
    if !only_a.is_empty() && !only_b.is_empty() {
        return false;
    }
    let target = |t: &&String| TARGETS.contains(&t.as_str());
    !(only_a.iter().any(target) || only_b.iter().any(target))
}

/// Shared key terms appear in the same order, and "from X to Y" is not reversed.
fn same_order(a: &[Word], b: &[Word]) -> bool {
    let ta = key_terms(a);
    let tb = key_terms(b);
    let shared_a: Vec<&String> = ta.iter().filter(|t| tb.contains(t)).collect();
    let shared_b: Vec<&String> = tb.iter().filter(|t| ta.contains(t)).collect();
    if shared_a != shared_b {
        return false;
    }
    let da = directions(a);
    let db = directions(b);
    !da.iter()
        .any(|(f, t)| f != t && db.iter().any(|(g, u)| g == t && u == f))
}

/// (from, to) pairs: "from X to Y" and "X to Y" / "X into Y", where X and Y are phrases
/// of the content words next to the preposition, in every length up to four words (so
/// "from Python 3 to Python 2" yields ("python 3", "python 2"), not only ("python",
/// "python"), and "convert celsius to fahrenheit" yields ("celsius", "fahrenheit")).
fn directions(ws: &[Word]) -> Vec<(String, String)> {
    const LONGEST: usize = 4;
    let joins = |w: &Word| matches!(w.lower.as_str(), "to" | "into" | "from");
    let content = |w: &Word| !joins(w) && !is_function_word(&w.lower);
    // Phrases starting at `i`, going forward while words are content words.
    let forward = |i: usize| -> Vec<String> {
        let n = ws[i..]
            .iter()
            .take_while(|w| content(w))
            .count()
            .min(LONGEST);
        (1..=n).map(|k| phrase(&ws[i..i + k])).collect()
    };
    // Phrases ending just before `i`, going back.
    let backward = |i: usize| -> Vec<String> {
        let n = ws[..i]
            .iter()
            .rev()
            .take_while(|w| content(w))
            .count()
            .min(LONGEST);
        (1..=n).map(|k| phrase(&ws[i - k..i])).collect()
    };
    let mut out = Vec::new();
    let from = ws
        .iter()
        .position(|w| w.lower == "from")
        .map(|i| forward(i + 1))
        .unwrap_or_default();
    for (i, w) in ws.iter().enumerate() {
        if w.lower == "to" || w.lower == "into" {
            for to in forward(i + 1) {
                for f in from.iter().chain(&backward(i)) {
                    out.push((f.clone(), to.clone()));
                }
            }
        }
    }
    out
}

fn phrase(ws: &[Word]) -> String {
    ws.iter()
        .map(|w| w.lower.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Words that carry no topic: left out of the overlap features.
fn is_stopword(w: &str) -> bool {
    is_function_word(w)
        || matches!(
            w,
            "there"
                | "here"
                | "been"
                | "being"
                | "get"
                | "got"
                | "way"
                | "ways"
                | "best"
                | "good"
                | "really"
                | "much"
                | "many"
                | "some"
                | "one"
                | "like"
                | "just"
                | "know"
                | "make"
                | "use"
                | "using"
                | "need"
                | "want"
                | "s"
                | "t"
        )
}

const QUESTION_WORDS: &[&str] = &["what", "how", "why", "when", "where", "which", "who"];

/// Features of a (query, cached query, similarity) triple for the learned verifier.
pub const FEATURES: usize = 11;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &str, b: &str) -> Result<(), Check> {
        verify(a, b, &Check::ALL)
    }

    #[test]
    fn paraphrases_pass() {
        for (a, b) in [
            (
                "How do I learn Python?",
                "What is the best way to learn Python?",
            ),
            (
                "How can I lose weight fast?",
                "What are some ways to lose weight fast?",
            ),
            (
                "Why did Trump win the election?",
                "How did Donald Trump win the election?",
            ),
            ("What is 2 + 2?", "what is 2+2"),
            ("Is it safe to eat raw eggs?", "Are raw eggs safe to eat?"),
            ("Who wrote Hamlet?", "Hamlet was written by whom?"),
            (
                "How do I migrate from Python 2 to Python 3?",
                "What is the way to migrate from Python 2 to Python 3?",
            ),
            ("outage-X w1 i1", "outage-X  w1 i1"),
            ("What changed in v2.1?", "what changed in V2.1"),
        ] {
            assert_eq!(v(a, b), Ok(()), "{a} | {b}");
        }
    }

    #[test]
    fn each_kind_of_false_hit_is_caught() {
        let cases = [
            (
                "Show me 3 bedroom apartments",
                "Show me 4 bedroom apartments",
                Check::Numbers,
            ),
            (
                "What are the top five movies?",
                "What are the top ten movies?",
                Check::Numbers,
            ),
            (
                "Costs 1,000 dollars.",
                "Costs 1000.5 dollars.",
                Check::Numbers,
            ),
            (
                "Is Python a compiled language?",
                "Is Python not a compiled language?",
                Check::Negation,
            ),
            (
                "Why doesn't my code compile?",
                "Why does my code compile?",
                Check::Negation,
            ),
            (
                "What is the cheapest flight to Paris?",
                "What is the most expensive flight to Paris?",
                Check::Antonym,
            ),
            (
                "Should I buy Tesla stock?",
                "Should I sell Tesla stock?",
                Check::Antonym,
            ),
            (
                "How do I sort a list in Python?",
                "How do I sort a list in Rust?",
                Check::Entities,
            ),
            (
                "How do I sort a list in python?",
                "How do I sort a list?",
                Check::Entities,
            ),
            (
                "What is the capital of France?",
                "What is the capital of Germany?",
                Check::Entities,
            ),
            (
                "flights from New York to Florida",
                "flights from Florida to New York",
                Check::Order,
            ),
            (
                "convert celsius to fahrenheit",
                "convert fahrenheit to celsius",
                Check::Order,
            ),
            // Multi-word endpoints: the entity alone is the same on both sides.
            (
                "How do I migrate from Python 3 to Python 2?",
                "How do I migrate from Python 2 to Python 3?",
                Check::Order,
            ),
            (
                "Upgrade from PostgreSQL 15 to PostgreSQL 16",
                "Upgrade from PostgreSQL 16 to PostgreSQL 15",
                Check::Order,
            ),
            // Identifiers that differ in a digit are different questions.
            ("outage-X w1 i1", "outage-X w0 i1", Check::Numbers),
            (
                "status of ticket INC-4412",
                "status of ticket INC-4413",
                Check::Numbers,
            ),
            (
                "release notes for v2.1",
                "release notes for v2.2",
                Check::Numbers,
            ),
            ("Is ipv6 enabled?", "Is ipv4 enabled?", Check::Numbers),
        ];
        for (a, b, want) in cases {
            assert_eq!(v(a, b), Err(want), "{a} | {b}");
        }
    }

    #[test]
    fn the_learned_verifier_fits_a_separable_rule() {
        // Right when similar and no number differs: the fit must find it.
        let mut samples = Vec::new();
        for i in 0..200 {
            let sim = 0.8 + (i % 20) as f32 * 0.01;
            let numbers_differ = i % 3 == 0;
            let mut f = [0f32; FEATURES];
            f[0] = sim;
            f[5] = if numbers_differ { 1.0 } else { 0.0 };
            samples.push((f, sim > 0.88 && !numbers_differ));
        }
        let v = LearnedVerifier::fit(&samples);
        let correct = samples
            .iter()
            .filter(|(f, y)| (v.probability(f) >= 0.5) == *y)
            .count();
        assert!(correct >= 190, "{correct}/200");
        assert!(
            v.weights[5] < 0.0,
            "a number mismatch lowers the probability"
        );
    }

    #[test]
    fn features_see_the_differences() {
        let f = features(
            "flights from New York to Florida",
            "flights from Florida to New York",
            0.97,
        );
        assert_eq!(f[9], 1.0, "order");
        assert_eq!(f[2], 1.0, "same content words");
        let g = features("How do I learn Python?", "Why should I learn Python?", 0.9);
        assert_eq!(g[10], 1.0, "question word");
        let h = features("Top 5 books", "Top 10 books", 0.95);
        assert_eq!(h[5], 1.0);
    }

    #[test]
    fn numbers_normalise() {
        assert_eq!(v("costs 5.", "costs 5.0"), Ok(()));
        assert_eq!(v("top 5 books", "top five books"), Ok(()));
        assert_eq!(v("1,000 users", "1000 users"), Ok(()));
    }
}
