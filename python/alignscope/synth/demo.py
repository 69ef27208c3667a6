"""The demo's world: the concept world plus LAION's image detail and the paper's poisons.

``alignscope demo`` prints Table 1 of the Implosion paper (Ding et al., CCS 2024) on synthetic
embeddings. In :func:`~alignscope.synth.concept_world` a photo is as simple as its caption, so
dirty-label poisons only add structure disparity and the structure term rises with C_P (the
well-separated regime of Theorem 4.2). Table 1 shows it falling slightly while feature AD rises.
Sec. 5.2 says why: the structure of benign training data is "already complex", and the poisons
bring "different but relatively stronger associations between text prompts and images".
:func:`demo_world` models both halves of that sentence with Eq. 1's structure term,
|D_img(x_i, x_k) - D_txt(y_i, y_k)| over all pairs:

- A LAION photo shows more than its caption says (background, other objects, style). Each
  natural image gets ``image_detail``: random, image-only content its caption lacks. It pulls
  the photo away from every other photo, so benign image distances exceed the caption distances
  and |D_img - D_txt| carries a positive offset on most pairs.
- A dirty-label image is Stable Diffusion's answer to "a photo of t" (Sec. 5.1): it shows t and
  nothing its prompt did not ask for, so it is as simple as a caption (base noise, no detail).
  Its distances to the other images shrink toward the caption-side distances: every pair it is
  in loses part of the offset. Its caption names p while it shows t, which on its own raises
  the term (Theorem 4.2's mechanism; the "uncoordinated directions" of Sec. 5.2), but the offset
  it removes is larger, so the structure term falls as C_P grows, while the feature term rises
  strongly (its image and caption are unrelated). It falls more than in Table 1 (-19% against
  -3.6% at C_P = 500): here a generated image has no detail at all, where Stable Diffusion
  invents some background.
- A clean-label image is a natural photo of p that Nightshade perturbs toward an anchor image
  generated from "a photo of t" (one anchor per target, as Nightshade's released generator
  does: github.com/Shawn-Shan/nightshade-release). Its embedding moves ``clean_shift`` of the
  way to that anchor's: it loses part of its detail and gains part of t, so its feature term
  rises less than dirty-label's while its structure term falls (Table 1 shows both).

Calibration, on benign data and Sec. 6 only, never on Table 1's poisoned rows:
``image_detail`` = 0.75 (as strong as the concept itself) puts the benign structure term at
Table 1's C_P = 0 value (0.149); the captions' drift is derived so a matched pair keeps the base
world's cosine (0.32, inside the paper profile's window; benign feature 0.51, Table 1: 0.514);
``clean_shift`` = 0.3 puts the median clean-label poison's image-caption cosine at the 21st
percentile of the benign ones, as Sec. 6 reports (dropping the lowest-scoring 50% of poisons
removes 21% of benign data).

Every draw is independent of C_P and of the poison kind: the benign rows, the concepts'
poisoning order, each concept's target and poison rows are the same for all of them, and the
C_P poisoned concepts are the first C_P of one random order. A demo table therefore compares
one dataset at growing C_P, and dirty- with clean-label on the same rows.
"""

from __future__ import annotations

import math

import numpy as np

from alignscope.synth.concepts import (
    GEOMETRY,
    ConceptWorld,
    _check_int,
    _check_plan,
    _geometry,
    _unit,
)

IMAGE_DETAIL = 0.75
CLEAN_SHIFT = 0.3
# The base world's matched-pair cosine (concept_world's GEOMETRY gives 0.319): a typical CLIP
# ViT-B/32 score of a LAION pair, inside the paper profile's [0.2, 0.45] window.
MATCHED_COSINE = 0.32


def _text_drift(image_detail: float) -> float:
    """How far caption directions depart from image directions so that a matched pair keeps
    MATCHED_COSINE: with weights a (concept), g (modality), s (noise) and detail e, a unit
    image and caption of one concept have cosine a^2 cos(u, v) / (|x| |y|), where
    |x|^2 = a^2 + g^2 + s^2 + e^2, |y|^2 = a^2 + g^2 + s^2 and cos(u, v) = 1 / sqrt(1 + drift^2)
    (the drift direction is random, hence nearly orthogonal)."""
    a, g, s, _ = GEOMETRY
    caption = a * a + g * g + s * s
    cos_uv = MATCHED_COSINE * math.sqrt(caption * (caption + image_detail**2)) / (a * a)
    if cos_uv > 1.0:
        top = math.sqrt((a * a / MATCHED_COSINE) ** 2 / caption - caption)
        top = math.floor(top * 100) / 100  # rounded down, so the bound it names is allowed
        raise ValueError(
            f"image_detail must be <= {top:.2f} so a matched pair can keep cosine "
            f"{MATCHED_COSINE}; got {image_detail}"
        )
    return math.sqrt(1.0 / cos_uv**2 - 1.0)


