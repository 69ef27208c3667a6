"""Replication of training images in generated ones, measured as DCR (Somepalli et al.) and
the BiBadDiff paper (Sec. 6, Fig. 5) do, without their dense N x N similarity matrices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from alignscope._progress import ProgressArg
from alignscope.search.exact import APPROXIMATE, topk

PERCENTILES = (50, 75, 90, 95, 99)
# 0.5: DCR's replication threshold; 0.75: SSCD's ~90%-precision copy threshold (sscd_disc_mixup).
THRESHOLDS = (0.5, 0.75)


@dataclass(frozen=True, eq=False)
class ReplicationResult:
    """Generated -> training matches and the training set's own duplication.

    similarity, index : (n_generated, k) cosine similarity and training index of each
        generated item's k nearest training items, best first.
    duplicate_similarity, duplicate_index : (n_generated,) for each top-1 match, its nearest
        *other* training item (excluded by index), the train -> train baseline.
    """

    similarity: np.ndarray
    index: np.ndarray
    duplicate_similarity: np.ndarray
    duplicate_index: np.ndarray
    method: str = "engine"
    recall: float | None = None  # top-1 agreement with exact search (approximate methods)
    recall_sample: int = 0

    def summary(self) -> dict[str, Any]:
        """DCR-style statistics of generated -> train (top-1) and train -> train similarity."""

        def stats(x: np.ndarray) -> dict[str, float]:
            x = x[np.isfinite(x)]
            if x.size == 0:
                return {"count": 0}
            out = {"count": int(x.size), "mean": float(x.mean()), "std": float(x.std())}
            out.update({f"p{p}": float(np.percentile(x, p)) for p in PERCENTILES})
            out.update({f"fraction_above_{t}": float(np.mean(x > t)) for t in THRESHOLDS})
            return out

        out: dict[str, Any] = {
            "generated_to_train": stats(self.similarity[:, 0]),
            "train_to_train": stats(self.duplicate_similarity),
            "n_generated": int(self.similarity.shape[0]),
            "k": int(self.similarity.shape[1]),
            "method": self.method,
        }
        if self.recall is not None:
            out["recall_at_1_vs_exact"] = self.recall
            out["recall_sample"] = self.recall_sample
        return out


def replication(
    generated: object,
    training: object,
    k: int = 1,
    *,
    method: str = "engine",
    view: str | None = None,
    threads: int | None = None,
    progress: ProgressArg = False,
) -> ReplicationResult:
    """Match every generated embedding to its k most similar training embeddings.

    Parameters
    ----------
    generated : (n_g, d) float array or EmbeddingStore (e.g. SSCD descriptors of generations).
    training : (n_t, d) float array or EmbeddingStore, streamed in chunks.
    k : matches per generated item.
    method : "engine" (exact), "faiss" (exact IndexFlatIP), or "faiss-ivf" / "faiss-hnsw"
        (approximate; the result's ``recall`` is the top-1 agreement with exact search on a
        sample of 256 generated items).
    view : for stores: "sscd" (the default when present), "image" or "text".

    Returns
    -------
    ReplicationResult; ``summary()`` gives mean, std, percentiles and the fractions above 0.5
    and 0.75 for generated -> train and for the matched items' train -> train similarity.
    """
    sims, idx = topk(
        generated, training, k, method=method, view=view, threads=threads, progress=progress
    )
    matched = idx[:, 0]
    unique = np.unique(matched[matched >= 0])
    dup_sim = np.full(matched.shape[0], -np.inf, dtype=np.float32)
    dup_idx = np.full(matched.shape[0], -1, dtype=np.int64)
    if unique.size:
        queries = _rows(training, unique, view)
        s, i = topk(queries, training, 1, exclude=unique, method=method, view=view, threads=threads)
        where = np.searchsorted(unique, matched[matched >= 0])
        dup_sim[matched >= 0] = s[where, 0]
        dup_idx[matched >= 0] = i[where, 0]
    recall, sample = None, 0
    if method in APPROXIMATE:
        recall, sample = _recall(generated, training, idx[:, 0], view, threads)
    return ReplicationResult(sims, idx, dup_sim, dup_idx, method, recall, sample)


RECALL_SAMPLE = 256


def _recall(
    generated: object, training: object, approx: np.ndarray, view: str | None, threads: int | None
) -> tuple[float, int]:
    """Share of a sample of queries whose approximate top-1 is the exact top-1."""
    n = approx.shape[0]
    rows = np.sort(np.random.default_rng(0).choice(n, size=min(n, RECALL_SAMPLE), replace=False))
    _, exact = topk(_rows(generated, rows, view), training, 1, view=view, threads=threads)
    return float(np.mean(exact[:, 0] == approx[rows])), int(rows.size)


def _rows(x: object, ids: np.ndarray, view: str | None) -> np.ndarray:
    from alignscope.io.store import EmbeddingStore
    from alignscope.search.exact import store_view

    if isinstance(x, EmbeddingStore):
        return x.gather(ids, store_view(x, view))
    return np.asarray(x)[ids]
