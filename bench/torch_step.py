#!/usr/bin/env python3
"""The same training step as `cargo bench -p tandem --bench train_step` (paper size) in PyTorch,
for a side-by-side time. Not a CI dependency.

  python3 bench/torch_step.py [--threads 2] [--repeats 10]

B = 500 images, 1000 captions (2 per image), 4096/6000 -> 2048 -> 512, BatchNorm, ReLU, dropout
0.5, L2-normalise; the paper's loss (Euclidean, margin 0.05, top-10, weights 1.5/1/0.05); Adam.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def branch(d_in):
    return nn.Sequential(nn.Linear(d_in, 2048), nn.BatchNorm1d(2048), nn.ReLU(), nn.Dropout(0.5), nn.Linear(2048, 512))


def pdist(a, b):
    d2 = (a * a).sum(1, keepdim=True) - 2 * a @ b.t() + (b * b).sum(1)[None, :]
    return torch.sqrt(d2.clamp_min(0) + 1e-4)


def topk_mean(h, mask, k=10):
    h = h.masked_fill(~mask, float("-inf"))
    return h.topk(k, dim=1).values.clamp_min(0).mean()


def loss_fn(im, tx, b, margin=0.05):
    ids_t = torch.arange(b).repeat(2)
    ids_i = torch.arange(b)
    d_ti = pdist(tx, im)                                   # [2b, b]
    pos = d_ti[torch.arange(2 * b), ids_t][:, None]
    neg_ti = ids_t[:, None] != ids_i[None, :]
    l_ti = topk_mean(margin + pos - d_ti, neg_ti)
    d_it = d_ti.t()                                        # [b, 2b], rows per (image, caption) pair
    rows = d_it[ids_t]                                     # anchor image of each pair
    l_it = topk_mean(margin + pos - rows, ids_t[:, None] != ids_t[None, :])
    d_tt = pdist(tx, tx)
    same = ids_t[:, None] == ids_t[None, :]
    eye = torch.eye(2 * b, dtype=torch.bool)
    far = d_tt.masked_fill(~same | eye, float("-inf")).max(1, keepdim=True).values
    l_tt = topk_mean(margin + far - d_tt, ~same)
    return 1.5 * l_ti + l_it + 0.05 * l_tt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b = 500
    img_branch, txt_branch = branch(4096), branch(6000)
    opt = torch.optim.Adam(list(img_branch.parameters()) + list(txt_branch.parameters()), lr=1e-4)
    images, texts = torch.rand(b, 4096) * 2 - 1, torch.rand(2 * b, 6000) * 2 - 1
    times = []
    for i in range(args.repeats + 2):
        t = time.perf_counter()
        im = F.normalize(img_branch(images), dim=1)
        tx = F.normalize(txt_branch(texts), dim=1)
        loss = loss_fn(im, tx, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    print(f"pytorch {torch.__version__} threads={args.threads}: median {statistics.median(times):.3f} s "
          f"(min {min(times):.3f}, max {max(times):.3f}) over {len(times)} steps")


if __name__ == "__main__":
    main()
