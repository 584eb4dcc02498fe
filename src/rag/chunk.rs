//! Token-aware chunking with overlap that respects markdown headings and paragraphs.
//!
//! The text is cut into sections at markdown heading lines (outside fenced code blocks) and
//! into paragraphs at blank lines. Each paragraph is cut into "atoms": sentences, or, for a
//! sentence longer than the budget, its words (and, for a word longer than the budget,
//! pieces of it). Every atom is counted once; a chunk's size is estimated as the sum of its
//! atoms (joining with whitespace adds ~0 tokens for wordpiece/BPE tokenizers), and each
//! finished chunk is counted once more and re-split if the estimate was wrong. So `count`
//! runs O(n) times over O(n) bytes in total.

mod spans;

use serde::{Deserialize, Serialize};

use spans::{sentence_spans, word_spans};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
pub struct ChunkParams {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// 0-based position in the document.
    pub index: usize,
    /// The chunk text as embedded and stored (the heading is not prepended).
    pub text: String,
    /// The section path at the chunk's start, e.g. "Install > Linux".
    pub heading: Option<String>,
    /// `count(text)`.
    pub tokens: usize,
}

/// Splits `text` into chunks of at most `params.max_tokens` tokens as measured by `count`
/// (unless a single character is already over the limit). Consecutive paragraphs of one
/// section are packed together; a section never shares a chunk with another one; a chunk
/// cut because of size is followed by one that starts with the previous chunk's trailing
/// sentences (at most `params.overlap_tokens` of them). Deterministic.
pub fn chunk_text(text: &str, params: ChunkParams, count: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let max = params.max_tokens.max(1);
    let counter = Counter::new(count);
    // The per-atom estimates exclude the counter's fixed overhead (special tokens such as
    // [CLS]/[SEP]), which a whole chunk pays once.
    let budget = max.saturating_sub(counter.overhead).max(1);
    let mut chunks = Vec::new();
    for section in sections(text) {
        let packer = Packer {
            paragraphs: &section.paragraphs,
            atoms: atomize(&section.paragraphs, budget, max, &counter),
            heading: &section.heading,
            max,
            counter: &counter,
        };
        packer.pack(budget, params.overlap_tokens, &mut chunks);
    }
    for (index, chunk) in chunks.iter_mut().enumerate() {
        chunk.index = index;
    }
    chunks
}

struct Counter<'a> {
    count: &'a dyn Fn(&str) -> usize,
    /// `count("")`: tokens every string pays regardless of content.
    overhead: usize,
}

impl<'a> Counter<'a> {
    fn new(count: &'a dyn Fn(&str) -> usize) -> Self {
        let overhead = count("");
        Counter { count, overhead }
    }

    fn exact(&self, s: &str) -> usize {
        (self.count)(s)
    }

    /// The tokens `s` adds to a chunk.
    fn estimate(&self, s: &str) -> usize {
        (self.count)(s).saturating_sub(self.overhead)
    }
}

// ---------------------------------------------------------------------------------------
// Sections and paragraphs
// ---------------------------------------------------------------------------------------

struct Section<'a> {
    heading: Option<String>,
    /// Trimmed, non-empty slices of the input.
    paragraphs: Vec<&'a str>,
}

fn sections(text: &str) -> Vec<Section<'_>> {
    let mut sections = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut current = Section {
        heading: None,
        paragraphs: Vec::new(),
    };
    // The open paragraph: from the first non-blank character of its first line to the end
    // of the last non-blank content.
    let mut para: Option<(usize, usize)> = None;
    let mut fence: Option<char> = None;
    let mut offset = 0usize;
    for raw in text.split_inclusive('\n') {
        let line_start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            if let Some((s, e)) = para.take() {
                current.paragraphs.push(&text[s..e]);
            }
            continue;
        }
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = &line[indent..];
        let mut heading = None;
        if indent <= 3 {
            if let Some(marker) = fence_marker(body) {
                match fence {
                    None => fence = Some(marker),
                    Some(open) if open == marker => fence = None,
                    Some(_) => {}
                }
            } else if fence.is_none() {
                heading = atx_heading(body);
            }
        }
        if let Some((level, title)) = heading {
            if let Some((s, e)) = para.take() {
                current.paragraphs.push(&text[s..e]);
            }
            if !current.paragraphs.is_empty() {
                sections.push(current);
            }
            path.retain(|(l, _)| *l < level);
            if !title.is_empty() {
                path.push((level, title.to_string()));
            }
            let heading = if path.is_empty() {
                None
            } else {
                Some(
                    path.iter()
                        .map(|(_, t)| t.as_str())
                        .collect::<Vec<_>>()
                        .join(" > "),
                )
            };
            current = Section {
                heading,
                paragraphs: Vec::new(),
            };
            continue;
        }
        let content_start = line_start + (line.len() - line.trim_start().len());
        let content_end = line_start + line.trim_end().len();
        para = Some(match para {
            Some((s, _)) => (s, content_end),
            None => (content_start, content_end),
        });
    }
    if let Some((s, e)) = para.take() {
        current.paragraphs.push(&text[s..e]);
    }
    if !current.paragraphs.is_empty() {
        sections.push(current);
    }
    sections
}

