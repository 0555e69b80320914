#!/usr/bin/env bash
# The paper-size training step, tandem against PyTorch, interleaved in one sitting: PyTorch
# (bench/torch_step.py), then tandem (`tandem bench --size paper`), ROUNDS times, then PyTorch once
# more. Each tandem round is divided by the mean of the PyTorch medians either side of it, so the
# host's drift between rounds divides out. Prints a markdown table with the host and the date.
#
# Usage: bench/step_vs_torch.sh [ROUNDS]             (default 3)
#   PYTHON=python3            a Python with torch (a bench only: never a CI dependency)
#   TANDEMS="target/release/tandem"   one or more tandem binaries to interleave, e.g. a default
#                             build and a --features openblas build copied elsewhere
#   THREADS=$(nproc)          torch threads;  RUNS=5  timed tandem runs per round
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
python=${PYTHON:-python3}
threads=${THREADS:-$(nproc)}
runs=${RUNS:-5}
read -r -a tandems <<<"${TANDEMS:-target/release/tandem}"
for t in "${tandems[@]}"; do
  [[ -x $t ]] || { echo "no binary $t: cargo build --release -p tandem-cli" >&2; exit 1; }
done

torch_median() {
  "$python" bench/torch_step.py --threads "$threads" --repeats 10 | sed -E 's/.*median ([0-9.]+) s.*/\1/'
}
# tandem_round BIN: "median times_floor" of the paper step.
tandem_round() {
  "$1" bench --size paper --runs "$runs" --format json -q | python3 -c '
import json, sys
report = json.load(sys.stdin)
rows = report["rows"] if isinstance(report, dict) else report  # older binaries: rows only
row = next(r for r in rows if r["what"].startswith("train step, paper"))
print("%.3f %.2f" % (row["median"], row["times_floor"]))'
}

torch_median >/dev/null  # warm-up: the first process after a while runs slow (page cache, MKL start-up)
torch_times=("$(torch_median)")
declare -A medians floors
for ((r = 1; r <= rounds; r++)); do
  for t in "${tandems[@]}"; do
    read -r m f <<<"$(tandem_round "$t")"
    medians[$t]+="$m "
    floors[$t]+="$f "
    echo "round $r: $t $m s (${f}x floor)" >&2
  done
  torch_times+=("$(torch_median)")
  echo "round $r: pytorch ${torch_times[-1]} s" >&2
done

cpu=$(lscpu | sed -n 's/^Model name: *//p')
isa=$(grep -q avx512f /proc/cpuinfo && echo "AVX-512" || echo "AVX2, no AVX-512")
echo "Paper-size step, $(nproc) cores, $cpu ($isa), $(date +%F); $rounds rounds, interleaved:"
echo
echo "| step | medians of the rounds (s) | × its floor | vs PyTorch, per round | median |"
echo "|---|---|---|---|---:|"
for t in "${tandems[@]}"; do
  python3 - "$t" "${medians[$t]}" "${floors[$t]}" "${torch_times[*]}" <<'PY'
import statistics, sys
name, med, flo, torch = sys.argv[1], *(list(map(float, a.split())) for a in sys.argv[2:])
ratios = [m / ((torch[i] + torch[i + 1]) / 2) for i, m in enumerate(med)]
print(f"| tandem (`{name}`) | {' / '.join(f'{m:.3f}' for m in med)} | {' / '.join(f'{f:.2f}' for f in flo)} "
      f"| {' / '.join(f'{r:.2f}' for r in ratios)} | **{statistics.median(ratios):.2f}×** |")
PY
done
echo "| PyTorch, $threads threads (\`bench/torch_step.py\`) | ${torch_times[*]} | – | 1 | 1 |"
