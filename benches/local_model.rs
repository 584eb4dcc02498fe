//! The local model's speed on this machine, measured as `scripts/llama_bench.py` measures
//! llama.cpp on the same GGUF and prompt: prefill tokens/s, decode tokens/s (64 greedy
//! tokens, not stopping at end-of-turn) and time to first token, medians of 5 runs after a
//! warm-up, each on an empty KV cache.
//!
//! `cargo bench --bench local_model` (QM_BENCH_THREADS=2). `scripts/local_bench.sh` runs
//! both and prints the ratios.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use common::{init_threads, median};
use quartermaster::providers::local::LocalModel;
use quartermaster::types::ChatCompletionRequest;

const NEW_TOKENS: usize = 64;

fn argmax(logits: &Tensor) -> u32 {
    logits
        .argmax(candle_core::D::Minus1)
        .unwrap()
        .to_scalar::<u32>()
        .unwrap()
}

fn main() {
    let threads = init_threads();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = LocalModel::load(
        &root.join("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        2048,
    )
    .expect("run models/fetch.sh");
    let messages: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("benches/chat_prompt.json")).unwrap(),
    )
    .unwrap();
    let req: ChatCompletionRequest =
        serde_json::from_value(serde_json::json!({"model": "m", "messages": messages["messages"]}))
            .unwrap();
    let prompt = model.encode(&model.render_prompt(&req).unwrap()).unwrap();
    let (mut prefill, mut ttft, mut decode) = (vec![], vec![], vec![]);
    for run in 0..6 {
        let mut w = model.fresh_weights();
        let t0 = Instant::now();
        let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = w.forward(&input, 0).unwrap().squeeze(0).unwrap();
        let t_prefill = t0.elapsed().as_secs_f64();
        let mut next = argmax(&logits);
        let t_first = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for i in 1..NEW_TOKENS {
            let input = Tensor::new(&[next], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits = w
                .forward(&input, prompt.len() + i - 1)
                .unwrap()
                .squeeze(0)
                .unwrap();
            next = argmax(&logits);
        }
        let t_decode = t1.elapsed().as_secs_f64();
        if run > 0 {
            prefill.push(prompt.len() as f64 / t_prefill);
            ttft.push(t_first * 1e3);
            decode.push((NEW_TOKENS - 1) as f64 / t_decode);
        }
    }
    println!(
        "{{\"impl\":\"quartermaster (candle quantized llama)\",\"threads\":{threads},\"prompt_tokens\":{},\"prefill_tok_s\":{:.1},\"decode_tok_s\":{:.1},\"ttft_ms\":{:.1}}}",
        prompt.len(),
        median(prefill),
        median(decode),
        median(ttft)
    );
}
