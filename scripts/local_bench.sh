#!/usr/bin/env bash
# The local model's speed, side by side in one run: quartermaster (candle) and llama.cpp
# (llama-cpp-python) on the same GGUF, prompt and thread count. Prints both JSON lines and
# the ratios (ours / llama.cpp; > 1 is faster).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
scripts/llama-env.sh >&2
ours=$(QM_BENCH_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS cargo bench --quiet --bench local_model 2>/dev/null | grep '^{')
peer=$(.venv-llama/bin/python scripts/llama_bench.py --threads "$THREADS" | grep '^{')
echo "$ours"
echo "$peer"
python3 - "$ours" "$peer" <<'PY'
import json, sys
o, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"ratios (quartermaster / llama.cpp): prefill {o['prefill_tok_s'] / p['prefill_tok_s']:.2f}, "
      f"decode {o['decode_tok_s'] / p['decode_tok_s']:.2f}, time to first token {p['ttft_ms'] / o['ttft_ms']:.2f} (>1: ours sooner)")
PY
