"""The table of bench/hnsw_vs_faiss.sh: per round, tandem's and faiss's build time, and per ef
both engines' recall@10 and one-thread queries/s, and tandem's one-thread rate interpolated at
faiss's recall (log-rate linear in recall between tandem's two nearest ef values).

    python3 bench/hnsw_compare.py OUT ROUNDS
"""
import json
import math
import sys

out, rounds = sys.argv[1], int(sys.argv[2])


def rate_at(curve, recall):
    """tandem's one-thread q/s at `recall`, interpolated; None outside its measured range."""
    points = sorted((p["recall_at_10"], p["queries_per_s_one_thread"]) for p in curve)
    for (r0, q0), (r1, q1) in zip(points, points[1:]):
        if r0 <= recall <= r1:
            t = 0.0 if r1 == r0 else (recall - r0) / (r1 - r0)
            return math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0)))
    return None


for r in range(1, rounds + 1):
    t = json.load(open(f"{out}/{r}/tandem.json"))
    f = json.load(open(f"{out}/{r}/faiss.json"))
    print(f"\nround {r}: {t['rows']} rows, M {t['m']}, efConstruction {t['ef_construction']}; "
          f"build tandem {t['build_s']:.1f} s, {f['engine']} {f['build_s']:.1f} s "
          f"({t['build_s'] / f['build_s']:.2f}x)")
    print("|   ef | tandem recall | tandem q/s (1 thread) | tandem q/s (all) | faiss recall "
          "| faiss q/s (1 thread) | faiss q/s (batch, all) | tandem q/s at faiss's recall | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for a, b in zip(t["search"], f["search"]):
        at = rate_at(t["search"], b["recall_at_10"])
        ratio = f"{at / b['queries_per_s_one_thread']:.2f}" if at else "–"
        at_s = f"{at:.0f}" if at else "–"
        print(f"| {a['ef']:>4} | {a['recall_at_10']:.4f} | {a['queries_per_s_one_thread']:.0f} | "
              f"{a['queries_per_s_all_threads']:.0f} | {b['recall_at_10']:.4f} | "
              f"{b['queries_per_s_one_thread']:.0f} | {b['queries_per_s_batch_all_threads']:.0f} | "
              f"{at_s} | {ratio} |")
