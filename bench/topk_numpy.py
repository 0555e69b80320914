"""Exact top-k by numpy and faiss next to tandem's (bench/topk_vs_numpy.sh): writes random unit
vectors to DIR (gallery.npy, queries.npy), times numpy's blocked matmul + argpartition + sort
and, when faiss-cpu is installed, faiss's flat inner-product index (IndexFlatIP, add + search);
with --compare, checks tandem's ids (DIR/tandem_ids.npy) against theirs.

    python3 bench/topk_numpy.py --out DIR [--n 1000000 --dim 512 --queries 1000 --k 10]
"""
import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--compare", action="store_true")
    a = ap.parse_args()
    if a.compare:
        ours = np.load(f"{a.out}/tandem_ids.npy")
        for name in ["numpy", "faiss"]:
            try:
                theirs = np.load(f"{a.out}/{name}_ids.npy")
            except FileNotFoundError:
                continue
            same = (ours.reshape(theirs.shape) == theirs).all(axis=1).mean() * 100
            print(f"tandem == {name}: {same:.2f}% of queries identical")
        return
    rng = np.random.default_rng(0)
    def unit(rows):
        v = rng.standard_normal((rows, a.dim), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    gallery, queries = unit(a.n), unit(a.queries)
    np.save(f"{a.out}/gallery.npy", gallery)
    np.save(f"{a.out}/queries.npy", queries)
    started = time.perf_counter()
    ids = np.empty((a.queries, a.k), dtype=np.int64)
    for s in range(0, a.queries, 100):                       # 100 x 1M scores = 400 MB at once
        scores = queries[s:s + 100] @ gallery.T
        part = np.argpartition(-scores, a.k, axis=1)[:, :a.k]
        top = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -top), axis=1)
        ids[s:s + 100] = np.take_along_axis(part, order, axis=1)
    seconds = time.perf_counter() - started
    np.save(f"{a.out}/numpy_ids.npy", ids)
    print(f"numpy {np.__version__}: top-{a.k} of {a.queries} queries over {a.n} x {a.dim}: "
          f"{seconds:.2f} s ({a.queries / seconds:.0f} queries/s)")
    try:
        import faiss
    except ImportError:
        print("faiss: not installed (pip install faiss-cpu), skipped")
        return
    started = time.perf_counter()
    index = faiss.IndexFlatIP(a.dim)
    index.add(gallery)
    _, faiss_ids = index.search(queries, a.k)
    seconds = time.perf_counter() - started
    np.save(f"{a.out}/faiss_ids.npy", faiss_ids.astype(np.int64))
    print(f"faiss {faiss.__version__} IndexFlatIP ({faiss.omp_get_max_threads()} threads): "
          f"top-{a.k} of {a.queries} queries over {a.n} x {a.dim}: "
          f"{seconds:.2f} s ({a.queries / seconds:.0f} queries/s)")


if __name__ == "__main__":
    main()
