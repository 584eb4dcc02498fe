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
