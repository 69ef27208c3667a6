"""Evaluation of trained text-to-image models: the papers' generation metrics, cross-attention
maps, BiBadDiff's G1-G4 dissection, the diffusion classifier and replication of generations.

:func:`evaluate` runs all of it on one or more models and writes the report; its settings are
:class:`EvalConfig` (with :class:`GenerationSettings`, and the optional :class:`Dissection` and
:class:`Classification`). The parts also work on their own:

- ``generate``: the evaluation images (:func:`generate_images`), resumable;
- ``metrics``: CLIP accuracy, aesthetics and utility (:func:`generation_metrics`), split into
  clean / poisoned / bleed-through concepts (:func:`split_metrics`);
- ``attention``: token maps of cross-attention (:func:`attention_maps`);
- ``detectors`` and ``classifiers``: does an image hold the trigger (:class:`TriggerDetector`),
  which class does it show (:class:`ClassClassifier`);
- ``dissection``: G1-G4, p_t and trigger amplification (:func:`dissect_generations`);
- ``labels``: the class a caption names, p_t read off a poisoned dataset;
- ``diffusion_classifier``: the model as a classifier (:func:`diffusion_classify`);
- ``aesthetics``: the LAION aesthetics head (:class:`AestheticsHead`);
- ``config``, ``sections`` and ``run``: the settings, the parts of a model's report, and the
  run over the models.
"""

from alignscope.evaluate.aesthetics import AestheticsHead
from alignscope.evaluate.attention import attention_maps
from alignscope.evaluate.classifiers import ClassClassifier
from alignscope.evaluate.config import Classification, Dissection, EvalConfig
from alignscope.evaluate.detectors import TriggerDetector
from alignscope.evaluate.diffusion_classifier import diffusion_classify
from alignscope.evaluate.dissection import (
    DissectionResult,
    dissect,
    dissect_generations,
    poisoned_fraction_in_target,
    trigger_amplification,
)
from alignscope.evaluate.generate import GenerationSettings, generate_images
from alignscope.evaluate.labels import caption_label, p_t_from_manifest
from alignscope.evaluate.metrics import generation_metrics, split_metrics
from alignscope.evaluate.run import evaluate, evaluate_model, load_pipeline

__all__ = [
    "AestheticsHead",
    "ClassClassifier",
    "Classification",
    "Dissection",
    "DissectionResult",
    "EvalConfig",
    "GenerationSettings",
    "TriggerDetector",
    "attention_maps",
    "caption_label",
    "diffusion_classify",
    "dissect",
    "dissect_generations",
    "evaluate",
    "evaluate_model",
    "generate_images",
    "generation_metrics",
    "load_pipeline",
    "p_t_from_manifest",
    "poisoned_fraction_in_target",
    "split_metrics",
    "trigger_amplification",
]
