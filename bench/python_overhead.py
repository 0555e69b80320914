"""What calling tandem from Python costs, measured side by side on one host:

1. `Model.embed_texts` on ROWS rows against the library's own `TwoBranch::embed_rows` on the
   same model and shape (crates/tandem/examples/embed_rows.rs): best of RUNS each.
2. One PyTorch training step at the paper's size (500 images, 1000 captions, 4096/6000 →
   2048 → 512, Adam) with the paper loss written in PyTorch (bench/reference_trainer.py's)
   against the same step with `tandem.torch.Loss("paper")`: median of STEPS steps each,
   interleaved.

    python bench/python_overhead.py RUN_FOLDER [--rows 1000000] [--runs 3] [--steps 20]

Needs torch and the tandem package (pip install ./crates/tandem-py, a release build) and
target/release/examples/embed_rows (cargo build --release -p tandem --example embed_rows).
RUN_FOLDER is any run trained on 384-d text features (e.g. one of `tandem demo`'s).
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import tandem
import tandem.torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from reference_trainer import branch, embedding_loss  # noqa: E402


def embed_overhead(run, rows, runs):
    model = tandem.load(run)
    x = np.random.default_rng(0).uniform(-1, 1, (rows, model.text_dim)).astype(np.float32)
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        model.embed_texts(x)
        best = min(best, time.perf_counter() - started)
    example = ROOT / "target" / "release" / "examples" / "embed_rows"
    own = json.loads(
        subprocess.run([example, pathlib.Path(run) / "best.safetensors", str(rows), str(runs)],
                       check=True, capture_output=True, text=True).stdout
    )["best_s"]
    return best, own


def step_times(steps):
    torch.manual_seed(0)
    n, m = 500, 1000
    image_branch, text_branch = branch(4096), branch(6000)
    params = [*image_branch.parameters(), *text_branch.parameters()]
    optimiser = torch.optim.Adam(params, lr=1e-4)
    images, texts = torch.randn(n, 4096), torch.randn(m, 6000)
    image_ids = torch.arange(n)
    rows = torch.arange(m) % n
    criterion = tandem.torch.Loss("paper")

    def step(use_tandem):
        started = time.perf_counter()
        ei = torch.nn.functional.normalize(image_branch(images), dim=1)
        et = torch.nn.functional.normalize(text_branch(texts), dim=1)
        if use_tandem:
            loss = criterion(ei, et, rows)
        else:
            loss = embedding_loss(ei, et, image_ids, rows)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return time.perf_counter() - started

    for use_tandem in (False, True):  # warm-up
        step(use_tandem)
    times = {False: [], True: []}
    for _ in range(steps):
        for use_tandem in (False, True):
            times[use_tandem].append(step(use_tandem))
    return statistics.median(times[False]), statistics.median(times[True])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    python_s, own_s = embed_overhead(args.run, args.rows, args.runs)
    print(f"embed_texts {args.rows} rows: Python {python_s:.3f} s, library {own_s:.3f} s, "
          f"ratio {python_s / own_s:.3f}")
    torch_s, tandem_s = step_times(args.steps)
    print(f"paper-size PyTorch step: loss in PyTorch {torch_s:.3f} s, tandem.torch.Loss "
          f"{tandem_s:.3f} s, ratio {tandem_s / torch_s:.3f} (torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