def _check_weight(name: str, value: object, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or (high is not None and value > high):
        span = ">= 0" if high is None else f"in [0, {high:g}]"
        raise ValueError(f"{name} must be {span}, got {value}")
    return value


def demo_world(
    n: int = 50_000,
    *,
    concepts: int = 1000,
    poisoned_concepts: int = 0,
    per_concept: int | None = None,
    dim: int = 64,
    kind: str = "dirty",
    image_detail: float = IMAGE_DETAIL,
    clean_shift: float = CLEAN_SHIFT,
    seed: int = 0,
) -> ConceptWorld:
    """Generate the demo's dataset: C concepts of N/C LAION-like pairs, C_P of them poisoned
    with m poisons each as the Implosion paper builds them (see the module docstring).

    Parameters
    ----------
    n : number of pairs N (concept sizes differ by at most one).
    concepts : number of concepts C.
    poisoned_concepts : C_P, the first C_P concepts of a random order (the same order for every
        C_P and kind); each poisoned concept p gets a random target t != p.
    per_concept : m, poisons per poisoned concept, replacing m of p's benign pairs; default
        round(0.0008 * N) as in the paper.
    dim : embedding dimension d.
    kind : "dirty" (the image is a generated image of t: base noise, no detail) or "clean"
        (p's own photo moved ``clean_shift`` of the way toward a generated anchor image of t).
    image_detail : weight of the image-only content of a natural photo; 0 makes photos as
        simple as ``concept_world``'s, where dirty-label poisons raise the structure term.
    clean_shift : how far (0 to 1) a clean-label image moves toward its anchor.
    seed : the generator seed; the same arguments give the same arrays.

    Returns
    -------
    ConceptWorld with float32 unit embeddings and ground-truth flags (``latent_emb`` None).
    """
    n, m = _check_plan(n, per_concept, concepts, poisoned_concepts, dim, kind)
    if dim < 3:
        # concept directions live beside the two modality offsets (concept_world draws
        # rounding noise there instead)
        raise ValueError(f"dim must be >= 3 (two dimensions hold the modality offsets), got {dim}")
    seed = _check_int("seed", seed, 0)
    image_detail = _check_weight("image_detail", image_detail)
    clean_shift = _check_weight("clean_shift", clean_shift, 1.0)
    drift = _text_drift(image_detail)
    a, g, s, _ = GEOMETRY
    rng = np.random.default_rng(seed)
    gap, centers, text_centers = _geometry(rng, dim, concepts, drift)  # concept_world's geometry

    # The poison plan, drawn in full before C_P is looked at (see the module docstring).
    order = rng.permutation(concepts)
    # uniform over t != p (with a single concept, t = p but nothing can be poisoned)
    skip = rng.integers(max(concepts - 1, 1), size=concepts)
    targets = (np.arange(concepts) + 1 + skip) % concepts
    concept = np.sort(np.arange(n) % concepts).astype(np.int64)
    starts = np.searchsorted(concept, np.arange(concepts))
    by_key = np.lexsort((rng.random(n), concept))  # rows of each concept in random order
    candidate = np.zeros(n, dtype=bool)
    candidate[by_key[np.arange(n) - starts[concept] < m]] = True  # concept is sorted

    def sample(table: np.ndarray, ids: np.ndarray, modality: int, spread: float) -> np.ndarray:
        x = a * table[ids] + g * gap[modality]
        return _unit(x + spread * rng.normal(size=(ids.size, dim)) / np.sqrt(dim))

    # Detail and noise are both isotropic, so one draw of their combined spread models both.
    image = sample(centers, concept, 0, math.hypot(s, image_detail))
    text = sample(text_centers, concept, 1, s)
    generated = sample(centers, targets[concept], 0, s)  # "a photo of t" for each row's p
    anchors = sample(centers, targets, 0, s)  # one Nightshade anchor per target

    chosen = order[:poisoned_concepts]
    poisoned = candidate & np.isin(concept, chosen)
    target = np.where(poisoned, targets[concept], -1).astype(np.int64)
    image_concept = concept.copy()
    if kind == "dirty":
        image[poisoned] = generated[poisoned]
        image_concept[poisoned] = target[poisoned]
    else:
        shifted = (1.0 - clean_shift) * image[poisoned] + clean_shift * anchors[concept[poisoned]]
        image[poisoned] = _unit(shifted)
    return ConceptWorld(
        image_emb=image.astype(np.float32),
        text_emb=text.astype(np.float32),
        concept=concept,
        image_concept=image_concept,
        poisoned=poisoned,
        target=target,
        poisoned_concepts=np.sort(chosen).astype(np.int64),
        kind=kind,
        seed=seed,
    )
