#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests (tests/js/browser_cors.mjs drives it with
# playwright-core, installed by js-env.sh). Quick no-op when /usr/bin/chromium exists.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    echo "browser-env.sh: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) present" >&2
    exit 0
fi
if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "browser-env.sh: install Chromium as root (apt-get install chromium), or set QM_CHROMIUM" >&2
    exit 1
fi
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
echo "browser-env.sh: $(/usr/bin/chromium --version) installed" >&2
