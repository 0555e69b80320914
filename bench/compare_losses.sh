#!/usr/bin/env bash
# Trains every loss on the bundled demo data with bench/recipes/compare_losses.toml (same seed,
# same 20 epochs)
# and prints the comparison table of docs/losses.md: test rsum, R@1 both ways, seconds per epoch.
# Usage: bench/compare_losses.sh [OUT_DIR]   (about 5 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/compare}
mkdir -p "$out"
cargo build --release -q -p tandem-cli
tandem=target/release/tandem

vse="--set loss.distance=cosine --set loss.margin=0.2"
memory() { echo "--set loss.memory.enabled=true --set loss.memory.capacity=$1 --set loss.memory.warmup_steps=20"; }
runs=(
  "paper|paper (Wang et al. 2016)|"
  "paper_mem500|paper + memory 500|$(memory 500)"
  "paper_mem1000|paper + memory 1000|$(memory 1000)"
  "paper_mem2000|paper + memory 2000|$(memory 2000)"
  "vse_sum|VSE++ sum of hinges|--set loss.kind=vse_sum $vse"
  "vse_max|VSE++ max-violation|--set loss.kind=vse_max $vse"
  "vse_warmup|VSE++ sum→max (2 epochs)|--set loss.kind=vse_warmup --set loss.warmup_epochs=2 $vse"
  "vse_max_mem1000|VSE++ max + memory 1000|--set loss.kind=vse_max $vse $(memory 1000)"
  "info_nce|InfoNCE / CLIP|--set loss.kind=info_nce"
  "info_nce_mem1000|InfoNCE + memory 1000|--set loss.kind=info_nce $(memory 1000)"
  "siglip|SigLIP|--set loss.kind=siglip"
)
for spec in "${runs[@]}"; do
  IFS='|' read -r name label sets <<<"$spec"
  # shellcheck disable=SC2086
  "$tandem" train --quiet --data data/emoji --config bench/recipes/compare_losses.toml --overwrite \
    --format json --out "$out/$name" $sets >"$out/$name.json"
done

python3 - "$out" "${runs[@]}" <<'PY'
import json, sys
out, specs = sys.argv[1], sys.argv[2:]
print("| loss | test rsum | R@1 i→t | R@1 t→i | s / epoch |")
print("|---|---:|---:|---:|---:|")
for spec in specs:
    name, label, _ = spec.split("|", 2)
    m = json.load(open(f"{out}/{name}.json"))
    epochs = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl") if '"kind":"epoch"' in l]
    per_epoch = sum(e["seconds"] for e in epochs) / len(epochs)
    print(f"| {label} | {m['rsum']:.1f} | {m['image_to_text'][0]:.1f} | {m['text_to_image'][0]:.1f} | {per_epoch:.1f} |")
PY
