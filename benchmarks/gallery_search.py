"""Gallery search: exact NumPy search in blocks against faiss indexes, on galleries shaped like real ones.

A gallery of N synthetic embeddings: unit vectors of dimension 512, N / 10 identities with 10 images
each, scattered around their identity's centre (cosine ~0.75 to it, as a trained face model's images of
one person; different identities are near-orthogonal). Queries are new samples of enrolled identities.
Every engine answers the same queries through `nnlab.inference.faces.search.make_index` (the interface
`nnlab identify` uses, with the k it asks for: one identity's images + 1); the reference is the exact
NumPy search of the same run: recall@1 = the share of queries whose nearest gallery image is the
exact one's.

Figures per gallery size and engine: index build time, queries/s (best of --repeat), recall@1 against
exact search, peak RSS growth during build + search. The headline: at 1M vectors, faiss-pq (the engine `auto`
picks there) should answer at least 10x faster than NumPy with recall@1 >= 0.95. faiss-ivf is in the
table to show why it is not the default: identities scattered over the sphere have no coarse
structure for its lists to follow.

Run (quiet machine; 1M needs ~6 GB of memory and some minutes):
    .venv/bin/python benchmarks/gallery_search.py                       # 10k, 100k and 1M
    .venv/bin/python benchmarks/gallery_search.py --sizes 10000         # a quick try
    .venv/bin/python benchmarks/gallery_search.py --sizes 10000 100000 --engines faiss-ivf faiss-hnsw
Ends with ``RESULT gallery_<size>_<engine>_<figure> <value>`` lines and
``RESULT gallery_<size>_speedup_<engine> <x>`` (queries/s over NumPy's): the median of --repeat
rounds that each time one search of the engine and one of NumPy's, interleaved, with ``..._iqr``
(benchmarks/paired.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import peak_rss_mib, reset_peak_rss  # benchmarks/memory.py
from paired import paired_ratios, print_ratio

from nnlab.inference.faces.search import faiss_available, make_index

DIM = 512
PER_ID = 10
SPREAD = 0.88  # |noise| relative to the unit centre: cosine 1 / sqrt(1 + 0.88^2) ~ 0.75 to the centre


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def samples(centres: np.ndarray, ids: np.ndarray, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
    """Unit vectors around centres[ids], built in chunks (the gallery is the only full-size array)."""
    out = np.empty((len(ids), centres.shape[1]), dtype=np.float32)
    for lo in range(0, len(ids), chunk):
        part = ids[lo:lo + chunk]
        noise = rng.standard_normal((len(part), centres.shape[1]), dtype=np.float32) * (SPREAD / np.sqrt(DIM))
        out[lo:lo + chunk] = unit_rows(centres[part] + noise)
    return out


def search_seconds(index, queries: np.ndarray, k: int) -> float:
    t = time.perf_counter()
    index.search(queries, k)
    return time.perf_counter() - t


def measure(engine: str, gallery: np.ndarray, queries: np.ndarray, k: int, repeat: int) -> dict:
    reset_peak_rss()
    base = peak_rss_mib()
    t = time.perf_counter()
    index = make_index(gallery, engine)
    build = time.perf_counter() - t
    best, rows = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        _, rows = index.search(queries, k)
        best = min(best, time.perf_counter() - t)
    return {"engine": index.name, "build_s": build, "qps": len(queries) / best, "top1": rows[:, 0],
            "peak_mb": peak_rss_mib() - base, "index": index}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--engines", nargs="+", default=["faiss-flat", "faiss-ivf", "faiss-pq"],
                    help="faiss engines to compare with NumPy (add faiss-hnsw: far longer to build at 1M)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="search passes per engine (the fastest gives queries/s) and paired rounds against NumPy")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not faiss_available():
        sys.exit("needs faiss-cpu: pip install 'nnlab[faiss]'")
    rng = np.random.default_rng(args.seed)
    for n in args.sizes:
        identities = max(1, n // PER_ID)
        centres = unit_rows(rng.standard_normal((identities, DIM), dtype=np.float32))
        gallery = samples(centres, np.repeat(np.arange(identities), PER_ID)[:n], rng)
        queries = samples(centres, rng.integers(0, identities, args.queries), rng)
        k = PER_ID + 1
        exact = measure("numpy", gallery, queries, k, args.repeat)
        results, speedups = [exact], {}
        for engine in args.engines:  # one faiss index alive at a time, beside NumPy's
            results.append(measure(engine, gallery, queries, k, args.repeat))
            index = results[-1].pop("index")
            speedups[index.name] = paired_ratios(lambda: search_seconds(exact["index"], queries, k),
                                                 lambda: search_seconds(index, queries, k), args.repeat,
                                                 label=f"{n:,} {index.name} speedup, ")
            del index
        print(f"\n{n:,} vectors ({identities:,} identities x {PER_ID}), dimension {DIM}, {len(queries)} queries, k={k}")
        print(f"{'engine':<12} {'build s':>9} {'queries/s':>11} {'recall@1':>9} {'peak MB':>9}")
        for r in results:
            r["recall"] = float((r["top1"] == exact["top1"]).mean())
            print(f"{r['engine']:<12} {r['build_s']:9.2f} {r['qps']:11.1f} {r['recall']:9.4f} {r['peak_mb']:9.0f}")
        for r in results:
            name = f"gallery_{n}_{r['engine'].replace('-', '_')}"
            print(f"RESULT {name}_queries_per_s {r['qps']:.1f}")
            print(f"RESULT {name}_recall_at_1 {r['recall']:.4f}")
            print(f"RESULT {name}_build_s {r['build_s']:.3f}")
            print(f"RESULT {name}_peak_mb {r['peak_mb']:.0f}")
            if r is not exact:
                print_ratio(f"gallery_{n}_speedup_{r['engine'].replace('-', '_')}", speedups[r["engine"]], digits=2)
        del gallery, exact


if __name__ == "__main__":
    main()
