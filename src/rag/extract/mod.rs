//! Bytes of one uploaded file -> plain-text documents for the chunker.
//!
//! Markdown and text pass through (BOM stripped, newlines normalised); HTML is turned into
//! text that keeps its structure (`html.rs`); PDF goes through `pdf-extract` in a helper
//! process with hard limits (`pdf.rs`, `sandbox.rs`); JSONL is a BEIR corpus (`{"_id",
//! "title", "text", "metadata"}` per line) and yields one result per line. Every document is
//! untrusted: nothing here can panic, exhaust the stack or take unbounded memory in the
//! gateway's process, and the text one document yields is capped.

mod entities;
pub mod hostile;
mod html;
pub mod pdf;
mod sandbox;

pub use sandbox::{ExtractConfig, PdfSandbox};

use std::path::Path;

use serde_json::{Map, Value};

use super::chunk::{atx_heading, fence_marker};
pub(crate) use html::{collapse_ws, find};

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
    /// Past a configured cap (text, inflated streams, the helper's memory).
    #[error("{0}")]
    TooLarge(String),
    /// The extractor itself could not run (no helper executable): not the document's fault.
    #[error("document extraction is unavailable: {0}")]
    Internal(String),
}

/// Extracts documents under the configured caps. Cheap to clone; one per process is enough.
#[derive(Clone)]
pub struct Extractor {
    pdf: PdfSandbox,
}

impl Extractor {
    pub fn new(config: ExtractConfig) -> Self {
        Self {
            pdf: PdfSandbox::new(config),
        }
    }

    pub fn config(&self) -> &ExtractConfig {
        self.pdf.config()
    }

    /// Single-document formats return one doc (`Err(Empty)` if it has no non-whitespace
    /// text after extraction). Jsonl returns one result per non-blank line, so one bad line
    /// does not lose the others: `Err(BadLine)` for invalid JSON / missing `_id` or `text` /
    /// non-string fields, `Err(Empty)` for empty text. A document whose text passes
    /// `max_text_bytes` is `Err(TooLarge)`.
    ///
    /// Blocks (a PDF waits for its helper process): call it from a blocking context (e.g.
    /// `tokio::task::spawn_blocking`).
    pub fn extract(&self, format: Format, bytes: &[u8]) -> Vec<Result<SourceDoc, ExtractError>> {
        let max = self.config().max_text_bytes;
        let docs = match format {
            Format::Jsonl => extract_jsonl(bytes),
            Format::Text => vec![extract_text(bytes)],
            Format::Markdown => vec![extract_markdown(bytes)],
            Format::Html => vec![html::extract_html(bytes)],
            Format::Pdf => vec![self.pdf.extract(bytes).and_then(|text| single(None, text))],
        };
        docs.into_iter()
            .map(|d| match d {
                Ok(doc) if doc.text.len() > max => Err(ExtractError::TooLarge(format!(
                    "the document's text is {} bytes; the limit is {max} (rag.extract.max_text_bytes)",
                    doc.text.len()
                ))),
                other => other,
            })
            .collect()
    }
}

pub(super) fn single(title: Option<String>, text: String) -> Result<SourceDoc, ExtractError> {
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
pub(super) fn decode_utf8(bytes: &[u8]) -> Result<&str, ExtractError> {
    let bytes = bytes
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|_| ExtractError::NotUtf8)
}

/// `\r\n` and lone `\r` -> `\n`.
pub(super) fn normalize_newlines(s: &str) -> String {
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

    pub(super) fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/rag")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// Extraction with the default caps.
    pub(super) fn extract(format: Format, bytes: &[u8]) -> Vec<Result<SourceDoc, ExtractError>> {
        Extractor::new(ExtractConfig::default()).extract(format, bytes)
    }

    pub(super) fn one(format: Format, bytes: &[u8]) -> Result<SourceDoc, ExtractError> {
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
}
