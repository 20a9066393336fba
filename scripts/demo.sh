#!/usr/bin/env bash
# Installs what is missing, fetches the default model and sample photos, builds the wasm package and
# serves the demo page (plain ES modules, no bundler) at a printed localhost URL. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-web-tools.sh
bash scripts/setup.sh
bash scripts/build-web.sh
# --isolate: cross-origin isolation, so the demo runs the threaded build (one kernel thread per core).
exec node www/serve.mjs . --isolate --port "${PORT:-8080}"
