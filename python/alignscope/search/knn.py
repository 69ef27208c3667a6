"""The k nearest neighbours of every row of one set among the others: the layer every
neighbour-based screening score uses, exact or approximate, with the approximation's recall
measured rather than assumed.

``method``: ``"exact"`` (the engine's tiled top-k, O(N^2 d)), ``"ivf"`` (FAISS IVF-Flat),
``"hnsw"`` (FAISS HNSW) or ``"auto"``: exact when a timed probe of the exact search predicts it
finishes within ``budget_s``, IVF otherwise. An approximate search reports its recall@k against
the exact neighbours of a random sample of rows (the sample costs ``sample / N`` of one exact
search).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignscope.search.exact import faiss_index_params, topk

KNN_METHODS = ("exact", "ivf", "hnsw", "auto")
_FAISS_METHOD = {"ivf": "faiss-ivf", "hnsw": "faiss-hnsw"}
# Rows whose exact neighbours check an approximate search's recall.
RECALL_SAMPLE = 1000
# What "auto" allows the exact search: above it, IVF.
EXACT_BUDGET_S = 600.0
# Rows the timing probe of "auto" searches exactly (its cost is PROBE_ROWS / N of the search).
PROBE_ROWS = 1024


@dataclass
class Neighbours:
    """(N, k) neighbours of each row, best first, the row itself excluded.

    sims : float32 cosine similarities; idx : int64 row indices (-1 pads when fewer exist).
    method : "exact", "ivf" or "hnsw" (what ran). recall : recall@k of an approximate search
    on ``recall_sample`` rows, None for exact. params : the index parameters.
    """

    sims: np.ndarray
    idx: np.ndarray
    method: str
    recall: float | None = None
    recall_sample: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def first(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best columns (k <= the k searched)."""
        if k > self.idx.shape[1]:
            raise ValueError(f"{k} neighbours asked of a table of {self.idx.shape[1]}")
        return self.sims[:, :k], self.idx[:, :k]

    def describe(self) -> dict[str, Any]:
        """What summary.json records of the search."""
        out: dict[str, Any] = {"method": self.method, "k": int(self.idx.shape[1])}
        out.update(self.params)
        if self.recall is not None:
            out["recall_at_k"] = self.recall
            out["recall_sample"] = self.recall_sample
        return out


def self_neighbours(
    x: np.ndarray,
    k: int,
    *,
    method: str = "exact",
    budget_s: float = EXACT_BUDGET_S,
    sample: int = RECALL_SAMPLE,
    seed: int = 0,
) -> Neighbours:
    """The k nearest other rows of every row of ``x`` (N, d) by cosine similarity.

    Parameters
    ----------
    x : (N, d) float array (host memory; rows are normalised by the search).
    k : neighbours per row, capped at N - 1 (>= 1).
    method : see the module docstring.
    budget_s : "auto": the longest exact search it accepts.
    sample : rows whose exact neighbours measure an approximate search's recall.
    seed : the recall sample's seed.
    """
    if method not in KNN_METHODS:
        raise ValueError(f"knn method must be one of {', '.join(KNN_METHODS)}, got {method!r}")
    x = np.ascontiguousarray(x)
    n = x.shape[0]
    kk = min(int(k), n - 1)
    if kk < 1:
        raise ValueError("neighbour scores need at least two samples")
    chosen = method
    params: dict[str, Any] = {}
    if method == "auto":
        predicted = _predict_exact_seconds(x, kk)
        chosen = "exact" if predicted <= budget_s else "ivf"
        params["exact_seconds_predicted"] = round(predicted, 3)
    if chosen == "exact":
        sims, idx = topk(x, x, kk, exclude=np.arange(n))
        return Neighbours(sims, idx, "exact", params=params)
    sims, idx = topk(x, x, kk, exclude=np.arange(n), method=_FAISS_METHOD[chosen])
    params.update(faiss_index_params(_FAISS_METHOD[chosen], n, kk))
    # An IVF probe can return fewer than k rows (-1 pads); the scores index with every entry,
    # so those rows are searched exactly.
    short = np.flatnonzero((idx < 0).any(axis=1))
    if short.size:
        sims[short], idx[short] = topk(x[short], x, kk, exclude=short)
    params["rows_searched_exactly"] = int(short.size)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    _, truth = topk(x[rows], x, kk, exclude=rows)
    found = [
        np.intersect1d(a[a >= 0], b[b >= 0]).size for a, b in zip(idx[rows], truth, strict=True)
    ]
    recall = float(np.sum(found) / max(1, int((truth >= 0).sum())))
    return Neighbours(sims, idx, chosen, recall=recall, recall_sample=int(rows.size), params=params)


def _predict_exact_seconds(x: np.ndarray, k: int) -> float:
    """Seconds of the exact self-search, from the time of PROBE_ROWS queries against all rows."""
    n = x.shape[0]
    rows = np.arange(min(PROBE_ROWS, n))
    start = time.perf_counter()
    topk(x[rows], x, k, exclude=rows)
    return (time.perf_counter() - start) * n / rows.size
