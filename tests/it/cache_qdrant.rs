//! The cache's Qdrant backend against a real Qdrant. Ignored by default (reported as
//! "ignored", never as passed); `scripts/test.sh` runs it when `QDRANT_URL` (gRPC, e.g.
//! `http://127.0.0.1:6334`) is set, and says it skipped it otherwise.

use quartermaster::cache::VectorIndex;
use quartermaster::cache::qdrant::{QdrantConfig, QdrantIndex};

fn unit(seed: u32, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim)
        .map(|i| ((i as u32 * 2654435761u32 ^ seed.wrapping_mul(40503)) % 1000) as f32 - 500.0)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

#[tokio::test]
#[ignore = "needs a Qdrant server: set QDRANT_URL (scripts/test.sh then runs it)"]
async fn qdrant_index_isolates_tenants_and_fingerprints() {
    let url = std::env::var("QDRANT_URL").expect("QDRANT_URL is set when this test is run");
    let config = QdrantConfig {
        url,
        collection: format!("qm_test_{}", uuid::Uuid::new_v4().simple()),
        dimensions: 16,
        ..QdrantConfig::default()
    };
    let index = QdrantIndex::connect(&config).await.expect("connects");
    let (a, b) = (unit(1, 16), unit(2, 16));
    let e1 = format!("ce_{}", uuid::Uuid::now_v7().simple());
    let e2 = format!("ce_{}", uuid::Uuid::now_v7().simple());
    let e3 = format!("ce_{}", uuid::Uuid::now_v7().simple());
    index.insert("t1", &e1, "fp", &a).await.unwrap();
    index.insert("t1", &e2, "other", &a).await.unwrap();
    index.insert("t2", &e3, "fp", &a).await.unwrap();
    let found = index.search("t1", "fp", &a, 5).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].entry_id, e1);
    assert!((found[0].similarity - 1.0).abs() < 1e-4);
    let near = index.search("t1", "fp", &b, 5).await.unwrap();
    assert!(near[0].similarity < 0.999);
    index.remove("t1", &[e1.clone()]).await.unwrap();
    assert!(index.search("t1", "fp", &a, 5).await.unwrap().is_empty());
    index.remove_tenant("t2").await.unwrap();
    assert!(index.search("t2", "fp", &a, 5).await.unwrap().is_empty());
    assert_eq!(
        index.search("t1", "other", &a, 5).await.unwrap()[0].entry_id,
        e2
    );
    index.drop_collection().await.unwrap();
}
