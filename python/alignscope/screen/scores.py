"""Per-sample suspicion scores; higher always means more suspicious.

- ``alignment``: D_img:txt, the paper's Defence 1 (a CLIP filter); catches dirty-label; O(N d).
- ``d_s``: per-sample structure AD (Defence 2); separates little on its own (the paper's Fig.
  9b); O(N^2 d) exact up to N = 50,000, landmarks (O(N S d)) beyond.
- ``ad_xy``: alpha D_img:txt + (1 - alpha) D_s (Eq. 4); as alignment; costs as d_s.
- ``concept_consistency``: one minus the agreement of a caption with the captions of its
  image's k nearest images, averaged with the agreement of an image with the images of its
  caption's k nearest captions; catches dirty-label and mislabels; two exact k-NN searches.
- ``cross_view``: structure disagreement between two *image* views (CLIP and the pooled VAE
  latent, or any second view), D_s restricted to each sample's neighbourhood: the mean over
  the union of its k nearest neighbours in both views of |d_1(i, j) - d_2(i, j)| (raw cosine
  distances). Nightshade moves the latent toward the target while CLIP still sees the source,
  so a poison's neighbours differ between the views. The global D_s of Eq. 4 dilutes that by
  n_p / N (on the synthetic benchmark: AUROC 0.59 global vs 1.0 local); two k-NN searches.
- ``k_distance`` / ``lid``: local density in CLIP image space (cosine distance to the k-th
  neighbour; the LID maximum-likelihood estimate); catches outliers; one k-NN search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignscope._rows import unit_rows
from alignscope.metrics import alignment_difficulty
from alignscope.search import topk

SCORES = ("alignment", "d_s", "ad_xy", "concept_consistency", "cross_view", "k_distance", "lid")
# Exact O(N^2) per-sample terms up to this N; landmarks beyond.
EXACT_MAX_N = 50_000


@dataclass
class ScoreTable:
    """Scores by name, each (N,) float64, plus how each was computed."""

    n: int
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)


def _per_sample(a: Any, b: Any, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    n = a.shape[0] if hasattr(a, "shape") else a.n
    if n <= EXACT_MAX_N:
        r = alignment_difficulty(a, b, alpha=alpha, per_sample=True)
        return r.per_sample.d_ab, r.per_sample.d_s, "exact"
    r = alignment_difficulty(a, b, alpha=alpha, method="sampled", per_sample="landmarks", seed=seed)
    return r.per_sample.d_ab, r.per_sample.d_s, f"landmarks (S=1024, seed {r.seed})"


def local_structure_disagreement(view1: np.ndarray, view2: np.ndarray, k: int) -> np.ndarray:
    """Per sample, the mean |d_1(i, j) - d_2(i, j)| over j in the union of its k nearest
    neighbours in each view (cosine distances; a neighbour found in both counts twice)."""
    n = view1.shape[0]
    kk = min(k, n - 1)
    if kk < 1:
        raise ValueError("cross_view needs at least two samples")
    _, near1 = topk(view1, view1, kk, exclude=np.arange(n))
    _, near2 = topk(view2, view2, kk, exclude=np.arange(n))
    both = np.concatenate([near1, near2], axis=1)
    a, b = unit_rows(view1, np.float64), unit_rows(view2, np.float64)
    return np.abs(_neighbour_cos(a, a, both) - _neighbour_cos(b, b, both)).mean(axis=1)


# Rows per chunk of neighbour gathers: memory stays at chunk * k * d, not N * k * d.
_CHUNK = 8192


def _neighbour_cos(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(N, k) cosines <x_i, y_idx[i, j]> of unit rows, in chunks of rows."""
    out = np.empty(idx.shape)
    for s in range(0, idx.shape[0], _CHUNK):
        e = s + _CHUNK
        out[s:e] = np.einsum("id,ikd->ik", x[s:e], y[idx[s:e]])
    return out


