//! Where sentences and words begin and end in a paragraph: the boundaries the chunker may
//! cut at. Apart from the packing so the boundary rules (punctuation, closers, list items,
//! CJK stops) read on their own.

/// Closing characters that may follow sentence-ending punctuation.
fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '}' | '\u{201D}' | '\u{2019}' | '\u{BB}' | '*' | '_' | '`'
    )
}

/// Whether the text after a newline starts a list item or table row, which makes the
/// newline a sentence boundary.
fn starts_list_item(rest: &str) -> bool {
    let r = rest.trim_start_matches([' ', '\t']);
    if r.starts_with("- ") || r.starts_with("* ") || r.starts_with("+ ") || r.starts_with('|') {
        return true;
    }
    let digits = r.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && digits <= 9 && (r[digits..].starts_with(". ") || r[digits..].starts_with(") "))
}

/// Byte ranges of the sentences of `p` (surrounding whitespace excluded). Boundaries:
/// `.`, `!`, `?` (plus closing quotes/brackets) followed by whitespace or the end; `。！？`;
/// a newline before a list item or table row. `1.` at the start of a sentence is a list
/// number, not a sentence.
pub(super) fn sentence_spans(p: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start: Option<usize> = None;
    let mut iter = p.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let st = match start {
            Some(st) => st,
            None => {
                if c.is_whitespace() {
                    continue;
                }
                start = Some(i);
                i
            }
        };
        if c == '\n' {
            if starts_list_item(&p[i + 1..]) {
                let end = st + p[st..i].trim_end().len();
                if end > st {
                    spans.push((st, end));
                }
                start = None;
            }
            continue;
        }
        let cjk = matches!(c, '\u{3002}' | '\u{FF01}' | '\u{FF1F}');
        if cjk || matches!(c, '.' | '!' | '?') {
            if c == '.' && p[st..i].bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = iter.peek() {
                if is_closer(d) {
                    end = j + d.len_utf8();
                    iter.next();
                } else {
                    break;
                }
            }
            let boundary = cjk
                || match iter.peek() {
                    None => true,
                    Some(&(_, d)) => d.is_whitespace(),
                };
            if boundary {
                spans.push((st, end));
                start = None;
            }
        }
    }
    if let Some(st) = start {
        let end = st + p[st..].trim_end().len();
        if end > st {
            spans.push((st, end));
        }
    }
    spans
}

/// Byte ranges of the whitespace-separated words of `s`.
pub(super) fn word_spans(s: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(st)) => {
                spans.push((st, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(st) = start {
        spans.push((st, s.len()));
    }
    spans
}
