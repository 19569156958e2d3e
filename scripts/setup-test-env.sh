#!/usr/bin/env bash
# Sets up what the test suite needs beyond cargo, in a cache folder outside the repository
# (reused when present), and exports the variables the tests read:
#   RETINALOGOS_PYTHON  a Python with pyarrow, datasets, polars, duckdb and pillow (pinned in
#                       test-requirements.txt): the real readers the tests check shards with.
# Source it (`. scripts/setup-test-env.sh`) or run it; it is idempotent.
set -euo pipefail
cache="${RETINALOGOS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/retinalogos}"
venv="$cache/venv-test"
requirements="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/test-requirements.txt"
stamp="$venv/.requirements"
mkdir -p "$cache"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv" >&2
  python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$stamp"; then
  echo "setup: installing $(tr '\n' ' ' < "$requirements")" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
export RETINALOGOS_PYTHON="$venv/bin/python"
"$RETINALOGOS_PYTHON" -c "import pyarrow, datasets, polars, duckdb, PIL" || { echo "setup: the test packages are not importable from $RETINALOGOS_PYTHON" >&2; exit 1; }
