#!/usr/bin/env bash
# Fuzzes the weight parsers and explain for a fixed budget per target; exits non-zero on any crash.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60; targets: safetensors_load, legacy_pth, zip_pth, onnx_import, npy, labels, explain_image)
#   FUZZ_TARGETS="legacy_pth" scripts/fuzz.sh 300
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them. Corpora grow in fuzz/corpus/<target>, crashes land in fuzz/artifacts/<target>;
# reproduce one with `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> <file>` and turn it
# into a test in tests/hostile_weights.rs.
set -euo pipefail
secs="${1:-60}"
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [seconds per target]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
root="$PWD"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-fuzz}"
targets="${FUZZ_TARGETS:-safetensors_load legacy_pth zip_pth onnx_import npy labels explain_image}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Seeds: a few small safetensors files (valid and broken), the legacy and zip .pth fixtures, the
# single-file ONNX fixtures.
seed() { mkdir -p "fuzz/corpus/$1"; }
st() { # st FILE HEADER DATA-BYTES: an 8-byte little-endian header length, the header, zero data
    local n=${#2}
    {
        printf "$(printf '\\x%02x' $((n & 255)) $(((n >> 8) & 255)) 0 0 0 0 0 0)"
        printf '%s' "$2"
        head -c "$3" /dev/zero
    } >"$1"
}
seed safetensors_load
c=fuzz/corpus/safetensors_load
st $c/seed-f32 '{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}' 16
st $c/seed-two '{"__metadata__":{"format":"pt"},"a.weight":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"a.bias":{"dtype":"BF16","shape":[1],"data_offsets":[6,8]}}' 8
st $c/seed-i64 '{"bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"features.0.weight":{"dtype":"F32","shape":[1,3,1,1],"data_offsets":[8,20]}}' 20
st $c/seed-conv '{"conv1.weight":{"dtype":"F32","shape":[1,3,1,1],"data_offsets":[0,12]},"layer4.0.conv1.weight":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[12,16]},"fc.weight":{"dtype":"F32","shape":[2,1],"data_offsets":[16,24]},"fc.bias":{"dtype":"F32","shape":[2],"data_offsets":[24,32]}}' 32
st $c/seed-big '{"w":{"dtype":"F32","shape":[536870912],"data_offsets":[0,2147483648]}}' 20
seed legacy_pth
cp tests/fixtures/tiny_legacy.pth fuzz/corpus/legacy_pth/seed-fixture
seed zip_pth
cp tests/fixtures/zip_pth/*.pth fuzz/corpus/zip_pth/
seed onnx_import
for f in tests/fixtures/onnx/*.ts.onnx tests/fixtures/onnx/*.ts13.onnx; do # single-file exports: a length prefix past the end (see the target)
    { printf '\xff\xff\xff\xff'; cat "$f"; } >"fuzz/corpus/onnx_import/$(basename "$f")"
done
seed npy
cp tests/fixtures/vit/*.npy fuzz/corpus/npy/
seed labels
cp assets/imagenet_classes.json fuzz/corpus/labels/seed-imagenet.json
printf 'cat\ndog\r\nfish\n' >fuzz/corpus/labels/seed-lines
seed explain_image
printf '\x10\x00\x10\x00\x00\x00\x00\x00\x01\x80\x40\x20' >fuzz/corpus/explain_image/seed-16x16

# explain_image: inputs at full length from the start (its runs are slow, length would grow too late).
extra() { case "$1" in explain_image) echo -max_len=4096 -len_control=0 ;; *) echo -max_len=16384 ;; esac; }

(cd fuzz && cargo fuzz build)
failed=()
for t in $targets; do
    echo "=== $t: ${secs}s"
    if ! (cd fuzz && cargo fuzz run "$t" -- -max_total_time="$secs" $(extra "$t") \
        -timeout=60 -rss_limit_mb=3072 -print_final_stats=1); then
        failed+=("$t")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz: crashes in: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: no crashes in $targets (${secs}s each)"
