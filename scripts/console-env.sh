#!/usr/bin/env bash
# Builds the operator console (console/: Vite + React + TypeScript) into the git-ignored
# console/dist, which the gateway serves under /console/. Installs the pinned packages from
# the committed lockfile into console/node_modules (skipped when the lockfile is unchanged),
# then type-checks and builds (skipped when console/dist is newer than every source).
#   scripts/console-env.sh && ls console/dist/index.html
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v node >/dev/null || { echo "console-env.sh: node is required (>= 20)" >&2; exit 1; }
command -v npm >/dev/null || { echo "console-env.sh: npm is required" >&2; exit 1; }
DIR="$ROOT/console"
STAMP="$DIR/node_modules/.quartermaster-lock"
if [ -f "$STAMP" ] && cmp -s "$STAMP" "$DIR/package-lock.json"; then
    echo "console-env.sh: console/node_modules up to date" >&2
else
    npm ci --prefix "$DIR" --no-audit --no-fund --loglevel=error
    cp "$DIR/package-lock.json" "$STAMP"
    echo "console-env.sh: console/node_modules installed ($(node --version))" >&2
fi
BUILT="$DIR/dist/index.html"
SOURCES=("$DIR/src" "$DIR/index.html" "$DIR/package.json" "$DIR/package-lock.json"
    "$DIR/vite.config.ts" "$DIR/tsconfig.json" "$DIR/tsconfig.node.json")
if [ -f "$BUILT" ] && [ -z "$(find "${SOURCES[@]}" -newer "$BUILT" -print -quit)" ]; then
    echo "console-env.sh: console/dist up to date" >&2
    exit 0
fi
npm run build --prefix "$DIR" --silent
echo "console-env.sh: console/dist built" >&2
