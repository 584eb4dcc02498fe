//! Bytes of one uploaded file -> plain-text documents for the chunker.
//!
//! Markdown and text pass through (BOM stripped, newlines normalised); HTML is turned into
//! text that keeps its structure (headings become `#` lines, block elements paragraph
//! breaks, list items `- ` lines); PDF goes through `pdf-extract`; JSONL is a BEIR corpus
//! (`{"_id", "title", "text", "metadata"}` per line) and yields one result per line.
//! Nothing here panics on hostile input: the PDF parser is run under `catch_unwind`.

use std::path::Path;

use serde_json::{Map, Value};

use super::chunk::{atx_heading, fence_marker};

/// The formats the RAG ingester understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Markdown,
    Text,
    Html,
    Pdf,
    Jsonl,
}

impl Format {
    /// By file extension (case-insensitive): md/markdown, txt/text, html/htm, pdf, jsonl.
    /// None otherwise.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "md" | "markdown" => Some(Format::Markdown),
            "txt" | "text" => Some(Format::Text),
            "html" | "htm" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            "jsonl" => Some(Format::Jsonl),
            _ => None,
        }
    }

    /// By a declared name or MIME type (case-insensitive; MIME parameters such as
    /// `; charset=utf-8` are ignored). None otherwise.
    pub fn from_name(name: &str) -> Option<Format> {
        let name = name
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "markdown" | "md" | "text/markdown" => Some(Format::Markdown),
            "text" | "txt" | "text/plain" => Some(Format::Text),
            "html" | "text/html" => Some(Format::Html),
            "pdf" | "application/pdf" => Some(Format::Pdf),
            "jsonl" | "application/jsonl" | "application/x-ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }

    /// The serde name: `markdown`, `text`, `html`, `pdf`, `jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Markdown => "markdown",
            Format::Text => "text",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Jsonl => "jsonl",
        }
    }
}

/// One document pulled out of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDoc {
    /// BEIR `_id`; None for single-document formats (the caller derives an id).
    pub id: Option<String>,
    /// BEIR `title`, HTML `<title>`, first markdown H1; None for text and PDF.
    pub title: Option<String>,
    /// Plain text; markdown headings kept as `#` lines so the chunker sees structure.
    pub text: String,
    /// BEIR `metadata` object if present, else empty.
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ExtractError {
    #[error("unsupported file type `{0}` (supported: .md, .txt, .html, .pdf, .jsonl)")]
    Unsupported(String),
    #[error("the file is not valid UTF-8 text")]
    NotUtf8,
    #[error("corrupt or unreadable PDF: {0}")]
    CorruptPdf(String),
    #[error("the document has no text")]
    Empty,
    #[error("line {line}: {message}")]
    BadLine { line: usize, message: String },
}

/// Single-document formats return one doc (`Err(Empty)` if it has no non-whitespace text
/// after extraction). Jsonl returns one result per non-blank line, so one bad line does
/// not lose the others: `Err(BadLine)` for invalid JSON / missing `_id` or `text` /
/// non-string fields, `Err(Empty)` for empty text.
///
/// PDF extraction is CPU-bound and can be slow on large files: call this from a blocking
/// context (e.g. `tokio::task::spawn_blocking`).
pub fn extract(format: Format, bytes: &[u8]) -> Vec<Result<SourceDoc, ExtractError>> {
    match format {
        Format::Jsonl => extract_jsonl(bytes),
        Format::Text => vec![extract_text(bytes)],
        Format::Markdown => vec![extract_markdown(bytes)],
        Format::Html => vec![extract_html(bytes)],
        Format::Pdf => vec![extract_pdf(bytes)],
    }
}

fn single(title: Option<String>, text: String) -> Result<SourceDoc, ExtractError> {
    if text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(SourceDoc {
        id: None,
        title,
        text,
        metadata: Map::new(),
    })
}

/// UTF-8 with an optional BOM.
fn decode_utf8(bytes: &[u8]) -> Result<&str, ExtractError> {
    let bytes = bytes
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|_| ExtractError::NotUtf8)
}

