//! PDF text extraction, as run inside the helper process (see `sandbox.rs`): a PDF is
//! untrusted input to a large parser (lopdf + pdf-extract) that can recurse without bound,
//! panic, or inflate a small file into gigabytes. Here it runs with caps on what it may
//! inflate and emit; the process around it adds the limits nothing in-process can enforce
//! (stack, address space, CPU time), so whatever it does, it ends only itself.
//!
//! The helper is the gateway's own binary started as `quartermaster __extract-pdf
//! MAX_DECOMPRESSED MAX_TEXT`: the PDF on stdin, the text on stdout, exit status
//! [`EXIT_OK`], [`EXIT_CORRUPT`] or [`EXIT_TOO_LARGE`] with the reason on stderr.

use std::io::{Read, Write};

use super::{ExtractError, collapse_ws, find, normalize_newlines};

/// The first argument that makes the binary run [`helper_main`] instead of its CLI.
pub const HELPER_ARG: &str = "__extract-pdf";
pub const EXIT_OK: i32 = 0;
pub const EXIT_CORRUPT: i32 = 2;
pub const EXIT_TOO_LARGE: i32 = 3;

/// Caps applied while parsing, before the process limits would end it.
#[derive(Debug, Clone, Copy)]
pub struct ParseCaps {
    /// Sum of the inflated sizes of the file's compressed streams.
    pub max_decompressed_bytes: u64,
    /// Extracted text (UTF-8 bytes).
    pub max_text_bytes: usize,
}

/// The helper's `main`: reads the PDF from stdin, writes its text to stdout. Returns the
/// exit status.
pub fn helper_main(args: &[String]) -> i32 {
    let caps = match args {
        [decompressed, text] => match (decompressed.parse(), text.parse()) {
            (Ok(d), Ok(t)) => ParseCaps {
                max_decompressed_bytes: d,
                max_text_bytes: t,
            },
            _ => return fail(EXIT_CORRUPT, "bad helper arguments"),
        },
        _ => {
            return fail(
                EXIT_CORRUPT,
                "usage: __extract-pdf MAX_DECOMPRESSED MAX_TEXT",
            );
        }
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
        return fail(EXIT_CORRUPT, &format!("reading the PDF: {e}"));
    }
    match extract_text(&bytes, caps) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => EXIT_OK,
                Err(e) => fail(EXIT_CORRUPT, &format!("writing the text: {e}")),
            }
        }
        Err(ExtractError::TooLarge(m)) => fail(EXIT_TOO_LARGE, &m),
        Err(ExtractError::CorruptPdf(m)) => fail(EXIT_CORRUPT, &m),
        Err(e) => fail(EXIT_CORRUPT, &e.to_string()),
    }
}

fn fail(code: i32, message: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "{message}");
    code
}

/// The PDF's text, normalised. In-process and unprotected against the parser's stack use:
/// call it only inside the helper process.
pub fn extract_text(bytes: &[u8], caps: ParseCaps) -> Result<String, ExtractError> {
    // lopdf looks for the header anywhere in the buffer; without one it is not a PDF.
    if find(bytes, 0, b"%PDF-").is_none() {
        return Err(ExtractError::CorruptPdf("no %PDF header".to_string()));
    }
    let doc = pdf_extract::Document::load_mem(bytes)
        .map_err(|e| ExtractError::CorruptPdf(e.to_string()))?;
    check_inflated_size(&doc, caps.max_decompressed_bytes)?;
    let mut sink = CappedText {
        text: Vec::new(),
        max: caps.max_text_bytes,
        over: false,
    };
    let result = {
        let mut writer: &mut dyn Write = &mut sink;
        let mut output = pdf_extract::PlainTextOutput::new(&mut writer as &mut dyn Write);
        pdf_extract::output_doc(&doc, &mut output)
    };
    if sink.over {
        return Err(too_much_text(caps.max_text_bytes));
    }
    result.map_err(|e| ExtractError::CorruptPdf(e.to_string()))?;
    let raw = String::from_utf8_lossy(&sink.text);
    let text = normalize_pdf_text(&raw);
    if text.len() > caps.max_text_bytes {
        return Err(too_much_text(caps.max_text_bytes));
    }
    Ok(text)
}

