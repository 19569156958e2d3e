#!/usr/bin/env bash
# The whole test suite: installs the test prerequisites (cached outside the repo), then runs every
# unit, property and end-to-end test of the workspace. This is the README's test command and what
# .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-test-env.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
