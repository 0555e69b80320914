#!/usr/bin/env bash
# tandem's ranking next to numpy's on the same arrays, in one run (needs python3 + numpy).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/tandem-rank}
python3 bench/rank_numpy.py --out "$dir"
TANDEM_RANK_DATA="$dir" cargo bench -p tandem --bench rank -- --noplot
