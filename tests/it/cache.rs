//! The response cache end to end: a real gateway, the real MiniLM embedder, a mock upstream
//! that counts calls. Exact and semantic hits, stream replay, tenant and conversation
//! isolation, header controls, only complete answers stored, invalidation, TTL, eviction,
//! persistence across restarts and corrupt rows.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Options, TestApp, sse_json, wait_for};
use serde_json::{Value, json};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

/// A priced model (so savings are visible) and the cache on, with the real embedder.
fn cache_options(cache_extra: &str, db_url: Option<String>) -> Options {
    Options {
        extra: format!(
            "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 2\n\
             [embeddings]\nmodel_dir = \"{}\"\n\
             [models.priced]\nprovider = \"mock\"\nupstream_model = \"mock-ok\"\n\
             input_usd_per_mtok = 1000.0\noutput_usd_per_mtok = 2000.0\n\
             [cache]\nenabled = true\n{cache_extra}",
            model_dir().display()
        ),
        db_url,
        config_file: false,
    }
}

/// The cache on the database at `db` (a file, so the gateway can restart on it) with the
/// operator's API key `admin`.
fn admin_options(db: &str, admin: &str) -> Options {
    let mut o = cache_options("", Some(db.to_string()));
    o.extra
        .push_str(&format!("[admin]\napi_key = \"{admin}\"\n"));
    o
}

fn ask(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

async fn send(app: &TestApp, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app.post("/v1/chat/completions").json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// Waits until the background write of an answer has landed (entries in the store).
async fn wait_entries(app: &TestApp, n: i64) {
    let store = app.store().await;
    wait_for(10, "the cache write", || async {
        let count: i64 = quartermaster::store::on_pool!(&store, p => sqlx::query_scalar("SELECT COUNT(*) FROM cache_entries").fetch_one(p).await).unwrap();
        count == n
    })
    .await;
}

async fn content_of(resp: reqwest::Response) -> String {
    let v: Value = resp.json().await.unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn exact_hit_costs_nothing_and_is_logged_as_saved() {
    let mut app = TestApp::spawn_with(cache_options("", None)).await;
    let body = ask(
        "priced",
        "What is the boiling point of water at sea level?",
        false,
    );
    let first = send(&app, &body, &[]).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-quartermaster-cache"), "miss");
    let live = content_of(first).await;
    wait_entries(&app, 1).await;

    // Whitespace and key order do not matter to the exact key.
    let again = json!({"messages": [{"content": "  What is the boiling point of water at   sea level?", "role": "user"}], "model": "priced"});
    let hit = send(&app, &again, &[]).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(header(&hit, "x-quartermaster-cache"), "hit");
    assert_eq!(header(&hit, "x-quartermaster-cache-kind"), "exact");
    assert_eq!(header(&hit, "x-quartermaster-cache-similarity"), "1.0000");
    let entry = header(&hit, "x-quartermaster-cache-entry").to_string();
    assert!(entry.starts_with("ce_"), "{entry}");
    let v: Value = hit.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], live.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        app.mock.calls_for("mock-ok"),
        1,
        "the hit never reached the upstream"
    );

    app.shutdown().await;
    let store = app.store().await;
    let rows: Vec<(String, f64, f64, Option<String>)> = quartermaster::store::on_pool!(&store, p => sqlx::query_as(
        "SELECT status, cost_usd, saved_usd, provider FROM request_log ORDER BY created_at").fetch_all(p).await).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "ok");
    assert!(rows[0].1 > 0.0, "the live answer cost something");
    assert_eq!(rows[1].0, "cache_hit");
    assert_eq!(rows[1].1, 0.0, "a hit costs nothing");
    assert!(
        (rows[1].2 - rows[0].1).abs() < 1e-12,
        "it saved what the answer cost"
    );
    assert_eq!(rows[1].3.as_deref(), Some("cache"));
}

