#!/usr/bin/env bash
# Installs what building needs: protoc (any build), the wasm32 target and wasm-bindgen-cli at exactly
# the Cargo.lock version of wasm-bindgen. With --browser, also Debian's Chromium + ChromeDriver and
# the npm packages (for the browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
# protoc: candle-onnx's build script compiles the ONNX schema with prost-build (the ONNX import,
# src/onnx); every build of the crate needs it, native and wasm.
if ! command -v protoc >/dev/null; then
  echo "install-web-tools: apt-get install protobuf-compiler"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
fi
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
# The threaded wasm build (scripts/build-web.sh) rebuilds the standard library with atomics, which
# needs a nightly toolchain and its sources; the date is pinned so builds stay reproducible.
nightly=$(cat scripts/nightly-toolchain)
if ! rustup "+$nightly" component list --installed 2>/dev/null | grep -q '^rust-src'; then
  echo "install-web-tools: rustup toolchain install $nightly --component rust-src (once)"
  rustup toolchain install "$nightly" --profile minimal --component rust-src >/dev/null
fi
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$have" != "$want" ]]; then
  echo "install-web-tools: cargo install wasm-bindgen-cli $want (a few minutes, once)"
  cargo install --quiet wasm-bindgen-cli --version "$want"
fi
if [[ "${1:-}" == "--browser" ]]; then
  if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    echo "install-web-tools: apt-get install chromium chromium-driver"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
  # lavapipe: a Vulkan driver on the CPU, so the WebGPU executor's tests run without a GPU.
  if ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
    echo "install-web-tools: apt-get install mesa-vulkan-drivers"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  fi
  [[ -d node_modules/playwright-core ]] || npm ci --no-audit --no-fund --loglevel=error
fi
