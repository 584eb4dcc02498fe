//! Retrieval with a boilerplate document: a tenant's first document is ~1,300 identical
//! chunks, then 40 topical documents follow. Vector retrieval (the default) still finds the
//! right document for every topical query, before and after a restart (identical chunks are
//! stored once, and equal vectors share one graph node).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::common::{Options, TestApp};

const TOPICS: [&str; 40] = [
    "volcanic eruptions",
    "basketball tactics",
    "photosynthesis in plants",
    "medieval castles",
    "jazz improvisation",
    "deep sea fishing",
    "quantum computing",
    "sourdough baking",
    "glacier formation",
    "chess openings",
    "honeybee colonies",
    "roman aqueducts",
    "solar panel installation",
    "marathon training",
    "coral reef ecology",
    "violin making",
    "desert survival",
    "antique clock repair",
    "tornado chasing",
    "origami folding",
    "cheese aging caves",
    "mountain bike maintenance",
    "lunar eclipses",
    "tea ceremony etiquette",
    "submarine navigation",
    "wine fermentation",
    "bird migration routes",
    "pottery glazing",
    "skyscraper foundations",
    "falconry",
    "dinosaur fossils",
    "bonsai pruning",
    "ice hockey goaltending",
    "perfume blending",
    "earthquake engineering",
    "beekeeping suits",
    "hot air ballooning",
    "sushi preparation",
    "rock climbing knots",
    "typewriter restoration",
];

fn options(db_url: &str) -> Options {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    Options {
        extra: format!(
            "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 2\n\
             [embeddings]\nmodel_dir = \"{}\"\n",
            model.display()
        ),
        db_url: Some(db_url.to_string()),
        config_file: false,
    }
}

async fn post_doc(app: &TestApp, key: &str, id: &str, text: &str) -> Value {
    let r = app
        .post_as("/v1/documents", key)
        .json(&json!({"id": id, "title": id, "text": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// How many topical queries have their own document first.
async fn found(app: &TestApp, key: &str) -> usize {
    let mut right = 0;
    for (i, topic) in TOPICS.iter().enumerate() {
        let r: Value = app
            .post_as("/v1/retrieve", key)
            .json(&json!({"query": format!("What should I know about {topic}?"), "top_k": 3}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["data"][0]["document_id"] == format!("topic-{i}") {
            right += 1;
        }
    }
    right
}

#[tokio::test]
async fn a_boilerplate_document_does_not_blind_vector_retrieval() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("qm.db").display());
    let mut app = TestApp::spawn_with(options(&db)).await;
    let key = app.key.clone();
    let paragraph = "This page is intentionally left blank. All rights reserved by the publisher; \
        no part of this manual may be reproduced without permission.";
    let boilerplate = vec![paragraph; 16_000].join("\n\n");
    let out = post_doc(&app, &key, "boilerplate", &boilerplate).await;
    let item = &out["data"][0];
    assert_eq!(item["status"], "created", "{out}");
    let stored = item["chunks"].as_u64().unwrap();
    let duplicates = item["duplicates"].as_u64().unwrap();
    assert!(duplicates >= 1_000, "{out}");
    assert!(stored <= 3, "identical chunks are stored once: {out}");
    for (i, topic) in TOPICS.iter().enumerate() {
        let text = format!(
            "A field guide to {topic}. This guide explains {topic} in depth: the history of \
             {topic}, the equipment and techniques experts use, common mistakes beginners make \
             with {topic}, and where to learn more about {topic}."
        );
        post_doc(&app, &key, &format!("topic-{i}"), &text).await;
    }
    let before = found(&app, &key).await;
    assert_eq!(
        before,
        TOPICS.len(),
        "vector retrieval found {before} of 40"
    );
    app.shutdown().await;

    // After a restart the graph is rebuilt from the rows: the same result.
    let app = TestApp::spawn_with(options(&db)).await;
    let after = found(&app, &key).await;
    assert_eq!(after, TOPICS.len(), "after a restart: {after} of 40");
}