/// '`' or '~' if the line opens or closes a fenced code block.
pub(crate) fn fence_marker(line: &str) -> Option<char> {
    if line.starts_with("```") {
        Some('`')
    } else if line.starts_with("~~~") {
        Some('~')
    } else {
        None
    }
}

/// `## Text ##` -> (2, "Text"). The line must already be stripped of its indentation.
pub(crate) fn atx_heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    if level == 0 || level > 6 {
        return None;
    }
    let rest = &line[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let rest = rest.trim();
    let without_closing = rest.trim_end_matches('#');
    let text = if without_closing.is_empty() {
        ""
    } else if without_closing.ends_with(' ') || without_closing.ends_with('\t') {
        without_closing.trim_end()
    } else {
        rest
    };
    Some((level, text))
}

// ---------------------------------------------------------------------------------------
// Atoms: sentences, or words of over-long sentences, or pieces of over-long words
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Atom {
    /// Index of the paragraph in its section.
    para: usize,
    /// Byte range in the paragraph.
    start: usize,
    end: usize,
    /// Estimated tokens (overhead excluded).
    tokens: usize,
}

fn atomize(paragraphs: &[&str], budget: usize, max: usize, counter: &Counter<'_>) -> Vec<Atom> {
    let mut atoms = Vec::new();
    for (para, p) in paragraphs.iter().enumerate() {
        for (s, e) in sentence_spans(p) {
            let tokens = counter.estimate(&p[s..e]);
            if tokens <= budget {
                atoms.push(Atom {
                    para,
                    start: s,
                    end: e,
                    tokens,
                });
                continue;
            }
            for (ws, we) in word_spans(&p[s..e]) {
                let (ws, we) = (s + ws, s + we);
                let tokens = counter.estimate(&p[ws..we]);
                if tokens <= budget {
                    atoms.push(Atom {
                        para,
                        start: ws,
                        end: we,
                        tokens,
                    });
                    continue;
                }
                for (cs, ce) in split_chars(&p[ws..we], max, counter) {
                    let (cs, ce) = (ws + cs, ws + ce);
                    let tokens = counter.estimate(&p[cs..ce]);
                    atoms.push(Atom {
                        para,
                        start: cs,
                        end: ce,
                        tokens,
                    });
                }
            }
        }
    }
    atoms
}

/// Cuts `s` at the given candidate positions (`bounds`, increasing, starting at 0 and
/// ending at `s.len()`) into greedy (longest-first) pieces whose trimmed text is at most `max`
/// tokens by exact count. A piece between two adjacent bounds is taken even if it is over.
/// Galloping then binary search: O(log) counts per piece, each over at most twice the
/// piece's length.
fn split_at_bounds(
    s: &str,
    bounds: &[usize],
    max: usize,
    counter: &Counter<'_>,
) -> Vec<(usize, usize)> {
    let mut pieces = Vec::new();
    let n = bounds.len().saturating_sub(1);
    let mut i = 0usize;
    while i < n {
        let from = bounds[i];
        let fits = |j: usize| counter.exact(s[from..bounds[j]].trim_end()) <= max;
        // `lo` is accepted (forced for i + 1); `hi`, once found, is known not to fit.
        // Never counting the whole rest up front keeps a huge input linear.
        let mut lo = i + 1;
        let mut step = 1usize;
        let mut hi = None;
        while lo < n {
            let probe = lo.saturating_add(step).min(n);
            if fits(probe) {
                lo = probe;
                step = step.saturating_mul(2);
            } else {
                hi = Some(probe);
                break;
            }
        }
        if let Some(mut hi) = hi {
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if fits(mid) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
        }
        pieces.push((from, bounds[lo]));
        i = lo;
    }
    pieces
        .into_iter()
        .filter_map(|(a, b)| {
            let piece = &s[a..b];
            let lead = piece.len() - piece.trim_start().len();
            let trimmed = piece.trim();
            (!trimmed.is_empty()).then(|| (a + lead, a + lead + trimmed.len()))
        })
        .collect()
}

/// Hard split of one word at character boundaries.
fn split_chars(word: &str, max: usize, counter: &Counter<'_>) -> Vec<(usize, usize)> {
    let mut bounds: Vec<usize> = word.char_indices().map(|(i, _)| i).collect();
    bounds.push(word.len());
    split_at_bounds(word, &bounds, max, counter)
}