fn too_much_text(max: usize) -> ExtractError {
    ExtractError::TooLarge(format!(
        "the document's text exceeds {max} bytes (rag.extract.max_text_bytes)"
    ))
}

/// Inflates every Flate-compressed stream into a counter (nothing kept) and refuses the file
/// once the total passes `max`: a decompression bomb is refused before the parser inflates
/// it for real. Other filters are left to the helper's memory limit.
fn check_inflated_size(doc: &pdf_extract::Document, max: u64) -> Result<(), ExtractError> {
    let mut total: u64 = 0;
    for object in doc.objects.values() {
        let Ok(stream) = object.as_stream() else {
            continue;
        };
        let flate = stream
            .filters()
            .map(|f| f.iter().any(|name| *name == b"FlateDecode"))
            .unwrap_or(false);
        if !flate {
            continue;
        }
        let budget = max.saturating_sub(total) + 1;
        let mut decoder = flate2::read::ZlibDecoder::new(stream.content.as_slice()).take(budget);
        // A stream that fails to inflate is the parser's to report (or skip) later.
        let n = std::io::copy(&mut decoder, &mut std::io::sink()).unwrap_or(0);
        total += n;
        if total > max {
            return Err(ExtractError::TooLarge(format!(
                "the document's compressed streams inflate to more than {max} bytes (rag.extract.max_decompressed_bytes)"
            )));
        }
    }
    Ok(())
}

/// pdf-extract's output, cut off (with an error that stops the parser) past `max` bytes.
struct CappedText {
    text: Vec<u8>,
    max: usize,
    over: bool,
}

impl Write for CappedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.max.saturating_mul(2).max(1 << 16) {
            // Raw output runs longer than the normalised text (spaces, blank lines): allow
            // twice the cap before stopping, and check the normalised length at the end.
            self.over = true;
            return Err(std::io::Error::other("text limit reached"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Form feeds (page breaks) -> blank lines; control characters dropped; runs of spaces
/// collapsed within each line; lines trimmed; at most one blank line in a row.
pub(super) fn normalize_pdf_text(raw: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: ParseCaps = ParseCaps {
        max_decompressed_bytes: 64 << 20,
        max_text_bytes: 1 << 20,
    };

    fn fixture(name: &str) -> Vec<u8> {
        super::super::tests::fixture(name)
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
                extract_text(&bytes, CAPS),
                Err(ExtractError::CorruptPdf(_))
            ));
            let mut with_header = b"%PDF-1.4\n".to_vec();
            with_header.extend_from_slice(&bytes);
            assert!(matches!(
                extract_text(&with_header, CAPS),
                Err(ExtractError::CorruptPdf(_))
            ));
        }
        assert!(matches!(
            extract_text(&fixture("corrupt.pdf"), CAPS),
            Err(ExtractError::CorruptPdf(_))
        ));
    }

    #[test]
    fn sample_pdf_extracts_its_sentence() {
        let text = extract_text(&fixture("sample.pdf"), CAPS).unwrap();
        assert!(
            text.contains("Quartermaster PDF fixture: the launch window opens at dawn."),
            "{text:?}"
        );
    }

    #[test]
    fn text_and_inflation_caps() {
        let sample = fixture("sample.pdf");
        let tiny_text = ParseCaps {
            max_text_bytes: 10,
            ..CAPS
        };
        assert!(matches!(
            extract_text(&sample, tiny_text),
            Err(ExtractError::TooLarge(m)) if m.contains("max_text_bytes")
        ));
        let bomb = crate::rag::extract::hostile::inflation_bomb(4 << 20);
        let small_inflate = ParseCaps {
            max_decompressed_bytes: 1 << 20,
            ..CAPS
        };
        assert!(matches!(
            extract_text(&bomb, small_inflate),
            Err(ExtractError::TooLarge(m)) if m.contains("max_decompressed_bytes")
        ));
    }

    #[test]
    fn pdf_text_normalisation() {
        assert_eq!(
            normalize_pdf_text("\n  a   b \r\n\n\n\nc\u{0C}d\u{0}e\n"),
            "a b\n\nc\n\nd e"
        );
    }
}
