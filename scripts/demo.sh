#!/usr/bin/env bash
# Explains the bundled sample photos with the default model and writes overlays to demo-out/.
# (The browser demo page is the next milestone; this is the command-line demo.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --quiet --release --bin gradcam
mkdir -p demo-out
for img in assets/samples/chelsea.png assets/samples/coffee.png assets/samples/rocket.jpg assets/samples/astronaut.png; do
  name=$(basename "${img%.*}")
  for method in gradcam guided-gradcam; do
    ./target/release/gradcam explain "$img" --method "$method" --out "demo-out/$name-$method.png" | tail -1
  done
done
echo "demo: overlays written to $(pwd)/demo-out/"
