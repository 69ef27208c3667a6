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
  n_p / N (on concept_world: AUROC 0.59 global vs 1.0 local; on realistic_world the local
  form falls to 0.64: bench_screen.py); two k-NN searches.
- ``k_distance`` / ``lid``: local density in CLIP image space (cosine distance to the k-th
  neighbour; the LID maximum-likelihood estimate); catches outliers; one k-NN search.
- ``relative_alignment``: how far a pair's raw CLIP score falls below that of the pairs with
  the nearest captions (:func:`alignscope.screen.relative.relative_alignment`); dirty-label
  poisons, robust to concepts' differing CLIP scores and to generic captions; one k-NN search.
- ``view_residual``: the whitened residual of the second view given the CLIP neighbours'
  second views (:func:`~alignscope.screen.relative.view_residual`); one k-NN search.
- ``view_density``: how much tighter a sample's neighbourhood is in the whitened second view
  than in CLIP (:func:`~alignscope.screen.relative.view_density`); clean-label poisons, which
  Nightshade pulls toward one anchor latent per concept; two k-NN searches.
- ``purification``: how much further the image's VAE latent moves under mild purification
  than its CLIP neighbours' do (:func:`~alignscope.screen.relative.purification_shift`);
  clean-label (adversarial) poisons; needs the latent and purified views (embed --vae).
