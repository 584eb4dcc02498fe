use super::*;

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

fn params(max_tokens: usize, overlap_tokens: usize) -> ChunkParams {
    ChunkParams {
        max_tokens,
        overlap_tokens,
    }
}

/// Sentences of a chunk made of sentences like "s12 a b c d." (split after each '.').
fn sentences(text: &str) -> Vec<String> {
    text.split_inclusive('.')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The largest k such that the last k sentences of `prev` are the first k of `next`.
fn overlap_sentences(prev: &str, next: &str) -> Vec<String> {
    let (p, n) = (sentences(prev), sentences(next));
    let mut best = 0;
    for k in 1..=p.len().min(n.len()) {
        if p[p.len() - k..] == n[..k] {
            best = k;
        }
    }
    n[..best].to_vec()
}

/// Deterministic pseudo-random numbers.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % bound
    }
}

#[test]
fn heading_paths() {
    let text = "Preamble text.\n\n# Install\n\nIntro text here.\n\n## Linux\n\nUse apt to install.\n\n\
                    ### Debian ###\n\nRun apt-get.\n\n## Mac\n\nUse brew.\n\n# Usage\n\nRun it.\n";
    let chunks = chunk_text(text, params(100, 10), &words);
    let got: Vec<(Option<&str>, &str)> = chunks
        .iter()
        .map(|c| (c.heading.as_deref(), c.text.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (None, "Preamble text."),
            (Some("Install"), "Intro text here."),
            (Some("Install > Linux"), "Use apt to install."),
            (Some("Install > Linux > Debian"), "Run apt-get."),
            (Some("Install > Mac"), "Use brew."),
            (Some("Usage"), "Run it."),
        ]
    );
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.index, i);
        assert_eq!(c.tokens, words(&c.text));
    }
}

#[test]
fn headings_inside_code_fences_are_text() {
    let text = "# Real\n\n```sh\n# not a heading\necho hi\n```\n\nAfter.";
    let chunks = chunk_text(text, params(100, 0), &words);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].heading.as_deref(), Some("Real"));
    assert!(chunks[0].text.contains("# not a heading"));
    assert!(chunks[0].text.ends_with("After."));
}

#[test]
fn packs_paragraphs_of_a_section() {
    let text = "# S\n\nOne two three.\n\nFour five six.\n\nSeven eight nine.";
    let chunks = chunk_text(text, params(100, 0), &words);
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0].text,
        "One two three.\n\nFour five six.\n\nSeven eight nine."
    );
    assert_eq!(chunks[0].tokens, 9);
    assert_eq!(chunks[0].heading.as_deref(), Some("S"));

    let chunks = chunk_text(text, params(6, 0), &words);
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        vec!["One two three.\n\nFour five six.", "Seven eight nine."]
    );

    // A paragraph that fits on its own is moved whole to the next chunk.
    let text = "A1 a2 a3 a4.\n\nB1 b2. B3 b4 b5.";
    let chunks = chunk_text(text, params(8, 0), &words);
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, vec!["A1 a2 a3 a4.", "B1 b2. B3 b4 b5."]);
}

#[test]
fn multi_line_paragraphs_keep_their_lines() {
    let text = "Steps:\n1. Do this.\n2. Do that.\n- bullet one\n- bullet two";
    let chunks = chunk_text(text, params(100, 0), &words);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].text, text);
    let spans = sentence_spans(text);
    let got: Vec<&str> = spans.iter().map(|&(s, e)| &text[s..e]).collect();
    assert_eq!(
        got,
        vec![
            "Steps:",
            "1. Do this.",
            "2. Do that.",
            "- bullet one",
            "- bullet two"
        ]
    );
}

