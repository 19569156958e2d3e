#!/usr/bin/env bash
# Installs what the optional `turbojpeg` cargo feature links against: libjpeg-turbo's TurboJPEG
# library and headers from Debian (package libturbojpeg0-dev, found through pkg-config).
# With it: `cargo build --release -p build-dataset --features turbojpeg` decodes JPEGs at reduced
# scale in the DCT domain and encodes with libjpeg-turbo. Without it the default build (pure
# Rust codecs) needs nothing from the system. Idempotent; needs root (or sudo) for apt-get.
set -euo pipefail
if pkg-config --exists libturbojpeg 2>/dev/null; then
  echo "setup-turbojpeg: libturbojpeg $(pkg-config --modversion libturbojpeg) present" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq libturbojpeg0-dev pkg-config >&2
pkg-config --modversion libturbojpeg >&2
