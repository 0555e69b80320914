"""faiss-cpu's IndexHNSWFlat on the vectors `examples/hnsw_bench.rs` wrote, with the same M,
efConstruction and ef values, recall@10 against the same exact ids.

    python3 bench/hnsw_faiss.py DIR M EF_CONSTRUCTION EF,EF,...

Prints a line per ef and writes DIR/faiss.json.
"""
import json
import os
import sys
import time

import faiss
import numpy as np

out, m, efc, efs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
images = np.load(f"{out}/images.npy")
queries = np.load(f"{out}/queries.npy")
exact = np.load(f"{out}/exact.npy").reshape(len(queries), -1)
k = exact.shape[1]
threads = os.cpu_count()
faiss.omp_set_num_threads(threads)

index = faiss.IndexHNSWFlat(images.shape[1], m, faiss.METRIC_INNER_PRODUCT)
index.hnsw.efConstruction = efc
started = time.perf_counter()
index.add(images)
build_s = time.perf_counter() - started
print(f"faiss {faiss.__version__} IndexHNSWFlat M {m} efConstruction {efc}: "
      f"{len(images)} rows built in {build_s:.1f} s on {threads} threads")


def recall(found):
    return float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact)]))


def median_rate(search):
    """Queries/s of the median of five passes, as the tandem side measures."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        search()
        times.append(time.perf_counter() - started)
    return len(queries) / sorted(times)[2]


results = []
for ef in [int(e) for e in efs.split(",")]:
    index.hnsw.efSearch = ef
    faiss.omp_set_num_threads(1)
    found = [index.search(q[None, :], k)[1][0] for q in queries]
    one = median_rate(lambda: [index.search(q[None, :], k) for q in queries])
    faiss.omp_set_num_threads(threads)
    _, batch = index.search(queries, k)
    batched = median_rate(lambda: index.search(queries, k))
    r = recall(found)
    assert abs(recall(batch) - r) < 1e-9
    print(f"  ef {ef:>4}: recall@10 {r:.4f}, {one:.0f} q/s on one thread (one query at a time), "
          f"{batched:.0f} q/s as one batch on {threads} threads")
    results.append({"ef": ef, "recall_at_10": r, "queries_per_s_one_thread": one,
                    "queries_per_s_batch_all_threads": batched})
json.dump({"engine": f"faiss-cpu {faiss.__version__}", "rows": len(images), "m": m,
           "ef_construction": efc, "build_s": build_s, "threads": threads, "search": results},
          open(f"{out}/faiss.json", "w"), indent=2)
