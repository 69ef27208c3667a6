"""Synthetic datasets in embedding space, for demos, tests and benchmarks.

- :func:`concept_world` (``concepts``): the easy world. Equal-size concepts, isotropic noise,
  every caption names its concept, poisons are pure. The AD engine's tests and demos use it.
- :func:`realistic_world` (``realistic``): the screening benchmark's world. Each of its factors
  (Zipf-imbalanced concepts, a concept hierarchy, per-concept spread, two-concept and generic
  captions, poisons drawn from the frequent concepts, mixed dirty-label images, partial
  clean-label latent shifts, a weak-semantics latent view with a shared style factor) is a
  named parameter; ``EASY`` switches them all off, ``REALISTIC`` on.
- :func:`demo_world` (``demo``): what ``alignscope demo`` runs: concept_world's geometry plus
  what the paper's data and poisons do to Eq. 1 (benign photos carry image-only detail,
  generated poison images do not), so it shows Table 1's trends.
"""

from alignscope.synth.concepts import (
    GEOMETRY,
    POISON_KINDS,
    ConceptWorld,
    concept_world,
    write_concept_world,
)
from alignscope.synth.demo import demo_world
from alignscope.synth.realistic import (
    EASY,
    FACTOR_GROUPS,
    REALISTIC,
    Factors,
    RealisticWorld,
    only,
    realistic_world,
)

__all__ = [
    "EASY",
    "FACTOR_GROUPS",
    "GEOMETRY",
    "POISON_KINDS",
    "REALISTIC",
    "ConceptWorld",
    "Factors",
    "RealisticWorld",
    "concept_world",
    "demo_world",
    "only",
    "realistic_world",
    "write_concept_world",
]