/// Exact split of a text that is over `max`: at word boundaries, then inside words.
fn split_exact(text: &str, max: usize, counter: &Counter<'_>) -> Vec<(usize, usize)> {
    let mut bounds: Vec<usize> = word_spans(text).into_iter().map(|(s, _)| s).collect();
    if bounds.first() != Some(&0) {
        bounds.insert(0, 0);
    }
    bounds.push(text.len());
    let mut out = Vec::new();
    for (a, b) in split_at_bounds(text, &bounds, max, counter) {
        if counter.exact(&text[a..b]) <= max {
            out.push((a, b));
        } else {
            out.extend(
                split_chars(&text[a..b], max, counter)
                    .into_iter()
                    .map(|(x, y)| (a + x, a + y)),
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------------------

struct Packer<'s, 'c> {
    paragraphs: &'s [&'s str],
    atoms: Vec<Atom>,
    heading: &'s Option<String>,
    max: usize,
    counter: &'s Counter<'c>,
}

impl Packer<'_, '_> {
    /// Greedy packing of one section's atoms into chunks `[s, e)` (contiguous atom ranges;
    /// with overlap, a chunk's range starts before the previous one's end). A paragraph that
    /// fits in a chunk on its own is never split across chunks.
    fn pack(&self, budget: usize, overlap: usize, out: &mut Vec<Chunk>) {
        let atoms = &self.atoms;
        let (mut s, mut e, mut sum) = (0usize, 0usize, 0usize);
        let mut a0 = 0usize;
        while a0 < atoms.len() {
            let para = atoms[a0].para;
            let mut a1 = a0;
            let mut total = 0usize;
            while a1 < atoms.len() && atoms[a1].para == para {
                total += atoms[a1].tokens;
                a1 += 1;
            }
            // Whole paragraph as one unit if it fits on its own, else atom by atom.
            let units: Vec<(usize, usize, usize)> = if total <= budget {
                vec![(a0, a1, total)]
            } else {
                (a0..a1).map(|k| (k, k + 1, atoms[k].tokens)).collect()
            };
            for (u0, u1, t) in units {
                if s == e {
                    (s, e, sum) = (u0, u1, t);
                } else if sum + t <= budget {
                    e = u1;
                    sum += t;
                } else {
                    self.emit(s, e, out);
                    let (os, osum) = self.overlap_start(s, e, overlap, budget.saturating_sub(t));
                    (s, e, sum) = (os, u1, osum + t);
                }
            }
            a0 = a1;
        }
        if s < e {
            self.emit(s, e, out);
        }
    }

    /// The start of the trailing atoms of chunk `[s, e)` that total at most `overlap` and
    /// leave `room`; never the whole chunk. Returns (start, their tokens); start == e means
    /// no overlap.
    fn overlap_start(&self, s: usize, e: usize, overlap: usize, room: usize) -> (usize, usize) {
        let limit = overlap.min(room);
        if limit == 0 {
            return (e, 0);
        }
        let (mut j, mut acc) = (e, 0usize);
        while j > s + 1 {
            let t = self.atoms[j - 1].tokens;
            if acc + t > limit {
                break;
            }
            acc += t;
            j -= 1;
        }
        (j, acc)
    }

    /// Text of atoms `[s, e)`: each paragraph's covered span as it is in the input,
    /// paragraphs joined by a blank line.
    fn text(&self, s: usize, e: usize) -> String {
        let mut text = String::new();
        let mut k = s;
        while k < e {
            let para = self.atoms[k].para;
            let mut last = k;
            while last + 1 < e && self.atoms[last + 1].para == para {
                last += 1;
            }
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&self.paragraphs[para][self.atoms[k].start..self.atoms[last].end]);
            k = last + 1;
        }
        text
    }

    /// Counts the chunk `[s, e)` exactly and pushes it, re-splitting it if the estimate
    /// was too low.
    fn emit(&self, s: usize, e: usize, out: &mut Vec<Chunk>) {
        let text = self.text(s, e);
        let tokens = self.counter.exact(&text);
        if tokens <= self.max {
            self.push(text, tokens, out);
            return;
        }
        if e - s >= 2 {
            let total: usize = self.atoms[s..e].iter().map(|a| a.tokens).sum();
            let mut mid = e - 1;
            let mut acc = 0usize;
            for k in s..e - 1 {
                acc += self.atoms[k].tokens;
                if acc * 2 >= total {
                    mid = k + 1;
                    break;
                }
            }
            self.emit(s, mid, out);
            self.emit(mid, e, out);
            return;
        }
        // One atom over the limit by exact count: cut its text by exact counts.
        for (a, b) in split_exact(&text, self.max, self.counter) {
            let piece = text[a..b].to_string();
            let tokens = self.counter.exact(&piece);
            self.push(piece, tokens, out);
        }
    }

    fn push(&self, text: String, tokens: usize, out: &mut Vec<Chunk>) {
        if text.trim().is_empty() {
            return;
        }
        out.push(Chunk {
            index: out.len(),
            text,
            heading: self.heading.clone(),
            tokens,
        });
    }
}

#[cfg(test)]
mod tests {
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
}
