"""A screening benchmark world with the factors real caption data has, each a named parameter.

Three views of N rows: CLIP image and caption embeddings (the modality gap and concept
geometry of :mod:`alignscope.synth.concepts`) and a pooled VAE-latent view. Each factor of
:class:`Factors` can be switched on alone, so a benchmark can say which one hurts a score:

- ``zipf``: concept frequencies fall as rank^-zipf (noun frequencies in captions are Zipfian);
  the poisoned concepts are drawn from the ``frequent_pool`` x C_P most frequent ones (the
  Implosion paper poisons concepts drawn from the 500 most frequent nouns).
- ``hierarchy``: concepts come in groups of about 20 (animals, vehicles, ...); two concepts of
  one group have direction cosine ``hierarchy`` in every view.
- ``spread``: per-concept lognormal scale of the noise and of how far the caption direction
  departs from the image direction, so concepts differ in spread and typical CLIP score.
- ``two_concept`` / ``generic``: shares of benign captions that name a second concept (the
  image shows both) or no concept clearly ("image 0412.jpg", "a photo"; a few templates).
- ``mix``: a dirty-label poison image shows the target with weight lambda ~ U(1 - mix, 1) and
  the caption's (source) concept with 1 - lambda.
- ``clip_shift`` / ``latent_shift``: a clean-label (Nightshade-like) poison's image shows its
  own concept p; its CLIP view moves ``clip_shift`` toward the target t, its latent view a
  fraction phi ~ U(*latent_shift) of the way to the latent of its concept's anchor (one
  image of t per poisoned concept, as Nightshade optimises every poison of p toward one
  anchor); (1, 1): all the way.
- ``latent_semantics`` / ``style``: the concept weight of the latent view (CLIP's is 0.75) and
  the weight of one of 8 style directions shared across concepts (latent at full weight, CLIP
  at a third): the latent view is organised by style as much as by meaning.

Poisons are extra rows of their source concept p (m per poisoned concept, all with one target
t != p drawn at random), and the rows are shuffled. Nothing in a score may depend on these
constants; the benchmark reports each factor alone so a score tuned to one shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from alignscope.synth.concepts import GEOMETRY, POISON_KINDS, _check_int, _unit

STYLES = 8  # style directions shared across concepts
GENERIC_TEMPLATES = 5  # generic captions cluster on a few templates
GROUP_SIZE = 20  # concepts per hierarchy group
SECOND_WEIGHT = 0.6  # the second concept's weight in a two-concept image and caption


@dataclass(frozen=True)
class Factors:
    """The factors of :func:`realistic_world`; each field's off value is in :data:`EASY`."""

    zipf: float = 1.0
    frequent_pool: float = 2.0
    hierarchy: float = 0.5
    spread: float = 0.4
    two_concept: float = 0.15
    generic: float = 0.1
    mix: float = 0.4
    clip_shift: float = 0.03
    latent_shift: tuple[float, float] = (0.3, 0.7)
    latent_semantics: float = 0.45
    style: float = 0.6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


REALISTIC = Factors()
# Every factor off: equal-size concepts, pure poisons, a latent view as clean as CLIP's, a
# clean-label latent moved all the way and its CLIP view moved as concept_world moves it.
EASY = Factors(
    zipf=0.0,
    frequent_pool=0.0,
    hierarchy=0.0,
    spread=0.0,
    two_concept=0.0,
    generic=0.0,
    mix=0.0,
    clip_shift=0.1,
    latent_shift=(1.0, 1.0),
    latent_semantics=GEOMETRY[0],
    style=0.0,
)
# The factor groups the benchmark switches on one at a time (fields of Factors).
FACTOR_GROUPS = {
    "zipf": ("zipf", "frequent_pool"),
    "hierarchy": ("hierarchy",),
    "spread": ("spread",),
    "two_concept": ("two_concept",),
    "generic": ("generic",),
    "mixed_poisons": ("mix",),
    "partial_clean_label": ("clip_shift", "latent_shift"),
    "weak_latent": ("latent_semantics", "style"),
}


def only(group: str) -> Factors:
    """:data:`EASY` with one factor group of :data:`FACTOR_GROUPS` set as in :data:`REALISTIC`."""
    if group not in FACTOR_GROUPS:
        raise ValueError(f"unknown factor group {group!r}; choose from {', '.join(FACTOR_GROUPS)}")
    return replace(EASY, **{f: getattr(REALISTIC, f) for f in FACTOR_GROUPS[group]})


@dataclass(frozen=True, eq=False)
class RealisticWorld:
    """N generated rows in three views, with their ground truth.

    image_emb, text_emb : (N, dim) float32 unit rows (CLIP image and caption views).
    latent_emb : (N, latent_dim) float32 unit rows (the pooled VAE-latent view).
    concept : (N,) int64, the concept the caption names first (a poison's source p); concept
        0 is the most frequent.
    second_concept : (N,) int64, a two-concept caption's second concept, else -1.
    generic : (N,) bool, captions that name no concept clearly.
    style : (N,) int64, the style each image has.
    poisoned : (N,) bool; target : (N,) int64, a poison's target t, else -1.
    poisoned_concepts : (C_P,) int64, sorted.
    """

    image_emb: np.ndarray
    text_emb: np.ndarray
    latent_emb: np.ndarray
    concept: np.ndarray
    second_concept: np.ndarray
    generic: np.ndarray
    style: np.ndarray
    poisoned: np.ndarray
    target: np.ndarray
    poisoned_concepts: np.ndarray
    kind: str
    factors: Factors
    seed: int


