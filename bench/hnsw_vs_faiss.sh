#!/usr/bin/env bash
# tandem's HNSW next to faiss-cpu's IndexHNSWFlat on the same vectors, same M, efConstruction
# and ef values, interleaved (tandem, faiss, tandem, faiss), then a table of recall@10 and
# queries/s, with tandem's rate at faiss's recall (interpolated along tandem's curve).
#   PATH=/path/to/venv-with-faiss-cpu/bin:$PATH bench/hnsw_vs_faiss.sh [N] [M] [EF_CONSTRUCTION]
# One-thread figures are one query at a time; "2 threads" means all cores (`nproc`).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
m=${2:-24}
efc=${3:-100}
efs=${EFS:-16,24,32,40,50,64,80,100,128,160,200}
rounds=${ROUNDS:-2}
out=${OUT:-$(mktemp -d)}
cargo build --release -q -p tandem --example hnsw_bench
lscpu | grep -E "Model name" || true
for round in $(seq "$rounds"); do
  mkdir -p "$out/$round"
  ./target/release/examples/hnsw_bench "$out/$round" "$n" "$m" "$efc" "$efs"
  python3 bench/hnsw_faiss.py "$out/$round" "$m" "$efc" "$efs"
done
python3 bench/hnsw_compare.py "$out" "$rounds"
