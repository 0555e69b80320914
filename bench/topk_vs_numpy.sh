#!/usr/bin/env bash
# Exact top-10 over 1M x 512 (1000 queries): numpy, faiss-cpu (when installed) and tandem on
# the same arrays, one run.
#   PATH=/path/to/venv/bin:$PATH bench/topk_vs_numpy.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/tandem-topk}
mkdir -p "$dir"
cargo build --release -q -p tandem --example topk_scale
python3 bench/topk_numpy.py --out "$dir"
./target/release/examples/topk_scale "$dir" 10
python3 bench/topk_numpy.py --out "$dir" --compare