- ``combined``: the default ranking. The concentration-weighted min-p combination
  (:mod:`alignscope.screen.combine`) of the detectors among relative_alignment, view_density,
  cross_view and purification that the inputs allow; needs no knowledge of the attack.
  relative_alignment is weighted by the concentration of its studentized residual
  (:meth:`~alignscope.screen.relative.AlignmentResidual.studentized`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._progress import ProgressArg
from alignscope._rows import unit_rows
from alignscope.metrics import alignment_difficulty
from alignscope.metrics.profiles import paper_bounds
from alignscope.metrics.sampled import feature_distance
from alignscope.screen.combine import combined_score
from alignscope.screen.relative import (
    REFERENCE_K,
    Knn,
    alignment_residual,
    exact_knn,
    paired_cosines,
    purification_shift,
    view_density,
    view_residual,
)
from alignscope.search.knn import KNN_METHODS, Neighbours, SpanRunner, self_neighbours
from alignscope.search.rows import Rows, as_rows

SCORES = (
    "combined",
    "relative_alignment",
    "alignment",
    "d_s",
    "ad_xy",
    "concept_consistency",
    "cross_view",
    "view_residual",
    "view_density",
    "purification",
    "k_distance",
    "lid",
)
# What `alignscope screen` and compute_scores compute when not told: the combined ranking
# first, then what explains it and the classics that need no second view.
DEFAULT_SCORES = (
    "combined",
    "relative_alignment",
    "alignment",
    "concept_consistency",
    "k_distance",
    "lid",
)
# Scores that need a second image view.
VIEW_SCORES = {"cross_view", "view_residual", "view_density", "purification"}
# What the combined score combines, when the inputs allow each: one detector per attack family.
COMBINED_INPUTS = ("relative_alignment", "view_density", "cross_view", "purification")
# Exact O(N^2) per-sample terms up to this N; landmarks beyond.
EXACT_MAX_N = 50_000


@dataclass
class ScoreTable:
    """Scores by name, each (N,) float64, plus how each was computed."""

    n: int
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    # How each view's neighbours were found (method, k, index parameters, measured recall).
    neighbours: dict[str, dict[str, Any]] = field(default_factory=dict)


class NeighbourCache:
    """A neighbour source (:data:`alignscope.screen.relative.Knn`) that searches each view once
    per compute_scores call, for the largest k any score will ask of it (``plan``), with
    ``method`` ("exact", "ivf", "hnsw" or "auto": :func:`alignscope.search.knn.self_neighbours`),
    and slices smaller requests from that table.

    ``checkpoint``: a folder in which each view's search keeps its index and finished spans
    (``<checkpoint>/<view label>/``), so a killed run resumes its searches; ``progress`` and
    ``runner`` (who searches the spans: :data:`alignscope.search.knn.SpanRunner`) are passed
    to each search."""

    def __init__(
        self,
        method: str = "exact",
        plan: dict[str, int] | None = None,
        *,
        checkpoint: str | Path | None = None,
        progress: ProgressArg = False,
        runner: SpanRunner | None = None,
    ) -> None:
        if method not in KNN_METHODS:
            raise ValueError(f"knn must be one of {', '.join(KNN_METHODS)}, got {method!r}")
        self.method = method
        self.plan = dict(plan or {})
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.progress = progress
        self.runner = runner
        self.tables: dict[str, Neighbours] = {}

    def __call__(self, label: str, x: np.ndarray | Rows, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = as_rows(x, label).n
        kk = min(k, n - 1)
        if kk < 1:
            raise ValueError("neighbour scores need at least two samples")
        have = self.tables.get(label)
        if have is None or have.idx.shape[1] < kk:
            have = self_neighbours(
                x,
                max(kk, self.plan.get(label, kk)),
                method=self.method,
                checkpoint=None if self.checkpoint is None else self.checkpoint / label,
                progress=self.progress,
                runner=self.runner,
            )
            self.tables[label] = have
        return have.first(kk)

    def describe(self) -> dict[str, dict[str, Any]]:
        return {label: table.describe() for label, table in self.tables.items()}


def _per_sample(a: Any, b: Any, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    n = a.shape[0] if hasattr(a, "shape") else a.n
    if n <= EXACT_MAX_N:
        r = alignment_difficulty(a, b, alpha=alpha, per_sample=True)
        return r.per_sample.d_ab, r.per_sample.d_s, "exact"
    r = alignment_difficulty(a, b, alpha=alpha, method="sampled", per_sample="landmarks", seed=seed)
    return r.per_sample.d_ab, r.per_sample.d_s, f"landmarks (S=1024, seed {r.seed})"


def local_structure_disagreement(
    view1: np.ndarray | Rows, view2: np.ndarray | Rows, k: int, *, knn: Knn | None = None
) -> np.ndarray:
    """Per sample, the mean |d_1(i, j) - d_2(i, j)| over j in the union of its k nearest
    neighbours in each view (cosine distances; a neighbour found in both counts twice)."""
    n = as_rows(view1, "image").n
    if min(k, n - 1) < 1:
        raise ValueError("cross_view needs at least two samples")
    search = knn or exact_knn
    _, near1 = search("image", view1, k)
    _, near2 = search("second", view2, k)
    both = np.concatenate([near1, near2], axis=1)
    return np.abs(_neighbour_cos(view1, view1, both) - _neighbour_cos(view2, view2, both)).mean(
        axis=1
    )


# Rows per chunk of neighbour gathers: memory stays at chunk * k * d, not N * k * d.
_CHUNK = 8192


def _neighbour_cos(x: np.ndarray | Rows, y: np.ndarray | Rows, idx: np.ndarray) -> np.ndarray:
    """(N, k) float64 cosines <x_i, y_idx[i, j]>, in chunks of rows (rows read and normalised
    a chunk at a time: memory O(chunk k d), whatever N)."""
    rx, ry = as_rows(x, "x"), as_rows(y, "y")
    out = np.empty(idx.shape)
    for s, e in rx.spans(_CHUNK):
        a = unit_rows(rx.read(s, e), np.float64)
        near = idx[s:e]
        b = unit_rows(ry.gather(near).reshape(-1, ry.d), np.float64).reshape(*near.shape, ry.d)
        out[s:e] = np.einsum("id,ikd->ik", a, b)
        rx.release()
    return out


def compute_scores(
    image_emb: np.ndarray | Rows,
    text_emb: np.ndarray | Rows | None = None,
    *,
    scores: tuple[str, ...] = DEFAULT_SCORES,
    second_view: np.ndarray | None = None,
    purified_view: np.ndarray | None = None,
    k: int = 10,
    alpha: float = 0.8,
    seed: int = 0,
    knn: str = "exact",
    checkpoint: str | Path | None = None,
    progress: ProgressArg = False,
    runner: SpanRunner | None = None,
) -> ScoreTable:
    """Suspicion scores of N pairs.

    Parameters
    ----------
    image_emb, text_emb : (N, d) CLIP embeddings: host arrays, or
        :class:`~alignscope.search.rows.Rows` of a store's views (read in chunks, never whole,
        for every score but d_s and ad_xy); text_emb is needed by alignment, d_s, ad_xy,
        relative_alignment and concept_consistency.
    second_view : (N, d2) a second image view for ``cross_view`` and ``view_residual`` (e.g.
        pooled VAE latents), and the latent of ``purification``.
    purified_view : (N, d2) the pooled latents of the purified images (``purification``).
    k : neighbours for concept_consistency, cross_view, view_residual, purification and the
        density scores (relative_alignment uses its own reference neighbourhood).
    knn : how neighbours are found: "exact" (default), "ivf", "hnsw" or "auto" (exact when it
        fits a time budget); each view is searched once; ``table.neighbours`` records how, and
        an approximate search's measured recall@k.
    checkpoint : a folder for the searches' indexes and finished spans: a killed call rerun
        with the same inputs resumes its searches (:func:`alignscope.search.knn.self_neighbours`).
    progress : progress bars on stderr for the searches.
    runner : who searches the query spans (:data:`alignscope.search.knn.SpanRunner`; None: this
        process); the same neighbours whoever searches.
    """
    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise ValueError(f"unknown score {unknown[0]!r}; choose from {', '.join(SCORES)}")
    image_emb = as_rows(image_emb, "image_emb", "image")
    if text_emb is not None:
        text_emb = as_rows(text_emb, "text_emb", "text")
    n = image_emb.n
    table = ScoreTable(n)
    combined_inputs = (
        _combined_inputs(text_emb, second_view, purified_view) if ("combined" in scores) else ()
    )
    wanted = set(scores) | set(combined_inputs)
    # Each view is searched once, for the largest k a wanted score asks of it.
    plan = {"image": k, "text": k, "second": k, "second_whitened": k}
    if "combined" in scores:
        plan["image"] = plan["text"] = 2 * k  # duplicates dropped from 2k (_distinct_neighbours)
    if "relative_alignment" in wanted:
        plan["text"] = max(plan["text"], REFERENCE_K)
    search = NeighbourCache(knn, plan, checkpoint=checkpoint, progress=progress, runner=runner)
    need_text = {
        "alignment", "d_s", "ad_xy", "concept_consistency", "relative_alignment"
    } & wanted  # fmt: skip
    if need_text and text_emb is None:
        raise ValueError(
            "alignment, relative_alignment, d_s, ad_xy and concept_consistency need text embeddings"
        )
    if text_emb is not None and text_emb.n != n:
        raise ValueError(
            f"image_emb has {n} rows but text_emb has {text_emb.n}; "
            "row i of both must describe the same pair"
        )
    if need_text and n > 1 and _all_rows_equal(text_emb):  # type: ignore[arg-type]
        raise ValueError(
            f"every text embedding is the same, so {', '.join(sorted(need_text))} would score "
            "nothing (a dataset without captions?); embed the captions, or screen with "
            "k_distance, lid or cross_view"
        )
    if {"d_s", "ad_xy"} & set(scores):
        d_ab, d_s, how = _per_sample(*_pair_source(image_emb, text_emb), alpha, seed)  # type: ignore[arg-type]
        parts = {
            "alignment": (d_ab, "exact"),
            "d_s": (d_s, how),
            "ad_xy": (alpha * d_ab + (1 - alpha) * d_s, how),
        }
        for name in ("alignment", "d_s", "ad_xy"):
            if name in scores:
                table.scores[name], table.methods[name] = parts[name]
    elif "alignment" in scores:
        # D_img:txt alone is O(N d): the per-sample AD path would also compute the O(N^2 d)
        # structure term and discard it (11 s of a 53 s screen at N = 50,000).
        table.scores["alignment"] = feature_distance(
            paired_cosines(image_emb, text_emb),  # type: ignore[arg-type]
            paper_bounds().feature,
        )
        table.methods["alignment"] = "exact"
    _view_scores(table, wanted, image_emb, second_view, purified_view, k, search)
    structure: dict[str, np.ndarray] = {}
    if "relative_alignment" in wanted:
        residual = alignment_residual(image_emb, text_emb, knn=search)  # type: ignore[arg-type]
        table.scores["relative_alignment"] = residual.score
        if "combined" in scores:
            structure["relative_alignment"] = residual.studentized()
        table.methods["relative_alignment"] = (
            f"{_how(search, 'text')} caption k-NN, k={min(REFERENCE_K, n - 1)}, 10% trimmed"
        )
    need_image_knn = {"concept_consistency", "k_distance", "lid"} & set(scores)
    if need_image_knn:
        kk = min(k, n - 1)
        sims, idx = search("image", image_emb, k)
        if "concept_consistency" in scores:
            caption_agreement = _neighbour_cos(text_emb, text_emb, idx).mean(axis=1)  # type: ignore[arg-type]
            _, tidx = search("text", text_emb, k)  # type: ignore[arg-type]
            image_agreement = _neighbour_cos(image_emb, image_emb, tidx).mean(axis=1)
            table.scores["concept_consistency"] = 1.0 - 0.5 * (caption_agreement + image_agreement)
            table.methods["concept_consistency"] = f"{_how(search, 'image')} k-NN, k={kk}"
        dist = np.clip(1.0 - sims.astype(np.float64), 1e-12, None)  # cosine distances, ascending
        if "k_distance" in scores:
            table.scores["k_distance"], table.methods["k_distance"] = dist[:, -1], f"k={kk}"
        if "lid" in scores:
            ratios = np.log(dist / dist[:, -1:])
            mean = ratios[:, :-1].mean(axis=1) if kk > 1 else np.zeros(n)
            table.scores["lid"] = np.where(mean < 0, -1.0 / np.minimum(mean, -1e-12), 0.0)
            table.methods["lid"] = f"MLE, k={kk}"
    if "combined" in scores:
        _combine(table, combined_inputs, image_emb, text_emb, k, search, structure)
    table.neighbours = search.describe()
    # Scores computed only as the combined score's inputs are reported too (they explain it).
    order = [name for name in SCORES if name in table.scores]
    table.scores = {name: table.scores[name] for name in order}
    table.methods = {name: table.methods[name] for name in order}
    return table


def _pair_source(image: Rows, text: Rows) -> tuple[Any, Any]:
    """What the per-sample AD terms read: the store itself when both views are its image and
    text views (the engine streams it in chunks: landmarks beyond EXACT_MAX_N stay O(chunk)),
    else the two arrays."""
    store = image.store
    if store is not None and text.store is store and (image.view, text.view) == ("image", "text"):
        return store, None
    return image.whole(), text.whole()


def _all_rows_equal(rows: Rows) -> bool:
    """Whether every row equals the first (read a span at a time)."""
    first = rows.read(0, 1)
    for s, e in rows.spans():
        if not bool(np.all(rows.read(s, e) == first)):
            rows.release()
            return False
    rows.release()
    return True


def _combined_inputs(
    text_emb: np.ndarray | None, second_view: np.ndarray | None, purified: np.ndarray | None
) -> tuple[str, ...]:
    have = {
        "relative_alignment": text_emb is not None,
        "view_density": second_view is not None,
        "cross_view": second_view is not None,
        "purification": second_view is not None and purified is not None,
    }
    chosen = tuple(name for name in COMBINED_INPUTS if have[name])
    if not chosen:
        raise ValueError("the combined score needs text embeddings, a second image view, or both")
    return chosen


def _view_scores(
    table: ScoreTable,
    wanted: set[str],
    image_emb: Rows,
    second_view: np.ndarray | None,
    purified_view: np.ndarray | None,
    k: int,
    search: Knn,
) -> None:
    """cross_view, view_residual, view_density and purification, whichever ``wanted`` names."""
    n = image_emb.n
    kk = min(k, n - 1)
    for name in ("cross_view", "view_residual", "view_density", "purification"):
        if name not in wanted:
            continue
        if second_view is None:
            raise ValueError(f"{name} needs a second image view (second_view=)")
        if np.shape(second_view)[0] != n:
            raise ValueError(f"second_view has {np.shape(second_view)[0]} rows, image_emb {n}")
    view_scores = {
        "cross_view": (local_structure_disagreement, f"neighbourhood D_s, k={kk} per view"),
        "view_residual": (view_residual, f"whitened residual, k={kk}"),
        "view_density": (
            view_density,
            f"CLIP minus whitened-view k-NN distance percentile, k={kk}",
        ),
    }
    for name, (score, how) in view_scores.items():
        if name in wanted:
            table.scores[name] = score(image_emb, second_view, k, knn=search)  # type: ignore[operator]
            table.methods[name] = how
    if "purification" in wanted:
        if purified_view is None or np.shape(purified_view) != np.shape(second_view):
            raise ValueError(
                "purification needs the purified latents (purified_view=) of the shape of "
                "second_view: embed with --vae, which writes both"
            )
        table.scores["purification"] = purification_shift(
            image_emb,
            second_view,  # type: ignore[arg-type]
            purified_view,
            k,
            knn=search,
        )
        table.methods["purification"] = f"log latent shift minus CLIP peers' median, k={kk}"


# Cosine above which two rows count as one (a repeated caption, a copied image).
DUPLICATE_COS = 1.0 - 1e-6


def _distinct_neighbours(
    x: np.ndarray | Rows, k: int, search: Knn | None = None, label: str = ""
) -> np.ndarray:
    """(N, k) the k nearest rows of each row that are not duplicates of it (-1 where fewer
    exist among its 2k nearest). Web captions repeat word for word; rows sharing a caption
    are neighbours whatever a score says of them, so they would make any caption score look
    concentrated."""
    n = as_rows(x, label or "x").n
    kk = min(k, n - 1)
    sims, idx = (search or exact_knn)(label, x, 2 * kk)
    idx = np.where(sims < DUPLICATE_COS, idx, -1)
    # Stable sort puts the kept neighbours first, nearest first; then keep kk columns.
    order = np.argsort(idx < 0, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)[:, :kk]


def _combine(
    table: ScoreTable,
    inputs: tuple[str, ...],
    image_emb: Rows,
    text_emb: Rows | None,
    k: int,
    search: Knn,
    structure: dict[str, np.ndarray],
) -> None:
    graphs = [_distinct_neighbours(image_emb, k, search, "image")]
    if text_emb is not None:
        graphs.append(_distinct_neighbours(text_emb, k, search, "text"))
    values, weights = combined_score(
        {name: table.scores[name] for name in inputs}, graphs, structure
    )
    table.scores["combined"] = values
    table.methods["combined"] = "min-p of " + ", ".join(
        f"{name} (weight {weights[name]:.2f})" for name in inputs
    )


def _how(search: NeighbourCache, label: str) -> str:
    """The search that found ``label``'s neighbours, as the methods strings name it."""
    table = search.tables.get(label)
    return table.method if table is not None else search.method
