//! HTML to text that keeps its structure: headings become `#` lines, block elements
//! paragraph breaks, list items `- ` lines; scripts, styles and other non-content elements
//! are dropped. A small hand-written scanner: it never recurses, so no nesting depth can
//! exhaust the stack, and it never panics on malformed markup.

use super::entities::decode_entities;
use super::{ExtractError, SourceDoc, decode_utf8, single};

pub(super) fn extract_html(bytes: &[u8]) -> Result<SourceDoc, ExtractError> {
    let html = decode_utf8(bytes)?;
    let (title, text) = html_to_text(html);
    single(title, text)
}

/// Elements whose content is dropped entirely (up to the matching close tag).
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "iframe", "object",
];

/// Block elements that stand alone as paragraphs: a blank line before and after.
const PARAGRAPH_BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "blockquote",
    "pre",
    "table",
    "ul",
    "ol",
    "dl",
    "header",
    "footer",
    "nav",
    "aside",
    "main",
    "figure",
    "figcaption",
    "form",
    "fieldset",
    "address",
    "details",
    "summary",
    "hr",
    "caption",
    "center",
    "menu",
    "hgroup",
    "dialog",
    "legend",
    "body",
    "html",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
];

/// Block elements that start a new line but not a new paragraph.
const LINE_BLOCKS: &[&str] = &["li", "tr", "dt", "dd", "option"];

/// Builds the output text: collapses whitespace, inserts line and paragraph breaks lazily
/// (only when more text follows), and prefixes the first text of a line (`## `, `- `).
#[derive(Default)]
struct TextSink {
    out: String,
    /// 0: none, 1: newline, 2: blank line; applied before the next character.
    pending_break: u8,
    pending_space: bool,
    /// Emitted before the first character of the next line (heading marker, list bullet).
    prefix: Option<String>,
    /// Inside `<hN>`: breaks become spaces so the heading stays on one line.
    in_heading: bool,
}

impl TextSink {
    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }

    /// Requests a break of `n` (1 or 2) newlines before the next text.
    fn brk(&mut self, n: u8) {
        if self.in_heading {
            self.pending_space = true;
            return;
        }
        self.pending_break = self.pending_break.max(n);
        self.pending_space = false;
    }

    /// A forced line break (`<br>`, a newline inside `<pre>`): a second one in a row makes
    /// a blank line.
    fn hard_break(&mut self) {
        if self.in_heading {
            self.pending_space = true;
            return;
        }
        self.pending_break = if self.pending_break == 0 { 1 } else { 2 };
        self.pending_space = false;
    }

    fn space(&mut self) {
        self.pending_space = true;
    }

    fn push_char(&mut self, ch: char) {
        if self.pending_break > 0 {
            if !self.out.is_empty() {
                let trimmed = self.out.trim_end_matches([' ', '\t']).len();
                self.out.truncate(trimmed);
                for _ in 0..self.pending_break {
                    self.out.push('\n');
                }
            }
            self.pending_break = 0;
            self.pending_space = false;
        }
        if self.at_line_start() {
            if let Some(prefix) = self.prefix.take() {
                self.out.push_str(&prefix);
            }
        } else if self.pending_space {
            self.out.push(' ');
        }
        self.pending_space = false;
        self.out.push(ch);
    }

    /// Text already entity-decoded. In `<pre>`, newlines are kept.
    fn push_text(&mut self, text: &str, pre: bool) {
        for ch in text.chars() {
            if pre && ch == '\n' {
                self.hard_break();
            } else if ch.is_whitespace() {
                self.space();
            } else if ch.is_control() {
                // Stray control characters (NUL, form feed, ...) read as spaces.
                self.space();
            } else {
                self.push_char(ch);
            }
        }
    }

    fn finish(self) -> String {
        self.out.trim().to_string()
    }
}

