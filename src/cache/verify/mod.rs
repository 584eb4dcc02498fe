//! The verification stage after a vector match. Sentence embeddings place "flights from New
//! York to Florida" right next to "flights from Florida to New York", and "in Python" next
//! to "in Rust": a similarity threshold alone cannot tell them apart. These checks are cheap
//! (a few microseconds: tokenising two short strings) and each catches one kind of false
//! hit; `quartermaster eval cache` reports what each one gains.
//!
//! Their cost is bounded: a text longer than [`MAX_VERIFY_CHARS`] is refused unread
//! ([`Check::Length`]), and every check is linear or n log n in the words it reads (sets,
//! not pairwise scans), so a query padded with a few hundred thousand words costs no more
//! than counting its first few thousand characters.

mod cross;
mod learned;
mod lexicon;

pub use cross::{CrossVerifier, sigmoid};
pub use learned::{FEATURES, LearnedVerifier, features};
use lexicon::*;

use std::collections::{BTreeMap, BTreeSet, HashSet};

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
    /// Either text is longer than [`MAX_VERIFY_CHARS`]: too long to verify, so refused
    /// without being read.
    Length,
}

impl Check {
    pub const ALL: [Check; 6] = [
        Check::Numbers,
        Check::Negation,
        Check::Antonym,
        Check::Entities,
        Check::Order,
        Check::Length,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Numbers => "numbers",
            Check::Negation => "negation",
            Check::Antonym => "antonym",
            Check::Entities => "entities",
            Check::Order => "order",
            Check::Length => "length",
        }
    }
}

/// The longest text, in characters, the rule checks read; [`Check::Length`] refuses a
/// candidate when the query or the cached query is longer.
///
/// Why refuse rather than read a prefix: the embedder reads at most its window of tokens
/// (`max_seq_length`: 256 for all-MiniLM-L6-v2 by its `sentence_bert_config.json`, and never
/// more than the model's 512 positions; see `src/embed/mod.rs`), and English averages about
/// four characters a WordPiece token, so past roughly 1,000-2,000 characters two texts
/// that share a beginning have a similarity of ~1.0 whatever follows. The rules are then the
/// only thing that reads the rest; were they to read only a prefix too, "Q0" and "Q0 plus
/// anything" would look identical to every stage and be a wrong hit. So either the whole
/// text is checked or the semantic hit is refused (a miss costs one upstream call, a wrong
/// hit a wrong answer). The exact-match cache is not affected.
///
/// Why 4,096: a few times the embedder's window, far above any real question (the eval
/// datasets' questions are all under 1,000 characters), and small enough that every check
/// over it takes microseconds. Counted in characters, not bytes, so scripts with multi-byte
/// characters get the same room.
pub const MAX_VERIFY_CHARS: usize = 4096;

