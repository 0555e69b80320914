"""Server-side latency per status from `tandem serve --access-log` JSON lines:

    python3 bench/access_latency.py ACCESS_LOG
"""
import json
import sys

by_status = {}
for line in open(sys.argv[1]):
    entry = json.loads(line)
    by_status.setdefault(entry["status"], []).append(entry["ms"])
for status, ms in sorted(by_status.items()):
    ms.sort()
    at = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
    print(f"  server side, status {status}: {len(ms)} answers, "
          f"p50 {at(0.5):.2f} ms, p99 {at(0.99):.2f} ms, max {ms[-1]:.2f} ms")
