use super::*;

#[test]
fn replay_pieces_cover_the_text_exactly() {
    let text = "The quick brown fox jumps over the lazy dog. Ünïcødé words too, and a verylongwordwithoutanybreaksatallinside end.";
    for size in [1, 5, 24, 1000] {
        let pieces = replay_pieces(text, size);
        assert_eq!(pieces.concat(), text);
        if size == 5 {
            assert!(pieces.len() > 10);
        }
    }
    assert!(replay_pieces("", 10).is_empty());
}

#[test]
fn controls_parse_and_reject() {
    let cfg = CacheConfig::default();
    let c = Controls::parse(&ControlText::default(), &cfg).unwrap();
    assert!(c.read && c.write);
    assert_eq!(c.ttl_secs, cfg.default_ttl_secs);
    let text = ControlText {
        mode: Some("refresh".into()),
        ttl: Some("60".into()),
        threshold: Some("0.97".into()),
        tags: Some("doc:1, doc:2,doc:1".into()),
    };
    let c = Controls::parse(&text, &cfg).unwrap();
    assert_eq!((c.read, c.write, c.ttl_secs), (false, true, 60));
    assert_eq!(c.tags, vec!["doc:1", "doc:2"]);
    let some = |v: &str| Some(v.to_string());
    for (header, bad) in [
        (
            CACHE_HEADER,
            ControlText {
                mode: some("sometimes"),
                ..Default::default()
            },
        ),
        (
            TTL_HEADER,
            ControlText {
                ttl: some("0"),
                ..Default::default()
            },
        ),
        (
            TTL_HEADER,
            ControlText {
                ttl: some("abc"),
                ..Default::default()
            },
        ),
        (
            THRESHOLD_HEADER,
            ControlText {
                threshold: some("1.5"),
                ..Default::default()
            },
        ),
    ] {
        let e = Controls::parse(&bad, &cfg).unwrap_err();
        assert_eq!(e.header, header, "{bad:?}");
    }
}

#[test]
fn only_complete_text_answers_are_cacheable() {
    let text = serde_json::json!({"role": "assistant", "content": "hi"});
    let tools = serde_json::json!({"role": "assistant", "content": null, "tool_calls": [{}]});
    assert!(StoredAnswer::cacheable(Some("stop"), &text));
    assert!(StoredAnswer::cacheable(Some("length"), &text));
    assert!(!StoredAnswer::cacheable(Some("content_filter"), &text));
    assert!(!StoredAnswer::cacheable(None, &text));
    assert!(!StoredAnswer::cacheable(Some("tool_calls"), &tools));
}
