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

/// An answer grounded on sources read before one of its tags was invalidated (a document
/// re-ingested while the answer was being written) is not stored; one read after is.
#[tokio::test]
async fn an_answer_older_than_its_tags_invalidation_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    let config = CacheConfig {
        enabled: true,
        snapshot_dir: dir.path().join("graphs"),
        ..Default::default()
    };
    let cache = Cache::new(config, store).await.unwrap();
    let entry = |exact: &str, read_at: i64| NewEntry {
        tenant: "t".into(),
        user: None,
        keys: CacheKeys {
            exact: exact.into(),
            fingerprint: "fp".into(),
            query: "What is the refund window?".into(),
        },
        vector: None,
        answer: StoredAnswer {
            model: "m".into(),
            content: "14 days.".into(),
            finish_reason: "stop".into(),
            usage: Usage::new(3, 2),
            message_extra: Default::default(),
            citations: None,
        },
        cost_usd: 0.0,
        ttl_secs: 600,
        tags: vec!["doc:handbook".into()],
        sources_read_at: Some(read_at),
    };
    let read = crate::clock::now_ms();
    assert!(cache.insert(entry("a", read)).await.unwrap().is_some());
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(
        cache
            .invalidate_tags(Some("t"), &["doc:handbook".into()])
            .await
            .unwrap(),
        1
    );
    // Read before the invalidation, stored after it: refused.
    assert!(cache.insert(entry("b", read)).await.unwrap().is_none());
    // Sources read after it are fine, and another tenant's invalidation of the same tag
    // does not count.
    std::thread::sleep(std::time::Duration::from_millis(2));
    let later = crate::clock::now_ms();
    std::thread::sleep(std::time::Duration::from_millis(2));
    cache
        .invalidate_tags(Some("u"), &["doc:handbook".into()])
        .await
        .unwrap();
    assert!(cache.insert(entry("c", later)).await.unwrap().is_some());
    // An invalidation of every tenant's tag counts for each.
    std::thread::sleep(std::time::Duration::from_millis(2));
    cache
        .invalidate_tags(None, &["doc:handbook".into()])
        .await
        .unwrap();
    assert!(cache.insert(entry("d", later)).await.unwrap().is_none());
}
