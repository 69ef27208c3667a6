"""The easy concept world: equal-size concepts in CLIP-like geometry.

``concept_world`` mimics CLIP geometry: each concept has a direction shared by its images and
captions, each modality has its own offset (the "modality gap"), and samples add isotropic
noise. With the defaults, a matched image/caption pair has cosine ~0.32 (inside the paper
profile's [0.2, 0.45] window), a caption of another concept ~0.0, two images of one concept
~0.90 and of two concepts ~0.38. Its poisons are pure (a dirty-label image shows only the
target), which makes screening easy; :mod:`alignscope.synth.realistic` adds what real data has.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._rows import unit_rows

POISON_KINDS = ("dirty", "clean")
# concept_weight, modality_weight, noise, text_drift (see the module docstring)
GEOMETRY = (0.75, 0.75, 0.35, 1.0)


@dataclass(frozen=True, eq=False)
class ConceptWorld:
    """A generated dataset of N image/caption embedding pairs.

    image_emb, text_emb : (N, d) float32, unit rows.
    concept : (N,) int64, the caption's concept (what the text says).
    image_concept : (N,) int64, the concept the image embedding shows (differs for dirty-label
        poisons).
    poisoned : (N,) bool, ground-truth poison flags.
    target : (N,) int64, each poison's target concept, -1 for benign rows.
    latent_emb : (N, d) float32 or None, a second image view standing in for the VAE latent
        (pooled): its own concept directions, and every poison looks like its *target* there
        (Nightshade moves the latent toward t while CLIP still sees p).
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
    latent_emb: np.ndarray | None = None


def _unit(x: np.ndarray) -> np.ndarray:
    """float64 rows scaled to unit norm (:func:`alignscope._rows.unit_rows`), for the
    generators of this package."""
    return unit_rows(x, np.float64)


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_plan(
    n: object, per_concept: object, concepts: int, poisoned_concepts: int, dim: int, kind: str
) -> tuple[int, int]:
    """Check a concept world's sizes; return N and m (per_concept, default round(0.0008 N) as
    in the paper)."""
    n = _check_int("n", n, 1)
    m = (
        max(1, round(0.0008 * n))
        if per_concept is None
        else _check_int("per_concept", per_concept, 0)
    )
    concepts = _check_int("concepts", concepts, 1)
    poisoned_concepts = _check_int("poisoned_concepts", poisoned_concepts, 0)
    _check_int("dim", dim, 2)
    if kind not in POISON_KINDS:
        raise ValueError(f"kind must be one of {POISON_KINDS}, got {kind!r}")
    if concepts > n:
        raise ValueError(f"concepts ({concepts}) cannot exceed n ({n})")
    if poisoned_concepts > concepts or (poisoned_concepts > 0 and concepts < 2):
        raise ValueError(
            f"poisoned_concepts ({poisoned_concepts}) must be <= concepts ({concepts}), with at "
            "least two concepts so every poison has another target"
        )
    if poisoned_concepts and m > n // concepts:
        raise ValueError(
            f"per_concept m={m} exceeds the samples per concept ({n // concepts}); lower m or "
            "concepts"
        )
    return n, m


def _geometry(
    rng: np.random.Generator, dim: int, concepts: int, text_drift: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gap, centers, text_centers) of a concept world: two orthonormal modality offsets
    (rows of ``gap``), unit concept directions in their orthogonal complement (so the
    matched-pair cosine does not drift with the seed), and unit caption directions that see
    each concept ``text_drift`` away from its image direction (CLIP's image and text spaces
    differ even without poisons)."""
    gap = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T

    def directions(count: int) -> np.ndarray:
        d = rng.normal(size=(count, dim))
        d -= (d @ gap.T) @ gap
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    centers = directions(concepts)
    text_centers = centers + text_drift * directions(concepts)
    return gap, centers, text_centers / np.linalg.norm(text_centers, axis=1, keepdims=True)


def concept_world(
    n: int = 50_000,
    *,
    concepts: int = 1000,
    poisoned_concepts: int = 0,
    per_concept: int | None = None,
    dim: int = 64,
    kind: str = "dirty",
    concept_weight: float = GEOMETRY[0],
    modality_weight: float = GEOMETRY[1],
    noise: float = GEOMETRY[2],
    text_drift: float = GEOMETRY[3],
    seed: int = 0,
    latent_view: bool = False,
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
    latent_view : also return ``latent_emb``, a second image view (see ConceptWorld).

    Returns
    -------
    ConceptWorld with float32 unit embeddings and ground-truth flags.
    """
    n, m = _check_plan(n, per_concept, concepts, poisoned_concepts, dim, kind)
    seed = _check_int("seed", seed, 0)
    world = _World(
        n,
        concepts,
        poisoned_concepts,
        m,
        dim,
        kind,
        concept_weight,
        modality_weight,
        noise,
        text_drift,
        np.random.default_rng(seed),
    )
    image, text = world.embed(0, n, world.rng)
    latent = world.latent(np.random.default_rng([seed, 2])) if latent_view else None
    return ConceptWorld(
        image_emb=image,
        text_emb=text,
        concept=world.concept,
        image_concept=world.image_concept,
        poisoned=world.poisoned,
        target=world.target,
        poisoned_concepts=np.sort(world.chosen).astype(np.int64),
        kind=kind,
        seed=seed,
        latent_emb=latent,
    )


