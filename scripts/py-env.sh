#!/usr/bin/env bash
# Create/update the git-ignored venv .venv-tools/ with the pinned Python client SDKs
# from tests/python/requirements.txt (official openai, anthropic, stripe and langchain-openai packages).
# Quick no-op when they are already installed at those versions.
#   scripts/py-env.sh && .venv-tools/bin/python -c 'import openai, stripe'
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
mapfile -t REQS < <(grep -Eo '^[A-Za-z0-9._-]+==[^ #]+' "$ROOT/tests/python/requirements.txt")
ensure_venv "$ROOT/.venv-tools" "${REQS[@]}"
echo "py-env.sh: $ROOT/.venv-tools ready: ${REQS[*]}" >&2
