//! The offline local model (SmolLM2-135M-Instruct, Q4_1 GGUF on candle): tokenizer and chat
//! template against llama.cpp's reference, deterministic sampling, limits, and the gateway
//! serving it with no upstream and no config file.

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Options, TestApp, sse_json};
use futures::StreamExt;
use quartermaster::providers::local::{GenEvent, GenParams, LocalModel, generate};
use quartermaster::types::ChatCompletionRequest;
use serde_json::{Value, json};

fn gguf() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_tokens.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load() -> LocalModel {
    LocalModel::load(&gguf(), 2048).expect("run models/fetch.sh")
}

#[test]
fn tokenizer_matches_llama_cpp() {
    let model = load();
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(model.encode(text).unwrap(), want, "token ids of {text:?}");
        let decoded = model.tokenizer.decode(&want, false).unwrap();
        assert_eq!(decoded, text, "decoding round-trips {text:?}");
    }
}

#[test]
fn chat_template_from_the_file_renders_like_jinja2() {
    let model = load();
    let fx = fixture();
    let req: ChatCompletionRequest = serde_json::from_value(
        json!({"model": "smollm2-135m", "messages": fx["chat"]["messages"]}),
    )
    .unwrap();
    let prompt = model.render_prompt(&req).unwrap();
    assert_eq!(prompt, fx["chat"]["prompt"].as_str().unwrap());
    let ids: Vec<u32> = fx["chat"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(model.encode(&prompt).unwrap(), ids);
}

fn run(model: &LocalModel, prompt: &str, params: GenParams) -> (String, &'static str, u64) {
    let req: ChatCompletionRequest = serde_json::from_value(
        json!({"model": "m", "messages": [{"role": "user", "content": prompt}]}),
    )
    .unwrap();
    let ids = model.encode(&model.render_prompt(&req).unwrap()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    generate(model, &ids, &params, &tx);
    drop(tx);
    let mut text = String::new();
    while let Ok(event) = rx.try_recv() {
        match event {
            GenEvent::Text(t) => text.push_str(&t),
            GenEvent::Done {
                finish_reason,
                usage,
            } => return (text, finish_reason, usage.completion_tokens),
            GenEvent::Failed(e) => panic!("generation failed: {e}"),
        }
    }
    panic!("no Done event");
}

#[test]
fn same_seed_same_output_and_limits_hold() {
    let model = load();
    let params = |seed, max_tokens, stop: Vec<String>| GenParams {
        max_tokens,
        temperature: 0.9,
        top_p: 0.95,
        seed,
        stop,
    };
    let a = run(
        &model,
        "Write a short poem about the sea.",
        params(7, 24, vec![]),
    );
    let b = run(
        &model,
        "Write a short poem about the sea.",
        params(7, 24, vec![]),
    );
    assert_eq!(a, b, "same seed, same output");
    assert!(!a.0.is_empty());
    let c = run(
        &model,
        "Write a short poem about the sea.",
        params(8, 24, vec![]),
    );
    assert_ne!(a.0, c.0, "another seed, another sample");
    // max_tokens: a long answer is cut with finish_reason length.
    let greedy = GenParams {
        max_tokens: 40,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: vec![],
    };
    let (_, reason, n) = run(
        &model,
        "Count from 1 to 100, separated by commas.",
        GenParams {
            max_tokens: 10,
            ..greedy.clone()
        },
    );
    assert_eq!((reason, n), ("length", 10));
    // stop: the text ends before the stop sequence, with finish_reason stop.
    let (full, _, _) = run(
        &model,
        "Count from 1 to 100, separated by commas.",
        greedy.clone(),
    );
    assert!(full.contains('5'), "{full}");
    let (cut, reason, _) = run(
        &model,
        "Count from 1 to 100, separated by commas.",
        GenParams {
            stop: vec!["5".into()],
            ..greedy
        },
    );
    assert_eq!(reason, "stop");
    assert!(
        !cut.contains('5') && full.starts_with(&cut),
        "{cut:?} vs {full:?}"
    );
}

fn local_options(extra: &str) -> Options {
    Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[local]\nenabled = true\ngguf_path = \"{}\"\ndefault_max_tokens = 24\n{extra}",
        gguf().display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_streams_the_local_model() {
    let mut app = TestApp::spawn_with(local_options("")).await;
    let body = json!({"model": "smollm2-135m", "stream": true, "stream_options": {"include_usage": true}, "seed": 3,
        "messages": [{"role": "user", "content": "Say hello to the team."}]});
    let resp = app.chat(body).await;
    assert_eq!(resp.status(), 200);
    let (events, done) = sse_json(&resp.text().await.unwrap());
    assert!(done);
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());
    assert!(events.len() >= 4, "token by token: {}", events.len());
    let usage = &events.last().unwrap()["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().unwrap() > 10
            && usage["completion_tokens"].as_u64().unwrap() >= 1
    );
    let resp = app.chat(json!({"model": "smollm2-135m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]})).await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 5);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_frees_the_generation_slot() {
    // One slot: if the abandoned generation kept running, the next request would wait for
    // all of its 1,500 tokens.
    let mut app =
        TestApp::spawn_with(local_options("max_concurrent = 1\ncontext_length = 2048\n")).await;
    let long = json!({"model": "smollm2-135m", "stream": true, "max_tokens": 1500, "temperature": 1.0,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]});
    let resp = app.chat(long).await;
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    let started = Instant::now();
    let resp = app.chat(json!({"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the slot was freed: {:?}",
        started.elapsed()
    );
    app.shutdown().await;
}

#[test]
fn serve_with_no_config_answers_chat_offline() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("d.db").display());
    let bin = env!("CARGO_BIN_EXE_quartermaster");
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        !PathBuf::from(root).join("quartermaster.toml").exists(),
        "no config file in the repo root"
    );
    let key = Command::new(bin)
        .current_dir(root)
        .env("QM__DATABASE__URL", &db)
        .args(["keys", "create", "--tenant", "t"])
        .output()
        .unwrap();
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();
    let mut child = Command::new(bin)
        .current_dir(root)
        .arg("serve")
        .env("QM__DATABASE__URL", &db)
        .env("QM__SERVER__PORT", "0")
        .env("QM__LOG__FORMAT", "json")
        .env_remove("QM_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server output").unwrap();
        if line.contains("quartermaster listening") {
            break serde_json::from_str::<Value>(&line).unwrap()["addr"]
                .as_str()
                .unwrap()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (chat, emb) = rt.block_on(async {
        let http = reqwest::Client::new();
        let chat: Value = http
            .post(format!("http://{addr}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "smollm2-135m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello!"}]}))
            .send().await.unwrap().json().await.unwrap();
        let emb: Value = http
            .post(format!("http://{addr}/v1/embeddings"))
            .bearer_auth(&key)
            .json(&json!({"model": "all-MiniLM-L6-v2", "input": "hello"}))
            .send().await.unwrap().json().await.unwrap();
        (chat, emb)
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(
        chat["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{chat}"
    );
    assert_eq!(
        emb["data"][0]["embedding"].as_array().map(|a| a.len()),
        Some(384),
        "{emb}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_refused_by_the_local_model_not_answered_in_prose() {
    let mut app = TestApp::spawn_with(local_options("")).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    for choice in [
        json!("auto"),
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        let resp = app
            .chat(
                json!({"model": "smollm2-135m", "tools": tools, "tool_choice": choice,
                "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
            )
            .await;
        assert_eq!(resp.status(), 400, "{choice}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], "tools");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("does not support tools"),
            "{err}"
        );
    }
    // Without tools in play it answers as before.
    let resp = app
        .chat(
            json!({"model": "smollm2-135m", "max_tokens": 3, "tools": tools, "tool_choice": "none",
            "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    app.shutdown().await;
}
