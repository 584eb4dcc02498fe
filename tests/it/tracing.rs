//! OpenTelemetry traces against an OTLP/HTTP receiver on a real socket
//! (tests/python/otlp_receiver.py, decoding with OpenTelemetry's own protobuf classes): the
//! request's server span continues the caller's `traceparent`; the cache lookup, the
//! embedding, the retrieval and each upstream attempt are its children, with the GenAI
//! semantic conventions' attributes; a streamed answer's spans end with the stream; an
//! unsampled caller is followed; a collector that is briefly down loses nothing.

use crate::common;

use std::path::PathBuf;
use std::process::Stdio;

use common::{Options, TestApp};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

struct Receiver {
    url: String,
    _child: tokio::process::Child,
}

/// Starts the receiver (answering the first `fail` exports with 503).
async fn receiver(fail: u32) -> Option<Receiver> {
    let Some(python) = crate::python_sdk::python() else {
        if std::env::var("QM_SKIP_PYTHON").as_deref() == Ok("1") {
            eprintln!("SKIPPED the trace tests: QM_SKIP_PYTHON=1");
            return None;
        }
        panic!("no Python with opentelemetry-proto: run scripts/py-env.sh (or set QM_PYTHON)");
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/otlp_receiver.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .args(["--port", "0", "--fail", &fail.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the receiver starts");
    let mut line = String::new();
    tokio::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let port = serde_json::from_str::<Value>(&line).expect("the receiver's port")["port"]
        .as_u64()
        .unwrap();
    Some(Receiver {
        url: format!("http://127.0.0.1:{port}"),
        _child: child,
    })
}

async fn received(r: &Receiver) -> Value {
    reqwest::get(format!("{}/spans", r.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until the receiver holds at least `n` spans of `trace`, its server span among them
/// (it ends last: every span of the request is queued before it); returns them.
async fn spans_of(r: &Receiver, trace: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let all = received(r).await;
        let spans: Vec<Value> = all["spans"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["trace_id"] == trace)
            .cloned()
            .collect();
        if spans.len() >= n && spans.iter().any(|s| s["kind"] == "SPAN_KIND_SERVER") {
            return spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} spans of {trace}: {all}",
            spans.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span `{name}` in {spans:#?}"))
}

fn options(receiver: &Receiver) -> Options {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 2\n\
         [embeddings]\nmodel_dir = \"{}\"\n[cache]\nenabled = true\n\
         [routing]\nmax_retries_per_target = 1\nbackoff_base_ms = 1\nbackoff_max_ms = 5\n\
         [tracing]\notlp_endpoint = \"{}/v1/traces\"\nexport_interval_ms = 100\nservice_name = \"qm-test\"\n",
        models.display(),
        receiver.url
    ))
}

fn traceparent(trace: &str, sampled: bool) -> String {
    format!(
        "00-{trace}-{CALLER_SPAN}-{}",
        if sampled { "01" } else { "00" }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grounded_request_is_one_trace_with_genai_spans() {
    let Some(receiver) = receiver(0).await else {
        return;
    };
    let mut app = TestApp::spawn_with(options(&receiver)).await;
    let r = app
        .post("/v1/documents")
        .json(&json!({"id": "refunds", "text": "Refunds are issued within 14 days of a return."}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A grounded request, continuing the caller's trace.
    let body = json!({"model": "rag/mock-ok", "max_tokens": 64, "messages": [
        {"role": "user", "content": "How long do refunds take?"}]});
    let r = app
        .post("/v1/chat/completions")
        .header("traceparent", traceparent(TRACE, true))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = spans_of(&receiver, TRACE, 5).await;
    let root = named(&spans, "POST /v1/chat/completions");
    assert_eq!(root["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        root["parent_span_id"], CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(root["resource"]["service.name"], "qm-test");
    let a = &root["attributes"];
    assert_eq!(a["http.request.method"], "POST");
    assert_eq!(a["http.route"], "/v1/chat/completions");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.request.model"], "mock-ok");
    assert_eq!(a["gen_ai.response.model"], "mock-ok");
    assert_eq!(a["quartermaster.cache.result"], "miss");
    assert_eq!(a["quartermaster.tenant"], "tenant-a");
    assert_eq!(a["quartermaster.outcome"], "ok");
    assert!(a["gen_ai.usage.input_tokens"].as_i64().unwrap() > 0, "{a}");
    assert!(a["gen_ai.usage.output_tokens"].as_i64().unwrap() > 0, "{a}");
    assert_eq!(a["gen_ai.response.finish_reasons"], json!(["stop"]));
    let root_id = root["span_id"].as_str().unwrap();

    let lookup = named(&spans, "cache lookup");
    assert_eq!(lookup["parent_span_id"], root_id);
    assert_eq!(lookup["attributes"]["quartermaster.cache.result"], "miss");
    let embedding = named(&spans, "embeddings all-MiniLM-L6-v2");
    assert_eq!(embedding["parent_span_id"], lookup["span_id"]);
    assert_eq!(
        embedding["attributes"]["gen_ai.operation.name"],
        "embeddings"
    );
    assert!(
        embedding["attributes"]["gen_ai.usage.input_tokens"]
            .as_i64()
            .unwrap()
            > 0
    );
    let retrieval = named(&spans, "retrieval");
    assert_eq!(retrieval["parent_span_id"], root_id);
    assert!(
        retrieval["attributes"]["quartermaster.rag.chunks"]
            .as_i64()
            .unwrap()
            >= 1
    );
    let upstream = named(&spans, "chat mock-ok");
    assert_eq!(upstream["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(upstream["parent_span_id"], root_id);
    let u = &upstream["attributes"];
    assert_eq!(u["gen_ai.provider.name"], "openai");
    assert_eq!(u["quartermaster.provider"], "mock");
    assert_eq!(u["gen_ai.request.model"], "mock-ok");
    assert_eq!(
        u["gen_ai.usage.output_tokens"],
        a["gen_ai.usage.output_tokens"]
    );
    assert_eq!(u["gen_ai.response.finish_reasons"], json!(["stop"]));
    for s in &spans {
        assert!(s["end"].as_u64() >= s["start"].as_u64(), "{s}");
        assert_eq!(s["status"]["code"], "STATUS_CODE_UNSET", "{s}");
    }

    // The same question again: a cache hit, with no upstream span.
    let hit_trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let r = app
        .post("/v1/chat/completions")
        .header("traceparent", traceparent(hit_trace, true))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-quartermaster-cache"], "hit");
    let spans = spans_of(&receiver, hit_trace, 2).await;
    let root = named(&spans, "POST /v1/chat/completions");
    assert_eq!(root["attributes"]["quartermaster.cache.result"], "hit");
    assert_eq!(root["attributes"]["quartermaster.cache.kind"], "exact");
    assert_eq!(root["attributes"]["quartermaster.outcome"], "cache_hit");
    assert!(
        spans.iter().all(|s| s["kind"] != "SPAN_KIND_CLIENT"),
        "{spans:#?}"
    );

    // A caller that does not sample is followed: nothing of its trace is recorded.
    let quiet = "6bf92f3577b34da6a3ce929d0e0e4736";
    let r = app
        .post("/v1/chat/completions")
        .header("traceparent", traceparent(quiet, false))
        .json(&common::chat_body("mock-ok", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.shutdown().await;
    // Shutdown flushed the queue: every span of the unsampled trace would be here by now.
    let all = received(&receiver).await;
    assert!(
        !all["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["trace_id"] == quiet),
        "an unsampled trace was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_streams_and_a_collector_outage() {
    // The collector refuses the first two exports: the spans are sent again, not lost.
    let Some(receiver) = receiver(2).await else {
        return;
    };
    let mut app = TestApp::spawn_with(options(&receiver)).await;

    // A failing upstream: one client span per attempt, each an error; the request too.
    let failing = "7bf92f3577b34da6a3ce929d0e0e4736";
    let r = app
        .post("/v1/chat/completions")
        .header("traceparent", traceparent(failing, true))
        .json(&common::chat_body("mock-503", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let spans = spans_of(&receiver, failing, 3).await;
    let attempts: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "chat mock-503")
        .collect();
    assert_eq!(attempts.len(), 2, "a try and a retry: {spans:#?}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["status"]["code"], "STATUS_CODE_ERROR");
        assert_eq!(a["attributes"]["error.type"], "server_error");
        assert!(
            attempts
                .iter()
                .any(|a| a["attributes"]["quartermaster.attempt"] == i as i64)
        );
    }
    let root = named(&spans, "POST /v1/chat/completions");
    assert_eq!(root["status"]["code"], "STATUS_CODE_ERROR");
    assert_eq!(root["attributes"]["http.response.status_code"], 502);

    // A stream: the upstream span ends with the stream and carries its usage.
    let streamed = "8bf92f3577b34da6a3ce929d0e0e4736";
    let r = app
        .post("/v1/chat/completions")
        .header("traceparent", traceparent(streamed, true))
        .json(&common::chat_body("mock-ok", true))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("[DONE]"));
    let spans = spans_of(&receiver, streamed, 2).await;
    let upstream = named(&spans, "chat mock-ok");
    assert!(
        upstream["attributes"]["gen_ai.usage.output_tokens"]
            .as_i64()
            .unwrap()
            > 0
    );
    assert_eq!(
        upstream["attributes"]["gen_ai.response.finish_reasons"],
        json!(["stop"])
    );
    let root = named(&spans, "POST /v1/chat/completions");
    // mock-ok streams 4 chunks 10 ms apart: the upstream span lasts the whole stream (not
    // just until its first chunk), and the request's ends no earlier.
    let (start, end) = (
        upstream["start"].as_u64().unwrap(),
        upstream["end"].as_u64().unwrap(),
    );
    assert!(
        end - start >= 25_000_000,
        "the upstream span lasts the stream: {upstream}"
    );
    assert!(root["end"].as_u64().unwrap() >= end, "{root}");
    let all = received(&receiver).await;
    assert_eq!(all["refused"], 2, "{all}");
    app.shutdown().await;
}