def _check_factors(f: Factors) -> None:
    for name in ("zipf", "frequent_pool", "hierarchy", "spread", "two_concept", "generic", "mix"):
        if not np.isfinite(getattr(f, name)) or getattr(f, name) < 0:
            raise ValueError(f"factor {name} must be a finite number >= 0, got {getattr(f, name)}")
    if f.hierarchy >= 1 or f.mix > 1 or f.two_concept + f.generic > 1:
        raise ValueError(
            "hierarchy must be < 1, mix <= 1 and two_concept + generic <= 1; got "
            f"{f.hierarchy}, {f.mix}, {f.two_concept} + {f.generic}"
        )
    low, high = f.latent_shift
    if not 0 <= low <= high <= 1:
        raise ValueError(
            f"latent_shift must be (low, high) with 0 <= low <= high <= 1, got {low, high}"
        )


def realistic_world(
    n: int = 20_000,
    *,
    concepts: int | None = None,
    poisoned_concepts: int = 0,
    per_concept: int | None = None,
    kind: str = "dirty",
    dim: int = 64,
    latent_dim: int = 64,
    factors: Factors = REALISTIC,
    seed: int = 0,
) -> RealisticWorld:
    """Generate N rows (benign rows and C_P * m poisons) in three views.

    Parameters
    ----------
    n : rows N, poisons included.
    concepts : C; default N // 50.
    poisoned_concepts : C_P, source concepts with m poisons each.
    per_concept : m; default round(0.0008 * N) as in the Implosion paper.
    kind : "dirty" (caption p, image shows t, mixed with p by ``factors.mix``) or "clean"
        (image of p; its latent moves toward t, its CLIP view barely).
    dim, latent_dim : dimensions of the CLIP views and of the latent view.
    factors : :class:`Factors` (:data:`REALISTIC` by default, :data:`EASY` all off).
    seed : the same arguments give the same arrays.
    """
    n = _check_int("n", n, 2)
    concepts = n // 50 if concepts is None else _check_int("concepts", concepts, 2)
    concepts = _check_int("concepts", concepts, 2)
    c_p = _check_int("poisoned_concepts", poisoned_concepts, 0)
    m = (
        max(1, round(0.0008 * n))
        if per_concept is None
        else _check_int("per_concept", per_concept, 1)
    )
    dim = _check_int("dim", dim, 8)
    latent_dim = _check_int("latent_dim", latent_dim, 8)
    seed = _check_int("seed", seed, 0)
    if kind not in POISON_KINDS:
        raise ValueError(f"kind must be one of {POISON_KINDS}, got {kind!r}")
    if not isinstance(factors, Factors):
        raise TypeError(f"factors must be a synth.Factors, got {type(factors).__name__}")
    _check_factors(factors)
    if c_p > concepts - 1:
        raise ValueError(f"poisoned_concepts ({c_p}) must be < concepts ({concepts})")
    benign = n - c_p * m
    if benign < concepts:
        raise ValueError(f"{c_p} x {m} poisons leave {benign} benign rows for {concepts} concepts")
    return _generate(n, concepts, c_p, m, kind, dim, latent_dim, factors, seed)


