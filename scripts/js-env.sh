#!/usr/bin/env bash
# Installs the pinned JavaScript client packages (the AI SDK, OpenAI's Node client) into the
# git-ignored tests/js/node_modules from the committed lockfile. Quick no-op when the
# installed tree already matches the lockfile.
#   scripts/js-env.sh && node -e "import('ai')" --input-type=module
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v node >/dev/null || { echo "js-env.sh: node is required (>= 20)" >&2; exit 1; }
command -v npm >/dev/null || { echo "js-env.sh: npm is required" >&2; exit 1; }
DIR="$ROOT/tests/js"
STAMP="$DIR/node_modules/.quartermaster-lock"
if [ -f "$STAMP" ] && cmp -s "$STAMP" "$DIR/package-lock.json"; then
    echo "js-env.sh: tests/js/node_modules up to date" >&2
    exit 0
fi
npm ci --prefix "$DIR" --no-audit --no-fund --loglevel=error
cp "$DIR/package-lock.json" "$STAMP"
echo "js-env.sh: tests/js/node_modules installed ($(node --version))" >&2
