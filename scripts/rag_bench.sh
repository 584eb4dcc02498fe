#!/usr/bin/env bash
# RAG benchmark for both stores in one run (benches/rag/): starts a throwaway PostgreSQL
# with pgvector (scripts/pg.sh), points the bench at it, runs `cargo bench --bench rag`
# (extra arguments are passed on), stops PostgreSQL. Without this script the bench skips
# pgvector unless QM_BENCH_DATABASE_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/pg.sh start)"
trap 'scripts/pg.sh stop >/dev/null 2>&1 || true' EXIT
export QM_BENCH_DATABASE_URL="$DATABASE_URL"
cargo bench --bench rag "$@"