/// HTML -> (title, structured text). Hand-written, tolerant of malformed markup.
fn html_to_text(html: &str) -> (Option<String>, String) {
    let bytes = html.as_bytes();
    let mut scan = Scan {
        html,
        sink: TextSink::default(),
        title: None,
        in_head: false,
        pre_depth: 0,
    };
    let mut i = 0usize;
    // All the positions this loop and `Scan`'s steps slice at hold ASCII bytes ('<', '>',
    // ...) or are the string's ends, so they are always char boundaries.
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i = scan.text(i);
            continue;
        }
        // bytes[i] == '<'
        let next = bytes.get(i + 1).copied();
        i = match next {
            Some(b'!') => scan.declaration(i),
            Some(b'?') => memchr(b'>', bytes, i).map_or(bytes.len(), |e| e + 1),
            Some(b'/') if bytes.get(i + 2).is_some_and(|b| b.is_ascii_alphabetic()) => {
                scan.close_tag(i + 2)
            }
            Some(b) if b.is_ascii_alphabetic() => scan.open_tag(i + 1),
            _ => {
                // A lone '<' (e.g. "a < b") is text.
                scan.content("<");
                i + 1
            }
        };
    }
    (scan.title, scan.sink.finish())
}

/// The scanner's state between steps: each step reads one piece of markup or text at an
/// index and returns the index just past it, so the loop above never recurses.
struct Scan<'a> {
    html: &'a str,
    sink: TextSink,
    /// The first non-empty `<title>`.
    title: Option<String>,
    /// Inside `<head>` (until `</head>`, `<body>` or a block element): not content.
    in_head: bool,
    /// Open `<pre>` elements: their newlines are kept.
    pre_depth: usize,
}

impl Scan<'_> {
    /// Text outside `<head>` goes to the sink (newlines kept inside `<pre>`).
    fn content(&mut self, text: &str) {
        if !self.in_head {
            self.sink.push_text(text, self.pre_depth > 0);
        }
    }

    /// Text from `i` up to the next `<`, entities decoded; returns where the markup starts.
    fn text(&mut self, i: usize) -> usize {
        let (html, bytes) = (self.html, self.html.as_bytes());
        let end = memchr(b'<', bytes, i).unwrap_or(bytes.len());
        if !self.in_head {
            let decoded = decode_entities(&html[i..end]);
            self.content(&decoded);
        }
        end
    }

    /// A comment, a CDATA section (its text is content) or a declaration at `i` (`<!`).
    fn declaration(&mut self, i: usize) -> usize {
        let (html, bytes) = (self.html, self.html.as_bytes());
        if bytes[i..].starts_with(b"<!--") {
            match find(bytes, i + 4, b"-->") {
                Some(end) => end + 3,
                None => bytes.len(),
            }
        } else if bytes[i..].starts_with(b"<![CDATA[") {
            let start = i + 9;
            let end = find(bytes, start, b"]]>").unwrap_or(bytes.len());
            self.content(&html[start..end]);
            (end + 3).min(bytes.len())
        } else {
            // <!DOCTYPE ...> and other declarations.
            memchr(b'>', bytes, i).map_or(bytes.len(), |e| e + 1)
        }
    }

    /// A close tag whose name starts at `start`: ends the heading, block or line it closes.
    fn close_tag(&mut self, start: usize) -> usize {
        let (name, _, end) = parse_tag(self.html.as_bytes(), start);
        let sink = &mut self.sink;
        match name.as_str() {
            "head" => self.in_head = false,
            "pre" => {
                self.pre_depth = self.pre_depth.saturating_sub(1);
                sink.prefix = None;
                sink.brk(2);
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                sink.in_heading = false;
                sink.prefix = None;
                sink.brk(2);
            }
            "br" => sink.hard_break(),
            "td" | "th" => sink.space(),
            n if PARAGRAPH_BLOCKS.contains(&n) => {
                sink.prefix = None;
                sink.brk(2);
            }
            n if LINE_BLOCKS.contains(&n) => {
                sink.prefix = None;
                sink.brk(1);
            }
            _ => {}
        }
        end
    }

    /// An open tag whose name starts at `start`: starts a heading, block or line, or skips
    /// an element whose content is not text (reading the title on the way).
    fn open_tag(&mut self, start: usize) -> usize {
        let (html, bytes) = (self.html, self.html.as_bytes());
        let (name, self_closing, mut i) = parse_tag(bytes, start);
        let sink = &mut self.sink;
        match name.as_str() {
            "head" => self.in_head = true,
            "body" => self.in_head = false,
            "title" => {
                let close = find_ci(bytes, i, b"</title").unwrap_or(bytes.len());
                if self.title.is_none() {
                    let t = collapse_ws(&decode_entities(&html[i..close]));
                    if !t.is_empty() {
                        self.title = Some(t);
                    }
                }
                i = skip_close_tag(bytes, close);
            }
            // A self-closing one (`<svg/>`) has no content to skip.
            n if SKIPPED.contains(&n) && !self_closing => {
                let mut needle = Vec::with_capacity(n.len() + 2);
                needle.extend_from_slice(b"</");
                needle.extend_from_slice(n.as_bytes());
                let close = find_ci(bytes, i, &needle).unwrap_or(bytes.len());
                i = skip_close_tag(bytes, close);
            }
            "br" if !self.in_head => sink.hard_break(),
            "td" | "th" => sink.space(),
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.in_head = false;
                sink.in_heading = false;
                sink.brk(2);
                let level = usize::from(name.as_bytes()[1] - b'0');
                let mut marker = "#".repeat(level);
                marker.push(' ');
                sink.prefix = Some(marker);
                sink.in_heading = !self_closing;
            }
            "li" => {
                self.in_head = false;
                sink.brk(1);
                sink.prefix = Some("- ".to_string());
            }
            "pre" => {
                self.in_head = false;
                sink.brk(2);
                if !self_closing {
                    self.pre_depth += 1;
                    // A newline right after <pre> is not content.
                    if bytes.get(i) == Some(&b'\n') {
                        i += 1;
                    }
                }
            }
            n if PARAGRAPH_BLOCKS.contains(&n) => {
                self.in_head = false;
                sink.brk(2);
            }
            n if LINE_BLOCKS.contains(&n) => {
                self.in_head = false;
                sink.brk(1);
            }
            _ => {}
        }
        i
    }
}