fn random_document(rng: &mut Lcg, paragraphs: usize) -> String {
    let mut text = String::new();
    let mut word = 0usize;
    for p in 0..paragraphs {
        if p % 7 == 0 {
            let level = 1 + rng.next(3);
            text.push_str(&format!("{} Heading {p}\n\n", "#".repeat(level)));
        }
        let n_sentences = 1 + rng.next(6);
        for s in 0..n_sentences {
            let cap = if rng.next(10) == 0 { 60 } else { 15 };
            let len = 1 + rng.next(cap);
            for k in 0..len {
                if k > 0 {
                    text.push(' ');
                }
                text.push_str(&format!("w{word}"));
                word += 1;
            }
            let end = [". ", "? ", "! ", " ", ".\n"][rng.next(5)];
            if s + 1 < n_sentences {
                text.push_str(end);
            } else {
                text.push('.');
            }
        }
        text.push_str("\n\n");
    }
    text
}

fn body_words(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .map(|w| w.trim_end_matches(['.', '?', '!']).to_string())
        .collect()
}

#[test]
fn no_chunk_over_max_and_nothing_lost() {
    let mut rng = Lcg(42);
    let text = random_document(&mut rng, 300);
    for (max, overlap) in [(12, 4), (50, 10), (7, 0), (1, 0), (200, 40)] {
        let chunks = chunk_text(&text, params(max, overlap), &words);
        assert!(!chunks.is_empty());
        for c in &chunks {
            assert!(
                c.tokens <= max,
                "max {max}: chunk of {} tokens: {:?}",
                c.tokens,
                c.text
            );
            assert_eq!(c.tokens, words(&c.text));
            assert!(!c.text.trim().is_empty());
            assert_eq!(c.text, c.text.trim());
        }
        if overlap == 0 {
            let joined: Vec<String> = chunks
                .iter()
                .map(|c| c.text.as_str())
                .collect::<Vec<_>>()
                .join(" ")
                .split_whitespace()
                .map(|w| w.trim_end_matches(['.', '?', '!']).to_string())
                .collect();
            assert_eq!(joined, body_words(&text), "max {max}");
        }
    }
}

#[test]
fn overlap_is_whole_trailing_sentences_within_budget() {
    let text: String = (0..20)
        .map(|i| format!("s{i} a b c d."))
        .collect::<Vec<_>>()
        .join(" ");
    let chunks = chunk_text(&text, params(20, 10), &words);
    assert!(chunks.len() > 1);
    assert_eq!(
        chunks[0].text,
        "s0 a b c d. s1 a b c d. s2 a b c d. s3 a b c d."
    );
    assert!(
        chunks[1].text.starts_with("s2 a b c d. s3 a b c d. s4"),
        "{}",
        chunks[1].text
    );
    for pair in chunks.windows(2) {
        let shared = overlap_sentences(&pair[0].text, &pair[1].text);
        assert!(
            !shared.is_empty(),
            "no overlap between {:?} and {:?}",
            pair[0].text,
            pair[1].text
        );
        let shared_tokens: usize = shared.iter().map(|s| words(s)).sum();
        assert!(shared_tokens <= 10);
        assert!(pair[1].text.starts_with('s'));
        assert!(pair[1].tokens <= 20);
    }
    // Every sentence is somewhere.
    for i in 0..20 {
        let s = format!("s{i} a b c d.");
        assert!(chunks.iter().any(|c| c.text.contains(&s)), "{s} lost");
    }
    // Zero overlap: no sentence repeated.
    let chunks = chunk_text(&text, params(20, 0), &words);
    let total: usize = chunks.iter().map(|c| c.tokens).sum();
    assert_eq!(total, 100);
}

#[test]
fn overlap_across_paragraphs_of_one_section() {
    let text = "p0 a b c d. p1 a b c d.\n\np2 a b c d. p3 a b c d.\n\np4 a b c d. p5 a b c d.";
    let chunks = chunk_text(text, params(20, 5), &words);
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        vec![
            "p0 a b c d. p1 a b c d.\n\np2 a b c d. p3 a b c d.",
            "p3 a b c d.\n\np4 a b c d. p5 a b c d.",
        ]
    );
}

