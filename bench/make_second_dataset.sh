#!/usr/bin/env bash
# A second real dataset for the benches: data/emoji's emoji, captions and split, with the Twemoji
# pictures of npm emoji-datasource-twitter@16.0.0 (CC-BY 4.0) instead of Google's Noto ones,
# encoded by the same EfficientNet-Lite0 / all-MiniLM-L6-v2 through `tandem prepare`
# (data/make_emoji.py --set twitter). Not bundled: it is written outside the repository.
#
# Usage: bench/make_second_dataset.sh [OUT]          (default OUT: /tmp/emoji_twitter)
#   SRC=/tmp/emoji_twitter_src   where the npm packages are installed (and --work is kept)
#   PYTHON=python3               a Python with numpy and pillow
# Needs npm, target/release/tandem and the encoder weights in target/encoders (data/README.md).
# About 1.5 minutes on 2 cores; then e.g. bench/parity.sh /tmp/emoji_twitter "1 2 3".
set -euo pipefail
out=$(realpath -m "${1:-/tmp/emoji_twitter}")
src=$(realpath -m "${SRC:-/tmp/emoji_twitter_src}")
cd "$(dirname "$0")/.."
case "$out/" in "$PWD"/data/*) echo "write it outside data/ (it is not bundled)" >&2; exit 1 ;; esac
mkdir -p "$src"
[[ -d $src/node_modules/emoji-datasource-twitter && -d $src/node_modules/emojibase-data ]] ||
  (cd "$src" && npm install --no-audit --no-fund emoji-datasource-twitter@16.0.0 emojibase-data@17.0.0)
"${PYTHON:-python3}" data/make_emoji.py --set twitter --work "$src/work" "$src/node_modules" "$out"
