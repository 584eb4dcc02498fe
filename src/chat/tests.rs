//! The pipeline's event stream, driven directly with a fake provider (no HTTP): text,
//! tool calls split across deltas, failover before the first chunk, a failure after it, a
//! cut-off stream, and a cache hit replayed as the same events as the live answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::StreamExt;
use serde_json::json;

use super::*;
use crate::providers::{ChunkStream, ModelRoute, Provider};
use crate::route::{RoutingConfig, TierConfig};
use crate::store::{RequestLogOptions, Tenant};
use crate::types::{ChatChunk, Usage};

/// What the fake upstream answers.
#[derive(Clone)]
enum Script {
    /// These chunks, then the end of the stream.
    Chunks(Vec<serde_json::Value>),
    /// A 503 before any chunk.
    Unavailable,
    /// These chunks, then an error event.
    FailAfter(Vec<serde_json::Value>),
}

struct Fake {
    name: String,
    script: Script,
    calls: AtomicUsize,
}

fn chunk(v: serde_json::Value) -> ChatChunk {
    serde_json::from_value(v).unwrap()
}

#[async_trait::async_trait]
impl Provider for Fake {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(
        &self,
        _request: ChatCompletionRequest,
    ) -> Result<ChatCompletion, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.script {
            Script::Unavailable => Err(ProviderError::Status {
                status: 503,
                message: "down".into(),
                code: None,
                retry_after_secs: None,
            }),
            _ => Ok(serde_json::from_value(json!({
                "id": "up", "object": "chat.completion", "created": 5, "model": "fake-upstream",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "whole answer"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            }))
            .unwrap()),
        }
    }

    async fn stream(&self, _request: ChatCompletionRequest) -> Result<ChunkStream, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (chunks, fail) = match &self.script {
            Script::Unavailable => {
                return Err(ProviderError::Status {
                    status: 503,
                    message: "down".into(),
                    code: None,
                    retry_after_secs: None,
                });
            }
            Script::Chunks(c) => (c.clone(), false),
            Script::FailAfter(c) => (c.clone(), true),
        };
        let mut items: Vec<Result<ChatChunk, ProviderError>> =
            chunks.into_iter().map(|c| Ok(chunk(c))).collect();
        if fail {
            items.push(Err(ProviderError::MidStream {
                message: "boom".into(),
                code: Some("server_error".into()),
            }));
        }
        Ok(Box::pin(futures::stream::iter(items)))
    }
}

fn text_chunk(text: &str, finish: Option<&str>) -> serde_json::Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "fake-upstream",
           "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]})
}

fn usage_chunk() -> serde_json::Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "fake-upstream",
           "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
}

struct Harness {
    pipeline: Pipeline,
    _dir: tempfile::TempDir,
    providers: Vec<Arc<Fake>>,
}

/// A pipeline over fake providers, one model each (`m0`, `m1`, ...), a tier `t` of all of
/// them in order, and (when `cache`) the exact cache on a fresh SQLite store.
async fn harness(scripts: Vec<Script>, cache: bool) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    let (request_log, _task) = RequestLogWriter::spawn(
        store.clone(),
        RequestLogOptions::new(64, 16, std::time::Duration::from_millis(5)),
    );
    let mut models = ModelRegistry::default();
    let mut providers = Vec::new();
    for (i, script) in scripts.into_iter().enumerate() {
        let fake = Arc::new(Fake {
            name: format!("fake{i}"),
            script,
            calls: AtomicUsize::new(0),
        });
        providers.push(fake.clone());
        models.insert(ModelRoute {
            name: format!("m{i}"),
            upstream_model: format!("m{i}"),
            provider: fake,
            supports_tools: i != 1,
        });
    }
    let mut tiers = BTreeMap::new();
    tiers.insert(
        "t".to_string(),
        TierConfig {
            models: (0..providers.len()).map(|i| format!("m{i}")).collect(),
            fallback: None,
        },
    );
    let routing = RoutingConfig {
        default_tier: "t".into(),
        tools_tier: Some("t".into()),
        backoff_base_ms: 1,
        backoff_max_ms: 1,
        ..RoutingConfig::default()
    };
    let cache = if cache {
        let config = crate::cache::CacheConfig {
            semantic: false,
            ..Default::default()
        };
        Some(Arc::new(Cache::new(config, store.clone()).await.unwrap()))
    } else {
        None
    };
    let pipeline = Pipeline {
        models,
        live: ArcSwap::from_pointee(Live::new(
            routing,
            tiers,
            Default::default(),
            Default::default(),
        )),
        breakers: Breakers::default(),
        budgets: crate::usage::Budgets::new(store.clone()),
        cache,
        rag: None,
        embedder: None,
        store: store.clone(),
        request_log,
        billing: Arc::new(Billing::new(Default::default(), Default::default())),
        local_model: None,
        grace_over: CancellationToken::new(),
        analytics: None,
        reask: Default::default(),
    };
    Harness {
        pipeline,
        _dir: dir,
        providers,
    }
}

