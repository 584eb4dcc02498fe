//! Documents, retrieval and grounded chat end to end: a real gateway with the real MiniLM
//! embedder, on the embedded store (SQLite + hnsw_rs + BM25) and on PostgreSQL + pgvector
//! (the same scenario; `QM_TEST_DATABASE_URL`, started by scripts/pg.sh, required under CI).

use crate::common;

use std::path::PathBuf;

use common::{Options, TestApp, sse_json, wait_for};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rag")
        .join(name)
}

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

fn rag_options(extra: &str, db_url: Option<String>) -> Options {
    Options {
        extra: format!(
            "[rate_limit]\nenabled = false\n{}\
             [embeddings]\nmodel_dir = \"{}\"\n{extra}",
            if extra.contains("[server]") {
                ""
            } else {
                "[server]\nshutdown_grace_secs = 2\n"
            },
            model_dir().display()
        ),
        db_url,
        config_file: false,
    }
}

fn file_part(name: &str) -> Part {
    Part::bytes(std::fs::read(fixture(name)).unwrap()).file_name(name.to_string())
}

async fn upload(app: &TestApp, token: &str, form: Form) -> (u16, Value) {
    let r = app
        .post_as("/v1/documents", token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn retrieve(app: &TestApp, token: &str, body: Value) -> Value {
    let r = app
        .post_as("/v1/retrieve", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn docs_of(result: &Value) -> Vec<String> {
    result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].as_str().unwrap().to_string())
        .collect()
}

fn item<'a>(result: &'a Value, id: &str) -> &'a Value {
    result["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no result for {id} in {result}"))
}

