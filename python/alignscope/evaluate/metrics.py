"""The Implosion paper's generation metrics (Sec. 5.1) and Nightshade's bleed-through sets.

- Generation Accuracy: % of generated images whose CLIP score (raw cosine of image and prompt
  embeddings, not the x100 clipped "CLIPScore") exceeds 0.236, the 10th percentile of benign
  SD1.5 generations.
- Generation Aesthetics: % of images whose LAION aesthetics score exceeds 6.5.
- Model Utility: % of images above both thresholds.
- Bleed-through (Nightshade Sec. 5): concepts that are not poisoned but whose CLIP text
  embedding lies within L2 distance 4.8 of a poisoned concept's. The distance is on the
  unnormalised text features (on unit vectors it could never exceed 2).

Everything here is numpy; the model work lives in ``run.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CLIP_THRESHOLD = 0.236
AESTHETICS_THRESHOLD = 6.5
BLEED_THROUGH_DISTANCE = 4.8
BENIGN_SD15_CLIP = (0.273, 0.0276)  # mean, std of benign SD1.5 (Implosion Sec. 5.1)


def _scores(name: str, values: Any, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-image scores, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} scores for {n} images")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name}[{bad}] is {arr[bad]}: scores must be finite")
    return arr


def generation_metrics(
    clip_scores: Any,
    aesthetics: Any | None = None,
    *,
    clip_threshold: float = CLIP_THRESHOLD,
    aesthetics_threshold: float = AESTHETICS_THRESHOLD,
) -> dict[str, Any]:
    """Generation Accuracy, Aesthetics and Model Utility of a set of images.

    Parameters
    ----------
    clip_scores : (n,) raw cosine similarity of each image with its prompt.
    aesthetics : (n,) aesthetics scores, or None (then only accuracy is reported).

    Returns
    -------
    dict with ``count``, ``clip_mean``, ``clip_std``, ``accuracy`` (fraction with CLIP >
    threshold) and, given aesthetics, ``aesthetics_mean``, ``aesthetics`` (fraction above its
    threshold) and ``utility`` (fraction above both). Fractions are None for zero images.
    """
    clip = _scores("clip_scores", clip_scores)
    n = clip.shape[0]
    accurate = clip > clip_threshold
    out: dict[str, Any] = {
        "count": n,
        "clip_mean": float(clip.mean()) if n else None,
        "clip_std": float(clip.std()) if n else None,
        "accuracy": float(accurate.mean()) if n else None,
    }
    if aesthetics is not None:
        aes = _scores("aesthetics", aesthetics, n)
        pretty = aes > aesthetics_threshold
        out["aesthetics_mean"] = float(aes.mean()) if n else None
        out["aesthetics"] = float(pretty.mean()) if n else None
        out["utility"] = float((accurate & pretty).mean()) if n else None
    return out


def bleed_through_concepts(
    text_features: Any,
    concepts: Sequence[str],
    poisoned: Sequence[str],
    *,
    threshold: float = BLEED_THROUGH_DISTANCE,
) -> dict[str, str]:
    """Unpoisoned concepts within ``threshold`` (L2) of a poisoned one in CLIP text space.

    Parameters
    ----------
    text_features : (n_concepts, d) unnormalised CLIP text features of the concept names
        (the word itself, no prompt template), row i for ``concepts[i]``. The threshold is on
        the scale of these features, so it belongs to one backbone (the 4.8 default: the
        scoring CLIP, ViT-B/32 unless chosen otherwise).
    concepts : the evaluated concept names.
    poisoned : the poisoned concept names (a subset of ``concepts`` or not; those absent from
        ``concepts`` are ignored).

    Returns
    -------
    {related concept: the nearest poisoned concept} for every unpoisoned concept whose nearest
    poisoned concept is closer than ``threshold``.
    """
    feats = np.asarray(text_features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] != len(concepts):
        raise ValueError(
            f"text_features must be ({len(concepts)}, d), one row per concept; got {feats.shape}"
        )
    index = {c: i for i, c in enumerate(concepts)}
    hit = [index[p] for p in dict.fromkeys(poisoned) if p in index]
    if not hit:
        return {}
    sq = (feats * feats).sum(axis=1)
    dist2 = sq[:, None] + sq[None, hit] - 2.0 * feats @ feats[hit].T
    dist = np.sqrt(np.maximum(dist2, 0.0))
    nearest = dist.argmin(axis=1)
    poisoned_set = {concepts[j] for j in hit}
    return {
        c: concepts[hit[int(nearest[i])]]
        for i, c in enumerate(concepts)
        if c not in poisoned_set and dist[i, nearest[i]] < threshold
    }


def split_metrics(
    image_concepts: Sequence[str],
    clip_scores: Any,
    aesthetics: Any | None,
    *,
    poisoned: Sequence[str] = (),
    bleed_through: Sequence[str] = (),
    clip_threshold: float = CLIP_THRESHOLD,
    aesthetics_threshold: float = AESTHETICS_THRESHOLD,
) -> dict[str, dict[str, Any]]:
    """The metrics over all images and split by concept group, as the paper's tables do.

    Groups: ``all``; ``clean`` (every unpoisoned concept, the paper's "Clean" column) and
    ``poisoned`` when poisoned concepts are given; ``bleed_through`` (the unpoisoned concepts
    related to a poisoned one, a subset of ``clean``) when related concepts are given.
    """
    n = len(image_concepts)
    clip = _scores("clip_scores", clip_scores, n)
    aes = None if aesthetics is None else _scores("aesthetics", aesthetics, n)
    names = np.asarray(list(image_concepts), dtype=object)
    pois = np.isin(names, list(poisoned))
    bleed = np.isin(names, list(bleed_through)) & ~pois
    groups = {"all": np.ones(n, dtype=bool)}
    if len(poisoned):
        groups["clean"] = ~pois
        groups["poisoned"] = pois
    if len(bleed_through):
        groups["bleed_through"] = bleed
    return {
        name: generation_metrics(
            clip[mask],
            None if aes is None else aes[mask],
            clip_threshold=clip_threshold,
            aesthetics_threshold=aesthetics_threshold,
        )
        for name, mask in groups.items()
    }


def poisoned_prompts(manifest: Any) -> list[str]:
    """The concepts whose prompts a poison manifest attacks.

    Concept attacks (dirty-label, Nightshade) poison the prompt of the source concept; all-to-one
    attacks (relabel, BadNets, WaNet) relabel rows as the target class, whose prompt is attacked.

    Parameters
    ----------
    manifest : a ``poison_manifest.parquet`` path or a dict of its columns (``poisoned``,
        ``method``, ``source_concept``, ``target_concept``).
    """
    from alignscope.poison.methods import CONCEPT_METHODS

    need = ("poisoned", "method", "source_concept", "target_concept")
    if not isinstance(manifest, dict):
        from alignscope.io.manifest import read_manifest

        manifest = read_manifest(manifest, need)
    missing = set(need) - set(manifest)
    if missing:
        raise ValueError(f"poison manifest lacks the columns {sorted(missing)}")
    out: dict[str, None] = {}
    for flag, method, source, target in zip(
        manifest["poisoned"],
        manifest["method"],
        manifest["source_concept"],
        manifest["target_concept"],
        strict=True,
    ):
        if flag:
            out[source if method in CONCEPT_METHODS else target] = None
    return list(out)
