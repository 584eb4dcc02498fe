#!/usr/bin/env bash
# Create/update the git-ignored venv .venv-llama/ with llama.cpp's Python bindings
# (llama-cpp-python, built from its PyPI sdist: CPU only, -DGGML_NATIVE=ON), plus gguf
# (reads GGUF metadata) and jinja2 (renders the GGUF chat template). It is what
# scripts/smollm2_reference.py and scripts/llama_bench.py run in:
#   scripts/llama-env.sh && .venv-llama/bin/python scripts/llama_bench.py --threads 2
# Installs Debian's cmake and build-essential first when cmake or a C++ compiler is
# missing. The first build takes ~5-15 min on 2 cores; it runs under `nice -n 19` so a
# cargo build alongside keeps priority. Quick no-op when everything is installed at
# the pinned versions. GGML_NATIVE builds for this machine's CPU, so the bindings
# are rebuilt when the CPU's model/flags differ from the ones they were built on.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"

VENV="$ROOT/.venv-llama"
LLAMA_CPP_PYTHON_VERSION=0.3.36
PURE_REQS=(gguf==0.19.0 jinja2==3.1.6)
# CPU only (no BLAS, CUDA, Vulkan, ...); no libcurl, tests, examples or server.
CMAKE_ARGS_PINNED="-DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF"

log() { echo "llama-env.sh: $*" >&2; }

# Everything below (pip, cmake, the compiler) inherits the lowest CPU priority.
renice -n 19 -p $$ >/dev/null 2>&1 || true

if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null || ! command -v make >/dev/null; then
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing Debian's cmake and build-essential"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake build-essential >&2
  else
    log "ERROR: need cmake and a C++ compiler (Debian: apt-get install cmake build-essential)"; exit 1
  fi
fi

# Creates the venv if needed and pins the pure-Python packages.
ensure_venv "$VENV" "${PURE_REQS[@]}"

# Fingerprint of what GGML_NATIVE compiled for.
cpu_fp="$( { grep -m1 '^model name' /proc/cpuinfo || true; grep -m1 '^flags' /proc/cpuinfo || true; } | sha256sum | cut -c1-16)"
want_stamp="llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION cpu=$cpu_fp cmake_args=$CMAKE_ARGS_PINNED"
stamp="$VENV/.llama-build-stamp"

exec {lock}>"$VENV.lock"
flock "$lock"
have="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || true)"
if [[ "$have" != "$LLAMA_CPP_PYTHON_VERSION" || "$(cat "$stamp" 2>/dev/null || true)" != "$want_stamp" ]]; then
  log "building llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION from source (CMAKE_ARGS=$CMAKE_ARGS_PINNED); this takes a while"
  rm -f -- "$stamp"
  # --no-cache-dir: never reuse a wheel pip cached from a build for another CPU.
  # --force-reinstall --no-deps: rebuild even when the same version is installed.
  CMAKE_ARGS="$CMAKE_ARGS_PINNED" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    nice -n 19 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2
  # Its runtime dependencies (numpy, diskcache, typing-extensions, jinja2), without
  # touching what is already installed.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" "${PURE_REQS[@]}" >&2
  "$VENV/bin/python" -c 'import llama_cpp' >&2
  echo "$want_stamp" >"$stamp"
fi
flock -u "$lock"
exec {lock}>&-

log "$VENV ready: llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION ${PURE_REQS[*]}"
