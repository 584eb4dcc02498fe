# shellcheck shell=bash
# Sourced by scripts/*.sh: helpers to keep a Python venv with pinned packages.
# Everything goes to stderr so callers' stdout stays clean.

# ensure_venv DIR REQ...: create the venv DIR if missing and pip-install the pinned
# requirements REQ (name==version) unless all are already installed at exactly
# those versions (then it is a quick no-op). Serialised with flock on DIR.lock, so
# two scripts sharing a venv can run at the same time.
ensure_venv() {
  local dir="$1"; shift
  exec {_venv_lock}>"$dir.lock"
  flock "$_venv_lock"
  if [[ ! -x "$dir/bin/python" ]]; then
    echo "creating venv $dir" >&2
    if ! python3 -m venv "$dir" >&2; then
      # Debian's python3 ships venv/ensurepip separately.
      rm -rf -- "$dir"
      if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
        python3 -m venv "$dir" >&2
      else
        echo "python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2; return 1
      fi
    fi
  fi
  if ! "$dir/bin/python" - "$@" <<'PY'
import sys, importlib.metadata as md
for req in sys.argv[1:]:
    name, want = req.split("==")
    try:
        if md.version(name) != want:
            sys.exit(1)
    except md.PackageNotFoundError:
        sys.exit(1)
PY
  then
    echo "pip install into $dir: $*" >&2
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2
  fi
  flock -u "$_venv_lock"
  exec {_venv_lock}>&-
}
