# Recipes mirror the README. `just --list` shows them.

# Build the demo dataset on the embedded default (synthetic photographs, offline captioner).
demo out="out/demo":
    cargo run --release --bin build-dataset -- build --out {{out}}

# The whole test suite (installs its prerequisites into a cache folder first).
test:
    ./scripts/test.sh

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks measure the build meant for large runs: the image stage with libjpeg-turbo
# (reduced-scale DCT decode and its encoder; scripts/setup-turbojpeg.sh installs the library).
fast := "--features turbojpeg"

# Every benchmark in release mode: the quick groups (results in target/bench/results.json), the
# image group again on the pure-Rust default build, then the 1.4-million-item scale run (20-30
# minutes more; see bench-scale).
bench items="200": (bench-quick items) bench-image-pure-rust bench-scale

# The benchmark groups that take minutes, not the 1.4-million-item scale run.
bench-quick items="200":
    bash scripts/setup-turbojpeg.sh
    cargo run --release {{fast}} --bin build-dataset -- bench --items {{items}} --results target/bench/results.json

# The image group on the default build (pure-Rust codecs, no system library), for comparison.
bench-image-pure-rust:
    cargo run --release --bin build-dataset -- bench --only image --results target/bench/image-pure-rust.json

# 1.4 million items through the whole pipeline against the zero-latency loopback endpoint (20-30
# minutes; input cached in target/bench/scale-1400000): rate, flat memory, journal size, projection.
bench-scale:
    bash scripts/setup-turbojpeg.sh
    cargo run --release {{fast}} --bin build-dataset -- bench --only scale --results target/bench/scale-results.json

# Everything CI runs.
ci:
    bash .ci/run

# A real OpenAI-compatible LLM server (llama.cpp + SmolLM2-135M) on loopback, for tests; prints exports.
# Use as `eval "$(just real-endpoint)"`; stop it with `scripts/real-endpoint.sh stop`.
real-endpoint:
    ./scripts/real-endpoint.sh start