/// Upload, per-file errors, retrieval in every mode, unchanged and changed re-ingest,
/// filters, tenant isolation, listing, deletion: the same on both stores.
async fn documents_scenario(db_url: Option<String>, expect_store: &str) {
    let app = TestApp::spawn_with(rag_options("", db_url)).await;
    let key = app.key.clone();
    let form = Form::new()
        .part("file", file_part("handbook.md"))
        .part("file", file_part("faq.html"))
        .part("file", file_part("notes.txt"))
        .part("file", file_part("sample.pdf"))
        .part("file", file_part("corrupt.pdf"))
        .part("file", file_part("empty.txt"))
        .part("file", file_part("data.xyz"))
        .text("metadata", r#"{"source": "upload-test"}"#);
    let (status, body) = upload(&app, &key, form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["store"], expect_store);
    assert_eq!(body["ingested"], 4, "{body}");
    assert_eq!(body["failed"], 3, "{body}");
    let errors: Vec<(&str, &str)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "failed")
        .map(|i| {
            (
                i["id"].as_str().unwrap(),
                i["error"]["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        errors.contains(&("corrupt.pdf", "corrupt_document")),
        "{errors:?}"
    );
    assert!(
        errors.contains(&("empty.txt", "empty_document")),
        "{errors:?}"
    );
    assert!(
        errors.contains(&("data.xyz", "unsupported_file_type")),
        "{errors:?}"
    );
    let handbook = item(&body, "handbook.md");
    assert_eq!(handbook["status"], "created");
    let chunks = handbook["chunks"].as_u64().unwrap();
    assert!(chunks >= 5, "the handbook has several sections: {handbook}");
    assert_eq!(handbook["embedded"].as_u64().unwrap(), chunks);

    // Every mode finds the refund section for a refund question.
    for mode in ["vector", "text", "hybrid"] {
        let r = retrieve(
            &app,
            &key,
            json!({"query": "How long until a refund is issued?", "top_k": 3, "mode": mode}),
        )
        .await;
        assert_eq!(r["mode"], mode);
        // The handbook and the FAQ both state it.
        let top = &r["data"][0];
        let doc = top["document_id"].as_str().unwrap();
        assert!(doc == "handbook.md" || doc == "faq.html", "{mode}: {r}");
        assert!(
            top["text"].as_str().unwrap().contains("14 days"),
            "{mode}: {top}"
        );
        assert!(top["score"].as_f64().unwrap() > 0.0);
        assert_eq!(top["metadata"]["source"], "upload-test");
    }
    // Text from the PDF and the HTML page is retrievable.
    let r = retrieve(
        &app,
        &key,
        json!({"query": "when does the launch window open"}),
    )
    .await;
    assert_eq!(docs_of(&r)[0], "sample.pdf", "{r}");
    // Scripts and comments of the HTML page are not indexed (vector mode always answers).
    let r = retrieve(
        &app,
        &key,
        json!({"query": "trackVisitor console log hidden comment", "mode": "vector", "top_k": 10}),
    )
    .await;
    let texts: Vec<&str> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["text"].as_str().unwrap())
        .collect();
    assert!(!texts.is_empty(), "{r}");
    for bad in ["<script", "trackVisitor", "not text", "hidden comment"] {
        assert!(texts.iter().all(|t| !t.contains(bad)), "{bad} indexed: {r}");
    }

    // The same file again: nothing embedded, nothing written.
    let meta = r#"{"source": "upload-test"}"#;
    let (_, again) = upload(
        &app,
        &key,
        Form::new()
            .part("file", file_part("handbook.md"))
            .text("metadata", meta),
    )
    .await;
    let again = item(&again, "handbook.md");
    assert_eq!(again["status"], "unchanged");
    assert_eq!(again["embedded"], 0);

    // One paragraph changed: only its chunk is embedded again.
    let text = std::fs::read_to_string(fixture("handbook.md")).unwrap();
    let changed = text.replace("issued within 14 days", "issued within 21 days");
    assert_ne!(changed, text);
    let (_, updated) = upload(
        &app,
        &key,
        Form::new()
            .part(
                "file",
                Part::bytes(changed.into_bytes()).file_name("handbook.md"),
            )
            .text("metadata", meta),
    )
    .await;
    let updated = item(&updated, "handbook.md");
    assert_eq!(updated["status"], "updated", "{updated}");
    assert_eq!(updated["chunks"].as_u64().unwrap(), chunks);
    let embedded = updated["embedded"].as_u64().unwrap();
    assert!(embedded >= 1 && embedded < chunks, "{updated}");
    assert_eq!(updated["reused"].as_u64().unwrap(), chunks - embedded);
    let r = retrieve(
        &app,
        &key,
        json!({"query": "How long until a refund is issued?", "top_k": 10}),
    )
    .await;
    let handbook_text: Vec<&str> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["document_id"] == "handbook.md")
        .map(|h| h["text"].as_str().unwrap())
        .collect();
    assert!(handbook_text.iter().any(|t| t.contains("21 days")), "{r}");
    assert!(
        !handbook_text.iter().any(|t| t.contains("14 days")),
        "old chunk gone: {r}"
    );

    // JSON documents with metadata; a filter keeps to them.
    let r = app
        .post("/v1/documents")
        .json(&json!({"documents": [
            {"id": "ops-1", "title": "Pager rules", "text": "Pagers must be charged every night.", "metadata": {"team": "ops"}},
            {"id": "sales-1", "title": "Pager sales", "text": "We sell pagers to hospitals.", "metadata": {"team": "sales"}},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for mode in ["vector", "text", "hybrid"] {
        let r = retrieve(
            &app,
            &key,
            json!({"query": "pagers", "filter": {"team": "ops"}, "mode": mode, "top_k": 10}),
        )
        .await;
        assert_eq!(docs_of(&r), vec!["ops-1"], "{mode}: {r}");
    }

    // NUL characters (which PostgreSQL text cannot hold) are dropped from text; in
    // metadata or a filter they are a 400.
    let r = app
        .post("/v1/documents")
        .json(&json!({"id": "nul", "text": "Zero\0 bytes are dropped."}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["status"], "created", "{v}");
    let r = app
        .post("/v1/documents")
        .json(&json!({"id": "nul2", "text": "x", "metadata": {"a": "b\0"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .post("/v1/retrieve")
        .json(&json!({"query": "x", "filter": {"a": "\0"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .delete_as("/v1/documents/nul", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Another tenant sees none of it.
    let other = quartermaster::auth::create_key(&app.store().await, "tenant-b", "t")
        .await
        .unwrap()
        .secret;
    let r = retrieve(&app, &other, json!({"query": "refund", "top_k": 10})).await;
    assert_eq!(r["data"], json!([]), "{r}");
    let r = app
        .get_as("/v1/documents/handbook.md", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .delete_as("/v1/documents/handbook.md", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Listing and one document.
    let list = app.get_json_as("/v1/documents?limit=2", &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert_eq!(list["has_more"], true);
    let rest = app
        .get_json_as(
            &format!(
                "/v1/documents?after={}",
                list["data"][1]["id"].as_str().unwrap()
            ),
            &key,
        )
        .await;
    assert_eq!(
        rest["data"].as_array().unwrap().len(),
        4,
        "6 documents in all: {rest}"
    );
    let doc = app.get_json_as("/v1/documents/handbook.md", &key).await;
    assert_eq!(doc["chunk_count"].as_u64().unwrap(), chunks);
    assert_eq!(doc["format"], "markdown");
    assert_eq!(doc["title"], "Acme Rockets Employee Handbook");

    // Deleted: gone from retrieval, and a second delete is a 404.
    let r = app
        .delete_as("/v1/documents/handbook.md", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = retrieve(
        &app,
        &key,
        json!({"query": "refund issued days", "top_k": 10}),
    )
    .await;
    assert!(!docs_of(&r).contains(&"handbook.md".to_string()), "{r}");
    let r = app
        .delete_as("/v1/documents/handbook.md", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_on_the_embedded_store() {
    documents_scenario(None, "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_on_pgvector() {
    let Some(url) = common::fresh_database().await else {
        return;
    };
    documents_scenario(Some(url), "pgvector").await;
}

/// The embedded store's memory is rebuilt from its rows on restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("rag.db").display());
    let mut app = TestApp::spawn_with(rag_options("", Some(db.clone()))).await;
    let (status, _) = upload(
        &app,
        &app.key.clone(),
        Form::new().part("file", file_part("handbook.md")),
    )
    .await;
    assert_eq!(status, 200);
    app.shutdown().await;
    let app = TestApp::spawn_with(rag_options("", Some(db))).await;
    // A key of the same tenant (the harness makes a new key each start).
    for mode in ["vector", "text"] {
        let r = retrieve(
            &app,
            &app.key,
            json!({"query": "PagerDuty escalation", "mode": mode}),
        )
        .await;
        assert_eq!(docs_of(&r)[0], "handbook.md", "{mode}: {r}");
    }
}

async fn ingest_handbook(app: &TestApp, text: &str) -> Value {
    let (status, body) = upload(
        app,
        &app.key,
        Form::new().part(
            "file",
            Part::bytes(text.as_bytes().to_vec()).file_name("handbook.md"),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    item(&body, "handbook.md").clone()
}

/// Grounded chat: the context reaches the upstream inside the template's tags, the answer
/// carries citations (JSON and SSE), the cached answer keeps them, and re-ingesting the
/// cited document removes the cached answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grounded_chat_cites_and_invalidation_follows_the_documents() {
    let app = TestApp::spawn_with(rag_options("[cache]\nenabled = true\n", None)).await;
    let handbook = std::fs::read_to_string(fixture("handbook.md")).unwrap();
    ingest_handbook(&app, &handbook).await;
    upload(
        &app,
        &app.key,
        Form::new().part("file", file_part("faq.html")),
    )
    .await;
    let question = "How long does it take for a refund to be issued?";
    let body = json!({"model": "rag/mock-ok", "messages": [
        {"role": "system", "content": "You are the Acme help desk."},
        {"role": "user", "content": question}]});

    let r = app.chat(body.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-quartermaster-cache"], "miss");
    let grounded: usize = r.headers()["x-quartermaster-grounded"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(grounded >= 1);
    let answer: Value = r.json().await.unwrap();
    let citations = answer["citations"].as_array().expect("citations");
    assert_eq!(citations.len(), grounded);
    assert_eq!(citations[0]["index"], 1);
    assert_eq!(citations[0]["document_id"], "handbook.md", "{answer}");
    assert!(
        citations[0]["chunk_id"]
            .as_str()
            .unwrap()
            .starts_with("handbook.md#")
    );
    // What the upstream got: the client's system message first, then the context.
    let sent = app.mock.last_request();
    assert_eq!(sent["model"], "mock-ok", "the prefix is stripped");
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0]["content"], "You are the Acme help desk.");
    let context = messages[1]["content"].as_str().unwrap();
    assert_eq!(messages[1]["role"], "system");
    assert!(
        context.contains("<instructions>") && context.contains("<context>"),
        "{context}"
    );
    assert!(context.contains("issued within 14 days"), "{context}");
    assert!(
        context.contains(r#"<source id="1" document="handbook.md""#),
        "{context}"
    );
    assert_eq!(messages[2]["content"], question);

    // Streamed (header opt-in instead of the prefix): citations on the first chunk.
    let mut stream_body = body.clone();
    stream_body["model"] = json!("mock-ok");
    stream_body["stream"] = json!(true);
    let r = app
        .post("/v1/chat/completions")
        .header("x-quartermaster-rag", "on")
        .header("x-quartermaster-rag-top-k", "2")
        .json(&stream_body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-quartermaster-grounded"], "2");
    let (events, done) = sse_json(&r.text().await.unwrap());
    assert!(done);
    assert_eq!(
        events[0]["citations"].as_array().unwrap().len(),
        2,
        "{:?}",
        events[0]
    );
    assert!(events[1..].iter().all(|e| e.get("citations").is_none()));

    // The non-streamed answer was cached with its citations.
    let store = app.store().await;
    wait_for(10, "the cache write", || async {
        let n: i64 = quartermaster::store::on_pool!(&store, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM cache_entry_tags WHERE tag = 'doc:handbook.md'").fetch_one(p).await).unwrap();
        n >= 2
    })
    .await;
    let calls = app.mock.calls();
    let r = app.chat(body.clone()).await;
    assert_eq!(r.headers()["x-quartermaster-cache"], "hit");
    let hit: Value = r.json().await.unwrap();
    assert_eq!(hit["citations"], answer["citations"]);
    assert_eq!(app.mock.calls(), calls);
    // A plain request with the same text is another key: not answered from the grounded one.
    let plain = json!({"model": "mock-ok", "messages": body["messages"].clone()});
    let r = app.chat(plain).await;
    assert_eq!(r.headers()["x-quartermaster-cache"], "miss");

    // Unchanged re-ingest keeps the cached answer; a changed one removes it.
    let same = ingest_handbook(&app, &handbook).await;
    assert_eq!(same["cache_invalidated"], 0);
    let changed = ingest_handbook(&app, &handbook.replace("14 days", "21 days")).await;
    assert!(
        changed["cache_invalidated"].as_u64().unwrap() >= 2,
        "{changed}"
    );
    let calls = app.mock.calls();
    let r = app.chat(body.clone()).await;
    assert_eq!(r.headers()["x-quartermaster-cache"], "miss");
    let _: Value = r.json().await.unwrap();
    assert_eq!(app.mock.calls(), calls + 1);
    assert!(
        app.mock.last_request()["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("21 days")
    );

    // The cached answers go before the document changes: when they cannot (their table
    // gone), the document is not changed either and the client hears of it.
    let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
    quartermaster::store::on_pool!(&store, p => sqlx::query(sqlx::AssertSqlSafe(rename("cache_entry_tags", "cache_entry_tags_away")))
        .execute(p).await.map(|_| ()))
    .unwrap();
    let (status, failed) = upload(
        &app,
        &app.key,
        Form::new().part(
            "file",
            Part::bytes(handbook.replace("14 days", "28 days").into_bytes())
                .file_name("handbook.md"),
        ),
    )
    .await;
    assert!(status >= 500, "{status} {failed}");
    quartermaster::store::on_pool!(&store, p => sqlx::query(sqlx::AssertSqlSafe(rename("cache_entry_tags_away", "cache_entry_tags")))
        .execute(p).await.map(|_| ()))
    .unwrap();
    let again = ingest_handbook(&app, &handbook.replace("14 days", "21 days")).await;
    assert_eq!(again["status"], "unchanged", "{again}");
}

/// Every bad input is a clear error in the API's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_documents_and_queries_are_clear_errors() {
    // Chat bodies are capped at 30 kB; uploads at 100 kB.
    let app = TestApp::spawn_with(rag_options(
        "[server]\nshutdown_grace_secs = 2\nbody_limit_bytes = 30000\n\
         [rag]\nmax_document_bytes = 2000\nmax_upload_bytes = 100000\n",
        None,
    ))
    .await;
    let code_of = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_string();
    let post_raw = |ct: &'static str, body: Vec<u8>| {
        app.post("/v1/documents")
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = post_raw("application/json", b"{\"text\": ".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(code_of(&r.json().await.unwrap()), "invalid_json");
    let r = post_raw("text/csv", b"a,b".to_vec()).await.unwrap();
    assert_eq!(r.status(), 415);
    let cases = [
        (
            json!({"id": "x", "text": "a", "content_base64": "YQ=="}),
            400,
            "invalid_request",
        ),
        (json!({"id": "x"}), 400, "invalid_request"),
        (json!({"id": "x", "text": "   "}), 422, "empty_document"),
        (
            json!({"id": "x", "text": "hello", "format": "docx"}),
            415,
            "unsupported_file_type",
        ),
        (
            json!({"id": "x", "content_base64": "%%%", "format": "pdf"}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "content_base64": "JVBERi0xLjQKZ2FyYmFnZQ==", "format": "pdf"}),
            422,
            "corrupt_document",
        ),
        (
            json!({"id": "x", "text": "a".repeat(3000)}),
            413,
            "document_too_large",
        ),
        (json!({"id": "", "text": "hello"}), 400, "invalid_request"),
        (
            json!({"id": "x", "text": "hello", "colour": "red"}),
            400,
            "invalid_request",
        ),
        (json!({"documents": []}), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let r = app.post("/v1/documents").json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(code_of(&v), code, "{body}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }
    // In a batch, the bad one fails alone.
    let r = app
        .post("/v1/documents")
        .json(&json!({"documents": [
            {"id": "good", "text": "Rockets need fuel."},
            {"id": "huge", "text": "b".repeat(3000)},
            {"id": "empty", "text": ""}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["ingested"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(2)),
        "{v}"
    );
    assert_eq!(item(&v, "huge")["error"]["code"], "document_too_large");
    // A BEIR file with one broken line: the others are ingested.
    let (status, v) = upload(
        &app,
        &app.key,
        Form::new().part("file", file_part("bad.jsonl")),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["ingested"].as_u64(), v["failed"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    // An upload over the body limit.
    let big = Form::new().part(
        "file",
        Part::bytes(vec![b'a'; 200_000]).file_name("big.txt"),
    );
    let (status, v) = upload(&app, &app.key, big).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(code_of(&v), "request_too_large");
    // Between the chat body limit and the upload limit, with an Idempotency-Key: the upload
    // limit holds, the big file fails alone, and a retry is replayed.
    // A retry sends the same bytes (reqwest's forms draw a new boundary each time).
    let mut body = Vec::new();
    for (name, data) in [
        ("big.txt", vec![b'a'; 60_000]),
        ("notes.txt", std::fs::read(fixture("notes.txt")).unwrap()),
    ] {
        body.extend_from_slice(
            format!("--qmB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--qmB--\r\n");
    let send = || {
        app.post("/v1/documents")
            .header("idempotency-key", "upload-1")
            .header("content-type", "multipart/form-data; boundary=qmB")
            .body(body.clone())
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        item(&v, "big.txt")["error"]["code"],
        "document_too_large",
        "{v}"
    );
    assert_eq!(item(&v, "notes.txt")["status"], "created", "{v}");
    let r = send().await.unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    assert_eq!(again, v);
    // Multipart without files, with an unknown field.
    let (status, v) = upload(&app, &app.key, Form::new().text("metadata", "{}")).await;
    assert_eq!((status, code_of(&v).as_str()), (400, "invalid_request"));
    let (status, _) = upload(
        &app,
        &app.key,
        Form::new()
            .text("colour", "red")
            .part("file", file_part("notes.txt")),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = upload(
        &app,
        &app.key,
        Form::new()
            .text("metadata", "[1]")
            .part("file", file_part("notes.txt")),
    )
    .await;
    assert_eq!(status, 400);

    // Retrieval.
    for (body, param) in [
        (json!({"query": "  "}), "query"),
        (json!({"query": "x", "top_k": 0}), "top_k"),
        (json!({"query": "x", "top_k": 1000}), "top_k"),
        (json!({"query": "x", "mode": "magic"}), "mode"),
        (json!({"query": 5}), "query"),
    ] {
        let r = app.post("/v1/retrieve").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
    // Grounded chat without a user message, and a malformed opt-in header.
    let r = app
        .chat(json!({"model": "rag/mock-ok", "messages": [{"role": "system", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 400);
    let r = app
        .post("/v1/chat/completions")
        .header("x-quartermaster-rag", "maybe")
        .json(&json!({"model": "mock-ok", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .chat(
            json!({"model": "rag/no-such-model", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 404);
}

/// A document with a `url` is a linked source on every door: the citation carries it, the
/// Responses door annotates with `url_citation`, the UI message stream adds a `source-url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_url_reaches_every_door() {
    let mut app = TestApp::spawn_with(rag_options("", None)).await;
    let handbook = std::fs::read_to_string(fixture("handbook.md")).unwrap();
    let form = Form::new()
        .part(
            "file",
            Part::bytes(handbook.into_bytes()).file_name("handbook.md"),
        )
        .text("metadata", r#"{"url": "https://help.acme.test/handbook"}"#);
    let (status, body) = upload(&app, &app.key, form).await;
    assert_eq!(status, 200, "{body}");
    let question = "How long does it take for a refund to be issued?";

    let r = app
        .post("/v1/responses")
        .json(&json!({"model": "rag/mock-ok", "input": question}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resp: Value = r.json().await.unwrap();
    let annotations = resp["output"][0]["content"][0]["annotations"]
        .as_array()
        .unwrap_or_else(|| panic!("annotations in {resp}"));
    assert!(!annotations.is_empty(), "{resp}");
    for a in annotations {
        assert_eq!(a["type"], "url_citation", "{a}");
        assert_eq!(a["url"], "https://help.acme.test/handbook");
        assert!(a["title"].as_str().is_some_and(|t| !t.is_empty()), "{a}");
    }

    let r = app
        .post("/api/chat")
        .json(&json!({"id": "c1", "model": "rag/mock-ok", "trigger": "submit-message",
            "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": question}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (parts, done) = sse_json(&r.text().await.unwrap());
    assert!(done);
    let docs: Vec<&Value> = parts
        .iter()
        .filter(|p| p["type"] == "source-document")
        .collect();
    let urls: Vec<&Value> = parts.iter().filter(|p| p["type"] == "source-url").collect();
    assert!(!docs.is_empty());
    assert_eq!(docs.len(), urls.len(), "{parts:?}");
    assert_eq!(urls[0]["url"], "https://help.acme.test/handbook");
    assert_eq!(urls[0]["sourceId"], docs[0]["sourceId"]);
    app.shutdown().await;
}
