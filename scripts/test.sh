#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what is missing, fetches the default model and the
# sample photos, checks the wasm32 build, then runs the native test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown
bash scripts/setup.sh
echo "test: cargo build --target wasm32-unknown-unknown (SIMD via .cargo/config.toml)"
cargo build --target wasm32-unknown-unknown
echo "test: cargo test"
cargo test --all-targets --no-fail-fast
