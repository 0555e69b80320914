#!/usr/bin/env bash
# What the server's protections cost and how it sheds load, on loopback with wrk
# (bench/serve_mixed.lua with MIX=valid: text→image searches by random caption id, k 10):
#   1. bearer tokens off and on, ROUNDS times interleaved, DURATION each;
#   2. capacity: --max-concurrent 2 (1 with PIN) with a queue, CONNECTIONS clients;
#      overload: three times that rate offered by 200 clients that pause between requests
#      (bench/serve_mixed.lua's DELAY_MS); the searches answered per second must stay near
#      capacity, the rest answered 503 at once;
#      flood: 3 × CONNECTIONS clients that never pause, against no queue.
#
#   bench/serve_limits.sh            # N=1000 (the cheapest searches: any overhead shows most)
#   N=100000 ROUNDS=3 bench/serve_limits.sh
#   PIN=1 N=100000 bench/serve_limits.sh   # server on CPU 0 (--max-concurrent 1), wrk on CPU 1:
#                                          # the client's work no longer takes the server's time
#   BATCHED=1 PIN=1 N=100000 bench/serve_limits.sh
#       the server's own bound (as many searches at once as one exact batch holds), capacity
#       from CAPACITY_CLIENTS (default 64) clients, overload from OVERLOAD_CLIENTS (default
#       400) with a queue of OVERLOAD_QUEUE (default 4)
#   ACCESS_LOG=1 …   the overload run writes the server's access log, and the server-side
#                    latency of its 200 and 503 answers is printed apart (wrk's covers all)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-8}
ROUNDS=${ROUNDS:-2}
BENCH_TOKEN=limits-bench-token-0123456789
MAX_CONCURRENT=2
WRK=(wrk -t2)
if [ -n "${PIN:-}" ]; then
  export SERVE_CPUS=0
  MAX_CONCURRENT=1
  WRK=(taskset -c 1 wrk -t1)
fi
LIMIT=(--max-concurrent "$MAX_CONCURRENT")
CAPACITY_CLIENTS=${CAPACITY_CLIENTS:-$CONNECTIONS}
if [ -n "${BATCHED:-}" ]; then
  LIMIT=()
  CAPACITY_CLIENTS=${CAPACITY_CLIENTS_BATCHED:-64}
fi
OVERLOAD_CLIENTS=${OVERLOAD_CLIENTS:-$([ -n "${BATCHED:-}" ] && echo 400 || echo 200)}
OVERLOAD_QUEUE=${OVERLOAD_QUEUE:-4}
limit_label=${LIMIT[*]:-the default bound}
source bench/serve_common.sh
serve_setup

# run LABEL CLIENTS [serve options...]: one server, one wrk run, one line.
run() {
  local label=$1 clients=$2
  shift 2
  serve_start "$WORK/limits-serve.log" "$@"
  local result
  result=$(env ${WRK_TOKEN:+TOKEN=$WRK_TOKEN} ${DELAY_MS:+DELAY_MS=$DELAY_MS} MIX=valid N=$N "${WRK[@]}" -c"$clients" -d"$DURATION" --timeout 30s -s bench/serve_mixed.lua \
    "http://$addr/search" | grep '^RESULT')
  kill -TERM "$server"
  wait "$server" || true
  echo "$label, $clients clients: ${result#RESULT }"
}

echo "$BENCH_TOKEN" > "$WORK/limits-tokens"
for ((r = 1; r <= ROUNDS; r++)); do
  run "round $r, no tokens" "$CONNECTIONS"
  WRK_TOKEN=$BENCH_TOKEN run "round $r, tokens" "$CONNECTIONS" --token-file "$WORK/limits-tokens"
done
line=$(run "capacity ($limit_label, --queue 64)" "$CAPACITY_CLIENTS" "${LIMIT[@]}" --queue 64)
echo "$line"
capacity=$(sed -E 's/.* ok_per_s=([0-9.]+).*/\1/' <<< "$line")
# Three times capacity, offered by clients that each wait between requests.
delay=$(python3 -c "print(max(1, round(1000 * $OVERLOAD_CLIENTS / (3 * $capacity))))")
echo "offering about $(python3 -c "print(round($OVERLOAD_CLIENTS * 1000 / $delay))") requests/s (3 x $capacity), $delay ms between each client's requests"
access=()
if [ -n "${ACCESS_LOG:-}" ]; then
  rm -f "$WORK/overload-access.jsonl"
  access=(--access-log "$WORK/overload-access.jsonl")
fi
DELAY_MS=$delay run "overload ($limit_label, --queue $OVERLOAD_QUEUE)" "$OVERLOAD_CLIENTS" \
  "${LIMIT[@]}" --queue "$OVERLOAD_QUEUE" "${access[@]}"
[ -z "${ACCESS_LOG:-}" ] || python3 bench/access_latency.py "$WORK/overload-access.jsonl"
run "flood, no pause between requests ($limit_label, --queue 0)" $((3 * CAPACITY_CLIENTS)) \
  "${LIMIT[@]}" --queue 0
