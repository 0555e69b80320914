"""The ranking of `benches/rank.rs` in numpy: text→image ranks and the rank of every caption of
every image, with tandem's tie rule (equal scores: lower index first).

    python3 bench/rank_numpy.py --out DIR     # writes the arrays to DIR and times numpy on them
"""
import argparse
import os
import time

import numpy as np


def make(out, n=5000, per_image=5, dim=512, seed=0):
    rng = np.random.default_rng(seed)
    def unit(rows):
        v = rng.uniform(-1, 1, (rows, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    images, texts = unit(n), unit(n * per_image)
    ids = np.repeat(np.arange(n, dtype=np.int64), per_image)
    os.makedirs(out, exist_ok=True)
    np.save(f"{out}/images.npy", images)
    np.save(f"{out}/texts.npy", texts)
    np.save(f"{out}/text_to_image.npy", ids)
    return images, texts, ids


def rank(images, texts, ids):
    n_images, n_texts = len(images), len(texts)
    scores = texts @ images.T                                   # [n_texts, n_images]
    rows = np.arange(n_texts)
    positive = scores[rows, ids]
    cols = np.arange(n_images)
    # text→image: images scoring higher, or equal with a lower index.
    t2i = 1 + (scores > positive[:, None]).sum(1) + (
        (scores == positive[:, None]) & (cols[None, :] < ids[:, None])).sum(1)
    # image→text: the rank of each of the image's captions among all captions.
    order = np.lexsort((rows, -positive, ids))                 # by image, then ranking order
    per_image = np.bincount(ids, minlength=n_images)
    starts = np.concatenate([[0], np.cumsum(per_image)[:-1]])
    i2t = np.empty(n_texts, dtype=np.int64)
    for k in range(per_image.max()):
        has = per_image > k
        c = order[starts[has] + k]                            # k-th caption of each image
        img = ids[c]
        s = scores[:, img]                                      # [n_texts, images with a k-th]
        p = positive[c]
        i2t[c] = 1 + (s > p[None, :]).sum(0) + ((s == p[None, :]) & (rows[:, None] < c[None, :])).sum(0)
    return t2i, i2t


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/tandem-rank")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    images, texts, ids = make(args.out)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        t2i, i2t = rank(images, texts, ids)
        times.append(time.perf_counter() - start)
    times.sort()
    print(f"numpy {np.__version__}: {len(ids)} captions x {len(images)} images, dim {images.shape[1]}: "
          f"median {times[len(times) // 2]:.3f} s (min {times[0]:.3f}, max {times[-1]:.3f})")
    print(f"text->image R@1 {100 * (t2i == 1).mean():.2f}, first image->text rank mean "
          f"{np.minimum.reduceat(i2t, np.arange(0, len(ids), 5)).mean():.2f}")
