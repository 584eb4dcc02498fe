//! The verification stage after a vector match. Sentence embeddings place "flights from New
//! York to Florida" right next to "flights from Florida to New York", and "in Python" next
//! to "in Rust": a similarity threshold alone cannot tell them apart. These checks are cheap
//! (a few microseconds: tokenising two short strings) and each catches one kind of false
//! hit; `quartermaster eval cache` reports what each one gains.

mod cross;
mod learned;
mod lexicon;

pub use cross::{CrossVerifier, sigmoid};
pub use learned::{FEATURES, LearnedVerifier, features};
use lexicon::*;

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
