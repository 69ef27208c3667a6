"""What ``evaluate`` does: the settings of a run (:class:`EvalConfig`) and of its optional
sections, BiBadDiff's G1-G4 dissection (:class:`Dissection`) and the diffusion classifier
(:class:`Classification`). Each ``check`` refuses a bad setting before any model loads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignscope.evaluate.classifiers import ZERO_SHOT, is_checkpoint_spec
from alignscope.evaluate.detectors import TEMPLATE_TRIGGERS
from alignscope.evaluate.dissection import (
    BIBADDIFF_GUIDANCE,
    BIBADDIFF_STEPS,
    BIBADDIFF_TEMPLATE,
    DEFAULT_IMAGES,
    SAMPLERS,
)
from alignscope.evaluate.generate import GenerationSettings
from alignscope.evaluate.metrics import (
    AESTHETICS_THRESHOLD,
    BLEED_THROUGH_DISTANCE,
    CLIP_THRESHOLD,
)

DEFAULT_CLIP = "open_clip:ViT-B-32:openai"
DEFAULT_AESTHETICS_CLIP = "open_clip:ViT-L-14:openai"


@dataclass
class Dissection:
    """BiBadDiff's dissection of generations for ``target_class``'s prompt.

    The images are generated with BiBadDiff's settings, not the evaluation's: ``guidance`` 5,
    ``steps`` 50 of its DDIM ``sampler`` ("pipeline": the model's own scheduler); the
    evaluation's seed, batch and image size. ``images`` is 20 by default, the paper's 1,000
    with the "bibaddiff" preset (:data:`alignscope.evaluate.dissection.PRESETS`). What the
    ``classifier`` and ``trigger`` choices mean for comparing with the paper:
    :mod:`alignscope.evaluate.dissection`.
    """

    target_class: str
    class_names: list[str]
    trigger: str = "badnets-1"  # badnets-1 | badnets-2 | picture-patch | a TorchScript file
    # "clip" (zero-shot with the scoring CLIP) | torchvision:NAME:WEIGHTS | timm:... | TorchScript
    classifier: str = ZERO_SHOT
    images: int = DEFAULT_IMAGES
    p_t: float | None = None
    template: str = BIBADDIFF_TEMPLATE  # the poisoned captions' prompt (poison.methods)
    threshold: float | None = None  # trigger detector threshold (None: the detector's default)
    guidance: float = BIBADDIFF_GUIDANCE
    steps: int = BIBADDIFF_STEPS
    sampler: str = "ddim"  # ddim (BiBadDiff's) | pipeline (the model's own scheduler)
    pattern: str | None = None  # badnets-2, picture-patch: the poisoning's --pattern image

    def check(self) -> None:
        if self.target_class not in self.class_names:
            raise ValueError(
                f"dissection target_class {self.target_class!r} is not one of class_names"
            )
        if self.images < 1:
            raise ValueError(f"dissection images must be >= 1, got {self.images}")
        if self.steps < 1:
            raise ValueError(f"dissection steps must be >= 1, got {self.steps}")
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ValueError(f"dissection guidance must be finite and >= 0, got {self.guidance}")
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"dissection sampler must be {' or '.join(SAMPLERS)}, got {self.sampler!r}"
            )
        if self.p_t is not None and not 0.0 < self.p_t <= 1.0:
            raise ValueError(f"p_t must be in (0, 1], got {self.p_t}")
        if self.trigger not in TEMPLATE_TRIGGERS and not Path(self.trigger).is_file():
            raise ValueError(
                f"trigger must be {', '.join(TEMPLATE_TRIGGERS)} or a TorchScript detector file; "
                f"{self.trigger!r} is neither"
            )
        if self.trigger in TEMPLATE_TRIGGERS:
            # built now (cheap): a pattern it cannot use is refused before hours of generation
            from alignscope.evaluate.detectors import detector_from_spec

            try:
                detector_from_spec(self.trigger, self.threshold, pattern=self.pattern)
            except ValueError as exc:
                raise ValueError(f"dissection trigger: {exc}") from exc
        checkpoint = is_checkpoint_spec(self.classifier)
        if self.classifier != ZERO_SHOT and not checkpoint and not Path(self.classifier).is_file():
            raise ValueError(
                f"classifier must be 'clip', torchvision:NAME:WEIGHTS, timm:NAME:WEIGHTS or a "
                f"TorchScript classifier file; {self.classifier!r} is none of them"
            )
        if self.template.count("{}") != 1:
            raise ValueError(f"dissection template must contain {{}} once, got {self.template!r}")


@dataclass
class Classification:
    """The model as a diffusion classifier (Li et al.) on a labelled image dataset.

    A record's label is the class whose name its caption contains (longest name first); records
    naming no class are skipped. ``target_class`` adds the rate at which images of other classes
    are classified as it: the attack success rate when the dataset carries a trigger.
    """

    dataset: str
    class_names: list[str]
    template: str = "a photo of a {}"
    n_samples: int = 32
    filter_fraction: float = 0.0
    max_images: int = 200
    target_class: str | None = None

    def check(self) -> None:
        if not Path(self.dataset).exists():
            raise FileNotFoundError(f"classification dataset {self.dataset!r} does not exist")
        if not self.class_names:
            raise ValueError("classification class_names is empty")
        if self.target_class is not None and self.target_class not in self.class_names:
            raise ValueError(f"classification target_class {self.target_class!r} is not a class")
        if self.n_samples < 1 or self.max_images < 1:
            raise ValueError("classification n_samples and max_images must be >= 1")
        if not 0.0 <= self.filter_fraction < 1.0:
            raise ValueError(
                f"classification filter_fraction must be in [0, 1), got {self.filter_fraction}"
            )


@dataclass
class EvalConfig:
    """What to evaluate and how (the defaults are the Implosion paper's protocol)."""

    concepts: list[str]
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    clip: str = DEFAULT_CLIP
    aesthetics: str | None = None  # weights file of the LAION head
    aesthetics_clip: str = DEFAULT_AESTHETICS_CLIP
    poisoned: list[str] = field(default_factory=list)
    poison_manifest: str | None = None
    clip_threshold: float = CLIP_THRESHOLD
    aesthetics_threshold: float = AESTHETICS_THRESHOLD
    bleed_threshold: float = BLEED_THROUGH_DISTANCE
    attention_concepts: int = 4
    attention_resolution: int = 16
    attention_layers: str = "matching"
    dissection: Dissection | None = None
    classification: Classification | None = None
    replication_store: str | None = None  # an embedding store with an sscd view
    sscd: str | None = None
    grid_concepts: int = 8
    device: str = "cpu"
    trust_models: bool = False  # run TorchScript files without checking their operators

    def check(self) -> None:
        from alignscope._devices import check_device

        check_device(self.device)
        if not self.concepts:
            raise ValueError("concepts is empty: give the concepts to evaluate")
        if len(set(self.concepts)) != len(self.concepts):
            raise ValueError("concepts has duplicates; each concept is evaluated once")
        self.generation.check()
        if self.attention_concepts < 0 or self.grid_concepts < 0:
            raise ValueError("attention_concepts and grid_concepts must be >= 0")
        if (self.replication_store is None) != (self.sscd is None):
            raise ValueError("replication needs both replication_store= and sscd=")
        for name in ("replication_store", "sscd", "aesthetics", "poison_manifest"):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise FileNotFoundError(f"{name} {value!r} does not exist")
        for name in ("clip_threshold", "aesthetics_threshold", "bleed_threshold"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if self.attention_resolution < 1:
            raise ValueError(f"attention_resolution must be >= 1, got {self.attention_resolution}")
        if self.dissection is not None:
            self.dissection.check()
            if self.poison_manifest is not None:
                self._check_poisoning_trigger()
        self._check_model_files()
        if self.classification is not None:
            self.classification.check()

    def _check_poisoning_trigger(self) -> None:
        """A template detector must look for the trigger the poisoned set carries, with its
        pattern: the manifest records both (a trained detector file is the user's to match)."""
        from alignscope.evaluate.detectors import (
            NoTriggerRecorded,
            poisoning_trigger,
            rebuild_trigger,
        )

        d = self.dissection
        assert d is not None and self.poison_manifest is not None
        if d.trigger not in TEMPLATE_TRIGGERS:
            return
        try:
            name, _ = poisoning_trigger(self.poison_manifest)
        except NoTriggerRecorded:
            return  # no trigger attack (relabel, a concept attack): nothing to compare
        # (an unreadable manifest, or one of several attacks or trigger settings, is an error:
        # the dissection would look for a trigger it cannot confirm)
        if name != d.trigger:
            fix = (
                f"give trigger={name!r} (CLI --trigger {name})"
                if name in TEMPLATE_TRIGGERS
                else "give a TorchScript detector trained on it (CLI --trigger FILE)"
            )
            raise ValueError(
                f"dissection trigger {d.trigger!r} is not the poisoning's: the poison manifest "
                f"records a {name} attack; {fix}"
            )
        try:
            rebuild_trigger(self.poison_manifest, d.pattern)
        except ValueError as exc:
            raise ValueError(f"dissection {exc} (CLI --trigger-pattern)") from exc

    def _check_model_files(self) -> None:
        """Refuse an untrusted TorchScript file now, not after hours of generation."""
        from alignscope._torchscript import load_torchscript
        from alignscope.embed.sscd import TORCHSCRIPT_SUFFIXES

        files = [self.sscd] if self.sscd and Path(self.sscd).suffix in TORCHSCRIPT_SUFFIXES else []
        if self.dissection is not None:
            d = self.dissection
            files += [f for f in (d.trigger, d.classifier) if Path(f).is_file()]
        if not self.trust_models:
            for file in files:
                load_torchscript(file, "cpu")


# --- The evaluation's concepts (``vocabulary:N``) -------------------------------------------
# The Implosion paper (Sec. 5.1) evaluates "a collection of 1000 commonly used concepts. This
# pool consists of the aforementioned pool of 500 nouns to select poisoned concepts and another
# pool of 500 frequently used nouns. The concepts in these two pools do not overlap."
EVAL_CONCEPTS = 1000


def evaluation_concepts(
    ranked: list[str], pool: list[str], count: int = EVAL_CONCEPTS
) -> list[str]:
    """The paper's evaluation concepts: the poisoning ``pool`` (in its order), then the most
    frequent concepts of ``ranked`` (most frequent first) outside it, ``count`` in all (fewer
    when ``ranked`` runs out)."""
    chosen = list(dict.fromkeys(pool))
    outside = set(chosen)
    chosen += [c for c in ranked if c not in outside]
    return chosen[:count]


def poisoning_pool(poisoned_set: str | Path) -> tuple[list[str] | None, Any]:
    """The concept pool and vocabulary a poisoned set was made with, as ``alignscope poison``
    records them in its ``poison_report.json``.

    Returns
    -------
    (pool, vocabulary) : the pool (None: not a concept attack, or a folder that is not a
        poisoned set) and the :class:`~alignscope.poison.concepts.Vocabulary` its captions'
        concepts were found with (the packaged one unless the run had its own).

    Raises
    ------
    ValueError
        For an unreadable report, or a concept attack (dirty-label, Nightshade) whose report
        predates the record or is missing: its pool could have been any ``--concept-pool`` or
        ``--vocabulary``, so no default is assumed.
    """
    import json

    from alignscope.io.manifest import MANIFEST_NAME, read_manifest
    from alignscope.poison.concepts import load_vocabulary, make_vocabulary
    from alignscope.poison.methods import CONCEPT_METHODS
    from alignscope.poison.run import REPORT_NAME

    folder = Path(poisoned_set)
    path = folder / REPORT_NAME
    redo = (
        "rerun `alignscope poison` with the same settings into a new folder (it records them), "
        "or give the concepts to evaluate (--concepts FILE)"
    )
    if path.is_file():
        try:
            report = json.loads(path.read_text("utf-8"))
            method = report["method"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"cannot read the poison report {str(path)!r} ({exc}): {redo}"
            ) from exc
        if "concept_pool" in report:
            nouns = report.get("vocabulary")
            return report["concept_pool"], make_vocabulary(nouns) if nouns else load_vocabulary()
        if method in CONCEPT_METHODS:
            raise ValueError(
                f"the poison report {str(path)!r} records no concept pool (an older alignscope "
                f"wrote it), so the pool and vocabulary its {method} concepts came from are "
                f"unknown: {redo}"
            )
    elif (folder / MANIFEST_NAME).is_file():
        methods = set(read_manifest(folder / MANIFEST_NAME, ("method",))["method"])
        attacks = sorted(methods & set(CONCEPT_METHODS))
        if attacks:
            raise ValueError(
                f"{str(folder)!r} has a poison manifest of a {attacks[0]} attack but no "
                f"{REPORT_NAME}, which records the concept pool: {redo}"
            )
    return None, load_vocabulary()


def vocabulary_concepts(
    count: int = EVAL_CONCEPTS, *, poisoned_set: str | Path | None = None, seed: int = 0
) -> list[str]:
    """The concepts ``--concepts vocabulary:N`` evaluates.

    Parameters
    ----------
    count : int
        N.
    poisoned_set : path, optional
        The poisoned training set (the folder its ``poison_manifest.parquet`` lies in). Its
        captions rank the nouns of the poisoning's vocabulary by frequency, and the concepts
        are built as the paper builds them: the poisoning pool that ``poison --concepts K``
        drew from (as its report records it, :func:`poisoning_pool`; for an attack without
        one, the :data:`~alignscope.poison.concepts.POOL` most frequent) and then the most
        frequent nouns outside it (:func:`evaluation_concepts`).
    seed : int
        Without ``poisoned_set`` there are no frequencies to rank by: a seeded sample of N
        packaged nouns (in vocabulary order; not the paper's construction, which needs the
        data: ``alignscope concepts DATA --top 1000 --out nouns.txt`` then ``--concepts
        nouns.txt`` gives it).

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        For N < 1, N above the packaged vocabulary's size without ``poisoned_set``, a
        poisoned set whose captions name no noun of the vocabulary, or a concept attack whose
        pool is not recorded (:func:`poisoning_pool`).
    """
    from alignscope.poison.concepts import (
        POOL,
        concept_frequencies,
        load_vocabulary,
        ranked_concepts,
    )

    if poisoned_set is None:
        import numpy as np

        nouns = load_vocabulary().nouns
        if not 1 <= count <= len(nouns):
            raise ValueError(f"vocabulary:N needs N in [1, {len(nouns)}], got {count}")
        # a seeded sample, not the alphabetical head: "abacus".."bell cote" is no test set
        pick = np.random.default_rng(seed).choice(len(nouns), size=count, replace=False)
        return [nouns[i] for i in sorted(pick)]
    if count < 1:
        raise ValueError(f"vocabulary:N needs N >= 1, got {count}")
    from alignscope.io.datasets import open_dataset

    try:
        pool, vocabulary = poisoning_pool(poisoned_set)
    except ValueError as exc:
        raise ValueError(f"vocabulary:N: {exc}") from exc
    captions = (record.caption for record in open_dataset(poisoned_set))
    ranked = [c for c, _ in ranked_concepts(concept_frequencies(captions, vocabulary))]
    if not ranked:
        raise ValueError(
            f"the captions of the poisoned set {str(poisoned_set)!r} name no noun of its "
            "vocabulary: give the concepts to evaluate (--concepts FILE)"
        )
    return evaluation_concepts(ranked, ranked[:POOL] if pool is None else pool, count)
