#!/usr/bin/env bash
# The whole test suite: installs the test prerequisites (cached outside the repo), then runs every
# unit, property and end-to-end test of the workspace. This is the README's test command and what
# .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-test-env.sh
# Doc tests first, so the run closes on the summary of the real suite.
cargo test --workspace --doc
cargo test --workspace --all-targets
