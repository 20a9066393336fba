#!/usr/bin/env bash
# Builds the crate for wasm32 (simd128, release) inside a tiny wasm-bindgen harness and times it in node 20
# (same V8 family as Chromium): scripts/wasm-bench.sh [runs] [arch...]; PROFILE=1 adds the per-op profile.
# Output goes to /tmp/gradcam-wasm-bench (never pkg/). To compare two builds, build each with its own
# WASM_BENCH_DIR (e.g. `WASM_BENCH_DIR=/tmp/a scripts/wasm-bench.sh 1 resnet18`) and run
# `node scripts/wasm-ab.mjs /tmp/a /tmp/b`: alternating, ratio per round, once in each load order.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${WASM_BENCH_DIR:-/tmp/gradcam-wasm-bench}
(cd scripts/wasm-bench && RUSTFLAGS="-C target-feature=+simd128" CARGO_TARGET_DIR=../../target/wasm-bench \
  cargo build --quiet --release --target wasm32-unknown-unknown)
wasm-bindgen --target nodejs --out-dir "$out" target/wasm-bench/wasm32-unknown-unknown/release/gradcam_wasm_bench.wasm
node scripts/wasm-bench.mjs "$@"
