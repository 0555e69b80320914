#!/usr/bin/env python3
"""The PyTorch side of bench/encode_images.sh: the same pictures through the reference pipeline
(Pillow decoding and the preprocessing of crates/tandem/tests/fixtures/images/make_reference.py,
then efficientnet-lite-pytorch's EfficientNet-Lite0), in batches, timed end to end (decode +
preprocess + network). Not a CI dependency.

  python3 bench/encode_images_torch.py --list FILE --weights PTH [--batch-size 16] [--threads 2]
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "crates", "tandem", "tests", "fixtures", "images"))
import make_reference  # noqa: E402  (the preprocessing the Rust encoder mirrors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--list", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=args.weights).eval()
    root = os.path.dirname(os.path.abspath(args.list))
    files = [os.path.join(root, l.strip()) for l in open(args.list) if l.strip()]
    started = time.perf_counter()
    out = []
    with torch.no_grad():
        for i in range(0, len(files), args.batch_size):
            batch = [make_reference.preprocess(f)[0] for f in files[i:i + args.batch_size]]
            x = torch.from_numpy(np.stack(batch))
            out.append(model.extract_features(x).mean(dim=(2, 3)).numpy())
    seconds = time.perf_counter() - started
    feats = np.concatenate(out)
    print(f"pytorch {len(files)} pictures in {seconds:.2f} s: {len(files) / seconds:.1f} pictures/s "
          f"(torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, {feats.shape})")


if __name__ == "__main__":
    main()
