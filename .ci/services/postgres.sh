#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the metadata-store tests, on 127.0.0.1 and a free port.
#
#   eval "$(.ci/services/postgres.sh)"     install if missing (apt, as root), initdb, start, print `export VAR=...`
#   .ci/services/postgres.sh stop          stop what start started and delete its temp dir
#
# Only the export line goes to stdout; progress and errors go to stderr. The PID and the temp dir are
# written to $DOCKYARD_POSTGRES_STATE (default /tmp/dockyard-postgres.state). initdb refuses to run as root,
# so as root the cluster belongs to the `postgres` system user (created by the Debian package). fsync is off:
# the cluster is thrown away after the tests.
set -euo pipefail

STATE_FILE=${DOCKYARD_POSTGRES_STATE:-/tmp/dockyard-postgres.state}
BIN=/usr/lib/postgresql/15/bin
START_TIMEOUT=30

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop() {
  [ -f "$STATE_FILE" ] || {
    log "no state file $STATE_FILE: nothing to stop"
    return 0
  }
  local PID="" DIR=""
  # shellcheck disable=SC1090
  . "$STATE_FILE"
  if [ -n "$DIR" ] && [ -f "$DIR/data/postmaster.pid" ]; then
    as_owner timeout 40 "$BIN/pg_ctl" -D "$DIR/data" -m fast -t 30 stop >&2 || log "pg_ctl stop failed"
  fi
  if [ -n "$PID" ]; then
    local deadline=$((SECONDS + 10))
    while kill -0 "$PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$PID" 2>/dev/null && [ "$(cat "/proc/$PID/comm" 2>/dev/null)" = postgres ]; then
      log "killing $PID"
      kill -KILL "$PID" 2>/dev/null || true
    fi
  fi
  case "$DIR" in
    /*/dockyard-postgres.*) rm -rf -- "$DIR" ;;
    *) [ -z "$DIR" ] || log "not removing unexpected directory $DIR" ;;
  esac
  rm -f -- "$STATE_FILE"
  log "stopped"
}

install_if_missing() {
  [ -x "$BIN/initdb" ] && [ -x "$BIN/pg_ctl" ] && [ -x "$BIN/pg_isready" ] && return 0
  [ "$(id -u)" -eq 0 ] || die "PostgreSQL 15 is not installed and installing it needs root"
  log "installing postgresql-15 from apt"
  timeout 300 apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends postgresql-15 >&2
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_state() {
  printf 'PID="%s"\nDIR="%s"\n' "$PID" "$DIR" >"$STATE_FILE"
}

# On a failed start: show the end of the logs, then stop what was started and delete the temp dir.
on_exit() {
  [ "$1" -eq 0 ] && return
  local file
  for file in "$DIR/initdb.log" "$DIR/postgres.log"; do
    [ -s "$file" ] && { log "--- last lines of $file"; tail -n 15 "$file" >&2; }
  done
  log "start failed; cleaning up"
  stop
}

start() {
  if [ -f "$STATE_FILE" ]; then
    die "$STATE_FILE exists: a cluster from an earlier start may still run (run '$0 stop' first)"
  fi
  install_if_missing
  local started=$SECONDS port
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/dockyard-postgres.XXXXXX")
  PID=""
  write_state
  trap 'on_exit $?' EXIT
  [ "$(id -u)" -ne 0 ] || chown postgres: "$DIR"
  port=$(free_port)
  as_owner timeout 60 "$BIN/initdb" -D "$DIR/data" -A trust -U postgres -E UTF8 --locale=C -N >"$DIR/initdb.log" 2>&1
  as_owner timeout $((START_TIMEOUT + 5)) "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t "$START_TIMEOUT" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >&2
  PID=$(head -1 "$DIR/data/postmaster.pid")
  write_state
  timeout 10 "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -t 8 || die "not accepting connections"
  trap - EXIT
  log "PostgreSQL ready on 127.0.0.1:$port after $((SECONDS - started)) s (state: $STATE_FILE, dir: $DIR)"
  printf 'export DOCKYARD_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:%s/postgres\n' "$port"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 [start|stop]" ;;
esac
