#!/usr/bin/env bash
# The check to run when a GPU is at hand (docs/performance.md, "On a GPU"): builds tandem with
# the `cuda` feature, then
#   1. `tandem bench --size paper`: the training step of the paper's size on the GPU, against
#      the GPU's own sgemm rate;
#   2. the reference recipe on the bundled data (data/emoji, 20 epochs) for each seed, timed,
#      and its test rsum set against the band of the CPU runs (docs/recipes.md: seeds 1 / 2 / 3
#      gave 238.1 / 238.7 / 249.1). The GPU rounds its products differently, so training takes
#      another path: the check is that the seeds' mean lies within two of the CPU's standard
#      deviations of the CPU's mean, not that the digits agree. It exits non-zero otherwise;
#   3. data-parallel training on the GPU: the reference recipe for 5 epochs on one device
#      (`--devices cuda:0`) and as two ranks (`--devices cuda:0,cuda:0`, two ranks sharing the
#      GPU; `cuda:0,cuda:1` where there are two GPUs), same seed. The ranks must train as one
#      device to rounding: every epoch's training loss within 0.2% of the one device's (on
#      the CPU the gaps are 1e-7 – 6e-6); it exits non-zero otherwise.
#
#   bench/gpu_check.sh [OUT (default target/gpu-check)]
#
# Environment:
#   TANDEM_BIN=PATH   a tandem already built with --features cuda (skips the build; e.g. built
#                     on another machine with bench/cuda_toolkit.sh's compiler)
#   SEEDS="1 2 3"     the training seeds
#   CPU=1             the same steps with the default (CPU) build: a check of this script on
#                     a machine without a GPU
# A system CUDA toolkit (nvcc on the PATH) is used when there is one, else NVIDIA's compiler
# from PyPI (bench/cuda_toolkit.sh). On an H200: the build takes most of the time; the bench
# and three seeds are meant to finish in well under 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/gpu-check}")
seeds=${SEEDS:-1 2 3}
cpu=${CPU:-0}
mkdir -p "$out"
started=$(date +%s)

if [ "$cpu" = 1 ]; then
  bin=${TANDEM_BIN:-target/release/tandem}
  [ -n "${TANDEM_BIN:-}" ] || cargo build --release -p tandem-cli
else
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | head -1)
  echo "$gpu"
  bin=${TANDEM_BIN:-target/cuda/release/tandem}
  if [ -z "${TANDEM_BIN:-}" ]; then
    source bench/cuda_toolkit.sh
    cuda_toolkit target/cuda-toolkit
    cap=$(echo "${gpu##*, }" | tr -d .)
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$cap}"
    cargo build --release --target-dir target/cuda -p tandem-cli --features cuda
  fi
fi
echo "build done after $(($(date +%s) - started)) s: $bin"
lscpu | grep -E "^Model name" || true

echo "== 1. the training step, paper size (batch 500, 4096/6000 → 2048 → 512)"
"$bin" bench --size paper --runs 5

echo "== 2. the reference recipe on data/emoji, 20 epochs, test split"
results="$out/rsum.tsv"
: > "$results"
for seed in $seeds; do
  run="$out/seed-$seed"
  t0=$(date +%s.%N)
  "$bin" train --data data/emoji --out "$run" --overwrite --quiet --set "seed=$seed" \
    --format json > "$run.test.json"
  t1=$(date +%s.%N)
  rsum=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rsum"])' "$run.test.json")
  wall=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
  printf '%s\t%s\t%s\n' "$seed" "$rsum" "$wall" | tee -a "$results"
done

python3 - "$results" "$cpu" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
rsums = [float(r[1]) for r in rows]
cpu = [238.1, 238.7, 249.1]  # docs/recipes.md, tandem defaults on data/emoji, seeds 1 / 2 / 3
lo = statistics.mean(cpu) - 2 * statistics.stdev(cpu)
hi = statistics.mean(cpu) + 2 * statistics.stdev(cpu)
mean = statistics.mean(rsums)
where = "CPU" if sys.argv[2] == "1" else "GPU"
print(f"{where}: test rsum {' / '.join(f'{r:.1f}' for r in rsums)}, mean {mean:.1f}; "
      f"mean seconds per run {statistics.mean(float(r[2]) for r in rows):.1f}")
print(f"CPU band (mean ± 2 sd of seeds 1 / 2 / 3): {lo:.1f} – {hi:.1f}")
if not lo <= mean <= hi:
    sys.exit(f"the {where} mean {mean:.1f} is outside the CPU band")
print("within the band")
PY
echo "== 3. data-parallel: one device against two ranks, 5 epochs, seed 1"
if [ "$cpu" = 1 ]; then
  one=cpu ranks=cpu,cpu
else
  one=cuda:0
  ranks=$([ "$(nvidia-smi -L | wc -l)" -ge 2 ] && echo cuda:0,cuda:1 || echo cuda:0,cuda:0)
fi
for devices in "$one" "$ranks"; do
  t0=$(date +%s.%N)
  "$bin" train --data data/emoji --out "$out/devices-$devices" --overwrite --quiet \
    --set seed=1 --set train.epochs=5 --devices "$devices" --format json > /dev/null
  echo "--devices $devices: $(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')") s"
done
python3 - "$out/devices-$one/metrics.jsonl" "$out/devices-$ranks/metrics.jsonl" <<'PY'
import json, sys
def epochs(path):
    rows = [json.loads(line) for line in open(path)]
    return [(r["train_loss"], r["val"]["rsum"]) for r in rows if r.get("kind") == "epoch"]
one, ranked = epochs(sys.argv[1]), epochs(sys.argv[2])
worst = 0.0
for k, ((a, ra), (b, rb)) in enumerate(zip(one, ranked), 1):
    gap = abs(a - b) / abs(a)
    worst = max(worst, gap)
    print(f"epoch {k}: training loss {a:.5f} / {b:.5f} (gap {gap:.1e}), val rsum {ra:.1f} / {rb:.1f}")
if len(one) != len(ranked) or not one:
    sys.exit("the runs logged different numbers of epochs")
if worst > 2e-3:
    sys.exit(f"the ranks' training loss is {worst:.1e} off the one device's")
print("the ranks train as one device")
PY
echo "gpu_check done after $(($(date +%s) - started)) s"
