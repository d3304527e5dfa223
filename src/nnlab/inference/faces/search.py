"""Nearest neighbours by cosine similarity among unit vectors: one interface, two engines.

    index = make_index(vectors)              # "auto": exact NumPy below AUTO_FAISS_SIZE vectors, faiss-pq above
    scores, rows = index.search(queries, k)  # (Q, k) similarities, best first, and the rows they belong to
    index.name                               # what was chosen ("numpy", "faiss-pq", ...), for reports

- ``numpy``: exact; queries x vectors similarities in blocks of bounded size (BLAS matrix products).
- ``faiss-flat``: exact inner product (faiss' IndexFlatIP).
- ``faiss-ivf``: an inverted file (IndexIVFFlat, inner product, 2 sqrt(N) lists trained on a sample,
  `nprobe` = 16 of them searched): approximate, many times faster than exact search on large galleries.
- ``faiss-hnsw``: a graph index (IndexHNSWFlat, inner product): approximate, slower to build.
- ``faiss-pq``: every vector scanned as a 4-bit product-quantised code (IndexPQFastScan, SIMD
  look-up tables, 32 bytes a vector), then the best REFINE_FACTOR * k candidates re-ranked by
  exact inner products (IndexRefineFlat). It scans the whole gallery, so unlike the IVF and HNSW
  kinds its recall does not depend on the gallery having coarse structure: embeddings of many
  near-orthogonal identities (a face gallery) defeat coarse partitions, not this. The default
  above AUTO_FAISS_SIZE.

faiss is the optional extra ``faiss`` (``pip install 'nnlab[faiss]'``, the ``faiss-cpu`` package).
Missing rows (fewer than k vectors, or an approximate index finding fewer) have row -1 and score -inf.
"""

from __future__ import annotations

import numpy as np

from nnlab.errors import NnlabError

AUTO_FAISS_SIZE = 50_000  # below this, exact NumPy search answers in milliseconds
PQ_MIN_VECTORS = 256  # faiss trains each 4-bit sub-quantiser's 16 centroids on at least this many vectors
REFINE_FACTOR = 8  # faiss-pq re-ranks this many candidates per neighbour asked for, exactly
BLOCK_ELEMENTS = 8_000_000  # bounds one (queries, vectors) similarity block: 32 MB of float32
BACKENDS = ("auto", "numpy", "faiss-flat", "faiss-ivf", "faiss-hnsw", "faiss-pq")
FAISS_MISSING = "faiss-cpu is not installed; install the optional extra: pip install 'nnlab[faiss]'"


class NumpyIndex:
    """Exact search in blocks with NumPy."""

    name = "numpy"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        n, kk = len(self.vectors), min(k, len(self.vectors))
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        rows = np.full((len(q), k), -1, dtype=np.int64)
        if not n or not kk:
            return scores, rows
        qblock = min(len(q), 256)
        vblock = max(1, BLOCK_ELEMENTS // max(qblock, 1))
        for qlo in range(0, len(q), qblock):
            qb = q[qlo:qlo + qblock]
            best_s = np.empty((len(qb), 0), dtype=np.float32)
            best_r = np.empty((len(qb), 0), dtype=np.int64)
            for vlo in range(0, n, vblock):
                sims = qb @ self.vectors[vlo:vlo + vblock].T
                cand_s = np.concatenate([best_s, sims], axis=1)
                cand_r = np.concatenate([best_r, np.broadcast_to(np.arange(vlo, vlo + sims.shape[1]), sims.shape)],
                                        axis=1)
                if cand_s.shape[1] > kk:  # keep the running k best of this query block
                    top = np.argpartition(-cand_s, kk - 1, axis=1)[:, :kk]
                    cand_s, cand_r = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_r, top, 1)
                best_s, best_r = cand_s, cand_r
            order = np.argsort(-best_s, axis=1, kind="stable")
            scores[qlo:qlo + qblock, :kk] = np.take_along_axis(best_s, order, axis=1)
            rows[qlo:qlo + qblock, :kk] = np.take_along_axis(best_r, order, axis=1)
        return scores, rows


class FaissIndex:
    """A faiss index over inner products (see the module docstring for the kinds)."""

    def __init__(self, vectors: np.ndarray, kind: str = "pq", nprobe: int = 16, hnsw_m: int = 32) -> None:
        faiss = import_faiss()
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        self.name = f"faiss-{kind}"
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 64
        elif kind == "ivf":
            nlist = max(1, min(int(2 * np.sqrt(n)), n // 39))  # faiss wants >= 39 training points per list
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            # k-means on a sample: 64 points per list place the centroids as well as all of them would
            sample = np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False)
            index.train(x[np.sort(sample)])
            index.nprobe = min(nprobe, nlist)
        elif kind == "pq" and n < PQ_MIN_VECTORS:  # too few to train the codebooks: exact search is exact
            index = faiss.IndexFlatIP(d)
            self.note = (f"{n:,} vectors: faiss-pq needs {PQ_MIN_VECTORS} to train its codebooks; "
                         "exact faiss-flat search used")
        elif kind == "pq":
            index = _pq_refine(faiss, x)
        else:
            raise NnlabError(f"unknown faiss index kind {kind!r} (flat, ivf, hnsw, pq)")
        index.add(x)
        self.index = index

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
        return scores, rows.astype(np.int64)


def _pq_refine(faiss, x: np.ndarray):
    """IndexPQFastScan (up to 64 sub-quantisers of 4 bits, trained on a sample) inside IndexRefineFlat."""
    n, d = x.shape
    subspaces = max(m for m in range(1, min(d, 64) + 1) if d % m == 0)  # they must split d evenly
    coarse = faiss.IndexPQFastScan(d, subspaces, 4, faiss.METRIC_INNER_PRODUCT)
    # 16 centroids per sub-quantiser: 50k training points fit them as well as the whole gallery would
    sample = np.random.default_rng(0).choice(n, size=min(n, 50_000), replace=False)
    coarse.train(x[np.sort(sample)])
    index = faiss.IndexRefineFlat(coarse)
    index.k_factor = REFINE_FACTOR
    return index


def import_faiss():
    """faiss, or an NnlabError saying how to install it."""
    try:
        import faiss  # optional extra (faiss-cpu), heavy: imported when a faiss index is asked for
    except ImportError:
        raise NnlabError(FAISS_MISSING) from None
    return faiss


def faiss_available() -> bool:
    try:
        import_faiss()
    except NnlabError:
        return False
    return True


def make_index(vectors: np.ndarray, backend: str = "auto") -> NumpyIndex | FaissIndex:
    """An index over unit `vectors`: `backend` one of BACKENDS; "auto" picks exact NumPy search below
    AUTO_FAISS_SIZE vectors and faiss-pq above (NumPy when faiss is missing: `index.note` says so)."""
    if backend not in BACKENDS:
        raise NnlabError(f"unknown search backend {backend!r} (one of {', '.join(BACKENDS)})")
    note = ""
    if backend == "auto":
        if len(vectors) < AUTO_FAISS_SIZE:
            backend = "numpy"
        elif faiss_available():
            backend = "faiss-pq"
        else:
            backend, note = "numpy", f"{len(vectors):,} vectors: exact NumPy search ({FAISS_MISSING})"
    index = NumpyIndex(vectors) if backend == "numpy" else FaissIndex(vectors, backend.removeprefix("faiss-"))
    index.note = note or getattr(index, "note", "")
    return index
