//! Local embeddings: agreement with sentence-transformers on a committed fixture (both
//! backends), the `/v1/embeddings` API, batching and back-pressure.

use crate::common;

use std::path::PathBuf;

use base64::Engine;
use common::{Options, TestApp};
use quartermaster::embed::{Backend, EmbedModel};
use serde_json::{Value, json};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

fn fixture() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn check_backend(backend: Backend) {
    let model = EmbedModel::load(&model_dir(), backend, 2, 0).expect("run models/fetch.sh");
    let fx = fixture();
    assert_eq!(
        fx["max_seq_length"].as_u64().unwrap() as usize,
        model.max_seq_length
    );
    let items = fx["items"].as_array().unwrap();
    assert!(items.len() >= 50);
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    // Batched together (mixed lengths in one pass) and one at a time must both agree.
    let batched = model.embed(&texts, 16_384).unwrap();
    let mut worst = 1.0f64;
    for (i, item) in items.iter().enumerate() {
        let reference: Vec<f32> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(batched[i].vector.len(), 384);
        assert_eq!(
            batched[i].tokens as u64,
            item["tokens"].as_u64().unwrap(),
            "token count of {:?}",
            texts[i]
        );
        let c = cosine(&batched[i].vector, &reference);
        worst = worst.min(c);
        assert!(c >= 0.9999, "{backend:?}: cosine {c} for {:?}", texts[i]);
        let norm: f32 = batched[i].vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    for (i, text) in texts.iter().enumerate().step_by(7) {
        let solo = model.embed(&[text], 16_384).unwrap();
        assert!(
            cosine(&solo[0].vector, &batched[i].vector) > 0.99999,
            "batching changes nothing"
        );
    }
    let long = items
        .iter()
        .filter(|i| i["tokens"].as_u64().unwrap() == 256)
        .count();
    assert!(long >= 3, "the fixture has inputs over the window");
    assert!(batched.iter().filter(|e| e.truncated).count() >= long);
    eprintln!(
        "{backend:?}: worst cosine {worst:.7} over {} inputs",
        items.len()
    );
}

#[test]
fn fused_backend_matches_sentence_transformers() {
    check_backend(Backend::Fused);
}

#[test]
fn candle_backend_matches_sentence_transformers() {
    check_backend(Backend::Candle);
}

#[test]
fn missing_model_names_the_fetch_command() {
    let err = EmbedModel::load(&PathBuf::from("/nonexistent/model"), Backend::Fused, 1, 0)
        .err()
        .unwrap();
    assert!(err.to_string().contains("models/fetch.sh"), "{err}");
}

fn with_embeddings(extra: &str) -> Options {
    Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[embeddings]\nmodel_dir = \"{}\"\n{extra}",
        model_dir().display()
    ))
}