class _World:
    """The plan (which rows show which concept, which are poisoned) and the geometry of a
    concept world; embeddings of any row range are drawn on demand."""

    def __init__(
        self,
        n: int,
        concepts: int,
        poisoned_concepts: int,
        m: int,
        dim: int,
        kind: str,
        concept_weight: float,
        modality_weight: float,
        noise: float,
        text_drift: float,
        rng: np.random.Generator,
    ) -> None:
        self.rng = rng
        self.dim = dim
        self.kind = kind
        self.weights = (concept_weight, modality_weight, noise)
        self.gap, self.centers, self.text_centers = _geometry(rng, dim, concepts, text_drift)

        self.concept = np.sort(np.arange(n) % concepts).astype(np.int64)
        self.image_concept = self.concept.copy()
        self.poisoned = np.zeros(n, dtype=bool)
        self.target = np.full(n, -1, dtype=np.int64)
        self.chosen = rng.choice(concepts, size=poisoned_concepts, replace=False)
        starts = np.searchsorted(self.concept, np.arange(concepts))
        sizes = np.diff(np.append(starts, n))
        for p in self.chosen:
            t = int(rng.integers(concepts - 1))
            t += t >= p  # uniform over t != p
            rows = starts[p] + rng.choice(int(sizes[p]), size=m, replace=False)
            self.poisoned[rows] = True
            self.target[rows] = t
            if kind == "dirty":
                self.image_concept[rows] = t

    def latent(self, rng: np.random.Generator) -> np.ndarray:
        """The second image view of every row: own random concept directions (drawn from
        ``rng``, so the other views do not change), poisons showing their target."""
        count, dim = self.centers.shape
        directions = rng.normal(size=(count, dim))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        shown = np.where(self.poisoned, self.target, self.image_concept)
        concept_weight, _, noise = self.weights
        x = concept_weight * directions[shown] + noise * rng.normal(
            size=(shown.size, dim)
        ) / np.sqrt(dim)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def embed(
        self, start: int, stop: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unit image and text embeddings (float32) of rows start..stop-1."""
        concept_weight, modality_weight, noise = self.weights

        def sample(table: np.ndarray, ids: np.ndarray, modality: int) -> np.ndarray:
            x = concept_weight * table[ids] + modality_weight * self.gap[modality]
            x += noise * rng.normal(size=(ids.shape[0], self.dim)) / np.sqrt(self.dim)
            return x

        image = sample(self.centers, self.image_concept[start:stop], 0)
        if self.kind == "clean":
            local = np.flatnonzero(self.poisoned[start:stop])
            targets = self.target[start:stop][local]
            image[local] += 0.1 * concept_weight * self.centers[targets]
        text = sample(self.text_centers, self.concept[start:stop], 1)
        image /= np.linalg.norm(image, axis=1, keepdims=True)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
        return image.astype(np.float32), text.astype(np.float32)


def write_concept_world(
    path: str | os.PathLike[str],
    n: int,
    *,
    shard_rows: int = 250_000,
    concepts: int = 1000,
    poisoned_concepts: int = 0,
    per_concept: int | None = None,
    dim: int = 64,
    kind: str = "dirty",
    seed: int = 0,
    dtype: Any = np.float16,
    progress: bool = False,
) -> Path:
    """Write a concept world of N pairs as a clip-retrieval store, shard by shard, so N can
    exceed memory (the plan costs O(N) integers; each shard O(shard_rows * dim)).

    The geometry and the poison plan match :func:`concept_world` with the same arguments;
    the per-sample noise is drawn per shard, so the embeddings differ from it. Ground truth
    (concept, image_concept, poisoned, target) goes to ``truth.npz`` beside the shards.
    """
    from alignscope.io import StoreWriter

    n, m = _check_plan(n, per_concept, concepts, poisoned_concepts, dim, kind)
    rng = np.random.default_rng(seed)
    world = _World(n, concepts, poisoned_concepts, m, dim, kind, *GEOMETRY, rng)
    writer = StoreWriter(path, dtype)
    if writer.existing_shards():
        raise ValueError(f"{str(path)!r} already holds shards; write into an empty directory")
    shard_seeds = np.random.SeedSequence(seed).spawn(-(-n // shard_rows))
    starts = range(0, n, shard_rows)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="writing shards", unit="shard", file=sys.stderr)
    for start, shard_seed in zip(starts, shard_seeds, strict=False):
        stop = min(n, start + shard_rows)
        image, text = world.embed(start, stop, np.random.default_rng(shard_seed))
        writer.add_shard(image, text)
    np.savez(
        Path(path) / "truth.npz",
        concept=world.concept,
        image_concept=world.image_concept,
        poisoned=world.poisoned,
        target=world.target,
    )
    return Path(path)
