#!/usr/bin/env bash
# Builds the wasm package into pkg/ (ES module + .wasm + TypeScript types + package.json).
# Needs wasm-bindgen-cli at exactly the Cargo.lock version of wasm-bindgen (scripts/install-web-tools.sh).
# `--profile`: only pkg/relaxed/ and pkg/threads-relaxed/, with per-op timings exported to JS (the
# `profile` feature), for bench/profile.mjs; run it again without the flag to put the real ones back.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = --profile ] && extra=",profile"
report() { ls -l "$1" | awk '{printf "build-web: %s %d bytes", $9, $5}'; echo " ($(gzip -9c "$1" | wc -c) gzipped)"; }
if [ -z "$extra" ]; then
# The `web` profile (Cargo.toml): release with fat LTO and one codegen unit.
cargo build --quiet --profile web --lib --target wasm32-unknown-unknown --features webgpu
# --experimental-reset-state-function: the glue exports __wbg_reset_state(), which makes a fresh
# instance of the already compiled module; www/worker.js uses it to recover from a trap.
# The name and producers sections only name functions in a debugger's stack traces (a panic's
# message reaches JS through the panic hook either way): 0.74 -> 0.67 MB gzipped without them.
wasm-bindgen --target web --experimental-reset-state-function --remove-name-section --remove-producers-section \
  --out-dir pkg target/wasm32-unknown-unknown/web/gradcam_wasm.wasm
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
cat > pkg/package.json <<JSON
{
  "name": "gradcam-wasm",
  "version": "$version",
  "description": "Grad-CAM and related visual explanations of image classifiers, in the browser (WebAssembly)",
  "license": "Apache-2.0",
  "type": "module",
  "main": "gradcam_wasm.js",
  "module": "gradcam_wasm.js",
  "types": "gradcam_wasm.d.ts",
  "files": ["gradcam_wasm.js", "gradcam_wasm.d.ts", "gradcam_wasm_bg.wasm", "gradcam_wasm_bg.wasm.d.ts"],
  "sideEffects": false
}
JSON
report pkg/gradcam_wasm_bg.wasm
fi

# The threaded build (pkg/threads/), which www/worker.js takes on a cross-origin-isolated page. Shared
# memory needs the standard library rebuilt with atomics: nightly's -Z build-std, on the nightly that
# scripts/nightly-toolchain pins (scripts/install-web-tools.sh installs it with rust-src). Its own
# target dir keeps the single-threaded build's artifacts. The memory may grow to 4 GiB, as the
# single-threaded build's does.
build_threads() { # [relaxed]: the threads + relaxed-SIMD variant, pkg/threads-relaxed/
  local nightly flags dir=threads
  nightly=$(cat scripts/nightly-toolchain)
  # Not the inline threshold the other builds use (.cargo/config.toml): here it cost the threads their
  # gain (threads / one thread on EfficientNet-Lite0 0.83-0.86 without it, 0.93-0.99 with it).
  flags="-C target-feature=+atomics,+bulk-memory,+simd128 -C link-arg=--shared-memory -C link-arg=--import-memory"
  if [ "${1:-}" = relaxed ]; then
    flags="${flags/+simd128/+simd128,+relaxed-simd}"
    dir=threads-relaxed
  fi
  flags+=" -C link-arg=--max-memory=4294967296"
  for sym in __wasm_init_tls __tls_size __tls_align __tls_base; do flags+=" -C link-arg=--export=$sym"; done
  RUSTFLAGS="$flags" cargo "+$nightly" build --quiet --profile web --lib --target wasm32-unknown-unknown \
    --features "webgpu,threads$extra" -Z build-std=panic_abort,std --target-dir "target/$dir"
  rm -rf "pkg/$dir"
  wasm-bindgen --target web --experimental-reset-state-function --remove-name-section --remove-producers-section \
    --out-dir "pkg/$dir" "target/$dir/wasm32-unknown-unknown/web/gradcam_wasm.wasm"
  report "pkg/$dir/gradcam_wasm_bg.wasm"
}
[ -z "$extra" ] && build_threads
# Threads and fused multiply-adds together, for isolated pages in engines with relaxed SIMD.
build_threads relaxed

# The relaxed-SIMD variant, pkg/relaxed/ (same glue flags, no package.json: it is not published on
# its own): `relaxed-simd` on top of simd128, so the kernels' multiply-adds (`kernels::madd`) become
# f32x4.relaxed_madd, fused where the CPU has FMA. RUSTFLAGS replaces .cargo/config.toml's flags (simd128, the inline threshold),
# hence +simd128 again; its own target dir, since a RUSTFLAGS change would otherwise rebuild (and
# overwrite) the plain build's artefacts. www/wasm-features.js tells the worker which one to load.
build_relaxed() {
  RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd -C llvm-args=-inline-threshold=150" CARGO_TARGET_DIR=target/relaxed \
    cargo build --quiet --profile web --lib --target wasm32-unknown-unknown --features "webgpu$extra"
  wasm-bindgen --target web --experimental-reset-state-function --remove-name-section --remove-producers-section \
    --out-dir pkg/relaxed target/relaxed/wasm32-unknown-unknown/web/gradcam_wasm.wasm
  report pkg/relaxed/gradcam_wasm_bg.wasm
}
build_relaxed
