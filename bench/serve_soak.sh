#!/usr/bin/env bash
# Soak test of `tandem serve` on loopback: DURATION (default 10m) of mixed load from wrk
# (bench/serve_mixed.lua: valid searches, malformed, bad k, unknown fields, bodies over the
# limit) while bench/slow_clients.py runs abusive clients (slowloris, half bodies, connect and
# close, requests whose answers are never read). The server's RSS is sampled every 10 s into
# $WORK/soak-rss.csv. Prints the load's RESULT line (p99, counts by status class: other_5xx
# must be 0), the abuse counts, and RSS after the first minute, at the end and at most.
#
#   bench/serve_soak.sh                 # N=100000 images and captions, 10 minutes
#   DURATION=2m N=1000 bench/serve_soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
DURATION=${DURATION:-10m}
CONNECTIONS=${CONNECTIONS:-8}
source bench/serve_common.sh
serve_setup
serve_start "$WORK/soak-serve.log" --header-timeout 2 --request-timeout 5
trap 'kill -TERM $server 2>/dev/null || true' EXIT
curl -s -X POST -H 'Content-Type: application/json' \
  -d '{"id": 0, "direction": "text_to_image"}' "http://$addr/search" > /dev/null

seconds=$(python3 -c "import sys; s=sys.argv[1]; print(int(s[:-1]) * {'s': 1, 'm': 60, 'h': 3600}[s[-1]])" "$DURATION")
rss="$WORK/soak-rss.csv"
echo "seconds,rss_mb" > "$rss"
( start=$(date +%s)
  while kill -0 "$server" 2> /dev/null; do
    kb=$(awk '/^VmRSS/ {print $2}' "/proc/$server/status" 2> /dev/null || echo 0)
    echo "$(( $(date +%s) - start )),$(( kb / 1024 ))" >> "$rss"
    sleep 10
  done ) &
sampler=$!
python3 bench/slow_clients.py "$addr" "$seconds" 4 > "$WORK/soak-abuse.txt" &
abuse=$!
N=$N wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --timeout 30s -s bench/serve_mixed.lua \
  "http://$addr/search" | grep '^RESULT'
wait "$abuse"
cat "$WORK/soak-abuse.txt"
kill "$sampler" 2> /dev/null || true
python3 - "$rss" <<'PY'
import csv, sys
rows = [(int(r["seconds"]), int(r["rss_mb"])) for r in csv.DictReader(open(sys.argv[1]))]
after_warmup = [m for s, m in rows if s >= 60] or [m for _, m in rows]
first, last, peak = after_warmup[0], after_warmup[-1], max(after_warmup)
print(f"RSS MB: {first} after the first minute, {last} at the end, {peak} at most; "
      f"growth {100 * (last - first) / first:+.1f}% ({len(rows)} samples in {sys.argv[1]})")
PY
