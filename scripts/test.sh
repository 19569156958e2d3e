#!/usr/bin/env bash
# The whole test suite: installs the test prerequisites (cached outside the repo), then runs every
# unit, property and end-to-end test of the workspace. This is the README's test command and what
# .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-test-env.sh
# Headless Chromium for the QA report rendering test (tests/qa_report.rs), which then must run.
bash scripts/setup-browser.sh
export RETINALOGOS_REQUIRE_BROWSER=1
# A real LLM server on loopback for tests/real_endpoint.rs (built once into the cache; see
# docs/real-endpoint.md). Stopped on exit unless it was already running before this script.
if ! scripts/real-endpoint.sh status 2>/dev/null | grep -q '^running:'; then
  trap 'scripts/real-endpoint.sh stop >/dev/null 2>&1 || true' EXIT
fi
eval "$(scripts/real-endpoint.sh start)"
export RETINALOGOS_LLAMA_URL RETINALOGOS_LLAMA_MODEL
# A real S3-protocol server on loopback (moto, installed once into the cache) for
# tests/object_store.rs, which then must run. Stopped on exit unless it was already running; the
# exit trap above is kept.
if ! scripts/s3-server.sh status >/dev/null 2>&1; then
  prev_exit_trap="$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")"
  trap "${prev_exit_trap:+$prev_exit_trap; }scripts/s3-server.sh stop >/dev/null 2>&1 || true" EXIT
fi
eval "$(scripts/s3-server.sh start)"
export RETINALOGOS_S3_URL
export RETINALOGOS_REQUIRE_S3=1
# libjpeg-turbo for the optional `turbojpeg` feature of the image stage, tested below on its own.
bash scripts/setup-turbojpeg.sh
# Every test binary runs even after a failure; the last line sums them all up.
log="$(mktemp)"
set +e
cargo test --workspace --doc 2>&1 | tee "$log"
doc_status=${PIPESTATUS[0]}
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee -a "$log"
test_status=${PIPESTATUS[0]}
# The image stage with libjpeg-turbo (DCT-scaled decode and its encoder) passes the same tests.
cargo test -p retina-fundus --features turbojpeg --no-fail-fast 2>&1 | tee -a "$log"
turbo_status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ {p += $4; f += $6} END {printf "%d passed, %d failed\n", p, f}' "$log"
rm -f "$log"
[ "$doc_status" -eq 0 ] && [ "$test_status" -eq 0 ] && [ "$turbo_status" -eq 0 ]
