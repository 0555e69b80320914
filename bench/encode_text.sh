#!/usr/bin/env bash
# `tandem encode-text` next to sentence-transformers on the same captions, in one run, and the
# cosine between their embeddings. Needs a Python with sentence-transformers and the model:
#   PATH=/path/to/venv/bin:$PATH bench/encode_text.sh MODEL_DIR [captions.jsonl]
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1
captions=${2:-data/emoji/captions.jsonl}
out=$(mktemp -d)
cargo build --release -q -p tandem-cli
python3 bench/encode_text_st.py --captions "$captions" --model "$model" --out "$out/st.npy"
./target/release/tandem encode-text --captions "$captions" --encoder "$model" --out "$out/tandem.npy" 2>&1 | tail -1
python3 - "$out" <<'PY'
import sys, numpy as np
a = np.load(f"{sys.argv[1]}/st.npy"); b = np.load(f"{sys.argv[1]}/tandem.npy")
cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
print(f"cosine tandem vs sentence-transformers: min {cos.min():.7f}, mean {cos.mean():.7f}")
PY
rm -rf "$out"
