"""Training diffusion models on (poisoned) data with diffusers: fine-tuning, training from
scratch and textual inversion, with Safe-Zone Training options."""

from alignscope.train.loop import TrainConfig, TrainResult
from alignscope.train.modes import PRESETS, train

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "train"]
