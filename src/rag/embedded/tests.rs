use super::*;
use crate::index::test_unit as unit;
use crate::store::{Pool, Store};

fn doc(id: &str, hash: &str) -> DocumentRecord {
    DocumentRecord {
        id: id.into(),
        title: None,
        source: None,
        format: "text".into(),
        content_hash: hash.into(),
        metadata: Metadata::new(),
        chunk_count: 1,
        created_at: 1,
        updated_at: 1,
    }
}

fn chunk(doc: &str, text: &str, vector: Vec<f32>) -> Vec<ChunkRecord> {
    vec![ChunkRecord {
        id: format!("{doc}#0"),
        index: 0,
        heading: None,
        text: text.into(),
        content_hash: format!("{doc}:{text}"),
        tokens: 2,
        embedding: vector,
        repeats: 1,
    }]
}

/// A document re-ingested (same chunk ids, new text and vectors) and another deleted
/// after the last snapshot, then the process killed (no save at shutdown): at the next
/// start the loaded graph takes the stored vectors, not the snapshot's.
#[tokio::test]
async fn a_snapshot_older_than_the_rows_is_reconciled_by_vector() {
    const DIM: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Store::connect(&url, 2).await.unwrap();
    let Pool::Sqlite(pool) = db.pool() else {
        unreachable!("a sqlite url")
    };
    let graphs = dir.path().join("t.db.rag-graphs");
    let open = || EmbeddedStore::open(pool.clone(), HnswParams::default(), Some(graphs.clone()));

    let store = open().await.unwrap();
    store
        .put("t", &doc("a", "h1"), chunk("a", "old text", unit(1, DIM)))
        .await
        .unwrap();
    for i in 0..20u64 {
        let id = format!("other{i}");
        store
            .put(
                "t",
                &doc(&id, "h"),
                chunk(&id, "filler", unit(100 + i, DIM)),
            )
            .await
            .unwrap();
    }
    store
        .put(
            "t",
            &doc("gone", "h"),
            chunk("gone", "deleted later", unit(3, DIM)),
        )
        .await
        .unwrap();
    store.save_snapshot().await;
    // After the snapshot: A re-ingested with new text and a new vector, `gone` deleted.
    store
        .put("t", &doc("a", "h2"), chunk("a", "new text", unit(2, DIM)))
        .await
        .unwrap();
    assert!(store.delete("t", "gone").await.unwrap());
    // Killed: no save_snapshot.
    drop(store);

    let store = open().await.unwrap();
    assert_eq!(
        store.hnsw.dead(),
        2,
        "the snapshot was loaded: A's old node and `gone`'s are tombstones"
    );
    assert_eq!(store.hnsw.len(), 21);
    let none = Filter::default();
    let hits = store
        .vector_search("t", &unit(2, DIM), 3, &none, false)
        .await
        .unwrap();
    assert_eq!(hits[0].chunk_id, "a#0", "{hits:?}");
    assert_eq!(hits[0].text, "new text");
    assert!(
        hits[0].score > 0.999,
        "the graph holds the new vector: {hits:?}"
    );
    // The old vector no longer finds A, the deleted document is not found at all.
    let hits = store
        .vector_search("t", &unit(1, DIM), 21, &none, false)
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.score < 0.999), "{hits:?}");
    let hits = store
        .vector_search("t", &unit(3, DIM), 21, &none, false)
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.document_id != "gone"), "{hits:?}");

    // Saved and loaded again: nothing left to replace.
    store.save_snapshot().await;
    drop(store);
    let store = open().await.unwrap();
    assert_eq!(store.hnsw.len(), 21);
    let hits = store
        .vector_search("t", &unit(2, DIM), 1, &none, false)
        .await
        .unwrap();
    assert_eq!(hits[0].chunk_id, "a#0");
    assert!(hits[0].score > 0.999, "{hits:?}");
}
