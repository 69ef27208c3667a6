"""Safe-Zone Training's analyses (Styborski et al., ICCV 2025): *when* poisons act on a
textual inversion (:mod:`~alignscope.analyze.timesteps`), *where* the embedding acts
(:mod:`~alignscope.analyze.sensitivity`, Semantic Sensitivity Maps, with an HTML report in
:mod:`~alignscope.analyze.report`), and loss masks from the model's own cross-attention
(:mod:`~alignscope.analyze.masks`) for ``train --loss-mask``."""

from __future__ import annotations

from alignscope.analyze.masks import MaskResult, attention_masks
from alignscope.analyze.report import write_sensitivity_report
from alignscope.analyze.sensitivity import SensitivityResult, sensitivity_maps
from alignscope.analyze.timesteps import TimestepAnalysis, analyze_timesteps, suggest_timestep_min

__all__ = [
    "MaskResult",
    "SensitivityResult",
    "TimestepAnalysis",
    "analyze_timesteps",
    "attention_masks",
    "sensitivity_maps",
    "suggest_timestep_min",
    "write_sensitivity_report",
]