#[tokio::test]
async fn embeddings_api_float_base64_and_truncation() {
    let mut app = TestApp::spawn_with(with_embeddings("")).await;
    let resp = app
        .post("/v1/embeddings")
        .json(&json!({"model": "all-MiniLM-L6-v2", "input": "hello world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 384);
    assert_eq!(v["usage"]["prompt_tokens"], 4); // [CLS] hello world [SEP]
    let alone = first_embedding(&v);

    // The same batch as floats, then as base64. (Alone, a short text runs the encoder's
    // few-row kernel; beside a long one, the general product: the last bits may differ.)
    let long = "word ".repeat(600);
    let batch = json!({"model": "all-MiniLM-L6-v2", "input": ["hello world", long]});
    let floats = first_embedding(&app.post_json_as("/v1/embeddings", &app.key, &batch).await);
    let cos: f32 = alone.iter().zip(&floats).map(|(a, b)| a * b).sum();
    assert!(cos > 0.99999, "alone and in a batch: cosine {cos}");
    let resp = app
        .post("/v1/embeddings")
        .json(&json!({"model": "all-MiniLM-L6-v2", "input": ["hello world", long], "encoding_format": "base64"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-quartermaster-truncated-inputs"], "1");
    let v: Value = resp.json().await.unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(
        decoded, floats,
        "base64 carries the same little-endian f32s"
    );
    assert!(v["data"][0].get("truncated").is_none());
    assert_eq!(v["data"][1]["truncated"], true);
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["usage"]["prompt_tokens"], 4 + 256);

    let models: Value = app
        .get("/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "all-MiniLM-L6-v2")
    );
    app.shutdown().await;
}

/// `POST /v1/embeddings` of `input` to the MiniLM model: the status and the body.
async fn embed_raw(app: &TestApp, input: Value) -> (u16, Value) {
    let resp = app
        .post("/v1/embeddings")
        .json(&json!({"model": "all-MiniLM-L6-v2", "input": input}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The vectors of a successful embedding of `input`.
async fn embed(app: &TestApp, input: Value) -> Vec<Value> {
    let (status, v) = embed_raw(app, input).await;
    assert_eq!(status, 200, "{v}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].clone())
        .collect()
}

/// Token ids (as tiktoken gives them, and LangChain sends them) embed like their text.
#[tokio::test]
async fn token_id_inputs_embed_like_their_text() {
    let mut app = TestApp::spawn_with(with_embeddings("")).await;
    let texts = ["hello world", "How do I rotate an API key? Ünïcödé 🦀"];
    let cl100k = tiktoken_rs::cl100k_base().unwrap();
    let o200k = tiktoken_rs::o200k_base().unwrap();
    let by_text = embed(&app, json!(texts)).await;
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| cl100k.encode_ordinary(t)).collect();
    assert_eq!(ids[0], vec![15339, 1917]);
    assert_eq!(
        embed(&app, json!(ids)).await,
        by_text,
        "arrays of id arrays"
    );
    assert_eq!(
        embed(&app, json!(ids[1])).await,
        by_text[1..],
        "one id array"
    );
    // The encoding is configured: o200k_base ids are not cl100k_base's (this text has ids
    // past cl100k_base's last one: a 400 naming it).
    let o200k_ids = o200k.encode_ordinary(texts[1]);
    let past = *o200k_ids
        .iter()
        .find(|&&id| id > 100_300)
        .expect("an id only o200k_base has");
    let (status, v) = embed_raw(&app, json!([o200k_ids.clone()])).await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&past.to_string()),
        "{v}"
    );
    app.shutdown().await;
    let mut app = TestApp::spawn_with(with_embeddings("token_encoding = \"o200k_base\"")).await;
    assert_eq!(embed(&app, json!([o200k_ids])).await, by_text[1..]);
    app.shutdown().await;
}

#[tokio::test]
async fn embeddings_bad_inputs() {
    let mut app = TestApp::spawn_with(with_embeddings("")).await;
    let cases = [
        (
            json!({"model": "all-MiniLM-L6-v2", "input": ""}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": []}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": ["ok", "  "]}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": [15339, "world"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": [[15339], "world"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": [15339, -1]}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": [[15339, 1917], []]}),
            400,
            "invalid_request",
        ),
        (
            // Not an id of cl100k_base (100,277 ranks and special tokens).
            json!({"model": "all-MiniLM-L6-v2", "input": [[15339, 4000000]]}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": 5}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": "x", "encoding_format": "hex"}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 128}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "text-embedding-3-small", "input": "x"}),
            404,
            "model_not_found",
        ),
        (json!({"input": "x"}), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let resp = app.post("/v1/embeddings").json(&body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_batches_and_agree_with_solo() {
    let mut app = TestApp::spawn_with(with_embeddings("")).await;
    let texts: Vec<String> = (0..24)
        .map(|i| format!("question number {i}: how do I rotate an API key?"))
        .collect();
    let solo: Value = app
        .post("/v1/embeddings")
        .json(&json!({"model": "all-MiniLM-L6-v2", "input": texts[5]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut handles = vec![];
    for t in &texts {
        let req = app
            .post("/v1/embeddings")
            .json(&json!({"model": "all-MiniLM-L6-v2", "input": t}));
        handles.push(tokio::spawn(async move {
            req.send().await.unwrap().json::<Value>().await.unwrap()
        }));
    }
    let mut results = vec![];
    for h in handles {
        results.push(h.await.unwrap());
    }
    let a: Vec<f32> = solo["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let b: Vec<f32> = results[5]["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert!(cosine(&a, &b) > 0.99999);
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("qm_embed_batch_inputs"),
        "batch sizes are measured"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_with_retry_after() {
    let mut app = TestApp::spawn_with(with_embeddings(
        "queue_capacity = 1\nmax_batch_tokens = 256\n",
    ))
    .await;
    let big: Vec<String> = (0..16)
        .map(|i| format!("{i} {}", "lorem ipsum dolor sit amet ".repeat(40)))
        .collect();
    let mut handles = vec![];
    for _ in 0..12 {
        let req = app
            .post("/v1/embeddings")
            .json(&json!({"model": "all-MiniLM-L6-v2", "input": big}));
        handles.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.headers().get("retry-after").is_some(),
                r.text().await.unwrap(),
            )
        }));
    }
    let mut ok = 0;
    let mut rejected = 0;
    for h in handles {
        let (status, retry_after, body) = h.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                assert!(retry_after);
                assert!(body.contains("\"code\":\"overloaded\""), "{body}");
                rejected += 1;
            }
            s => panic!("unexpected {s}: {body}"),
        }
    }
    assert!(ok >= 1 && rejected >= 1, "ok={ok} rejected={rejected}");
    app.shutdown().await;
}

/// The first embedding of a float-format `/v1/embeddings` answer.
fn first_embedding(answer: &Value) -> Vec<f32> {
    answer["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}