/// Parses a tag starting at `start` (the first letter of its name). Returns the lowercased
/// name, whether it ends with `/>`, and the index just past its `>` (or the end of input).
/// Quoted attribute values may contain `>`; an unterminated quote falls back to the first
/// `>` after the name.
fn parse_tag(bytes: &[u8], start: usize) -> (String, bool, usize) {
    let mut j = start;
    while j < bytes.len()
        && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'-' || bytes[j] == b':')
    {
        j += 1;
    }
    let name = String::from_utf8_lossy(&bytes[start..j]).to_ascii_lowercase();
    let name_end = j;
    let mut last_non_space: u8 = 0;
    while j < bytes.len() {
        let b = bytes[j];
        match b {
            b'>' => {
                let self_closing = last_non_space == b'/';
                return (name, self_closing, j + 1);
            }
            b'"' | b'\'' if last_non_space == b'=' => match memchr(b, bytes, j + 1) {
                Some(close) => {
                    j = close + 1;
                    last_non_space = b;
                    continue;
                }
                None => {
                    let end = memchr(b'>', bytes, name_end).map_or(bytes.len(), |e| e + 1);
                    return (name, false, end);
                }
            },
            _ => {
                if !b.is_ascii_whitespace() {
                    last_non_space = b;
                }
            }
        }
        j += 1;
    }
    (name, false, bytes.len())
}

/// Index just past the `>` of a close tag starting at `at` (or the end of input).
fn skip_close_tag(bytes: &[u8], at: usize) -> usize {
    if at >= bytes.len() {
        return bytes.len();
    }
    memchr(b'>', bytes, at).map_or(bytes.len(), |e| e + 1)
}

fn memchr(needle: u8, bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .iter()
        .position(|&b| b == needle)
        .map(|p| p + from)
}

pub(crate) fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let hay = bytes.get(from..)?;
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Case-insensitive (ASCII) search.
fn find_ci(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let hay = bytes.get(from..)?;
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| p + from)
}

/// Runs of whitespace -> one space; trimmed.
pub(crate) fn collapse_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests;
