#!/usr/bin/env bash
# A real S3-protocol server on loopback, for tests/object_store.rs: moto's server mode
# (`moto[server]` from the Python package index), installed into a virtual environment in the
# cache folder outside the repository and reused when present. See docs/scaling.md.
#
#   scripts/s3-server.sh start    install if needed, start on a free loopback port, wait until it
#                                 answers, print `export RETINALOGOS_S3_URL=http://127.0.0.1:PORT`
#                                 (use as: eval "$(scripts/s3-server.sh start)")
#   scripts/s3-server.sh stop     stop it (TERM, wait, KILL) and remove its state
#   scripts/s3-server.sh status   say whether it runs and where
#   scripts/s3-server.sh env      print the AWS_* exports that point a client at it (any
#                                 credentials are accepted; these are moto's test defaults)
#
# Progress goes to stderr; only the results above go to stdout.
# Environment: RETINALOGOS_CACHE (cache root).
set -euo pipefail

MOTO_VERSION="5.2.5"

cache="${RETINALOGOS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/retinalogos}"
base="$cache/s3-server"
venv="$base/venv-moto-$MOTO_VERSION"
rundir="$base/run"
pidfile="$rundir/server.pid"
urlfile="$rundir/server.url"
logfile="$rundir/server.log"

log() { echo "s3-server: $*" >&2; }
die() { log "error: $*"; exit 1; }

ensure_installed() {
  if [ -x "$venv/bin/moto_server" ] && [ -f "$venv/.installed" ]; then
    return 0
  fi
  log "installing moto[server] $MOTO_VERSION into $venv"
  rm -rf "$venv"
  mkdir -p "$base"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2 \
    || die "pip could not install moto[server]==$MOTO_VERSION"
  touch "$venv/.installed"
}

# The PID in the state folder, if that process is alive and is our moto server.
running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'moto_server' || return 1
  echo "$pid"
}

# Any HTTP answer means the server is up (moto answers 200 on its dashboard path).
answering() {
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1/moto-api/" || true)"
  [ -n "$code" ] && [ "$code" != "000" ]
}

print_exports() {
  echo "export RETINALOGOS_S3_URL=$(cat "$urlfile")"
}

cmd_start() {
  local pid
  if pid="$(running_pid)" && [ -f "$urlfile" ] && answering "$(cat "$urlfile")"; then
    log "already running (pid $pid) at $(cat "$urlfile")"
    print_exports
    return 0
  fi
  if [ -f "$pidfile" ]; then
    log "removing stale state"
    cmd_stop >/dev/null
  fi
  ensure_installed
  mkdir -p "$rundir"
  local port url t0
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  url="http://127.0.0.1:$port"
  t0=$(date +%s)
  # stdin/stdout/stderr all detached so `eval "$(... start)"` does not wait for the server.
  setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" </dev/null >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  echo "$url" >"$urlfile"
  for _ in $(seq 1 300); do
    if answering "$url"; then
      log "running (pid $(cat "$pidfile")) at $url after $(( $(date +%s) - t0 )) s"
      print_exports
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      tail -n 20 "$logfile" >&2 || true
      die "the server exited during start-up (see $logfile)"
    fi
    sleep 0.2
  done
  tail -n 20 "$logfile" >&2 || true
  cmd_stop >/dev/null
  die "the server did not answer within 60 s"
}

cmd_stop() {
  local pid
  if pid="$(running_pid)"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    log "stopped pid $pid"
  fi
  rm -f "$pidfile" "$urlfile"
  echo "stopped"
}

cmd_status() {
  local pid
  if pid="$(running_pid)" && [ -f "$urlfile" ]; then
    echo "running: pid $pid at $(cat "$urlfile")"
  else
    echo "not running"
    return 1
  fi
}

cmd_env() {
  [ -f "$urlfile" ] || die "not running (scripts/s3-server.sh start)"
  echo "export AWS_ENDPOINT_URL=$(cat "$urlfile")"
  echo "export AWS_ACCESS_KEY_ID=testing"
  echo "export AWS_SECRET_ACCESS_KEY=testing"
  echo "export AWS_REGION=us-east-1"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
