"""Synthetic datasets in embedding space, for demos, tests and benchmarks.

``concept_world`` mimics CLIP geometry: each concept has a direction shared by its images and
captions, each modality has its own offset (the "modality gap"), and samples add isotropic
noise. With the defaults, a matched image/caption pair has cosine ~0.32 (inside the paper
profile's [0.2, 0.45] window), a caption of another concept ~0.0, two images of one concept
~0.90 and of two concepts ~0.38.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POISON_KINDS = ("dirty", "clean")


@dataclass(frozen=True, eq=False)
class ConceptWorld:
    """A generated dataset of N image/caption embedding pairs.

    image_emb, text_emb : (N, d) float32, unit rows.
    concept : (N,) int64, the caption's concept (what the text says).
    image_concept : (N,) int64, the concept the image embedding shows (differs for dirty-label
        poisons).
    poisoned : (N,) bool, ground-truth poison flags.
    target : (N,) int64, each poison's target concept, -1 for benign rows.
    """

    image_emb: np.ndarray
    text_emb: np.ndarray
    concept: np.ndarray
    image_concept: np.ndarray
    poisoned: np.ndarray
    target: np.ndarray
    poisoned_concepts: np.ndarray
    kind: str
    seed: int


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def concept_world(
    n: int = 50_000,
    *,
    concepts: int = 1000,
    poisoned_concepts: int = 0,
    per_concept: int | None = None,
    dim: int = 64,
    kind: str = "dirty",
    concept_weight: float = 0.75,
    modality_weight: float = 0.75,
    noise: float = 0.35,
    text_drift: float = 1.0,
    seed: int = 0,
) -> ConceptWorld:
    """Generate C concepts with N/C samples each and poison C_P of them with m samples each.

    Parameters
    ----------
    n : number of pairs N (concept sizes differ by at most one).
    concepts : number of concepts C.
    poisoned_concepts : C_P, concepts whose captions get m poisons each; the targets are
        distinct concepts drawn at random (t != p), as in the paper's protocol.
    per_concept : m, poisons per poisoned concept; default round(0.0008 * N) as in the paper.
    dim : embedding dimension d.
    kind : "dirty" (the poison's image shows the target concept) or "clean" (clean-label-like:
        the image stays near its own concept, nudged slightly toward the target).
    concept_weight, modality_weight, noise : the geometry (see the module docstring).
    text_drift : how far a concept's caption direction departs from its image direction.
    seed : the generator seed; the same arguments give the same arrays.

    Returns
    -------
    ConceptWorld with float32 unit embeddings and ground-truth flags.
    """
    n = _check_int("n", n, 1)
    concepts = _check_int("concepts", concepts, 1)
    poisoned_concepts = _check_int("poisoned_concepts", poisoned_concepts, 0)
    dim = _check_int("dim", dim, 2)
    seed = _check_int("seed", seed, 0)
    if kind not in POISON_KINDS:
        raise ValueError(f"kind must be one of {POISON_KINDS}, got {kind!r}")
    if concepts > n:
        raise ValueError(f"concepts ({concepts}) cannot exceed n ({n})")
    m = (
        max(1, round(0.0008 * n))
        if per_concept is None
        else _check_int("per_concept", per_concept, 0)
    )
    smallest = n // concepts
    if poisoned_concepts > concepts or (poisoned_concepts > 0 and concepts < 2):
        raise ValueError(
            f"poisoned_concepts ({poisoned_concepts}) must be <= concepts ({concepts}), with at "
            "least two concepts so every poison has another target"
        )
    if poisoned_concepts and m > smallest:
        raise ValueError(
            f"per_concept m={m} exceeds the samples per concept ({smallest}); lower m or concepts"
        )

    rng = np.random.default_rng(seed)
    # Two orthonormal modality offsets; concept directions live in their orthogonal complement,
    # so the matched-pair cosine does not drift with the seed.
    gap, _ = np.linalg.qr(rng.normal(size=(dim, 2)))
    gap = gap.T

    def directions(count: int) -> np.ndarray:
        d = rng.normal(size=(count, dim))
        d -= (d @ gap.T) @ gap
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    centers = directions(concepts)
    # Captions see each concept from a slightly different direction than images do, so the
    # two graphs differ even without poisons (as CLIP's image and text spaces do).
    text_centers = centers + text_drift * directions(concepts)
    text_centers /= np.linalg.norm(text_centers, axis=1, keepdims=True)

    concept = np.sort(np.arange(n) % concepts).astype(np.int64)
    image_concept = concept.copy()
    poisoned = np.zeros(n, dtype=bool)
    target = np.full(n, -1, dtype=np.int64)

    chosen = rng.choice(concepts, size=poisoned_concepts, replace=False)
    starts = np.searchsorted(concept, np.arange(concepts))
    for p in chosen:
        t = int(rng.integers(concepts - 1))
        t += t >= p  # uniform over t != p
        rows = starts[p] + rng.choice(int(np.sum(concept == p)), size=m, replace=False)
        poisoned[rows] = True
        target[rows] = t
        if kind == "dirty":
            image_concept[rows] = t

    def sample(concept_ids: np.ndarray, modality: int) -> np.ndarray:
        table = centers if modality == 0 else text_centers
        x = concept_weight * table[concept_ids] + modality_weight * gap[modality]
        x += noise * rng.normal(size=(concept_ids.shape[0], dim)) / np.sqrt(dim)
        return x

    image = sample(image_concept, 0)
    if kind == "clean":
        clean_rows = np.flatnonzero(poisoned)
        image[clean_rows] += 0.1 * concept_weight * centers[target[clean_rows]]
    text = sample(concept, 1)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
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
