#!/usr/bin/env bash
# The test command: starts a throwaway PostgreSQL with pgvector for the PostgreSQL tests,
# runs the whole suite (unit, integration, socket, Python SDK end-to-end, agree.py), stops
# PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
# README's Layout and lib.rs's module list must match the tree.
python3 scripts/layout.py --check
# The verifier's agreement script (agree.py; standard library only, no torch).
python3 -m unittest discover -s scripts/verifier -p 'test_*.py'
eval "$(scripts/pg.sh start)"
trap 'scripts/pg.sh stop >/dev/null 2>&1 || true' EXIT
export QM_TEST_DATABASE_URL="$DATABASE_URL"
# A one-off build gains nothing from incremental artefacts; they cost gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo test --locked "$@"
# The Qdrant backend needs a Qdrant server, which no package registry here provides.
if [ -n "${QDRANT_URL:-}" ]; then
    cargo test --locked --test it cache_qdrant -- --ignored
else
    echo "SKIPPED tests/it/cache_qdrant.rs (the Qdrant cache backend): QDRANT_URL is not set" >&2
fi
