#!/usr/bin/env bash
# Recipe search on the VALIDATION split only: trains one tandem run per candidate (same seed, the
# recipe's own budget) and prints a markdown table of each run's best validation rsum (the epoch
# that `train` keeps as best.safetensors), its epoch and seconds per epoch. The test split is never
# looked at (`train --split val`), so the table can be used to choose a recipe.
#
# Usage: bench/recipe_search.sh DATA_DIR CANDIDATES [SEED]
#   CANDIDATES: a file, one candidate per line: NAME then the --set overrides, blank-separated,
#   e.g. `clip_lr1e-3 loss.kind=info_nce train.lr=1e-3`; `NAME @file.toml k=v ...` trains from a
#   recipe file (--config) plus overrides. Lines starting with # are skipped.
#   OUT=runs/search   run folders (OUT/NAME) and logs;  results are appended to OUT/val.tsv
# Needs target/release/tandem.
set -euo pipefail
data=$(realpath "${1:?usage: bench/recipe_search.sh DATA_DIR CANDIDATES [SEED]}")
list=$(realpath "${2:?usage: bench/recipe_search.sh DATA_DIR CANDIDATES [SEED]}")
seed=${3:-1}
cd "$(dirname "$0")/.."
tandem=target/release/tandem
out=${OUT:-runs/search}
mkdir -p "$out"

best_val() {  # RUN: best epoch, its val rsum, mean seconds per epoch (from metrics.jsonl)
  python3 - "$1/metrics.jsonl" <<'EOF'
import json, sys
ep = [r for r in map(json.loads, open(sys.argv[1])) if r.get("kind") == "epoch"]
b = max(ep, key=lambda r: r["val"]["rsum"])  # first best epoch, as train keeps it
print(b["epoch"], f'{b["val"]["rsum"]:.1f}', f'{sum(r["seconds"] for r in ep) / len(ep):.2f}')
EOF
}

while read -r name rest; do
  [[ -z $name || $name == \#* ]] && continue
  args=(--set "seed=$seed")
  for kv in $rest; do
    if [[ $kv == @* ]]; then args+=(--config "${kv#@}"); else args+=(--set "$kv"); fi
  done
  run="$out/$name"
  echo "$name: ${args[*]}" >&2
  start=$(date +%s.%N)
  "$tandem" train --data "$data" --out "$run" --overwrite --split val "${args[@]}" \
    >"$run.log" 2>&1 || { echo "$name failed:" >&2; tail -5 "$run.log" >&2; continue; }
  wall=$(python3 -c "import sys,time; print(f'{time.time() - float(sys.argv[1]):.0f}')" "$start")
  read -r epoch rsum spe <<<"$(best_val "$run")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${rest:-(defaults)}" "$epoch" "$rsum" "$spe" "$wall" \
    | tee -a "$out/val.tsv"
done <"$list"
