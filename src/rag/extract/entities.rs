//! HTML character references (`&amp;`, `&#8212;`, `&#x1F680;`) decoded to text. Apart from
//! the scanner since it is a table and a lookup, not markup handling.

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
pub(super) fn decode_entities(s: &str) -> std::borrow::Cow<'_, str> {
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