def _generate(
    n: int,
    concepts: int,
    c_p: int,
    m: int,
    kind: str,
    dim: int,
    latent_dim: int,
    f: Factors,
    seed: int,
) -> RealisticWorld:
    rng = np.random.default_rng(seed)
    concept_weight, modality_weight, noise, text_drift = GEOMETRY

    # The plan: benign rows by Zipf frequency, poisons of frequent concepts.
    freq = (np.arange(concepts) + 1.0) ** -f.zipf
    freq /= freq.sum()
    benign = n - c_p * m
    first = rng.choice(concepts, size=benign, p=freq)
    pool = (
        concepts if f.frequent_pool == 0 else min(concepts, max(c_p, round(f.frequent_pool * c_p)))
    )
    chosen = rng.choice(pool, size=c_p, replace=False)
    targets = rng.integers(concepts - 1, size=c_p)
    targets += targets >= chosen  # uniform over t != p
    by_concept = np.argsort(chosen)  # sorted: a poison's anchor is searchsorted(chosen, p)
    chosen, targets = chosen[by_concept], targets[by_concept]
    concept = np.concatenate([first, np.repeat(chosen, m)])
    target = np.concatenate([np.full(benign, -1), np.repeat(targets, m)])
    poisoned = target >= 0
    draw = rng.random(benign)
    second = np.full(n, -1)
    two = np.flatnonzero(draw < f.two_concept)
    other = rng.choice(concepts - 1, size=two.size, p=None)
    second[two] = other + (other >= first[two])
    generic = np.zeros(n, dtype=bool)
    generic[np.flatnonzero((draw >= f.two_concept) & (draw < f.two_concept + f.generic))] = True
    style = rng.integers(STYLES, size=n)

    # Directions: a modality gap, hierarchy groups, per-concept spread and caption drift.
    gap, _ = np.linalg.qr(rng.normal(size=(dim, 2)))
    gap = gap.T

    def directions(count: int, width: int, groups: np.ndarray | None, project: bool) -> np.ndarray:
        d = rng.normal(size=(count, width))
        if groups is not None and f.hierarchy > 0:
            shared = rng.normal(size=(int(groups.max()) + 1, width))
            d = np.sqrt(f.hierarchy) * _unit(shared)[groups] + np.sqrt(1 - f.hierarchy) * _unit(d)
        if project:
            d -= (d @ gap.T) @ gap
        return _unit(d)

    group = rng.integers(max(1, round(concepts / GROUP_SIZE)), size=concepts)
    image_dir = directions(concepts, dim, group, True)
    drift = text_drift * np.exp(f.spread * rng.normal(size=concepts))
    text_dir = _unit(image_dir + drift[:, None] * directions(concepts, dim, None, True))
    latent_dir = directions(concepts, latent_dim, group, False)
    generic_dir = directions(GENERIC_TEMPLATES, dim, None, True)
    style_clip = directions(STYLES, dim, None, True)
    style_latent = directions(STYLES, latent_dim, None, False)
    scale = np.exp(f.spread * rng.normal(size=concepts))  # per-concept noise scale

    # What each row's image shows: its concept, a second one, or (poisons) a target.
    shown = concept.copy()
    weight = np.ones(n)  # weight of ``shown``
    extra = second.copy()  # a second concept in the image, weight ``extra_weight``
    extra_weight = np.where(second >= 0, SECOND_WEIGHT, 0.0)
    latent_mix = np.zeros(n)  # clean-label: latent fraction moved toward the target
    rows = np.flatnonzero(poisoned)
    if kind == "dirty":
        lam = rng.uniform(1 - f.mix, 1, size=rows.size)
        shown[rows], weight[rows] = target[rows], lam
        extra[rows], extra_weight[rows] = concept[rows], 1 - lam
    else:
        low, high = f.latent_shift
        latent_mix[rows] = rng.uniform(low, high, size=rows.size)

    def content(table: np.ndarray) -> np.ndarray:
        x = weight[:, None] * table[shown]
        has = extra >= 0
        x[has] += extra_weight[has, None] * table[extra[has]]
        return x

    sigma = noise * scale[shown]
    image = concept_weight * content(image_dir) + modality_weight * gap[0]
    image += f.style / 3 * style_clip[style]
    if kind == "clean":
        image[rows] += f.clip_shift * concept_weight * image_dir[target[rows]]
    image += sigma[:, None] * rng.normal(size=(n, dim)) / np.sqrt(dim)

    caption = text_dir[concept].copy()
    has = second >= 0
    caption[has] += SECOND_WEIGHT * text_dir[second[has]]
    template = rng.integers(GENERIC_TEMPLATES, size=n)
    caption[generic] = 0.3 * caption[generic] + generic_dir[template[generic]]
    text = concept_weight * caption + modality_weight * gap[1]
    text += noise * scale[concept][:, None] * rng.normal(size=(n, dim)) / np.sqrt(dim)

    semantic = _unit(content(latent_dir))
    latent = f.latent_semantics * semantic + f.style * style_latent[style]
    latent += sigma[:, None] * rng.normal(size=(n, latent_dim)) / np.sqrt(latent_dim)
    if kind == "clean":
        # Nightshade pulls each poison's latent toward the latent of one anchor image of t per
        # poisoned concept (style and noise included), a fraction phi of the way.
        anchor = np.searchsorted(chosen, concept[rows])
        a_style = rng.integers(STYLES, size=c_p)
        anchors = f.latent_semantics * latent_dir[targets] + f.style * style_latent[a_style]
        anchors += (
            (noise * scale[targets])[:, None]
            * rng.normal(size=(c_p, latent_dim))
            / np.sqrt(latent_dim)
        )
        moved = latent_mix[rows, None]
        latent[rows] = (1 - moved) * _unit(latent[rows]) + moved * _unit(anchors)[anchor]

    order = rng.permutation(n)  # real data is not sorted by concept or poison
    return RealisticWorld(
        image_emb=_unit(image[order]).astype(np.float32),
        text_emb=_unit(text[order]).astype(np.float32),
        latent_emb=_unit(latent[order]).astype(np.float32),
        concept=concept[order].astype(np.int64),
        second_concept=second[order].astype(np.int64),
        generic=generic[order],
        style=style[order].astype(np.int64),
        poisoned=poisoned[order],
        target=target[order].astype(np.int64),
        poisoned_concepts=chosen.astype(np.int64),
        kind=kind,
        factors=f,
        seed=seed,
    )
