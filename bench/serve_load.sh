#!/usr/bin/env bash
# Load benchmark of `tandem serve` at three gallery sizes: for each N, a synthetic index of N
# images and N captions (512-d, examples/synthetic_index.rs), the server on loopback, and wrk
# holding CONNECTIONS requests in flight for DURATION, each a text→image query by a random
# caption id, k 10. Prints requests/s, p50/p99 latency and errors (non-2xx answers and socket
# errors; both must be 0).
#
#   bench/serve_load.sh                       # exact search, N = 1k, 100k, 1M
#   SIZES=100000 HNSW=1 bench/serve_load.sh   # the same over HNSW graphs
#   BATCH=1 bench/serve_load.sh               # exact searches one at a time (no batching)
#
# Client and server share the machine's cores, as a sidecar load test would. Indexes are kept
# in $WORK (default /tmp/tandem-serve-load) between runs; the 1M one takes about 6 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"1000 100000 1000000"}
CONNECTIONS=${CONNECTIONS:-8}
DURATION=${DURATION:-20s}
WORK=${WORK:-/tmp/tandem-serve-load}
mkdir -p "$WORK"

if ! command -v wrk > /dev/null; then
  echo "installing wrk (Debian package)" >&2
  apt-get install -y -qq wrk > /dev/null
fi
cargo build --release -q -p tandem-cli
cargo build --release -q -p tandem --example synthetic_index

for n in $SIZES; do
  index="$WORK/index-$n${HNSW:+-hnsw}"
  if [ ! -f "$index/index.safetensors" ]; then
    target/release/examples/synthetic_index "$index" "$n" ${HNSW:+--hnsw} >&2
  fi
  log="$WORK/serve-$n.log"
  TANDEM_LOG=warn target/release/tandem serve --index "$index" --addr 127.0.0.1:0 \
    ${BATCH:+--batch "$BATCH"} > "$log" &
  server=$!
  for _ in $(seq 600); do
    grep -q "listening on" "$log" && break
    sleep 0.1
  done
  addr=$(sed -n 's|^listening on http://||p' "$log")
  # One request first: the gallery is packed on first use.
  curl -s -X POST -H 'Content-Type: application/json' \
    -d '{"id": 0, "direction": "text_to_image"}' "http://$addr/search" > /dev/null
  result=$(N=$n wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --timeout 30s -s bench/serve_load.lua \
    "http://$addr/search" | grep '^RESULT')
  kill -TERM "$server"
  wait "$server"
  echo "gallery $n${HNSW:+ (hnsw)}${BATCH:+ batch $BATCH}, $CONNECTIONS connections, $DURATION: ${result#RESULT }"
done