/// Longer than [`MAX_VERIFY_CHARS`]; reads at most that many characters.
pub fn too_long(text: &str) -> bool {
    // A character is at least one byte: a short text is answered without counting.
    text.len() > MAX_VERIFY_CHARS && text.chars().nth(MAX_VERIFY_CHARS).is_some()
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

/// Entity and target words, de-duplicated, in order of first appearance.
fn key_terms(ws: &[Word]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for w in ws {
        let is_target = TARGETS.contains(&w.lower.as_str());
        if (w.proper && !is_function_word(&w.lower)) || is_target {
            let t = w.lower.trim_end_matches("'s");
            if seen.insert(t) {
                out.push(t.to_string());
            }
        }
    }
    out
}

/// Checks a candidate's cached query against the new query; `Err` names the first check
/// that vetoes it. [`Check::Length`], when asked for, is tried before the others wherever it
/// sits in `checks` (they do not read a text it refuses), so a too-long pair is always
/// reported as `Length`; without it the others read the whole texts (in n log n time).
/// No checks: `Ok` without reading either text.
pub fn verify(query: &str, cached: &str, checks: &[Check]) -> Result<(), Check> {
    if checks.is_empty() {
        return Ok(());
    }
    if checks.contains(&Check::Length) && (too_long(query) || too_long(cached)) {
        return Err(Check::Length);
    }
    let a = words(query);
    let b = words(cached);
    for &check in checks {
        let ok = match check {
            Check::Numbers => numbers(&a) == numbers(&b),
            Check::Negation => negated(&a) == negated(&b),
            Check::Antonym => !has_antonym_swap(&a, &b),
            Check::Entities => same_targets(&a, &b),
            Check::Order => same_order(&a, &b),
            Check::Length => true, // tried above
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
    let in_a: HashSet<&str> = ta.iter().map(String::as_str).collect();
    let in_b: HashSet<&str> = tb.iter().map(String::as_str).collect();
    let shared_a = ta.iter().filter(|t| in_b.contains(t.as_str()));
    let shared_b = tb.iter().filter(|t| in_a.contains(t.as_str()));
    if !shared_a.eq(shared_b) {
        return false;
    }
    let da = directions(a);
    let db = directions(b);
    // (to, from) of every pair of `b`: a pair of `a` found here is reversed in `b`.
    let reversed_b: HashSet<(&str, &str)> =
        db.iter().map(|(g, u)| (u.as_str(), g.as_str())).collect();
    !da.iter()
        .any(|(f, t)| f != t && reversed_b.contains(&(f.as_str(), t.as_str())))
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
            .take(LONGEST)
            .count();
        (1..=n).map(|k| phrase(&ws[i..i + k])).collect()
    };
    // Phrases ending just before `i`, going back.
    let backward = |i: usize| -> Vec<String> {
        let n = ws[..i]
            .iter()
            .rev()
            .take_while(|w| content(w))
            .take(LONGEST)
            .count();
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
            let before = backward(i);
            for to in forward(i + 1) {
                for f in from.iter().chain(&before) {
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

    /// "Q0" then `n` distinct capitalised words that no word list knows ("Qxa", "Qxb", ...).
    fn padded(q0: &str, n: usize) -> String {
        let mut out = String::from(q0);
        for i in 0..n {
            out.push_str(" Qx");
            let mut k = i;
            loop {
                out.push((b'a' + (k % 26) as u8) as char);
                k /= 26;
                if k == 0 {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn a_query_padded_past_the_cap_is_refused_unread() {
        // The embedding of Q0 + 200,000 words is that of Q0 (truncated at the model's
        // window): only the rules stand between it and Q0's cached answer.
        let q0 = "How do I sort a list in Python?";
        let long = padded(q0, 200_000);
        assert_eq!(v(&long, q0), Err(Check::Length));
        assert_eq!(v(q0, &long), Err(Check::Length));
        assert_eq!(v(&long, &long), Err(Check::Length));
        // Wherever it sits in the list, and before a check that would fail anyway.
        let length_last = [Check::Numbers, Check::Length];
        assert_eq!(
            verify(&format!("{long} 7"), q0, &length_last),
            Err(Check::Length)
        );
        // No checks (verifier "none"): nothing is read, nothing refused.
        assert_eq!(verify(&long, q0, &[]), Ok(()));
    }

    #[test]
    fn without_the_length_check_the_rules_read_everything_in_n_log_n() {
        // Quadratic before (de-duplication and shared-term tests by `Vec::contains`); now
        // sets. The padding names nothing the rules know, so they cannot tell the texts
        // apart: the reason long texts are refused rather than read.
        let q0 = "How do I sort a list in Python?";
        let long = padded(q0, 50_000);
        let rules = [
            Check::Numbers,
            Check::Negation,
            Check::Antonym,
            Check::Entities,
            Check::Order,
        ];
        assert_eq!(verify(&long, q0, &rules), Ok(()));
        // Tens of thousands of direction pairs on each side (quadratic before: every pair
        // against every pair), one of them reversed: "Qxa to Qxb. Qxc to Qxd. ..."
        let pad = padded("", 20_000);
        let names: Vec<&str> = pad.split_whitespace().collect();
        let hops: Vec<String> = names.chunks(2).map(|p| p.join(" to ")).collect();
        let tail = hops.join(". ");
        let there = format!("convert celsius to fahrenheit. {tail}");
        let back = format!("convert fahrenheit to celsius. {tail}");
        assert_eq!(verify(&there, &back, &rules), Err(Check::Order));
        assert_eq!(verify(&there, &there, &rules), Ok(()));
    }

    #[test]
    fn the_cap_counts_characters() {
        let at_cap = "lorem ".repeat(MAX_VERIFY_CHARS)[..MAX_VERIFY_CHARS].to_string();
        assert_eq!(at_cap.chars().count(), MAX_VERIFY_CHARS);
        assert_eq!(v(&at_cap, &at_cap), Ok(()));
        assert_eq!(v(&format!("{at_cap}x"), &at_cap), Err(Check::Length));
        // Two bytes a character: 8,192 bytes, 4,096 characters, still read.
        let wide = "é".repeat(MAX_VERIFY_CHARS);
        assert_eq!(v(&wide, &wide), Ok(()));
        assert_eq!(v(&format!("{wide}é"), &wide), Err(Check::Length));
    }

    #[test]
    fn key_terms_keep_first_appearance_order() {
        let ws = words("Flights between Paris and Rome via Paris's airport in python");
        assert_eq!(key_terms(&ws), ["paris", "rome", "python"]);
    }

    #[test]
    fn numbers_normalise() {
        assert_eq!(v("costs 5.", "costs 5.0"), Ok(()));
        assert_eq!(v("top 5 books", "top five books"), Ok(()));
        assert_eq!(v("1,000 users", "1000 users"), Ok(()));
    }
}
