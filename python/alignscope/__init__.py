"""alignscope: Alignment Difficulty and data analytics for text-to-image training sets."""

from __future__ import annotations

__version__ = "0.1.0"

from alignscope._backend import backend_info
from alignscope.metrics import (
    ADResult,
    Bounds,
    FinetuneAD,
    PerSample,
    alignment_difficulty,
    finetune_ad,
)

__all__ = [
    "ADResult",
    "Bounds",
    "FinetuneAD",
    "PerSample",
    "__version__",
    "alignment_difficulty",
    "backend_info",
    "finetune_ad",
]
