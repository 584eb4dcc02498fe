#!/usr/bin/env python3
"""Benchmark peer for the local model: llama.cpp (through llama-cpp-python) running
SmolLM2-135M-Instruct Q4_1 on CPU.

Prints one JSON line:
  {"impl":"llama.cpp (llama-cpp-python X.Y.Z)","threads":N,"prompt_tokens":N,
   "prefill_tok_s":..,"decode_tok_s":..,"ttft_ms":..}
with the medians over --runs runs (default 5) after one warm-up run.

The prompt is MESSAGES below (also committed as benches/chat_prompt.json, which the
Rust benchmark reads) rendered through the GGUF's tokenizer.chat_template with
add_generation_prompt=True and tokenized with special tokens parsed (no BOS: the
GGUF says tokenizer.ggml.add_bos_token=false). Each run, on an empty KV cache:
  prefill_tok_s  prompt tokens / wall time of evaluating the whole prompt (one batch)
  ttft_ms        from the start of the prompt evaluation to the first new token
                 picked (greedy argmax over the last position's logits)
  decode_tok_s   (NEW_TOKENS - 1) / time from the first to the last of NEW_TOKENS=64
                 new tokens: each is one single-token forward pass + greedy argmax.
                 Generation does not stop at <|im_end|> (a fixed amount of work).
Model: Llama(n_ctx=2048, n_threads=N, n_threads_batch=N, verbose=False).
Run in the venv made by scripts/llama-env.sh:
  scripts/llama-env.sh && .venv-llama/bin/python scripts/llama_bench.py --threads 2
`--write-prompt-json` (re)writes benches/chat_prompt.json from MESSAGES and exits.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# The benchmark conversation. Keep in sync with benches/chat_prompt.json
# (`--write-prompt-json` regenerates it; the script refuses to run if they differ).
MESSAGES = [
    {"role": "system", "content": "You are a concise assistant for a software engineering team."},
    {
        "role": "user",
        "content": "Explain in two sentences what an API gateway does and why a team would put one in front of its LLM providers.",
    },
]
NEW_TOKENS = 64

ROOT = Path(__file__).resolve().parent.parent
GGUF = ROOT / "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_JSON = ROOT / "benches/chat_prompt.json"


def prompt_json_text():
    return json.dumps({"messages": MESSAGES}, ensure_ascii=False, indent=2) + "\n"


def render_chat(template, messages):
    # As transformers' apply_chat_template (see scripts/smollm2_reference.py).
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model", type=Path, default=GGUF)
    ap.add_argument("--write-prompt-json", action="store_true", help=f"write {PROMPT_JSON.relative_to(ROOT)} and exit")
    ap.add_argument("--show", action="store_true", help="print the prompt and the generated text to stderr")
    args = ap.parse_args()

    if args.write_prompt_json:
        PROMPT_JSON.write_text(prompt_json_text(), encoding="utf-8")
        print(f"wrote {PROMPT_JSON}", file=sys.stderr)
        return
    if not PROMPT_JSON.exists() or PROMPT_JSON.read_text(encoding="utf-8") != prompt_json_text():
        sys.exit(f"{PROMPT_JSON} does not match MESSAGES in {__file__}; run with --write-prompt-json")

    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(args.model),
        n_ctx=2048,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    prompt = render_chat(llm.metadata["tokenizer.chat_template"], MESSAGES)
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    assert len(tokens) <= llm.n_batch, "prompt must fit one batch"
    n_vocab = llm.n_vocab()

    def greedy():
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        return int(np.argmax(logits))

    def run():
        llm.reset()
        llm._ctx.kv_cache_clear()
        t0 = time.perf_counter()
        llm.eval(tokens)
        t_prefill = time.perf_counter()
        tok = greedy()
        t_first = time.perf_counter()
        out = [tok]
        for _ in range(NEW_TOKENS - 1):
            llm.eval([tok])
            tok = greedy()
            out.append(tok)
        t_end = time.perf_counter()
        return {
            "prefill_tok_s": len(tokens) / (t_prefill - t0),
            "decode_tok_s": (NEW_TOKENS - 1) / (t_end - t_first),
            "ttft_ms": (t_first - t0) * 1e3,
            "out": out,
        }

    warm = run()
    results = [run() for _ in range(args.runs)]
    assert all(r["out"] == warm["out"] for r in results), "greedy output changed between runs"
    if args.show:
        print(f"prompt ({len(tokens)} tokens):\n{prompt}", file=sys.stderr)
        print(f"generated: {llm.detokenize(warm['out'], special=True).decode('utf-8', 'replace')!r}", file=sys.stderr)
        for r in results:
            print({k: round(v, 2) for k, v in r.items() if k != "out"}, file=sys.stderr)

    med = lambda key: round(statistics.median(r[key] for r in results), 2)
    print(
        json.dumps(
            {
                "impl": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
                "threads": args.threads,
                "prompt_tokens": len(tokens),
                "prefill_tok_s": med("prefill_tok_s"),
                "decode_tok_s": med("decode_tok_s"),
                "ttft_ms": med("ttft_ms"),
            }
        )
    )


if __name__ == "__main__":
    main()
