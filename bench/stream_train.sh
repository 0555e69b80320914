#!/usr/bin/env bash
# Training with features in memory against features streamed from disk, interleaved in one
# sitting (the figures of docs/performance.md, "Features streamed from disk"):
#
#   bench/stream_train.sh DIR [STEPS]
#
# Writes (unless present) DIR/flickr: Flickr30K-size synthetic features, 31,783 images × 4096
# and 158,915 captions × 6000 (4.3 GB, one file each), and DIR/big: 220,000 images and
# 1,100,000 captions in 30 pieces (30 GB, more than this 24 GB host's memory). Then times STEPS
# (default 40) steps of the reference recipe with examples/train_steps.rs: flickr in memory,
# flickr streamed (page cache warm), twice each, then big streamed twice. One JSON line per
# run: median and mean step time after 3 warm-up steps, peak RSS.
set -euo pipefail
dir=${1:?usage: bench/stream_train.sh DIR [STEPS]}
steps=${2:-40}
cargo build --release -p tandem --example synthetic_dataset --example train_steps
bin=target/release/examples
[ -f "$dir/flickr/images.npy" ] || "$bin/synthetic_dataset" "$dir/flickr" 31783
[ -f "$dir/big/text_to_image-00029.npy" ] || "$bin/synthetic_dataset" "$dir/big" 220000 5 30
for round in 1 2; do
  "$bin/train_steps" "$dir/flickr" memory "$steps"
  "$bin/train_steps" "$dir/flickr" stream "$steps"
done
for round in 1 2; do
  "$bin/train_steps" "$dir/big" stream "$steps"
done