#[tokio::test]
async fn streamed_answers_are_stored_and_hits_replay_as_sse() {
    let mut app = TestApp::spawn_with(cache_options("replay_chunk_chars = 4\n", None)).await;
    let mut body = ask(
        "mock-ok",
        "Tell me a short story about a lighthouse keeper.",
        true,
    );
    body["stream_options"] = json!({"include_usage": true});
    let first = send(&app, &body, &[]).await;
    assert_eq!(header(&first, "x-quartermaster-cache"), "miss");
    let (live_events, done) = sse_json(&first.text().await.unwrap());
    assert!(done);
    let live_text: String = live_events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    wait_entries(&app, 1).await;

    let hit = send(&app, &body, &[]).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(header(&hit, "x-quartermaster-cache"), "hit");
    assert!(header(&hit, "content-type").starts_with("text/event-stream"));
    let (events, done) = sse_json(&hit.text().await.unwrap());
    assert!(done, "a replay ends with [DONE]");
    assert!(events.len() >= 5, "several chunks: {}", events.len());
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let id = events[0]["id"].as_str().unwrap();
    assert!(
        events
            .iter()
            .all(|e| e["id"] == id && e["object"] == "chat.completion.chunk")
    );
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, live_text);
    let finish = &events[events.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = events.last().unwrap();
    assert!(usage["choices"].as_array().unwrap().is_empty());
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // The same request without streaming is the same entry, served as a completion.
    body["stream"] = json!(false);
    body.as_object_mut().unwrap().remove("stream_options");
    let plain = send(&app, &body, &[]).await;
    assert_eq!(header(&plain, "x-quartermaster-cache"), "hit");
    assert_eq!(content_of(plain).await, live_text);
    assert_eq!(app.mock.calls_for("mock-ok"), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn semantic_hits_need_similarity_fingerprint_and_verification() {
    let mut app = TestApp::spawn_with(cache_options("", None)).await;
    let cached = ask("mock-ok", "How do I sort a list in Python?", false);
    assert_eq!(send(&app, &cached, &[]).await.status(), 200);
    wait_entries(&app, 1).await;

    // A paraphrase above the threshold is a semantic hit.
    let low = [("x-quartermaster-cache-threshold", "0.80")];
    let para = send(
        &app,
        &ask("mock-ok", "How can I sort a list in Python?", false),
        &low,
    )
    .await;
    assert_eq!(header(&para, "x-quartermaster-cache"), "hit");
    assert_eq!(header(&para, "x-quartermaster-cache-kind"), "semantic");
    let sim: f32 = header(&para, "x-quartermaster-cache-similarity")
        .parse()
        .unwrap();
    assert!((0.80..1.0).contains(&sim), "{sim}");
    assert_eq!(app.mock.calls_for("mock-ok"), 1);

    // Another target language is close in meaning but vetoed by verification.
    let rust = send(
        &app,
        &ask("mock-ok", "How do I sort a list in Rust?", false),
        &[("x-quartermaster-cache-threshold", "0.3")],
    )
    .await;
    assert_eq!(header(&rust, "x-quartermaster-cache"), "miss");
    // The same question with another temperature has another fingerprint: never a hit.
    let mut hot = ask("mock-ok", "How can I sort a list in Python?", false);
    hot["temperature"] = json!(1.5);
    let hot = send(&app, &hot, &low).await;
    assert_eq!(header(&hot, "x-quartermaster-cache"), "miss");
    // A strict threshold turns the paraphrase into a miss.
    let strict = [("x-quartermaster-cache-threshold", "0.999")];
    let miss = send(
        &app,
        &ask("mock-ok", "How can I sort a list in Python?", false),
        &strict,
    )
    .await;
    assert_eq!(header(&miss, "x-quartermaster-cache"), "miss");
    assert_eq!(app.mock.calls_for("mock-ok"), 4);
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("qm_cache_verify_rejections_total{check=\"entities\"}"),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn follow_ups_only_hit_their_own_conversation() {
    let mut app = TestApp::spawn_with(cache_options("", None)).await;
    let convo = |country: &str, city: &str| {
        json!({"model": "mock-ok", "messages": [
            {"role": "user", "content": format!("What is the largest city in {country}?")},
            {"role": "assistant", "content": city},
            {"role": "user", "content": "And the second largest?"}]})
    };
    assert_eq!(
        send(&app, &convo("France", "Paris"), &[]).await.status(),
        200
    );
    wait_entries(&app, 1).await;
    let low = [("x-quartermaster-cache-threshold", "0.5")];
    let same = send(&app, &convo("France", "Paris"), &low).await;
    assert_eq!(header(&same, "x-quartermaster-cache"), "hit");
    let other = send(&app, &convo("Spain", "Madrid"), &low).await;
    assert_eq!(header(&other, "x-quartermaster-cache"), "miss");
    app.shutdown().await;
}

#[tokio::test]
async fn tenants_never_see_each_others_entries() {
    let mut app = TestApp::spawn_with(cache_options("", None)).await;
    let other_key = {
        let store = app.store().await;
        quartermaster::auth::create_key(&store, "tenant-b", "b")
            .await
            .unwrap()
            .secret
    };
    let body = ask("mock-ok", "What is our refund policy?", false);
    assert_eq!(send(&app, &body, &[]).await.status(), 200);
    wait_entries(&app, 1).await;
    let low = ("x-quartermaster-cache-threshold", "0.0");
    for text in ["What is our refund policy?", "What's our refund policy?"] {
        let r = app
            .post_as("/v1/chat/completions", &other_key)
            .header(low.0, low.1)
            .header("x-quartermaster-cache", "no-write")
            .json(&ask("mock-ok", text, false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-quartermaster-cache"), "miss", "{text}");
    }
    let a = send(&app, &body, &[]).await;
    assert_eq!(header(&a, "x-quartermaster-cache"), "hit");
    // B cannot read or delete A's entry by id.
    let entry = header(&a, "x-quartermaster-cache-entry").to_string();
    let r = app
        .get_as(&format!("/v1/cache/entries/{entry}"), &other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .delete_as(&format!("/v1/cache/entries/{entry}"), &other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        header(&send(&app, &body, &[]).await, "x-quartermaster-cache"),
        "hit"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn header_controls() {
    let mut app = TestApp::spawn_with(cache_options("", None)).await;
    let body = ask("mock-ok", "List three prime numbers.", false);
    // no-write: answered, not stored.
    let r = send(&app, &body, &[("x-quartermaster-cache", "no-write")]).await;
    assert_eq!(header(&r, "x-quartermaster-cache"), "miss");
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_entries(&app, 0).await;
    // Stored with tags and a TTL.
    let r = send(
        &app,
        &body,
        &[
            ("x-quartermaster-cache-tags", "doc:primes, faq"),
            ("x-quartermaster-cache-ttl", "2"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    wait_entries(&app, 1).await;
    // off: neither read nor written.
    let r = send(&app, &body, &[("x-quartermaster-cache", "off")]).await;
    assert_eq!(header(&r, "x-quartermaster-cache"), "bypass");
    let hit = send(&app, &body, &[]).await;
    assert_eq!(header(&hit, "x-quartermaster-cache"), "hit");
    let first_entry = header(&hit, "x-quartermaster-cache-entry").to_string();
    let info = app
        .get_json_as(&format!("/v1/cache/entries/{first_entry}"), &app.key)
        .await;
    assert_eq!(info["tags"], json!(["doc:primes", "faq"]));
    assert_eq!(info["query"], "List three prime numbers.");
    // no-read and refresh both go upstream though an entry exists, and store the new answer
    // in its place.
    let store = app.store().await;
    let mut previous = first_entry;
    for mode in ["no-read", "refresh"] {
        let r = send(&app, &body, &[("x-quartermaster-cache", mode)]).await;
        assert_eq!(header(&r, "x-quartermaster-cache"), "bypass", "{mode}");
        let ids = || async {
            let ids: Vec<String> = quartermaster::store::on_pool!(&store, p => sqlx::query_scalar("SELECT id FROM cache_entries").fetch_all(p).await).unwrap();
            ids
        };
        wait_for(10, "the replacing entry", || async {
            let ids = ids().await;
            ids.len() == 1 && ids[0] != previous
        })
        .await;
        let replaced = ids().await.remove(0);
        previous = replaced;
    }
    // The replacement has no tags (the old entry's went with it) and is what hits now.
    let hit = send(&app, &body, &[]).await;
    assert_eq!(header(&hit, "x-quartermaster-cache-entry"), previous);
    let info = app
        .get_json_as(&format!("/v1/cache/entries/{previous}"), &app.key)
        .await;
    assert_eq!(info["tags"], json!([]));
    // Malformed controls are errors in the API's shape.
    for (name, value) in [
        ("x-quartermaster-cache", "maybe"),
        ("x-quartermaster-cache-ttl", "-5"),
        ("x-quartermaster-cache-threshold", "high"),
    ] {
        let r = send(&app, &body, &[(name, value)]).await;
        assert_eq!(r.status(), 400, "{name}: {value}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], name);
    }
    assert_eq!(app.mock.calls_for("mock-ok"), 5);
    app.shutdown().await;
}

#[tokio::test]
async fn ttl_expires_entries() {
    let mut app = TestApp::spawn_with(cache_options("", None)).await;
    let body = ask("mock-ok", "What time zone is Tokyo in?", false);
    send(&app, &body, &[("x-quartermaster-cache-ttl", "1")]).await;
    wait_entries(&app, 1).await;
    assert_eq!(
        header(&send(&app, &body, &[]).await, "x-quartermaster-cache"),
        "hit"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        header(&send(&app, &body, &[]).await, "x-quartermaster-cache"),
        "miss"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn only_complete_answers_are_stored() {
    let mut app = TestApp::spawn_with(cache_options("", None)).await;
    // Fails mid-stream, ends without finishing: neither is stored.
    for model in ["mock-fail-mid", "mock-drop-mid"] {
        let r = send(&app, &ask(model, "Explain TCP slow start.", true), &[]).await;
        let _ = r.text().await;
    }
    // The client hangs up mid-stream.
    let r = send(
        &app,
        &ask("mock-slow", "Explain TCP slow start.", true),
        &[],
    )
    .await;
    let mut stream = r.bytes_stream();
    use futures::StreamExt;
    let _ = stream.next().await;
    drop(stream);
    // An upstream error is not stored either.
    let r = send(
        &app,
        &ask("mock-500", "Explain TCP slow start.", false),
        &[],
    )
    .await;
    assert!(r.status().is_server_error());
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_entries(&app, 0).await;
    for model in ["mock-fail-mid", "mock-drop-mid"] {
        let r = send(&app, &ask(model, "Explain TCP slow start.", true), &[]).await;
        assert_eq!(header(&r, "x-quartermaster-cache"), "miss", "{model}");
        let _ = r.text().await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn invalidation_by_id_tag_tenant_and_admin() {
    let admin = "qm-admin-cache-test";
    let mut options = cache_options("", None);
    options
        .extra
        .push_str(&format!("[admin]\napi_key = \"{admin}\"\n"));
    let mut app = TestApp::spawn_with(options).await;
    let q = |i: usize| {
        ask(
            "mock-ok",
            &format!("Question number {i} about the handbook?"),
            false,
        )
    };
    for (i, tags) in [(1, "doc:a"), (2, "doc:a,doc:b"), (3, "doc:b"), (4, "")] {
        let r = send(&app, &q(i), &[("x-quartermaster-cache-tags", tags)]).await;
        assert_eq!(r.status(), 200);
    }
    wait_entries(&app, 4).await;
    let hit = |i| {
        let app = &app;
        async move { header(&send(app, &q(i), &[]).await, "x-quartermaster-cache") == "hit" }
    };
    assert!(hit(1).await && hit(2).await && hit(3).await && hit(4).await);

    // By tag: entries 1 and 2 carry doc:a.
    let r = app
        .post_json_as(
            "/v1/cache/invalidate",
            &app.key,
            &json!({"tags": ["doc:a"]}),
        )
        .await;
    assert_eq!(r["deleted"], 2);
    assert!(!hit(1).await && !hit(2).await && hit(3).await);
    wait_entries(&app, 4).await; // 1 and 2 were answered again and stored again

    // By id.
    let entry = header(&send(&app, &q(3), &[]).await, "x-quartermaster-cache-entry").to_string();
    let r = app
        .delete_as(&format!("/v1/cache/entries/{entry}"), &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!hit(3).await);
    let r = app
        .delete_as(&format!("/v1/cache/entries/{entry}"), &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    wait_entries(&app, 4).await;

    // A fifth entry tagged doc:b (the tagged ones above are gone).
    send(&app, &q(5), &[("x-quartermaster-cache-tags", "doc:b")]).await;
    wait_entries(&app, 5).await;

    // Bad bodies.
    for bad in [
        json!({}),
        json!({"tags": [], "all": false}),
        json!({"tags": ["x"], "all": true}),
    ] {
        let r = app
            .post("/v1/cache/invalidate")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // The operator: by tag across tenants, then a whole tenant.
    let r = app
        .post_json_as(
            "/admin/cache/invalidate",
            admin,
            &json!({"tags": ["doc:b"]}),
        )
        .await;
    assert_eq!(r["deleted"], 1);
    assert!(!hit(5).await);
    wait_entries(&app, 5).await; // 5 was answered again and stored again
    let stats = app.get_json_as("/admin/cache", admin).await;
    assert_eq!(stats["index"], "hnsw");
    let all = json!({"tenant": "tenant-a", "all": true});
    let r = app
        .post_json_as("/admin/cache/invalidate", admin, &all)
        .await;
    assert_eq!(r["deleted"], 5, "1, 2, 3, 4 and 5 again");
    assert!(!hit(4).await);
    app.shutdown().await;
}

#[tokio::test]
async fn capacity_evicts_least_recently_used() {
    let mut app = TestApp::spawn_with(cache_options(
        "max_entries_per_tenant = 3\nsweep_interval_secs = 1\n",
        None,
    ))
    .await;
    let q = |i: usize| ask("mock-ok", &format!("Capacity question {i}?"), false);
    for i in 0..3 {
        send(&app, &q(i), &[]).await;
        wait_entries(&app, i as i64 + 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Entry 0 is used again: entry 1 is now the least recently used.
    assert_eq!(
        header(&send(&app, &q(0), &[]).await, "x-quartermaster-cache"),
        "hit"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&app, &q(3), &[]).await;
    // The write lands (4 entries), then the sweep brings it back to 3.
    let store = app.store().await;
    wait_for(10, "the sweep", || async {
        let (n, has3): (i64, i64) = quartermaster::store::on_pool!(&store, p => sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN query_text = 'Capacity question 3?' THEN 1 ELSE 0 END), 0) FROM cache_entries")
            .fetch_one(p).await).unwrap();
        n == 3 && has3 == 1
    })
    .await;
    for (i, want) in [(0, "hit"), (2, "hit"), (3, "hit"), (1, "miss")] {
        assert_eq!(
            header(
                &send(&app, &q(i), &[("x-quartermaster-cache", "no-write")]).await,
                "x-quartermaster-cache"
            ),
            want,
            "question {i}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn entries_survive_a_restart_and_corrupt_rows_are_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cache.db").display());
    let mut app = TestApp::spawn_with(cache_options("", Some(db.clone()))).await;
    let body = ask(
        "mock-ok",
        "Which port does PostgreSQL listen on by default?",
        false,
    );
    send(&app, &body, &[]).await;
    let body2 = ask("mock-ok", "What is the default port of Redis?", false);
    send(&app, &body2, &[]).await;
    wait_entries(&app, 2).await;
    app.shutdown().await;

    // A new process: the graph is rebuilt from the store, so semantic hits work again.
    let mut app = TestApp::spawn_with(cache_options("", Some(db.clone()))).await;
    let low = [("x-quartermaster-cache-threshold", "0.80")];
    let para = ask(
        "mock-ok",
        "Which port does PostgreSQL listen on by default ?",
        false,
    );
    let mut kind = String::new();
    for _ in 0..50 {
        let r = send(
            &app,
            &ask(
                "mock-ok",
                "By default, which port does PostgreSQL listen on?",
                false,
            ),
            &[("x-quartermaster-cache", "no-write"), low[0]],
        )
        .await;
        if header(&r, "x-quartermaster-cache") == "hit" {
            kind = header(&r, "x-quartermaster-cache-kind").to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kind, "semantic", "the reloaded index answers by meaning");
    assert_eq!(
        header(&send(&app, &para, &[]).await, "x-quartermaster-cache"),
        "hit"
    );

    // A row whose answer was damaged on disk fails its checksum: a miss, and it is deleted.
    let store = app.store().await;
    quartermaster::store::on_pool!(&store, p => sqlx::query(
        "UPDATE cache_entries SET response = replace(response, 'a', 'b') WHERE query_text LIKE '%Redis%'")
        .execute(p).await.map(|r| r.rows_affected())).unwrap();
    let r = send(&app, &body2, &[("x-quartermaster-cache", "no-write")]).await;
    assert_eq!(header(&r, "x-quartermaster-cache"), "miss");
    wait_entries(&app, 1).await;
    assert!(
        app.get_text("/metrics")
            .await
            .contains("qm_cache_corrupt_total 1")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_learned_verifier_accepts_near_duplicates_and_rejects_loose_matches() {
    let mut app = TestApp::spawn_with(cache_options(
        "verifier = \"learned\"\nthreshold = 0.70\n",
        None,
    ))
    .await;
    send(
        &app,
        &ask("mock-ok", "How do I sort a list in Python?", false),
        &[],
    )
    .await;
    wait_entries(&app, 1).await;
    let near = send(
        &app,
        &ask("mock-ok", "how do I sort a list in Python ?", false),
        &[],
    )
    .await;
    assert_eq!(header(&near, "x-quartermaster-cache"), "hit");
    assert_eq!(header(&near, "x-quartermaster-cache-kind"), "semantic");
    let loose = send(
        &app,
        &ask("mock-ok", "How do I sort a dictionary in Python?", false),
        &[("x-quartermaster-cache", "no-write")],
    )
    .await;
    assert_eq!(header(&loose, "x-quartermaster-cache"), "miss");
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("qm_cache_verify_rejections_total{check=\"learned\"}"),
        "{metrics}"
    );
    app.shutdown().await;
}

/// Feedback: a wrong semantic hit demotes its entry (no longer served by meaning, still by
/// its own question), counts in the tenant's false-hit estimate, and only the tenant that
/// owns an entry can judge it.
#[tokio::test]
async fn feedback_demotes_wrong_hits_per_tenant() {
    let admin = "qm-admin-feedback-test";
    // A database file: the gateway restarts below, and the tenant must stay held.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("feedback.db").display());
    let options = || admin_options(&db, admin);
    let mut app = TestApp::spawn_with(options()).await;
    let (other_key, b_id) = {
        let store = app.store().await;
        let b = quartermaster::auth::create_key(&store, "tenant-b", "b")
            .await
            .unwrap();
        (b.secret, b.tenant.id)
    };
    // Tenant A's row in `GET /admin/cache` (the only other tenant with entries).
    let row_a = |stats: &Value| -> Value {
        let rows = stats["tenants"].as_array().unwrap();
        rows.iter()
            .find(|t| t["tenant_id"] != b_id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no row for tenant A: {stats}"))
    };
    let question = ask("mock-ok", "How do I sort a list in Python?", false);
    assert_eq!(send(&app, &question, &[]).await.status(), 200);
    wait_entries(&app, 1).await;
    let low = [
        ("x-quartermaster-cache-threshold", "0.80"),
        ("x-quartermaster-cache", "no-write"),
    ];
    let paraphrase = ask("mock-ok", "How can I sort a list in Python?", false);
    let hit = send(&app, &paraphrase, &low).await;
    assert_eq!(header(&hit, "x-quartermaster-cache-kind"), "semantic");
    let entry = header(&hit, "x-quartermaster-cache-entry").to_string();
    let request_id = header(&hit, "x-request-id").to_string();
    let verdict = json!({"entry": entry, "request_id": request_id, "correct": false});
    // A second question, cached for both tenants: the guard's witness below.
    let second = ask("mock-ok", "How do I reverse a string in Python?", false);
    // Its similarity to it is under the 0.995 the held bound asks (checked below).
    let second_paraphrase = ask("mock-ok", "How do you reverse a Python string?", false);
    assert_eq!(send(&app, &second, &[]).await.status(), 200);
    let as_b = |app: &TestApp, body: &Value, headers: &[(&str, &str)]| {
        let mut req = app.post_as("/v1/chat/completions", &other_key).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    assert_eq!(as_b(&app, &second, &[]).await.unwrap().status(), 200);
    wait_entries(&app, 3).await;
    // The guard reads verdicts on logged semantic hits: the hit's row first.
    let store = app.store().await;
    wait_for(10, "the semantic hit logged", || async {
        let n: i64 = quartermaster::store::on_pool!(&store, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM request_log WHERE request_id = $1 AND route_reason = 'cache_semantic'")
            .bind(&request_id).fetch_one(p).await).unwrap();
        n == 1
    })
    .await;

    // Another tenant cannot judge it (404, as for an entry it does not have).
    let r = app
        .post_as("/v1/cache/feedback", &other_key)
        .json(&verdict)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Malformed verdicts are 400s in the envelope.
    let r = app
        .post("/v1/cache/feedback")
        .json(&json!({"entry": entry}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .post("/v1/cache/feedback")
        .json(&verdict)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["demoted"], true);

    // Demoted: the paraphrase misses; the entry's own question still hits exactly.
    let demoted: Option<i64> = quartermaster::store::on_pool!(&store, p => sqlx::query_scalar(
        "SELECT demoted_at FROM cache_entries WHERE id = $1").bind(&entry).fetch_one(p).await)
    .unwrap();
    assert!(demoted.is_some());
    let again = send(&app, &paraphrase, &low).await;
    assert_eq!(header(&again, "x-quartermaster-cache"), "miss");
    let own = send(&app, &question, &[("x-quartermaster-cache", "no-write")]).await;
    assert_eq!(header(&own, "x-quartermaster-cache"), "hit");
    assert_eq!(header(&own, "x-quartermaster-cache-kind"), "exact");

    // One wrong hit of one: the low end of the tenant's interval (0.21) is far over the
    // 1 % bound, so its semantic hits are held to the strictest bound (a quarter of it)
    // until the evidence changes, whatever threshold a request asks for.
    let stats = app.get_json_as("/admin/cache", admin).await;
    let mine = row_a(&stats);
    assert_eq!(mine["false_hits_30d"]["wrong"], 1, "{stats}");
    assert_eq!(mine["tightened"], true, "{stats}");
    assert_eq!(mine["bound_in_force"], 0.0025, "{stats}");
    assert_eq!(
        mine["threshold_in_force"].as_f64().unwrap() as f32,
        0.995,
        "{stats}"
    );
    // Tenant B's own copy of the second question: a paraphrase hits it as before ...
    let b_hit = as_b(&app, &second_paraphrase, &low).await.unwrap();
    assert_eq!(header(&b_hit, "x-quartermaster-cache-kind"), "semantic");
    let similarity: f32 = header(&b_hit, "x-quartermaster-cache-similarity")
        .parse()
        .unwrap();
    assert!(
        similarity < 0.995,
        "the test needs a paraphrase under the held threshold: {similarity}"
    );
    // ... while for tenant A, whose entry was not demoted, the same paraphrase misses.
    let held = send(&app, &second_paraphrase, &low).await;
    assert_eq!(header(&held, "x-quartermaster-cache"), "miss");
    // Across a restart: held from the start (read back before serving; the first answer
    // here would be the configured bound if it were only read on the way).
    app.shutdown().await;
    let mut app = TestApp::spawn_with(options()).await;
    let stats = app.get_json_as("/admin/cache", admin).await;
    assert_eq!(row_a(&stats)["tightened"], true, "{stats}");
    wait_for(10, "the index loaded", || async {
        app.get_json_as("/admin/cache", admin).await["index_loaded"] == true
    })
    .await;
    let held = send(&app, &second_paraphrase, &low).await;
    assert_eq!(header(&held, "x-quartermaster-cache"), "miss");
    let b_hit = as_b(&app, &second_paraphrase, &low).await.unwrap();
    assert_eq!(header(&b_hit, "x-quartermaster-cache-kind"), "semantic");

    // The estimate: one wrong of one semantic hit for this tenant, none for the other.
    wait_for(10, "the semantic hit logged", || async {
        let stats = app.get_json_as("/admin/cache", admin).await;
        row_a(&stats)["false_hits_30d"]["semantic_hits"] == 1
    })
    .await;
    let stats = app.get_json_as("/admin/cache", admin).await;
    let mine = row_a(&stats);
    assert_eq!(mine["false_hits_30d"]["wrong"], 1, "{stats}");
    assert_eq!(mine["false_hits_30d"]["rate"], 1.0);
    assert!(mine["false_hits_30d"]["low"].as_f64().unwrap() > 0.0);
    // The same request judged again replaces its verdict (one per request).
    let fixed = json!({"entry": entry, "request_id": request_id, "correct": true});
    assert_eq!(
        app.post("/v1/cache/feedback")
            .json(&fixed)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let stats = app.get_json_as("/admin/cache", admin).await;
    let mine = row_a(&stats);
    assert_eq!(mine["false_hits_30d"]["wrong"], 0, "{stats}");
    // No wrong verdict left: the tenant is back to the configured bound, and the second
    // question's paraphrase hits again.
    assert_eq!(mine["tightened"], false, "{stats}");
    assert_eq!(mine["bound_in_force"], 0.01, "{stats}");
    let freed = send(&app, &second_paraphrase, &low).await;
    assert_eq!(header(&freed, "x-quartermaster-cache-kind"), "semantic");
    app.shutdown().await;
}

/// The graphs are saved at shutdown and loaded at the next start instead of rebuilt; what
/// changed in the store meanwhile decides: an entry deleted while the gateway was down is
/// gone from the loaded graph.
#[tokio::test]
async fn graphs_are_saved_at_shutdown_and_loaded_at_start() {
    let admin = "qm-admin-snapshot-test";
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cache.db").display());
    let options = || admin_options(&db, admin);
    let mut app = TestApp::spawn_with(options()).await;
    for q in [
        "Which port does PostgreSQL listen on by default?",
        "What is the default port of Redis?",
        "How do I undo the last git commit?",
    ] {
        send(&app, &ask("mock-ok", q, false), &[]).await;
    }
    wait_entries(&app, 3).await;
    app.shutdown().await;
    let snapshots = dir.path().join("cache.db.cache-graphs");
    let manifests = std::fs::read_dir(&snapshots)
        .unwrap()
        .flat_map(|t| std::fs::read_dir(t.unwrap().path()).unwrap())
        .filter(|v| v.as_ref().unwrap().path().join("manifest.json").exists())
        .count();
    assert_eq!(manifests, 1, "one complete snapshot for the one tenant");
    // While the gateway is down, one entry goes from the store.
    let store = quartermaster::store::Store::connect(&db, 1).await.unwrap();
    quartermaster::store::on_pool!(&store, p => sqlx::query(
        "DELETE FROM cache_entries WHERE query_text LIKE '%Redis%'").execute(p).await.map(|_| ()))
    .unwrap();
    store.close().await;

    let mut app = TestApp::spawn_with(options()).await;
    wait_for(10, "the index loaded", || async {
        app.get_json_as("/admin/cache", admin).await["index_loaded"] == true
    })
    .await;
    let stats = app.get_json_as("/admin/cache", admin).await;
    assert_eq!(stats["snapshot_tenants_loaded"], 1, "{stats}");
    assert_eq!(
        stats["indexed_entries"], 2,
        "the deleted entry left the loaded graph: {stats}"
    );
    let low = [
        ("x-quartermaster-cache-threshold", "0.80"),
        ("x-quartermaster-cache", "no-write"),
    ];
    let r = send(
        &app,
        &ask(
            "mock-ok",
            "By default, which port does PostgreSQL listen on?",
            false,
        ),
        &low,
    )
    .await;
    assert_eq!(header(&r, "x-quartermaster-cache-kind"), "semantic");
    let r = send(&app, &ask("mock-ok", "Redis's default port?", false), &low).await;
    assert_eq!(header(&r, "x-quartermaster-cache"), "miss");
    app.shutdown().await;
}

/// The cross-encoder in the gateway (adapters merged into MiniLM, fused kernels, packed
/// pairs) gives the logits its training code gives (scripts/verifier/cross.py --reference),
/// batched and one pair at a time.
#[test]
fn the_cross_encoder_matches_its_training_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cross_verifier_reference.json");
    let fixture: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(fixture.len() >= 10);
    let v = quartermaster::cache::CrossVerifier::load(&model_dir()).expect("run models/fetch.sh");
    let pairs: Vec<(&str, &str, f32)> = fixture
        .iter()
        .map(|f| {
            (
                f["cached"].as_str().unwrap(),
                f["query"].as_str().unwrap(),
                f["similarity"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    let batched = v.logits(&pairs).unwrap();
    for (i, f) in fixture.iter().enumerate() {
        let want = f["logit"].as_f64().unwrap() as f32;
        let alone = v.logits(&pairs[i..i + 1]).unwrap()[0];
        assert!(
            (batched[i] - want).abs() < 2e-3 && (alone - want).abs() < 2e-3,
            "{:?}: batched {} alone {} want {want}",
            pairs[i],
            batched[i],
            alone
        );
    }
    // The fixture spans both verdicts, so agreement is not agreement on a constant.
    assert!(batched.iter().any(|l| *l > 0.0) && batched.iter().any(|l| *l < 0.0));
    // Other base weights than the ones the adapters were trained over are refused.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("model.safetensors"), b"other weights").unwrap();
    let err = quartermaster::cache::CrossVerifier::load(other.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("SHA-256"), "{err}");
    // A pair far beyond the model's 512 positions is truncated, not an error.
    let long = "word ".repeat(2000);
    assert!(
        v.logits(&[(long.as_str(), "short question?", 0.5)])
            .unwrap()[0]
            .is_finite()
    );
}

const CROSS_CACHED: &str = "How do I reset my password?";
const CROSS_PARAPHRASE: &str = "How can I reset my password?";
/// Similar (cosine ~0.87) and through every rule check, but another task.
const CROSS_LOOKALIKE: &str = "How do I change my password?";

/// `verifier = "cross"` on the HTTP path: a paraphrase is served, a look-alike that passes
/// every rule check is refused by the cross-encoder (and counted), and the bar decides it.
#[tokio::test]
async fn the_cross_encoder_decides_semantic_hits() {
    // p >= 0.9 (logit 2.2) lies between the two pairs' logits in
    // tests/fixtures/cross_verifier_reference.json (written from the shipped weights).
    let reference: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../fixtures/cross_verifier_reference.json")).unwrap();
    let logit_of = |query: &str| {
        reference
            .iter()
            .find(|r| r["cached"] == CROSS_CACHED && r["query"] == query)
            .and_then(|r| r["logit"].as_f64())
            .unwrap()
    };
    let bar = (0.9f64 / 0.1).ln();
    assert!(
        logit_of(CROSS_PARAPHRASE) > bar + 0.3 && logit_of(CROSS_LOOKALIKE) < bar - 0.3,
        "retrained weights: pick pairs on either side of the bar"
    );
    let mut app = TestApp::spawn_with(cache_options(
        "verifier = \"cross\"\nmin_probability = 0.9\n",
        None,
    ))
    .await;
    let cached = ask("mock-ok", CROSS_CACHED, false);
    assert_eq!(send(&app, &cached, &[]).await.status(), 200);
    wait_entries(&app, 1).await;

    let para = send(&app, &ask("mock-ok", CROSS_PARAPHRASE, false), &[]).await;
    assert_eq!(header(&para, "x-quartermaster-cache"), "hit");
    assert_eq!(header(&para, "x-quartermaster-cache-kind"), "semantic");
    assert_eq!(app.mock.calls_for("mock-ok"), 1);

    // Above the similarity floor and through every rule check, but not the same question.
    let near = send(
        &app,
        &ask("mock-ok", CROSS_LOOKALIKE, false),
        &[("x-quartermaster-cache", "no-write")],
    )
    .await;
    assert_eq!(header(&near, "x-quartermaster-cache"), "miss");
    assert_eq!(app.mock.calls_for("mock-ok"), 2);
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("qm_cache_verify_rejections_total{check=\"cross\"}"),
        "{metrics}"
    );
    app.shutdown().await;

    // The look-alike really is above the floor and passes the rules: with the bar at
    // p >= 0.0001 the same request is a semantic hit.
    let mut app = TestApp::spawn_with(cache_options(
        "verifier = \"cross\"\nmin_probability = 0.0001\n",
        None,
    ))
    .await;
    assert_eq!(send(&app, &cached, &[]).await.status(), 200);
    wait_entries(&app, 1).await;
    let near = send(&app, &ask("mock-ok", CROSS_LOOKALIKE, false), &[]).await;
    assert_eq!(header(&near, "x-quartermaster-cache"), "hit");
    assert_eq!(header(&near, "x-quartermaster-cache-kind"), "semantic");
    app.shutdown().await;
}

/// `cache.reask_share`: sampled semantic hits are asked again upstream in the background
/// (cache off, logged under their own id) and the fresh answer compared with the served one.
/// The verdicts feed each tenant's re-ask estimate in `GET /admin/cache`, apart from the
/// application's, and never demote an entry. `mock-echo` answers "You asked: <question>", so
/// a paraphrase's fresh answer agrees with the cached one and a look-alike's does not.
#[tokio::test]
async fn sampled_hits_are_reasked_and_compared() {
    let admin = "qm-admin-reask-test";
    let mut app = TestApp::spawn_with(cache_options(
        &format!(
            "reask_share = 1.0\nreask_agreement = 0.97\n\
             [models.mock-echo]\nprovider = \"mock\"\n[admin]\napi_key = \"{admin}\"\n"
        ),
        None,
    ))
    .await;
    let low = [("x-quartermaster-cache-threshold", "0.80")];
    let cached = ask("mock-echo", CROSS_CACHED, false);
    assert_eq!(send(&app, &cached, &[]).await.status(), 200);
    wait_entries(&app, 1).await;
    // A paraphrase, served from the cache, then re-asked: the answers agree.
    let para = send(&app, &ask("mock-echo", CROSS_PARAPHRASE, false), &low).await;
    assert_eq!(header(&para, "x-quartermaster-cache-kind"), "semantic");
    let served = content_of(para).await;
    assert_eq!(served, format!("You asked: {CROSS_CACHED}"));
    // A look-alike the rule checks pass (no cross-encoder here): served, and re-asked, the
    // fresh answer ("... change my password?") is another answer.
    let near = send(&app, &ask("mock-echo", CROSS_LOOKALIKE, false), &low).await;
    assert_eq!(header(&near, "x-quartermaster-cache-kind"), "semantic");
    let store = app.store().await;
    wait_for(20, "both re-ask verdicts", || async {
        let n: i64 = quartermaster::store::on_pool!(&store, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM cache_feedback WHERE source = 'reask'").fetch_one(p).await)
        .unwrap();
        n == 2
    })
    .await;
    // Each re-ask went upstream once (the first answer, then two re-asks).
    assert_eq!(app.mock.calls_for("mock-echo"), 3);
    let verdicts: Vec<(bool, String)> = quartermaster::store::on_pool!(&store, p => sqlx::query_as(
        "SELECT correct, request_id FROM cache_feedback WHERE source = 'reask' ORDER BY created_at").fetch_all(p).await).unwrap();
    // The two re-asks ran concurrently: one verdict each way, in either order.
    let mut kinds: Vec<bool> = verdicts.iter().map(|v| v.0).collect();
    kinds.sort();
    assert_eq!(kinds, [false, true]);
    assert!(verdicts.iter().all(|v| v.1.starts_with("reask_")));
    // The re-asks are logged as requests of their own, not as cache hits.
    wait_for(10, "the re-asks logged", || async {
        let n: i64 = quartermaster::store::on_pool!(&store, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM request_log WHERE request_id LIKE 'reask_%' AND status = 'ok'").fetch_one(p).await).unwrap();
        n == 2
    })
    .await;
    // The estimate: 1 wrong of 2 re-asked; the application's count is untouched.
    let stats = app.get_json_as("/admin/cache", admin).await;
    let t = tenant_where(&stats, "reasked", 2).unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(t["false_hits_30d"]["reask_wrong"], 1);
    assert_eq!(t["false_hits_30d"]["wrong"], 0);
    let rate = t["false_hits_30d"]["reask_rate"].as_f64().unwrap();
    assert!((rate - 0.5).abs() < 1e-9);
    let (lo, hi) = (
        t["false_hits_30d"]["reask_low"].as_f64().unwrap(),
        t["false_hits_30d"]["reask_high"].as_f64().unwrap(),
    );
    assert!(lo < 0.5 && hi > 0.5, "{lo} {hi}");
    assert_eq!(t["tightened"], false, "{stats}");
    assert_eq!(t["bound_in_force"], 0.01, "{stats}");
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("qm_cache_reasks_total{result=\"disagreed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("qm_cache_feedback_total{correct=\"false\",source=\"reask\"} 1"),
        "{metrics}"
    );
    // Last, since a semantic hit is re-asked too: no demotion, and the tenant is not held to
    // a stricter bound (re-asks are not the guard's evidence): the look-alike is still
    // served by meaning.
    let again = send(
        &app,
        &ask("mock-echo", CROSS_LOOKALIKE, false),
        &[
            ("x-quartermaster-cache-threshold", "0.80"),
            ("x-quartermaster-cache", "no-write"),
        ],
    )
    .await;
    assert_eq!(header(&again, "x-quartermaster-cache-kind"), "semantic");
    app.shutdown().await;
}

/// The `GET /admin/cache` tenant row whose `false_hits_30d[field]` is `value`.
fn tenant_where(stats: &Value, field: &str, value: i64) -> Option<Value> {
    stats["tenants"]
        .as_array()?
        .iter()
        .find(|t| t["false_hits_30d"][field] == value)
        .cloned()
}
