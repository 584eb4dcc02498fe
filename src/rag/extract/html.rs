//! HTML to text that keeps its structure: headings become `#` lines, block elements
//! paragraph breaks, list items `- ` lines; scripts, styles and other non-content elements
//! are dropped. A small hand-written scanner: it never recurses, so no nesting depth can
//! exhaust the stack, and it never panics on malformed markup.

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

#[cfg(test)]
mod tests {
    use super::super::tests::{fixture, one};
    use super::super::*;
    use super::*;

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
}
