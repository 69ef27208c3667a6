"""The engine's Python face: Alignment Difficulty, per-sample terms, profiles."""

from alignscope.metrics._inputs import as_matrix
from alignscope.metrics._source import PairSource
from alignscope.metrics.ad import alignment_difficulty, finetune_ad
from alignscope.metrics.profiles import PROFILES, Bounds
from alignscope.metrics.result import ADResult, FinetuneAD, PerSample

__all__ = [
    "PROFILES",
    "ADResult",
    "Bounds",
    "FinetuneAD",
    "PairSource",
    "PerSample",
    "alignment_difficulty",
    "as_matrix",
    "finetune_ad",
]
