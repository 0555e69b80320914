#!/usr/bin/env python3
"""Recall@10 and sequential queries/s of tandem servers against an exact one.

    postgres_recall.py N TRUTH_URL NAME=URL [NAME=URL ...]

Each server answers the same 1,000 caption-id queries (text->image, k 10, evenly spaced ids of
the N captions), one at a time; recall@10 is the mean share of the exact server's top 10 that a
server returned. Prints one JSON line per server.
"""
import json
import sys
import time
import urllib.request

QUERIES = 1000


def top10(base, caption):
    body = json.dumps({"id": caption, "direction": "text_to_image", "k": 10}).encode()
    request = urllib.request.Request(
        base + "/search", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as answer:
        return [hit["id"] for hit in json.load(answer)["results"]]


def run(base, ids):
    top10(base, ids[0])  # warm: statements prepared, pages cached
    started = time.perf_counter()
    lists = [top10(base, i) for i in ids]
    return lists, len(ids) / (time.perf_counter() - started)


def main():
    n, truth_url, servers = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    ids = [i * n // QUERIES for i in range(QUERIES)]
    truth, exact_rate = run(truth_url, ids)
    print(json.dumps({"server": "tandem exact", "recall_at_10": 1.0, "queries_per_s": round(exact_rate, 1)}))
    for spec in servers:
        name, url = spec.split("=", 1)
        lists, rate = run(url, ids)
        recall = sum(len(set(a) & set(t)) / 10 for a, t in zip(lists, truth)) / len(ids)
        print(json.dumps({"server": name, "recall_at_10": round(recall, 4), "queries_per_s": round(rate, 1)}))


if __name__ == "__main__":
    main()