fn request(model: &str, stream: bool, question: &str) -> ChatRequest {
    ChatRequest {
        body: serde_json::from_value(json!({
            "model": model, "stream": stream,
            "messages": [{"role": "user", "content": question}]
        }))
        .unwrap(),
        principal: Principal::of_key(
            "k".into(),
            Tenant {
                id: "t1".into(),
                name: "t1".into(),
            },
            false,
        ),
        controls: Controls::default(),
        request_id: "req".into(),
        started: Instant::now(),
        trace: Default::default(),
    }
}

async fn events(response: ChatResponse) -> Vec<ChatEvent> {
    match response.body {
        ChatBody::Stream(s) => s.collect().await,
        ChatBody::Whole(_) => panic!("expected a stream"),
    }
}

fn texts(events: &[ChatEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            ChatEvent::Delta(d) => Some(
                d.choices
                    .iter()
                    .filter_map(|c| c.text.clone())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_stream_is_deltas_then_usage() {
    let h = harness(
        vec![Script::Chunks(vec![
            text_chunk("Hel", None),
            text_chunk("lo", Some("stop")),
            usage_chunk(),
        ])],
        false,
    )
    .await;
    let response = h.pipeline.run(request("m0", true, "hi")).await.unwrap();
    assert_eq!(response.meta.answered_by, "m0");
    assert_eq!(response.meta.route.as_ref().unwrap().reason, "explicit");
    assert_eq!(response.meta.cache, CacheOutcome::Bypass);
    let ev = events(response).await;
    assert_eq!(texts(&ev), "Hello");
    match ev.last().unwrap() {
        ChatEvent::Usage { usage, model } => {
            assert_eq!(*usage, Usage::new(11, 7));
            assert_eq!(model.as_deref(), Some("fake-upstream"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ev.len(),
        3,
        "two deltas (the usage chunk is not a delta), then usage"
    );
}

#[tokio::test]
async fn tool_call_deltas_come_through_as_tool_calls() {
    let call = |delta: serde_json::Value, finish: Option<&str>| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "x",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let h = harness(
        vec![Script::Chunks(vec![
            call(json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]}), None),
            call(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), None),
            call(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), None),
            call(json!({}), Some("tool_calls")),
        ])],
        false,
    )
    .await;
    let ev = events(
        h.pipeline
            .run(request("m0", true, "weather?"))
            .await
            .unwrap(),
    )
    .await;
    let mut args = String::new();
    let mut name = None;
    for e in &ev {
        if let ChatEvent::Delta(d) = e {
            for t in &d.choices[0].tool_calls {
                name = name.or(t.name.clone());
                args.push_str(t.arguments.as_deref().unwrap_or(""));
            }
        }
    }
    assert_eq!(name.as_deref(), Some("weather"));
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert!(matches!(ev.last(), Some(ChatEvent::Usage { .. })));
}

#[tokio::test]
async fn a_failing_model_fails_over_before_the_first_chunk() {
    let h = harness(
        vec![
            Script::Unavailable,
            Script::Chunks(vec![text_chunk("ok", Some("stop"))]),
        ],
        false,
    )
    .await;
    let response = h.pipeline.run(request("auto", true, "hi")).await.unwrap();
    assert_eq!(response.meta.answered_by, "m1");
    assert_eq!(texts(&events(response).await), "ok");
    assert!(h.providers[0].calls.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn failures_after_the_first_chunk_are_error_events() {
    let h = harness(
        vec![Script::FailAfter(vec![text_chunk("par", None)])],
        false,
    )
    .await;
    let ev = events(h.pipeline.run(request("m0", true, "hi")).await.unwrap()).await;
    assert_eq!(texts(&ev), "par");
    match ev.last().unwrap() {
        ChatEvent::Error(e) => {
            assert_eq!(
                (e.http_status(), e.error_code().name()),
                (502, "upstream_error")
            )
        }
        other => panic!("{other:?}"),
    }
    // A stream that ends without finishing is an error too, not a silent end.
    let h = harness(vec![Script::Chunks(vec![text_chunk("cut", None)])], false).await;
    let ev = events(h.pipeline.run(request("m0", true, "hi")).await.unwrap()).await;
    assert!(matches!(
        ev.last(),
        Some(ChatEvent::Error(ChatError::Upstream(_)))
    ));
}

#[tokio::test]
async fn every_model_failing_is_the_last_upstream_error() {
    let h = harness(vec![Script::Unavailable, Script::Unavailable], false).await;
    let err = h
        .pipeline
        .run(request("auto", false, "hi"))
        .await
        .err()
        .unwrap();
    assert!(matches!(
        err,
        ChatError::Upstream(ProviderError::Status { status: 503, .. })
    ));
    assert_eq!(err.http_status(), 502);
}

#[tokio::test]
async fn a_cache_hit_is_replayed_as_the_same_events() {
    let h = harness(
        vec![Script::Chunks(vec![
            text_chunk("The answer ", None),
            text_chunk("is 42.", Some("stop")),
            usage_chunk(),
        ])],
        true,
    )
    .await;
    let live = events(
        h.pipeline
            .run(request("m0", true, "meaning of life?"))
            .await
            .unwrap(),
    )
    .await;
    // The write-back runs in the background: wait until the entry is stored (asking again
    // before then would be a miss, and reach the upstream).
    let cache = h.pipeline.cache.clone().unwrap();
    for _ in 0..200 {
        if cache
            .counts()
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum::<i64>()
            > 0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = h
        .pipeline
        .run(request("m0", true, "meaning of life?"))
        .await
        .unwrap();
    let replay = matches!(r.meta.cache, CacheOutcome::Hit { .. }).then_some(r);
    let replay = replay.expect("the answer was cached");
    assert_eq!(replay.meta.answered_by, "fake-upstream");
    assert!(replay.meta.route.is_none());
    let replayed = events(replay).await;
    assert_eq!(texts(&replayed), texts(&live));
    let usage = |ev: &[ChatEvent]| match ev.last() {
        Some(ChatEvent::Usage { usage, .. }) => *usage,
        other => panic!("{other:?}"),
    };
    assert_eq!(usage(&replayed), usage(&live));
    assert_eq!(
        h.providers[0].calls.load(Ordering::SeqCst),
        1,
        "the hit did not reach the upstream"
    );
    // Whole answers too.
    let whole = h
        .pipeline
        .run(request("m0", false, "meaning of life?"))
        .await
        .unwrap();
    match whole.body {
        ChatBody::Whole(c) => assert_eq!(c.choices[0].message["content"], "The answer is 42."),
        ChatBody::Stream(_) => panic!("expected a whole answer"),
    }
    // The gateway's own request (a cache re-ask) skips the cache altogether: the upstream
    // answers it, and nothing is looked up or written.
    let mut internal = request("m0", false, "meaning of life?");
    internal.controls.internal = true;
    let r = h.pipeline.run(internal).await.unwrap();
    assert_eq!(r.meta.cache, CacheOutcome::Bypass);
    match r.body {
        ChatBody::Whole(c) => assert_eq!(c.choices[0].message["content"], "whole answer"),
        ChatBody::Stream(_) => panic!("expected a whole answer"),
    }
    assert_eq!(h.providers[0].calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bad_controls_are_refused_before_anything_runs() {
    let h = harness(
        vec![Script::Chunks(vec![text_chunk("x", Some("stop"))])],
        true,
    )
    .await;
    let mut req = request("m0", false, "hi");
    req.controls.tier = Some("nope".into());
    let err = h.pipeline.run(req).await.err().unwrap();
    assert!(
        matches!(err, ChatError::Invalid { ref param, .. } if param.as_deref() == Some(TIER_HEADER))
    );
    let mut req = request("m0", false, "hi");
    req.controls.cache.ttl = Some("forever".into());
    assert!(matches!(
        h.pipeline.run(req).await,
        Err(ChatError::Invalid { .. })
    ));
    assert_eq!(h.providers[0].calls.load(Ordering::SeqCst), 0);
    let err = h
        .pipeline
        .run(request("nope", false, "hi"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ChatError::ModelNotFound(_)));
}

/// `request` with a function tool offered.
fn with_tools(model: &str, tool_choice: &str) -> ChatRequest {
    let mut r = request(model, false, "weather in Paris?");
    r.body.extra.insert(
        "tools".into(),
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]),
    );
    r.body
        .extra
        .insert("tool_choice".into(), json!(tool_choice));
    r
}

#[tokio::test]
async fn tools_go_only_to_models_that_support_them() {
    // m0 answers 503, m1 cannot call tools: failover skips m1 when tools are offered.
    let h = harness(
        vec![
            Script::Unavailable,
            Script::Chunks(vec![text_chunk("prose", Some("stop"))]),
        ],
        false,
    )
    .await;
    let err = h
        .pipeline
        .run(with_tools("auto", "auto"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ChatError::Upstream(_)), "{err:?}");
    assert_eq!(h.providers[1].calls.load(Ordering::SeqCst), 0);
    // Asked by name, it is a 400 naming the tools, before anything runs.
    let err = h
        .pipeline
        .run(with_tools("m1", "required"))
        .await
        .err()
        .unwrap();
    match &err {
        ChatError::Invalid { message, param } => {
            assert_eq!(param.as_deref(), Some("tools"));
            assert!(message.contains("does not support tools"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.http_status(), 400);
    assert_eq!(h.providers[1].calls.load(Ordering::SeqCst), 0);
    // With tool_choice none the tools are not used: any model may answer.
    let ok = h.pipeline.run(with_tools("m1", "none")).await.unwrap();
    assert_eq!(ok.meta.answered_by, "m1");
}
