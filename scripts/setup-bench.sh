#!/usr/bin/env bash
# Sets up what `just bench` compares against, in a cache folder outside the repository (reused
# when present), and prints the Python to use:
#   img2dataset (from the Python package index) and Pillow, whose wheels bundle libjpeg-turbo:
#   the reference for "our stage vs img2dataset" and "our JPEG encoder vs libjpeg-turbo".
# Nothing here is needed to build or test the product. Idempotent.
set -euo pipefail
# albumentations (pulled in by img2dataset) checks for updates over the network on import.
export NO_ALBUMENTATIONS_UPDATE=1
cache="${RETINALOGOS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/retinalogos}"
venv="$cache/venv-bench"
want="img2dataset==1.47.0 pillow"
stamp="$venv/.requirements"
mkdir -p "$cache"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup-bench: creating $venv" >&2
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup-bench: installing $want" >&2
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $want >&2
  echo "$want" > "$stamp"
fi
"$venv/bin/python" -c "import img2dataset, PIL.features as f; assert f.check_feature('libjpeg_turbo')" >&2
echo "$venv/bin/python"
