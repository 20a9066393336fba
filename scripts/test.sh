#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what is missing (wasm32 target, wasm-bindgen-cli,
# Chromium, npm packages), fetches the default model and the sample photos, then runs
#   0. cargo fmt --check and cargo clippy -D warnings;
#   1. the native test suite (cargo test), which also writes the native reference for 2.;
#   2. the WebGPU executor against the CPU executor, natively through wgpu on lavapipe;
#   3. the wasm tests in headless Chromium (wasm-bindgen-test): parity with native, JS errors (the
#      relaxed-SIMD and threaded builds are held to this build's maps by the end-to-end tests, which
#      reuse scripts/build-web.sh's builds instead of compiling the tests twice more);
#   4. the end-to-end tests of the demo page and the embeddable element (playwright-core + Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-web-tools.sh --browser
bash scripts/setup.sh
echo "test: formatting and lints (cargo fmt --check, cargo clippy -D warnings)"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --check
cargo clippy --quiet --all-targets -- -D warnings
echo "test: native (cargo test)"
cargo test --all-targets --no-fail-fast
echo "test: WebGPU executor vs CPU on lavapipe (cargo test --features webgpu)"
XDG_RUNTIME_DIR=/tmp GRADCAM_REQUIRE_GPU=1 cargo test --features webgpu --test gpu_parity --test gpu_kernels
echo "test: wasm32 in headless Chromium (wasm-bindgen-test; WebGPU on SwiftShader)"
CHROMEDRIVER=/usr/bin/chromedriver CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  WASM_BINDGEN_TEST_TIMEOUT=600 cargo test --target wasm32-unknown-unknown --features webgpu --test wasm --test wasm_webgpu
echo "test: demo page end to end (playwright-core + Chromium)"
bash scripts/build-web.sh
npm run --silent build:web  # the webpack build must compile too
npm run --silent test:e2e
