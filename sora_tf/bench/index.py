"""Nearest-neighbour index (FAISS) for `search` and `duplicates`: exact scan against the HNSW
graph, build and query time by collection size, and the graph's recall of the exact answer."""
import time

import numpy as np

from sora_tf.bench.report import COMMAND


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(rng, n, d, centres=1_000, spread=0.3):
    """Unit vectors around `centres` points, as clips gather around their sources and kinds."""
    middle = _unit(rng, centres, d)
    x = middle[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_index(sizes=(1_000, 10_000, 100_000), dim=128, queries=200, k=10):
    """Per size, on random unit vectors (the hard case for the graph's recall: no structure to
    follow) and on clustered ones (`_clustered`, nearer to real embeddings; the timing does not
    depend on which): build seconds and the median time of one query, asked one at a time, for
    the exact index (the baseline) and the graph."""
    from sora_tf.embedding import index as vector_index

    rng = np.random.default_rng(0)
    rows = []
    for n, structure in [(n, s) for n in sizes for s in ("random", "clustered")]:
        if structure == "random":
            vectors, asked = _unit(rng, n, dim), _unit(rng, queries, dim)
        else:
            both = _clustered(rng, n + queries, dim)
            vectors, asked = both[:n], both[n:]
        timed = {}
        for exact in (True, False):
            t0 = time.perf_counter()
            index = vector_index.build(vectors, exact=exact)
            build = time.perf_counter() - t0
            vector_index.search(index, asked[:10], k)  # warm up
            times, found = [], []
            for q in asked:
                t0 = time.perf_counter()
                _, ids = vector_index.search(index, q[None], k)
                times.append(time.perf_counter() - t0)
                found.append(ids[0])
            timed[exact] = (build, float(np.median(times)) * 1e3, np.asarray(found))
        truth = timed[True][2]
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(timed[False][2], truth)])
        for exact in (True, False):
            build, ms, _ = timed[exact]
            rows.append({"vectors": n, "dim": dim, "data": structure, "index": "exact IndexFlatIP (baseline)" if exact else
                         f"HNSW M={vector_index.HNSW_LINKS} efSearch={vector_index.HNSW_SEARCH_DEPTH}",
                         "build_s": build, "query_ms": ms, f"recall_at_{k}": 1.0 if exact else float(recall),
                         "query_speedup": timed[True][1] / ms,
                         "command": f"{COMMAND} --only index"})
    return rows
