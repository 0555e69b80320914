#!/usr/bin/env bash
# Parity of tandem's DEFAULT recipe with an independent PyTorch implementation of the reference
# (bench/reference_trainer.py). For each seed it trains tandem (no config file, only seed=S), then
# the PyTorch trainer with the same seed, one at a time, evaluates both on the test split ("full"
# protocol) and prints a markdown table: test rsum per seed, mean ± sd, mean wall seconds
# and CPU seconds (train + test evaluation, whole processes).
#
# Usage: bench/parity.sh DATA_DIR [SEEDS]        e.g. bench/parity.sh data/emoji "1 2 3"
#   TANDEM_SET="train.lr_decay_epochs=0 ..."  extra tandem --set overrides (default: none)
#   TANDEM_CONFIG=bench/recipes/best.toml  train tandem from this recipe file instead of the
#     defaults (--config; TANDEM_SET still applies on top)
#   REFERENCE=0       skip the PyTorch runs (tandem rows only), e.g. to add a recipe to a table
#   PYTHON=python3    a Python with torch and numpy (a bench only: never a CI dependency)
#   THREADS=$(nproc)  torch threads;  OUT=runs/parity  run folders and logs
#   EPOCHS=20         the epoch budget of both (default: the recipe's, 20)
# Needs target/release/tandem (cargo build --release -p tandem-cli) and DATA_DIR/splits.json.
set -euo pipefail
data=$(realpath "${1:?usage: bench/parity.sh DATA_DIR [SEEDS]}")
seeds=${2:-1 2 3}
cd "$(dirname "$0")/.."
tandem=target/release/tandem
python=${PYTHON:-python3}
threads=${THREADS:-$(nproc)}
out=${OUT:-runs/parity}
[[ -x $tandem ]] || { echo "build $tandem first: cargo build --release -p tandem-cli" >&2; exit 1; }
mkdir -p "$out"
results="$out/results.tsv"
: >"$results"
sets=()
[[ -n ${TANDEM_CONFIG:-} ]] && sets+=(--config "$(realpath "$TANDEM_CONFIG")")
for kv in ${TANDEM_SET:-}; do sets+=(--set "$kv"); done
epochs=()
if [[ -n ${EPOCHS:-} ]]; then
  sets+=(--set "train.epochs=$EPOCHS")
  epochs=(--epochs "$EPOCHS")
fi
reference=${REFERENCE:-1}

rsum_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rsum"])' "$1"; }
# timed NAME SEED JSON CMD...: runs CMD (which writes the metrics JSON), appends
# NAME, seed, test rsum, wall s, CPU s (user + sys) to the results.
timed() {
  local name=$1 seed=$2 json=$3 t wall user sys
  shift 3
  t=$( { TIMEFORMAT='%R %U %S'; time "$@"; } 2>&1 ) || {
    echo "$name, seed $seed failed; the end of ${json%.test.json}.train.log:" >&2
    tail -5 "${json%.test.json}.train.log" >&2
    exit 1
  }
  read -r wall user sys <<<"$t"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$seed" "$(rsum_of "$json")" "$wall" \
    "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')" >>"$results"
}
tandem_run() {  # train with the defaults (and TANDEM_SET), then evaluate the best model on test
  "$tandem" train --data "$data" --out "$1" --overwrite --set "seed=$2" "${sets[@]}" \
    >"$1.train.log" 2>&1 &&
    "$tandem" eval --model "$1" --data "$data" --split test --format json >"$1.test.json" \
      2>>"$1.train.log"
}
pytorch_run() {
  "$python" bench/reference_trainer.py --data "$data" --seed "$2" --threads "$threads" "${epochs[@]}" --json \
    >"$1.test.json" 2>"$1.train.log"
}

for seed in $seeds; do
  echo "seed $seed: tandem" >&2
  timed tandem "$seed" "$out/tandem_seed$seed.test.json" tandem_run "$out/tandem_seed$seed" "$seed"
  [[ $reference == 0 ]] && continue
  echo "seed $seed: pytorch reference" >&2
  timed "pytorch reference" "$seed" "$out/pytorch_seed$seed.test.json" \
    pytorch_run "$out/pytorch_seed$seed" "$seed"
done

python3 - "$results" "${TANDEM_SET:-}" "${TANDEM_CONFIG:-}" <<'EOF'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
recipe = "; ".join([sys.argv[3] or "defaults"] + [sys.argv[2]] * bool(sys.argv[2]))
label = {"tandem": f"tandem ({recipe})",
         "pytorch reference": "PyTorch reference (bench/reference_trainer.py)"}
print("| implementation | test rsum per seed | mean ± sd | wall s mean | CPU s mean |")
print("|---|---|---|---|---|")
for impl in ("tandem", "pytorch reference"):
    mine = [r for r in rows if r[0] == impl]
    if not mine:
        continue
    rsum = [float(r[2]) for r in mine]
    sd = statistics.stdev(rsum) if len(rsum) > 1 else 0.0
    per_seed = " / ".join(f"{v:.1f}" for v in rsum)
    wall, cpu = (statistics.mean(float(r[i]) for r in mine) for i in (3, 4))
    print(f"| {label[impl]} | {per_seed} | {statistics.mean(rsum):.1f} ± {sd:.1f} | {wall:.1f} "
          f"| {cpu:.1f} |")
print(f"\nseeds {' '.join(r[1] for r in rows if r[0] == 'tandem')}; test split, full protocol")
EOF
