//! Hostile PDFs, built on demand for the tests (unit and end to end) and for anyone probing
//! the extractor: self-drawing Form XObjects, page-tree cycles, reference loops, deeply
//! nested arrays and dictionaries, truncated and garbage files, decompression bombs. Each is
//! a small, otherwise well-formed file (a real cross-reference table), so the parser gets
//! past the header and into the part that hurts.

use std::io::Write;

/// A PDF from its objects (numbered 1..): header, bodies, xref table, trailer.
pub fn build(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn stream(dict: &str, content: &[u8]) -> Vec<u8> {
    let mut body = format!("<< {dict} /Length {} >>\nstream\n", content.len()).into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(b"\nendstream");
    body
}

fn obj(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

const FONT: &str = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>";

/// One page with one line of text: the well-formed baseline the others are variations of.
pub fn plain(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    build(&[
        obj("<< /Type /Catalog /Pages 2 0 R >>"),
        obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        obj(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        ),
        stream("", content.as_bytes()),
        obj(FONT),
    ])
}

/// The page draws Form XObject `/X0`, which draws itself: unbounded recursion in a parser
/// that follows `Do` without a depth limit (650 bytes).
pub fn self_drawing_xobject() -> Vec<u8> {
    build(&[
        obj("<< /Type /Catalog /Pages 2 0 R >>"),
        obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        obj(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /XObject << /X0 5 0 R >> >> >>",
        ),
        stream("", b"/X0 Do"),
        stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /XObject << /X0 5 0 R >> >>",
            b"/X0 Do",
        ),
    ])
}

/// Two Form XObjects that draw each other.
pub fn xobject_cycle() -> Vec<u8> {
    build(&[
        obj("<< /Type /Catalog /Pages 2 0 R >>"),
        obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        obj(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /XObject << /A 5 0 R >> >> >>",
        ),
        stream("", b"/A Do"),
        stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 1 1] /Resources << /XObject << /B 6 0 R >> >>",
            b"/B Do",
        ),
        stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 1 1] /Resources << /XObject << /A 5 0 R >> >>",
            b"/A Do",
        ),
    ])
}

/// The page tree's root lists itself among its kids.
pub fn page_tree_cycle() -> Vec<u8> {
    build(&[
        obj("<< /Type /Catalog /Pages 2 0 R >>"),
        obj("<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>"),
        obj("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>"),
        stream("", b"BT ET"),
    ])
}

/// A page whose contents and resources are references that point at each other.
pub fn reference_loop() -> Vec<u8> {
    build(&[
        obj("<< /Type /Catalog /Pages 2 0 R >>"),
        obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        obj("<< /Type /Page /Parent 2 0 R /MediaBox 6 0 R /Contents 4 0 R /Resources 5 0 R >>"),
        obj("5 0 R"),
        obj("4 0 R"),
        obj("7 0 R"),
        obj("6 0 R"),
    ])
}

/// An object nested `depth` arrays deep (`[[[...]]]`), reachable from the page.
pub fn deep_array(depth: usize) -> Vec<u8> {
    let mut nested = "[".repeat(depth);
    nested.push_str(&"]".repeat(depth));
    build(&[
        obj("<< /Type /Catalog /Pages 2 0 R >>"),
        obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        obj(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Annots 5 0 R >>",
        ),
        stream("", b"BT ET"),
        obj(&nested),
    ])
}

/// An object nested `depth` dictionaries deep.
pub fn deep_dict(depth: usize) -> Vec<u8> {
    let mut nested = "<< /A ".repeat(depth);
    nested.push_str("0");
    nested.push_str(&" >>".repeat(depth));
    build(&[
        obj("<< /Type /Catalog /Pages 2 0 R >>"),
        obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        obj("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Extra 5 0 R >>"),
        stream("", b"BT ET"),
        obj(&nested),
    ])
}

/// A content stream nested `depth` `q` (save state) operators deep, and inline arrays.
pub fn deep_content(depth: usize) -> Vec<u8> {
    let mut content = "q ".repeat(depth);
    content.push_str(&"[".repeat(depth));
    build(&[
        obj("<< /Type /Catalog /Pages 2 0 R >>"),
        obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        obj("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>"),
        stream("", content.as_bytes()),
    ])
}

/// The baseline cut off at `keep` of its length (0..1).
pub fn truncated(keep: f64) -> Vec<u8> {
    let mut pdf = plain("This file is cut short.");
    pdf.truncate(((pdf.len() as f64) * keep) as usize);
    pdf
}

/// A PDF header followed by `len` pseudo-random bytes.
pub fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = b"%PDF-1.7\n".to_vec();
    out.extend((0..len).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    }));
    out
}

/// A page whose Flate-compressed content stream inflates to `inflated` bytes of spaces:
/// about 1,000 times smaller than it expands (1 GiB from about 1 MiB).
pub fn inflation_bomb(inflated: usize) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![b' '; 1 << 20];
    let mut left = inflated;
    while left > 0 {
        let n = left.min(block.len());
        encoder.write_all(&block[..n]).expect("writing to memory");
        left -= n;
    }
    let compressed = encoder.finish().expect("writing to memory");
    build(&[
        obj("<< /Type /Catalog /Pages 2 0 R >>"),
        obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        obj("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>"),
        stream("/Filter /FlateDecode", &compressed),
    ])
}

/// Every file of the corpus with its name (the decompression bomb excepted: its size is the
/// caller's choice).
pub fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("self_drawing_xobject", self_drawing_xobject()),
        ("xobject_cycle", xobject_cycle()),
        ("page_tree_cycle", page_tree_cycle()),
        ("reference_loop", reference_loop()),
        ("deep_array_50k", deep_array(50_000)),
        ("deep_dict_50k", deep_dict(50_000)),
        ("deep_content_50k", deep_content(50_000)),
        ("truncated_half", truncated(0.5)),
        ("truncated_tail", truncated(0.9)),
        ("garbage", garbage(4096, 7)),
        ("header_only", b"%PDF-1.4\n".to_vec()),
    ]
}
