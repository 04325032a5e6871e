#!/usr/bin/env bash
# A throwaway single-node Ceph radosgw for the S3 tests: 1 mon, 1 memstore OSD, radosgw (beast) on 127.0.0.1.
#
#   eval "$(.ci/services/radosgw.sh)"      install if missing (apt, as root), start, print `export VAR=...`
#   .ci/services/radosgw.sh stop           kill what start started and delete its temp dir
#
# Only the export lines go to stdout; progress and errors go to stderr, daemon output to logs in the temp
# dir. PIDs and the temp dir are written to $DOCKYARD_RADOSGW_STATE (default /tmp/dockyard-radosgw.state).
# Every wait is bounded and every `ceph` call carries --connect-timeout: a client that cannot reach the mon
# otherwise hangs for minutes. Settings and pitfalls: shared/SERVICES.md beside the checkout (e.g. `ms mon client
# mode = crc`); `tcp_nodelay=1` on beast cuts small GETs from ~45 ms (Nagle + delayed ACK) to ~4 ms.
set -euo pipefail

STATE_FILE=${DOCKYARD_RADOSGW_STATE:-/tmp/dockyard-radosgw.state}
START_TIMEOUT=${DOCKYARD_RADOSGW_TIMEOUT:-120}  # seconds for the whole start, after installation
MEMSTORE_BYTES=${DOCKYARD_RADOSGW_MEMSTORE_BYTES:-2147483648}  # the OSD keeps objects in RAM, up to this

log() { printf 'radosgw.sh: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

stop() {
  [ -f "$STATE_FILE" ] || {
    log "no state file $STATE_FILE: nothing to stop"
    return 0
  }
  local PIDS="" DIR=""
  # shellcheck disable=SC1090
  . "$STATE_FILE"
  local pid alive deadline
  for pid in $PIDS; do kill -TERM "$pid" 2>/dev/null || true; done
  deadline=$((SECONDS + 15))
  while :; do
    alive=""
    for pid in $PIDS; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
    [ -z "$alive" ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "killing $alive"
      for pid in $alive; do kill -KILL "$pid" 2>/dev/null || true; done
      break
    fi
    sleep 0.2
  done
  case "$DIR" in
    /*/dockyard-radosgw.*) rm -rf -- "$DIR" ;;
    *) [ -z "$DIR" ] || log "not removing unexpected directory $DIR" ;;
  esac
  rm -f -- "$STATE_FILE"
  log "stopped"
}

install_if_missing() {
  local tool missing=0
  for tool in ceph ceph-mon ceph-osd monmaptool radosgw radosgw-admin; do
    command -v "$tool" >/dev/null 2>&1 || missing=1
  done
  [ "$missing" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "Ceph is not installed and installing it needs root"
  log "installing radosgw, ceph-mon, ceph-osd from apt"
  timeout 300 apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
    radosgw ceph-mon ceph-osd >&2
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until SECONDS DESCRIPTION COMMAND...: run COMMAND until it succeeds, at most SECONDS (and the overall deadline).
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  [ "$deadline" -le "$OVERALL_DEADLINE" ] || deadline=$OVERALL_DEADLINE
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $what"
    sleep 0.25
  done
}

# start_daemon NAME COMMAND...: start in its own session, output to $DIR/NAME.out, record the PID.
start_daemon() {
  local name=$1
  shift
  setsid "$@" >"$DIR/$name.out" 2>&1 </dev/null &
  PIDS="$PIDS $!"
  write_state
}

write_state() {
  printf 'PIDS="%s"\nDIR="%s"\n' "${PIDS# }" "$DIR" >"$STATE_FILE"
}

# On a failed start: show the end of every log, then stop what was started and delete the temp dir.
on_exit() {
  [ "$1" -eq 0 ] && return
  local file
  for file in "$DIR"/*.out "$DIR"/log/*.log; do
    [ -s "$file" ] && { log "--- last lines of $file"; tail -n 15 "$file" >&2; }
  done
  log "start failed; cleaning up"
  stop
}

ceph_cli() { timeout 30 ceph -c "$DIR/ceph.conf" --connect-timeout 10 "$@"; }
osd_up() { ceph_cli osd stat | grep -q ' 1 up'; }
rgw_serving() { curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$RGW_PORT/"; }

start() {
  if [ -f "$STATE_FILE" ]; then
    die "$STATE_FILE exists: a radosgw from an earlier start may still run (run '$0 stop' first)"
  fi
  install_if_missing
  OVERALL_DEADLINE=$((SECONDS + START_TIMEOUT))
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/dockyard-radosgw.XXXXXX")
  PIDS=""
  write_state
  trap 'on_exit $?' EXIT
  local started=$SECONDS
  local fsid osd_uuid mon_port access_key secret_key
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  mon_port=$(free_port)
  RGW_PORT=$(free_port)
  access_key=DOCKYARD$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
  secret_key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  mkdir -p "$DIR/mon" "$DIR/osd" "$DIR/run" "$DIR/log"
  cat >"$DIR/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
mon data = $DIR/mon/\$cluster-\$id
osd data = $DIR/osd/\$cluster-\$id
keyring = /dev/null
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
osd crush chooseleaf type = 0
[client]
ms mon client mode = crc
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw dns name = localhost
# Free deleted objects at once, not after two hours: the in-memory OSD would otherwise fill up and hang.
rgw gc obj min wait = 0
rgw gc processor period = 2
rgw gc processor max time = 2
CONF
  local conf=(-c "$DIR/ceph.conf")
  timeout 30 monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$DIR/monmap" >"$DIR/mkfs.out" 2>&1
  timeout 60 ceph-mon "${conf[@]}" --mkfs -i a --monmap "$DIR/monmap" >>"$DIR/mkfs.out" 2>&1
  start_daemon mon ceph-mon "${conf[@]}" -i a -f
  wait_until 30 "the mon" ceph_cli mon stat
  ceph_cli osd new "$osd_uuid" >>"$DIR/mkfs.out" 2>&1
  mkdir -p "$DIR/osd/ceph-0"
  timeout 60 ceph-osd "${conf[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$DIR/mkfs.out" 2>&1
  start_daemon osd ceph-osd "${conf[@]}" -i 0 -f
  wait_until 60 "the OSD to be up" osd_up
  start_daemon rgw radosgw "${conf[@]}" -n client.rgw -f
  wait_until 90 "radosgw to serve HTTP on port $RGW_PORT" rgw_serving
  timeout 60 radosgw-admin "${conf[@]}" user create --uid=dockyard --display-name=dockyard \
    --access-key="$access_key" --secret-key="$secret_key" >>"$DIR/mkfs.out" 2>&1
  trap - EXIT
  log "radosgw ready on 127.0.0.1:$RGW_PORT after $((SECONDS - started)) s (state: $STATE_FILE, dir: $DIR)"
  printf 'export DOCKYARD_TEST_S3_ENDPOINT=http://127.0.0.1:%s\n' "$RGW_PORT"
  printf 'export DOCKYARD_TEST_S3_ACCESS_KEY=%s\n' "$access_key"
  printf 'export DOCKYARD_TEST_S3_SECRET_KEY=%s\n' "$secret_key"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 [start|stop]" ;;
esac