def compute_scores(
    image_emb: np.ndarray,
    text_emb: np.ndarray | None = None,
    *,
    scores: tuple[str, ...] = (
        "alignment",
        "d_s",
        "ad_xy",
        "concept_consistency",
        "k_distance",
        "lid",
    ),
    second_view: np.ndarray | None = None,
    k: int = 10,
    alpha: float = 0.8,
    seed: int = 0,
) -> ScoreTable:
    """Suspicion scores of N pairs.

    Parameters
    ----------
    image_emb, text_emb : (N, d) CLIP embeddings (host arrays); text_emb is needed by
        alignment, d_s, ad_xy and concept_consistency.
    second_view : (N, d2) a second image view for ``cross_view`` (e.g. pooled VAE latents).
    k : neighbours for concept_consistency and the density scores.
    """
    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise ValueError(f"unknown score {unknown[0]!r}; choose from {', '.join(SCORES)}")
    n = image_emb.shape[0]
    table = ScoreTable(n)
    need_text = {"alignment", "d_s", "ad_xy", "concept_consistency"} & set(scores)
    if need_text and text_emb is None:
        raise ValueError("alignment, d_s, ad_xy and concept_consistency need text embeddings")
    if need_text and n > 1 and bool(np.all(np.asarray(text_emb) == np.asarray(text_emb)[:1])):
        raise ValueError(
            f"every text embedding is the same, so {', '.join(sorted(need_text))} would score "
            "nothing (a dataset without captions?); embed the captions, or screen with "
            "k_distance, lid or cross_view"
        )
    if {"alignment", "d_s", "ad_xy"} & set(scores):
        d_ab, d_s, how = _per_sample(image_emb, text_emb, alpha, seed)
        parts = {
            "alignment": (d_ab, "exact"),
            "d_s": (d_s, how),
            "ad_xy": (alpha * d_ab + (1 - alpha) * d_s, how),
        }
        for name in ("alignment", "d_s", "ad_xy"):
            if name in scores:
                table.scores[name], table.methods[name] = parts[name]
    if "cross_view" in scores:
        if second_view is None:
            raise ValueError("cross_view needs a second image view (second_view=)")
        if np.shape(second_view)[0] != n:
            raise ValueError(f"second_view has {np.shape(second_view)[0]} rows, image_emb {n}")
        table.scores["cross_view"] = local_structure_disagreement(image_emb, second_view, k)
        table.methods["cross_view"] = f"neighbourhood D_s, k={min(k, n - 1)} per view"
    need_image_knn = {"concept_consistency", "k_distance", "lid"} & set(scores)
    if need_image_knn:
        kk = min(k, n - 1)
        if kk < 1:
            raise ValueError("neighbour scores need at least two samples")
        sims, idx = topk(image_emb, image_emb, kk, exclude=np.arange(n))
        if "concept_consistency" in scores:
            t = unit_rows(text_emb, np.float64)  # type: ignore[arg-type]
            a = unit_rows(image_emb, np.float64)
            caption_agreement = _neighbour_cos(t, t, idx).mean(axis=1)
            _, tidx = topk(text_emb, text_emb, kk, exclude=np.arange(n))
            image_agreement = _neighbour_cos(a, a, tidx).mean(axis=1)
            table.scores["concept_consistency"] = 1.0 - 0.5 * (caption_agreement + image_agreement)
            table.methods["concept_consistency"] = f"exact k-NN, k={kk}"
        dist = np.clip(1.0 - sims.astype(np.float64), 1e-12, None)  # cosine distances, ascending
        if "k_distance" in scores:
            table.scores["k_distance"], table.methods["k_distance"] = dist[:, -1], f"k={kk}"
        if "lid" in scores:
            ratios = np.log(dist / dist[:, -1:])
            mean = ratios[:, :-1].mean(axis=1) if kk > 1 else np.zeros(n)
            table.scores["lid"] = np.where(mean < 0, -1.0 / np.minimum(mean, -1e-12), 0.0)
            table.methods["lid"] = f"MLE, k={kk}"
    return table