/// `\r\n` and lone `\r` -> `\n`.
fn normalize_newlines(s: &str) -> String {
    if !s.contains('\r') {
        return s.to_string();
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

fn extract_text(bytes: &[u8]) -> Result<SourceDoc, ExtractError> {
    let text = normalize_newlines(decode_utf8(bytes)?);
    single(None, text.trim().to_string())
}

fn extract_markdown(bytes: &[u8]) -> Result<SourceDoc, ExtractError> {
    let text = normalize_newlines(decode_utf8(bytes)?);
    let title = markdown_title(&text);
    single(title, text.trim().to_string())
}

/// The text of the first level-1 ATX heading (`# Title`) outside fenced code blocks.
fn markdown_title(text: &str) -> Option<String> {
    let mut fence: Option<char> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = &line[indent..];
        if indent <= 3
            && let Some(marker) = fence_marker(body)
        {
            match fence {
                None => fence = Some(marker),
                Some(open) if open == marker => fence = None,
                Some(_) => {}
            }
            continue;
        }
        if fence.is_some() || indent > 3 {
            continue;
        }
        if let Some((1, heading)) = atx_heading(body)
            && !heading.is_empty()
        {
            return Some(heading.to_string());
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------

fn extract_html(bytes: &[u8]) -> Result<SourceDoc, ExtractError> {
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
    let mut sink = TextSink::default();
    let mut title: Option<String> = None;
    let mut in_head = false;
    let mut pre_depth = 0usize;
    let mut i = 0usize;
    // All the positions this loop slices at hold ASCII bytes ('<', '>', ...) or are the
    // string's ends, so they are always char boundaries.
    while i < bytes.len() {
        if bytes[i] != b'<' {
            let end = memchr(b'<', bytes, i).unwrap_or(bytes.len());
            if !in_head {
                let decoded = decode_entities(&html[i..end]);
                sink.push_text(&decoded, pre_depth > 0);
            }
            i = end;
            continue;
        }
        // bytes[i] == '<'
        let next = bytes.get(i + 1).copied();
        match next {
            Some(b'!') => {
                if bytes[i..].starts_with(b"<!--") {
                    i = match find(bytes, i + 4, b"-->") {
                        Some(end) => end + 3,
                        None => bytes.len(),
                    };
                } else if bytes[i..].starts_with(b"<![CDATA[") {
                    let start = i + 9;
                    let end = find(bytes, start, b"]]>").unwrap_or(bytes.len());
                    if !in_head {
                        sink.push_text(&html[start..end], pre_depth > 0);
                    }
                    i = (end + 3).min(bytes.len());
                } else {
                    // <!DOCTYPE ...> and other declarations.
                    i = memchr(b'>', bytes, i).map_or(bytes.len(), |e| e + 1);
                }
            }
            Some(b'?') => {
                i = memchr(b'>', bytes, i).map_or(bytes.len(), |e| e + 1);
            }
            Some(b'/') if bytes.get(i + 2).is_some_and(|b| b.is_ascii_alphabetic()) => {
                let (name, _, end) = parse_tag(bytes, i + 2);
                i = end;
                match name.as_str() {
                    "head" => in_head = false,
                    "pre" => {
                        pre_depth = pre_depth.saturating_sub(1);
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
            }
            Some(b) if b.is_ascii_alphabetic() => {
                let (name, self_closing, end) = parse_tag(bytes, i + 1);
                i = end;
                match name.as_str() {
                    "head" => in_head = true,
                    "body" => in_head = false,
                    "title" => {
                        let close = find_ci(bytes, i, b"</title").unwrap_or(bytes.len());
                        if title.is_none() {
                            let t = collapse_ws(&decode_entities(&html[i..close]));
                            if !t.is_empty() {
                                title = Some(t);
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
                    "br" if !in_head => sink.hard_break(),
                    "td" | "th" => sink.space(),
                    "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                        in_head = false;
                        sink.in_heading = false;
                        sink.brk(2);
                        let level = usize::from(name.as_bytes()[1] - b'0');
                        let mut marker = "#".repeat(level);
                        marker.push(' ');
                        sink.prefix = Some(marker);
                        sink.in_heading = !self_closing;
                    }
                    "li" => {
                        in_head = false;
                        sink.brk(1);
                        sink.prefix = Some("- ".to_string());
                    }
                    "pre" => {
                        in_head = false;
                        sink.brk(2);
                        if !self_closing {
                            pre_depth += 1;
                            // A newline right after <pre> is not content.
                            if bytes.get(i) == Some(&b'\n') {
                                i += 1;
                            }
                        }
                    }
                    n if PARAGRAPH_BLOCKS.contains(&n) => {
                        in_head = false;
                        sink.brk(2);
                    }
                    n if LINE_BLOCKS.contains(&n) => {
                        in_head = false;
                        sink.brk(1);
                    }
                    _ => {}
                }
            }
            _ => {
                // A lone '<' (e.g. "a < b") is text.
                if !in_head {
                    sink.push_text("<", pre_depth > 0);
                }
                i += 1;
            }
        }
    }
    (title, sink.finish())
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

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
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
fn collapse_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Named entities beyond the required five plus `&nbsp;` (which becomes a plain space).
const NAMED_ENTITIES: &[(&str, &str)] = &[
    ("amp", "&"),
    ("lt", "<"),
    ("gt", ">"),
    ("quot", "\""),
    ("apos", "'"),
    ("nbsp", " "),
    ("ndash", "\u{2013}"),
    ("mdash", "\u{2014}"),
    ("hellip", "\u{2026}"),
    ("lsquo", "\u{2018}"),
    ("rsquo", "\u{2019}"),
    ("ldquo", "\u{201C}"),
    ("rdquo", "\u{201D}"),
    ("laquo", "\u{AB}"),
    ("raquo", "\u{BB}"),
    ("bull", "\u{2022}"),
    ("middot", "\u{B7}"),
    ("copy", "\u{A9}"),
    ("reg", "\u{AE}"),
    ("trade", "\u{2122}"),
    ("euro", "\u{20AC}"),
    ("pound", "\u{A3}"),
    ("yen", "\u{A5}"),
    ("cent", "\u{A2}"),
    ("deg", "\u{B0}"),
    ("times", "\u{D7}"),
    ("divide", "\u{F7}"),
    ("sect", "\u{A7}"),
    ("para", "\u{B6}"),
    ("shy", ""),
    ("zwj", ""),
    ("zwnj", ""),
];

/// Decodes `&name;`, `&#NNN;` and `&#xHH;`. Unknown or unterminated references are left as
/// they are; invalid code points become U+FFFD.
fn decode_entities(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('&') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        // A reference is at most ~32 ASCII bytes before its ';'.
        let semi = after.bytes().take(32).position(|b| b == b';');
        let decoded = semi.and_then(|semi| decode_reference(&after[..semi]).map(|d| (d, semi)));
        match decoded {
            Some((text, semi)) => {
                out.push_str(&text);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// The body of a reference (between `&` and `;`).
fn decode_reference(body: &str) -> Option<String> {
    if let Some(num) = body.strip_prefix('#') {
        let (digits, radix) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16),
            None => (num, 10),
        };
        if digits.is_empty() || digits.len() > 8 || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        let code = u32::from_str_radix(digits, radix).ok()?;
        let ch = match code {
            0 => '\u{FFFD}',
            _ => char::from_u32(code).unwrap_or('\u{FFFD}'),
        };
        return Some(ch.to_string());
    }
    let lower = body.to_ascii_lowercase();
    NAMED_ENTITIES
        .iter()
        .find(|(name, _)| *name == body || (*name == lower && body.len() <= 6))
        .map(|(_, text)| (*text).to_string())
}

// ---------------------------------------------------------------------------------------
// PDF
// ---------------------------------------------------------------------------------------

fn extract_pdf(bytes: &[u8]) -> Result<SourceDoc, ExtractError> {
    // lopdf looks for the header anywhere in the buffer; without one it is not a PDF.
    if find(bytes, 0, b"%PDF-").is_none() {
        return Err(ExtractError::CorruptPdf("no %PDF header".to_string()));
    }
    // pdf-extract (and lopdf under it) never print to stdout from library code (its debug
    // macro is compiled out; diagnostics go through the `log` crate), but it can panic
    // (`unwrap`/`expect`/`panic!` on malformed objects), hence `catch_unwind`. A caught panic
    // still runs the process's panic hook, which prints a "thread ... panicked at" line to
    // stderr. Deeply nested objects could in principle overflow the stack, which cannot be
    // caught.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pdf_extract::extract_text_from_mem(bytes)
    }));
    let raw = match result {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => return Err(ExtractError::CorruptPdf(e.to_string())),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the PDF parser panicked".to_string());
            return Err(ExtractError::CorruptPdf(message));
        }
    };
    single(None, normalize_pdf_text(&raw))
}

/// Form feeds (page breaks) -> blank lines; control characters dropped; runs of spaces
/// collapsed within each line; lines trimmed; at most one blank line in a row.
fn normalize_pdf_text(raw: &str) -> String {
    let raw = normalize_newlines(raw).replace('\u{0C}', "\n\n");
    let mut out = String::with_capacity(raw.len());
    let mut blank_run = 0usize;
    for line in raw.split('\n') {
        let cleaned: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let collapsed = collapse_ws(&cleaned);
        if collapsed.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(&collapsed);
    }
    out
}

// ---------------------------------------------------------------------------------------
// JSONL (BEIR corpus)
// ---------------------------------------------------------------------------------------

fn extract_jsonl(bytes: &[u8]) -> Vec<Result<SourceDoc, ExtractError>> {
    let bytes = bytes
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(bytes);
    let mut docs = Vec::new();
    for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = n + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        docs.push(match std::str::from_utf8(raw) {
            Ok(line) => parse_beir_line(line, line_no),
            Err(_) => Err(bad_line(line_no, "not valid UTF-8")),
        });
    }
    docs
}

fn bad_line(line: usize, message: impl Into<String>) -> ExtractError {
    ExtractError::BadLine {
        line,
        message: message.into(),
    }
}

fn parse_beir_line(line: &str, line_no: usize) -> Result<SourceDoc, ExtractError> {
    let value: Value =
        serde_json::from_str(line).map_err(|e| bad_line(line_no, format!("invalid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(bad_line(line_no, "expected a JSON object"));
    };
    let id = match obj.remove("_id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id,
        Some(Value::String(_)) => return Err(bad_line(line_no, "`_id` is empty")),
        Some(_) => return Err(bad_line(line_no, "`_id` must be a string")),
        None => return Err(bad_line(line_no, "missing `_id`")),
    };
    let text = match obj.remove("text") {
        Some(Value::String(text)) => text,
        Some(_) => return Err(bad_line(line_no, "`text` must be a string")),
        None => return Err(bad_line(line_no, "missing `text`")),
    };
    let title = match obj.remove("title") {
        Some(Value::String(title)) => {
            let title = title.trim();
            (!title.is_empty()).then(|| title.to_string())
        }
        Some(Value::Null) | None => None,
        Some(_) => return Err(bad_line(line_no, "`title` must be a string")),
    };
    let metadata = match obj.remove("metadata") {
        Some(Value::Object(map)) => map,
        Some(Value::Null) | None => Map::new(),
        Some(_) => return Err(bad_line(line_no, "`metadata` must be an object")),
    };
    let text = normalize_newlines(&text).trim().to_string();
    if text.is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(SourceDoc {
        id: Some(id),
        title,
        text,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/rag")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    fn one(format: Format, bytes: &[u8]) -> Result<SourceDoc, ExtractError> {
        let mut docs = extract(format, bytes);
        assert_eq!(
            docs.len(),
            1,
            "single-document formats return exactly one result"
        );
        docs.remove(0)
    }

    #[test]
    fn formats_by_path_and_name() {
        assert_eq!(
            Format::from_path(Path::new("a/b/Guide.MD")),
            Some(Format::Markdown)
        );
        assert_eq!(
            Format::from_path(Path::new("x.markdown")),
            Some(Format::Markdown)
        );
        assert_eq!(Format::from_path(Path::new("x.TXT")), Some(Format::Text));
        assert_eq!(Format::from_path(Path::new("x.htm")), Some(Format::Html));
        assert_eq!(Format::from_path(Path::new("x.Html")), Some(Format::Html));
        assert_eq!(Format::from_path(Path::new("x.pdf")), Some(Format::Pdf));
        assert_eq!(Format::from_path(Path::new("x.jsonl")), Some(Format::Jsonl));
        assert_eq!(Format::from_path(Path::new("data.xyz")), None);
        assert_eq!(Format::from_path(Path::new("README")), None);
        assert_eq!(
            Format::from_name("text/html; charset=utf-8"),
            Some(Format::Html)
        );
        assert_eq!(Format::from_name("Application/PDF"), Some(Format::Pdf));
        assert_eq!(
            Format::from_name("application/x-ndjson"),
            Some(Format::Jsonl)
        );
        assert_eq!(Format::from_name("md"), Some(Format::Markdown));
        assert_eq!(Format::from_name("text/plain"), Some(Format::Text));
        assert_eq!(Format::from_name("image/png"), None);
        for f in [
            Format::Markdown,
            Format::Text,
            Format::Html,
            Format::Pdf,
            Format::Jsonl,
        ] {
            assert_eq!(Format::from_name(f.as_str()), Some(f));
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
            let back: Format = serde_json::from_str(&json).unwrap();
            assert_eq!(back, f);
        }
    }

    #[test]
    fn unsupported_fixture_has_no_format() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rag/data.xyz");
        assert!(path.exists());
        assert_eq!(Format::from_path(&path), None);
        let err = ExtractError::Unsupported("xyz".into());
        assert!(err.to_string().contains("unsupported file type `xyz`"));
    }

    #[test]
    fn text_strips_bom_and_normalises_newlines() {
        let doc = one(
            Format::Text,
            b"\xEF\xBB\xBFline one\r\nline two\rline three\r\n",
        )
        .unwrap();
        assert_eq!(doc.text, "line one\nline two\nline three");
        assert_eq!(doc.title, None);
        assert_eq!(doc.id, None);
        assert!(doc.metadata.is_empty());

        let notes = one(Format::Text, &fixture("notes.txt")).unwrap();
        assert!(notes.text.contains("Acme Rockets"));
        assert!(!notes.text.contains('\r'));
    }

    #[test]
    fn empty_and_non_utf8_text() {
        assert_eq!(
            one(Format::Text, &fixture("empty.txt")),
            Err(ExtractError::Empty)
        );
        assert_eq!(one(Format::Text, b""), Err(ExtractError::Empty));
        assert_eq!(one(Format::Markdown, b"  \n\t\n"), Err(ExtractError::Empty));
        assert_eq!(one(Format::Text, b"caf\xE9"), Err(ExtractError::NotUtf8));
        assert_eq!(
            one(Format::Html, b"<p>\xFF\xFE</p>"),
            Err(ExtractError::NotUtf8)
        );
    }

    #[test]
    fn markdown_title_and_headings_kept() {
        let md = "Intro line\n\n```sh\n# not a heading\n```\n\n## Sub\n\n# Real Title #\n\nBody.\n";
        let doc = one(Format::Markdown, md.as_bytes()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Real Title"));
        assert!(doc.text.contains("## Sub"));
        assert!(doc.text.contains("# not a heading"));

        let handbook = one(Format::Markdown, &fixture("handbook.md")).unwrap();
        assert_eq!(
            handbook.title.as_deref(),
            Some("Acme Rockets Employee Handbook")
        );
        assert!(handbook.text.contains("refunds are issued within 14 days"));
        assert!(handbook.text.lines().any(|l| l.starts_with("## ")));

        let no_title = one(Format::Markdown, b"#hashtag\n\n## Only H2\n\ntext").unwrap();
        assert_eq!(no_title.title, None);
    }

    #[test]
    fn html_structure_title_and_script() {
        let html = "<!DOCTYPE html><html><head><title> My  Page </title>\
            <style>p { color: red }</style><meta charset=\"utf-8\"></head>\
            <body><h1>Main</h1><p>First   para\n graph.</p><p>Second<br>line</p>\
            <script>var x = '<p>no</p>';</script><ul><li>one</li><li>two</li></ul>\
            <h3 class=\"x\">Deep <em>heading</em></h3><div>tail</div></body></html>";
        let doc = one(Format::Html, html.as_bytes()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("My Page"));
        assert_eq!(
            doc.text,
            "# Main\n\nFirst para graph.\n\nSecond\nline\n\n- one\n- two\n\n### Deep heading\n\ntail"
        );
    }

    #[test]
    fn html_fixture() {
        let doc = one(Format::Html, &fixture("faq.html")).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Acme Rockets FAQ & Help"));
        assert!(
            doc.text.contains("# Frequently Asked Questions"),
            "{}",
            doc.text
        );
        assert!(doc.text.contains("## Refunds"), "{}", doc.text);
        assert!(
            doc.text.contains("Tom & Jerry's \"launch\" <party>"),
            "{}",
            doc.text
        );
        assert!(
            !doc.text.contains("trackVisitor"),
            "script content leaked: {}",
            doc.text
        );
        assert!(
            !doc.text.contains("font-family"),
            "style content leaked: {}",
            doc.text
        );
        assert!(
            !doc.text.contains("hidden comment"),
            "comment leaked: {}",
            doc.text
        );
        assert!(doc.text.contains("- "), "{}", doc.text);
        assert!(!doc.text.contains("  "), "double spaces: {}", doc.text);
        assert!(doc.text.contains("\n\n"), "{}", doc.text);
    }

    #[test]
    fn html_entities() {
        let doc = one(
            Format::Html,
            b"<p>&amp; &lt;tag&gt; &quot;q&quot; &#39;s&apos; a&nbsp;b &#65;&#x42;&#X43; \
              &copy; &bogus; &amp &#xZZ; &#0; &#x110000; &AMP;</p>",
        )
        .unwrap();
        assert_eq!(
            doc.text,
            "& <tag> \"q\" 's' a b ABC \u{A9} &bogus; &amp &#xZZ; \u{FFFD} \u{FFFD} &"
        );
        assert_eq!(decode_entities("no refs"), "no refs");
        assert_eq!(
            decode_entities("&#128640; caf&eacute;"),
            "\u{1F680} caf&eacute;"
        );
    }

    #[test]
    fn malformed_html_never_panics() {
        let cases: &[&str] = &[
            "<p>unclosed <b>bold <div attr='a>b'>x</p><<<>>> & &bogus; <!-- unterminated",
            "<",
            "<a",
            "</",
            "</p",
            "<p attr=\"never closed>text",
            "<script>never closed",
            "<title>never closed",
            "<![CDATA[raw <b>cdata</b>",
            "<?xml version=\"1.0\"",
            "<h2>heading <h3>nested</h2> after</h3>",
            "<li><li><li>",
            "text & more &#; &#x; &#99999999999;",
            "<pre>\n  code\n\n\n  more</pre>",
            "日本語<p>テキスト</p>é<br/>ü",
            "<div\u{00e9}>x</div>",
            "a < b and c > d",
        ];
        for case in cases {
            let (_title, text) = html_to_text(case);
            assert!(
                !text.starts_with(char::is_whitespace),
                "{case:?} -> {text:?}"
            );
        }
        let (_, t) = html_to_text("<p>unclosed <b>bold <div attr='a>b'>x</p>ok");
        assert_eq!(t, "unclosed bold\n\nx\n\nok");
        let (_, t) = html_to_text("a < b and c > d");
        assert_eq!(t, "a < b and c > d");
        let (_, t) = html_to_text("<pre>\n  code\n\n\n  more</pre>");
        assert_eq!(t, "code\n\nmore");
        let (title, t) = html_to_text("<head><title>T</title><p>body text</p>");
        assert_eq!(title.as_deref(), Some("T"));
        assert_eq!(t, "body text");
        let (_, t) = html_to_text("<h2>heading <h3>nested</h2> after</h3>");
        assert_eq!(t, "## heading\n\n### nested\n\nafter");
        assert_eq!(
            one(Format::Html, b"<script>only()</script>"),
            Err(ExtractError::Empty)
        );
    }

    #[test]
    fn beir_corpus() {
        let docs = extract(Format::Jsonl, &fixture("corpus.jsonl"));
        assert_eq!(docs.len(), 5);
        let docs: Vec<SourceDoc> = docs.into_iter().map(|d| d.unwrap()).collect();
        assert_eq!(docs[0].id.as_deref(), Some("doc1"));
        assert!(docs.iter().all(|d| !d.text.is_empty()));
        assert!(docs.iter().any(|d| !d.metadata.is_empty()));
        assert!(docs.iter().any(|d| d.title.is_none()));
    }

    #[test]
    fn beir_one_bad_line_among_good_ones() {
        let docs = extract(Format::Jsonl, &fixture("bad.jsonl"));
        assert_eq!(docs.len(), 3);
        assert!(docs[0].is_ok());
        assert!(
            matches!(docs[1], Err(ExtractError::BadLine { line: 2, .. })),
            "{:?}",
            docs[1]
        );
        assert!(docs[2].is_ok());

        let input = concat!(
            "{\"_id\":\"a\",\"title\":\"T\",\"text\":\"alpha\",\"metadata\":{\"k\":1}}\n",
            "\n",
            "{\"title\":\"no id\",\"text\":\"x\"}\n",
            "{\"_id\":\"c\"}\n",
            "{\"_id\":7,\"text\":\"x\"}\n",
            "{\"_id\":\"e\",\"text\":42}\n",
            "{\"_id\":\"f\",\"text\":\"   \"}\n",
            "[1,2]\n",
            "{\"_id\":\"h\",\"text\":\"x\",\"metadata\":\"nope\"}\n",
            "{\"_id\":\"i\",\"title\":null,\"text\":\"last\\r\\nline\"}\r\n",
        );
        let docs = extract(Format::Jsonl, input.as_bytes());
        assert_eq!(docs.len(), 9);
        let a = docs[0].as_ref().unwrap();
        assert_eq!(a.id.as_deref(), Some("a"));
        assert_eq!(a.title.as_deref(), Some("T"));
        assert_eq!(a.metadata.get("k"), Some(&serde_json::json!(1)));
        let line_of = |r: &Result<SourceDoc, ExtractError>| match r {
            Err(ExtractError::BadLine { line, .. }) => Some(*line),
            _ => None,
        };
        assert_eq!(line_of(&docs[1]), Some(3));
        assert_eq!(line_of(&docs[2]), Some(4));
        assert_eq!(line_of(&docs[3]), Some(5));
        assert_eq!(line_of(&docs[4]), Some(6));
        assert_eq!(docs[5], Err(ExtractError::Empty));
        assert_eq!(line_of(&docs[6]), Some(8));
        assert_eq!(line_of(&docs[7]), Some(9));
        let last = docs[8].as_ref().unwrap();
        assert_eq!(last.title, None);
        assert_eq!(last.text, "last\nline");

        let bad_utf8 = extract(Format::Jsonl, b"{\"_id\":\"a\",\"text\":\"\xFF\"}\n");
        assert!(matches!(
            bad_utf8[0],
            Err(ExtractError::BadLine { line: 1, .. })
        ));
        assert!(extract(Format::Jsonl, b"\n \n").is_empty());
    }

    #[test]
    fn random_bytes_are_a_corrupt_pdf() {
        // Deterministic pseudo-random bytes (xorshift), with and without a PDF header.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect()
        };
        for len in [0usize, 1, 16, 1000, 20_000] {
            let bytes = random(len);
            assert!(matches!(
                one(Format::Pdf, &bytes),
                Err(ExtractError::CorruptPdf(_))
            ));
            let mut with_header = b"%PDF-1.4\n".to_vec();
            with_header.extend_from_slice(&bytes);
            assert!(matches!(
                one(Format::Pdf, &with_header),
                Err(ExtractError::CorruptPdf(_))
            ));
        }
        assert!(matches!(
            one(Format::Pdf, &fixture("corrupt.pdf")),
            Err(ExtractError::CorruptPdf(_))
        ));
    }

    #[test]
    fn sample_pdf_extracts_its_sentence() {
        let doc = one(Format::Pdf, &fixture("sample.pdf")).unwrap();
        assert_eq!(doc.title, None);
        assert!(
            doc.text
                .contains("Quartermaster PDF fixture: the launch window opens at dawn."),
            "{:?}",
            doc.text
        );
    }

    #[test]
    fn pdf_text_normalisation() {
        assert_eq!(
            normalize_pdf_text("\n  a   b \r\n\n\n\nc\u{0C}d\u{0}e\n"),
            "a b\n\nc\n\nd e"
        );
    }
}
