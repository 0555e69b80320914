"""sentence-transformers' throughput on a captions.jsonl, the reference for `tandem encode-text`
(bench/encode_text.sh runs both on the same file). Writes the embeddings to --out (.npy) so the
two can be compared.

    python3 bench/encode_text_st.py --captions data/emoji/captions.jsonl --model DIR --out st.npy
"""
import argparse
import json
import time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    texts = [json.loads(l)["text"] for l in open(args.captions, encoding="utf-8") if l.strip()]
    model = SentenceTransformer(args.model, device="cpu")
    started = time.perf_counter()
    emb = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    seconds = time.perf_counter() - started
    np.save(args.out, emb.astype(np.float32))
    print(f"sentence-transformers (torch {torch.__version__}, {torch.get_num_threads()} threads): "
          f"{len(texts)} captions in {seconds:.1f} s, {len(texts) / seconds:.0f} captions/s")


if __name__ == "__main__":
    main()