#[test]
fn no_overlap_across_sections() {
    let a: String = (0..10)
        .map(|i| format!("a{i} x y z."))
        .collect::<Vec<_>>()
        .join(" ");
    let b: String = (0..10)
        .map(|i| format!("b{i} x y z."))
        .collect::<Vec<_>>()
        .join(" ");
    let text = format!("# A\n\n{a}\n\n# B\n\n{b}\n");
    let chunks = chunk_text(&text, params(12, 8), &words);
    let first_b = chunks
        .iter()
        .position(|c| c.heading.as_deref() == Some("B"))
        .unwrap();
    assert!(
        chunks[first_b].text.starts_with("b0 "),
        "{}",
        chunks[first_b].text
    );
    for c in &chunks {
        match c.heading.as_deref() {
            Some("A") => assert!(!c.text.contains('b'), "{}", c.text),
            Some("B") => assert!(!c.text.contains('a'), "{}", c.text),
            other => panic!("unexpected heading {other:?}"),
        }
        assert!(c.tokens <= 12);
    }
    // Overlap inside each section still happens.
    assert!(chunks[1].heading.as_deref() == Some("A"));
    assert!(!overlap_sentences(&chunks[0].text, &chunks[1].text).is_empty());
}

#[test]
fn long_sentence_is_split_at_words() {
    let text: String = (0..100)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let chunks = chunk_text(&text, params(10, 0), &words);
    assert_eq!(chunks.len(), 10);
    assert!(chunks.iter().all(|c| c.tokens == 10));
    let joined = chunks
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(joined, text);

    // With overlap: trailing whole words, contiguous runs of the original.
    let chunks = chunk_text(&text, params(10, 3), &words);
    assert!(chunks.len() > 10);
    for pair in chunks.windows(2) {
        assert!(pair[1].tokens <= 10);
        let prev: Vec<&str> = pair[0].text.split(' ').collect();
        let next: Vec<&str> = pair[1].text.split(' ').collect();
        let shared = (1..=3).rev().find(|&k| prev[prev.len() - k..] == next[..k]);
        assert!(shared.is_some(), "{:?} / {:?}", pair[0].text, pair[1].text);
    }
    for c in &chunks {
        let nums: Vec<usize> = c
            .text
            .split(' ')
            .map(|w| w.trim_start_matches('w').parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{}", c.text);
    }
}

#[test]
fn giant_word_is_hard_split() {
    let by_chars = |s: &str| s.chars().count().div_ceil(4);
    let word = "x".repeat(1000);
    let text = format!("Short intro. {word} and after.");
    let chunks = chunk_text(&text, params(10, 0), &by_chars);
    assert!(chunks.iter().all(|c| c.tokens <= 10), "{chunks:?}");
    let joined: String = chunks.iter().map(|c| c.text.replace(' ', "")).collect();
    assert_eq!(joined, text.replace(' ', ""));
}

#[test]
fn counter_overhead_and_bad_estimates_are_handled() {
    let mut rng = Lcg(7);
    let text = random_document(&mut rng, 60);
    // Special tokens: every string costs 2 more.
    let with_specials = |s: &str| words(s) + 2;
    let chunks = chunk_text(&text, params(12, 4), &with_specials);
    assert!(
        chunks
            .iter()
            .all(|c| c.tokens <= 12 && c.tokens == with_specials(c.text.as_str()))
    );
    // Joining paragraphs costs tokens the per-sentence estimates do not see.
    let join_cost = |s: &str| words(s) + 5 * s.matches("\n\n").count();
    let chunks = chunk_text(&text, params(30, 6), &join_cost);
    assert!(
        chunks
            .iter()
            .all(|c| c.tokens <= 30 && c.tokens == join_cost(c.text.as_str()))
    );
    // An overhead larger than the limit: unavoidable, but no panic and no loop.
    let huge = |s: &str| words(s) + 50;
    let chunks = chunk_text("a b c. d e f.", params(10, 2), &huge);
    assert!(!chunks.is_empty());
}

#[test]
fn empty_input() {
    assert!(chunk_text("", params(10, 2), &words).is_empty());
    assert!(chunk_text("  \n\n\t \n \r\n", params(10, 2), &words).is_empty());
    assert!(chunk_text("# Only\n## Headings\n", params(10, 2), &words).is_empty());
}

#[test]
fn unicode_is_sliced_at_char_boundaries() {
    let unit = "Ünïcödé wörds ñandú. 日本語のテキスト。これはテストです！ 🚀🚀🚀🚀 émoji ok? \
                    Ελληνικά κείμενο εδώ. ";
    let text = format!(
        "# Überschrift\n\n{}\n\n## Ünter\n\n{}",
        unit.repeat(5),
        unit.repeat(3)
    );
    let by_chars = |s: &str| s.chars().count();
    for (max, overlap) in [(15, 5), (3, 1), (1, 0), (40, 20)] {
        let chunks = chunk_text(&text, params(max, overlap), &by_chars);
        assert!(!chunks.is_empty());
        assert!(chunks.iter().all(|c| c.tokens <= max), "max {max}");
        assert_eq!(chunks[0].heading.as_deref(), Some("Überschrift"));
        assert_eq!(
            chunks.last().unwrap().heading.as_deref(),
            Some("Überschrift > Ünter")
        );
    }
    // Bytes as tokens with a limit below a 4-byte char: single chars over the limit are
    // unavoidable, everything else respects it.
    let by_bytes = |s: &str| s.len();
    let chunks = chunk_text(&text, params(3, 1), &by_bytes);
    for c in &chunks {
        assert!(c.tokens <= 3 || c.text.chars().count() == 1, "{c:?}");
    }
    let words_only = chunk_text(&text, params(4, 1), &words);
    assert!(words_only.iter().all(|c| c.tokens <= 4));
}

#[test]
fn deterministic() {
    let mut rng = Lcg(3);
    let text = random_document(&mut rng, 50);
    let a = chunk_text(&text, params(20, 5), &words);
    let b = chunk_text(&text, params(20, 5), &words);
    assert_eq!(a, b);
}

#[test]
fn handbook_fixture_chunks_by_section() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rag/handbook.md");
    let text = std::fs::read_to_string(path).unwrap();
    let chunks = chunk_text(&text, params(60, 10), &words);
    assert!(chunks.iter().all(|c| c.tokens <= 60));
    let refunds = chunks
        .iter()
        .find(|c| c.text.contains("refunds are issued within 14 days"))
        .unwrap();
    assert!(
        refunds.heading.as_deref().unwrap().contains("Refund"),
        "{:?}",
        refunds.heading
    );
    let paging = chunks
        .iter()
        .find(|c| c.text.contains("PagerDuty after 5 minutes"))
        .unwrap();
    assert!(
        paging.heading.as_deref().unwrap().contains("On-Call"),
        "{:?}",
        paging.heading
    );
    assert!(chunks.iter().all(|c| !c.text.starts_with('#')));
}

#[test]
fn five_megabytes_quickly() {
    let mut rng = Lcg(99);
    let mut text = String::new();
    while text.len() < 5 * 1024 * 1024 {
        text.push_str(&random_document(&mut rng, 200));
    }
    let started = std::time::Instant::now();
    let chunks = chunk_text(&text, params(200, 40), &words);
    let elapsed = started.elapsed();
    assert!(chunks.len() > 1000);
    assert!(chunks.iter().all(|c| c.tokens <= 200));
    // Generous for unoptimised builds; optimised it is well under a second.
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");

    // One 5 MB paragraph without any punctuation: word atoms.
    let blob: String = (0..900_000).map(|i| format!("w{} ", i % 1000)).collect();
    let started = std::time::Instant::now();
    let chunks = chunk_text(&blob, params(200, 40), &words);
    assert!(chunks.iter().all(|c| c.tokens <= 200));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
