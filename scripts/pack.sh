#!/usr/bin/env bash
# Packs the npm package `gradcam-wasm` (npm run pack): the wasm module with WebGPU and its glue,
# the threaded and relaxed-SIMD builds, the worker, the promise client, the <gradcam-explainer>
# element, the model loader, their TypeScript types, and the default model, into
# target/npm/gradcam-wasm-<version>.tgz.
#
# The package keeps the repository's layout (pkg/ beside www/ beside assets/), so every URL the
# modules build from `import.meta.url` (the worker, the wasm, the default model) resolves the same
# way in the repository, in node_modules, and in a bundler's output. Needs pkg/ (scripts/build-web.sh)
# and the default model (scripts/setup.sh); a user who installs the tarball needs neither Rust nor Python.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
for f in pkg/gradcam_wasm.js pkg/gradcam_wasm_bg.wasm pkg/gradcam_wasm.d.ts pkg/threads/gradcam_wasm.js pkg/threads/gradcam_wasm_bg.wasm pkg/threads-relaxed/gradcam_wasm.js pkg/threads-relaxed/gradcam_wasm_bg.wasm pkg/relaxed/gradcam_wasm.js pkg/relaxed/gradcam_wasm_bg.wasm assets/models/efficientnet-lite0.safetensors; do
    [[ -f $f ]] || { echo "pack: missing $f (run scripts/build-web.sh and scripts/setup.sh first)" >&2; exit 1; }
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=target/npm
stage=$out/package
rm -rf "$stage"
mkdir -p "$stage/pkg/threads" "$stage/pkg/threads-relaxed" "$stage/pkg/relaxed" "$stage/www" "$stage/assets/models"
cp pkg/gradcam_wasm.js pkg/gradcam_wasm_bg.wasm pkg/gradcam_wasm.d.ts pkg/gradcam_wasm_bg.wasm.d.ts "$stage/pkg/"
# The threaded builds, which the worker takes on cross-origin-isolated pages (www/thread-pool.js):
# with relaxed SIMD where the browser has it, plain otherwise.
for d in threads threads-relaxed; do
  cp "pkg/$d/gradcam_wasm.js" "pkg/$d/gradcam_wasm_bg.wasm" "pkg/$d/gradcam_wasm.d.ts" "$stage/pkg/$d/"
done
# The relaxed-SIMD build, which it takes on other pages where the browser has relaxed SIMD.
cp pkg/relaxed/gradcam_wasm.js pkg/relaxed/gradcam_wasm_bg.wasm pkg/relaxed/gradcam_wasm.d.ts "$stage/pkg/relaxed/"
cp www/worker.js www/thread-pool.js www/pool-thread.js www/wasm-features.js www/gradcam-client.js www/gradcam-client.d.ts www/gradcam-explainer.js www/gradcam-explainer.d.ts www/model-loader.js "$stage/www/"
cp assets/models/efficientnet-lite0.safetensors assets/imagenet_classes.json "$stage/assets/models/"
cp packaging/README.md LICENSE "$stage/"
sed "s/@VERSION@/$version/" packaging/package.json >"$stage/package.json"
# `repository` names where this clone came from when that is a URL others can open (a local path is
# not): GRADCAM_REPOSITORY if set, else the remote 'origin'. Without one the field is left out.
repository=${GRADCAM_REPOSITORY:-$(git config --get remote.origin.url 2>/dev/null || true)}
case $repository in
  https://* | git+https://* | ssh://* | git+ssh://* | git@*:*)
    (cd "$stage" && npm pkg set repository.type=git "repository.url=$repository") ;;
  *) echo "pack: no repository field (no URL in GRADCAM_REPOSITORY or remote 'origin': '$repository')" >&2 ;;
esac
(cd "$out" && npm pack --silent ./package >/dev/null)
tarball=$out/gradcam-wasm-$version.tgz
echo "pack: $tarball ($(wc -c <"$tarball") bytes; wasm $(gzip -9c pkg/gradcam_wasm_bg.wasm | wc -c) bytes gzipped)"
