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
mod tests;
