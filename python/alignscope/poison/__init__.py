"""Poisoning datasets for the papers' attacks, written with a manifest of what was done.

:func:`poison_dataset` plans, applies and writes a poisoned copy of a dataset plus
``poison_manifest.parquet``. Concept attacks (Implosion / Nightshade protocol) poison the
most frequent concepts toward other concepts: ``dirty-label`` pairs an image of the target
with the original caption, ``nightshade`` perturbs the image toward an anchor of the target
in a VAE's latent space (clean label). Trigger attacks (BiBadDiff) relabel a fraction of the
rows to one target, with no trigger (``relabel``) or a BadNets-1, BadNets-2 or WaNet trigger.
The plans, the per-row methods and the triggers are exported for use on their own.
"""

from alignscope.poison.anchors import generate_anchor, load_pipeline
from alignscope.poison.concepts import (
    Vocabulary,
    caption_concepts,
    concept_frequencies,
    load_vocabulary,
    make_vocabulary,
    select_concepts,
)
from alignscope.poison.methods import (
    CONCEPT_METHODS,
    METHODS,
    Poisoned,
    dirty_label,
    measurements,
    relabel,
    triggered,
)
from alignscope.poison.nightshade import ShadeResult, candidate_filter, load_lpips, load_vae, shade
from alignscope.poison.plans import PoisonPlan, plan_all_to_one, plan_concepts
from alignscope.poison.run import PoisonReport, poison_dataset
from alignscope.poison.triggers import (
    TRIGGERS,
    apply_trigger,
    badnets1,
    badnets2,
    wanet,
    wanet_grid,
)

__all__ = [
    "CONCEPT_METHODS",
    "METHODS",
    "TRIGGERS",
    "PoisonPlan",
    "PoisonReport",
    "Poisoned",
    "ShadeResult",
    "Vocabulary",
    "apply_trigger",
    "badnets1",
    "badnets2",
    "candidate_filter",
    "caption_concepts",
    "concept_frequencies",
    "dirty_label",
    "generate_anchor",
    "load_lpips",
    "load_pipeline",
    "load_vae",
    "load_vocabulary",
    "make_vocabulary",
    "measurements",
    "plan_all_to_one",
    "plan_concepts",
    "poison_dataset",
    "relabel",
    "select_concepts",
    "shade",
    "triggered",
    "wanet",
    "wanet_grid",
]
