//! Parsing OpenAI's wire format: the gateway's hand-written deserializers
//! (`quartermaster::types`, `open_struct!`) against serde's derive with `#[serde(flatten)]`
//! (the peer, `tests/wire_reference`), on the same bytes in the same run: the request the
//! gateway_overhead bench sends, a larger request (system prompt, history, tools), a
//! non-streamed answer, and a stream chunk. Every parse of the gateway's is checked against
//! the peer's (same JSON back) before timing.
//!
//! `cargo bench --bench wire` (env: QM_BENCH_ROUNDS=15 rounds of QM_BENCH_ITERS=20000 parses
//! each, the two parsers alternating round by round; the median round is reported).

mod common;
#[path = "../tests/wire_reference/mod.rs"]
mod wire_reference;

use std::hint::black_box;
use std::time::Instant;

use quartermaster::types::{ChatChunk, ChatCompletion, ChatCompletionRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use common::{env_or, median};

/// Mean time of one parse in a round of `iters`, ns.
fn round<T: DeserializeOwned>(bytes: &[u8], iters: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        black_box(serde_json::from_slice::<T>(black_box(bytes)).unwrap());
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

/// Medians over `rounds` of (peer, gateway), the two alternating round by round so that
/// both see the same moments of a noisy machine.
fn compare<P: DeserializeOwned, G: DeserializeOwned>(
    bytes: &[u8],
    rounds: usize,
    iters: usize,
) -> (f64, f64) {
    let (mut peer, mut ours) = (vec![], vec![]);
    for i in 0..rounds {
        // Either may go first: the order flips every round.
        if i % 2 == 0 {
            peer.push(round::<P>(bytes, iters));
            ours.push(round::<G>(bytes, iters));
        } else {
            ours.push(round::<G>(bytes, iters));
            peer.push(round::<P>(bytes, iters));
        }
    }
    (median(peer), median(ours))
}

fn same_json<A: DeserializeOwned + Serialize, B: DeserializeOwned + Serialize>(bytes: &[u8]) {
    let a = serde_json::to_value(serde_json::from_slice::<A>(bytes).unwrap()).unwrap();
    let b = serde_json::to_value(serde_json::from_slice::<B>(bytes).unwrap()).unwrap();
    assert_eq!(
        a,
        b,
        "the two parsers disagree on {}",
        String::from_utf8_lossy(bytes)
    );
}

fn main() {
    let rounds = env_or("QM_BENCH_ROUNDS", 15usize);
    let iters = env_or("QM_BENCH_ITERS", 20_000usize);
    let small =
        json!({"model":"m","stream":true,"messages":[{"role":"user","content":"Say hello"}]});
    let tools = json!([{"type":"function","function":{"name":"lookup","description":"Find an order",
        "parameters":{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}}}]);
    let large = json!({"model":"m","temperature":0.2,"max_tokens":512,"user":"u-42","tools":tools,
    "stream":true,"stream_options":{"include_usage":true},
    "messages":[
        {"role":"system","content":"You are the support assistant of a shop. Answer briefly and cite the order."},
        {"role":"user","content":"Where is my order 1234?"},
        {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"lookup","arguments":"{\"id\":\"1234\"}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"shipped on Monday, tracking ZX81"},
        {"role":"user","content":[{"type":"text","text":"And when does it arrive?"}]}
    ]});
    let answer = json!({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
        "system_fingerprint":"fp_1",
        "choices":[{"index":0,"message":{"role":"assistant","content":"Hello there!"},"logprobs":null,"finish_reason":"stop"}],
        "usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}});
    let chunk = json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",
        "system_fingerprint":"fp_1",
        "choices":[{"index":0,"delta":{"content":" there"},"logprobs":null,"finish_reason":null}]});
    let bytes = |v: &Value| serde_json::to_vec(v).unwrap();
    let (small, large, answer, chunk) =
        (bytes(&small), bytes(&large), bytes(&answer), bytes(&chunk));
    same_json::<ChatCompletionRequest, wire_reference::Request>(&small);
    same_json::<ChatCompletionRequest, wire_reference::Request>(&large);
    same_json::<ChatCompletion, wire_reference::Completion>(&answer);
    same_json::<ChatChunk, wire_reference::Chunk>(&chunk);

    println!("wire parsing: median of {rounds} rounds of {iters} parses, ns per parse");
    println!("| input | bytes | serde derive + flatten | gateway | speed-up |");
    println!("| --- | --- | --- | --- | --- |");
    let row = |name: &str, len: usize, peer: f64, ours: f64| {
        println!(
            "| {name} | {len} | {peer:.0} | {ours:.0} | {:.2}× |",
            peer / ours
        );
    };
    let (p, o) = compare::<wire_reference::Request, ChatCompletionRequest>(&small, rounds, iters);
    row("request (gateway_overhead's)", small.len(), p, o);
    let (p, o) = compare::<wire_reference::Request, ChatCompletionRequest>(&large, rounds, iters);
    row(
        "request (system prompt, tool call, parts, tools)",
        large.len(),
        p,
        o,
    );
    let (p, o) = compare::<wire_reference::Completion, ChatCompletion>(&answer, rounds, iters);
    row("non-streamed answer", answer.len(), p, o);
    let (p, o) = compare::<wire_reference::Chunk, ChatChunk>(&chunk, rounds, iters);
    row("stream chunk", chunk.len(), p, o);
}
