"""Training diffusion models on (poisoned) data with diffusers, offline.

:func:`train` runs one of the :data:`MODES` on a dataset and a local Stable Diffusion folder:
``finetune`` (the folder's UNet), ``scratch`` (a UNet built from a config) or
``textual-inversion`` (a new token's embedding). :class:`TrainConfig` holds the
hyper-parameters, Safe-Zone Training's options among them (the high-noise timestep window,
JPEG compression, loss masks); :data:`PRESETS` and :func:`with_preset` give the papers'
settings. A run writes ``train_log.jsonl`` and checkpoints and resumes from the latest one,
repeating exactly what an uninterrupted run does, when its output folder's record
(:func:`train_identity`) matches; other data, another model or other settings are refused.
:func:`run_loop` and :func:`diffusion_loss` are the loop and the loss every mode shares.
"""

from alignscope.train.data import jpeg, load_examples
from alignscope.train.loop import TrainConfig, TrainResult, diffusion_loss, run_loop
from alignscope.train.modes import MODES, PRESETS, train, train_identity, with_preset

__all__ = [
    "MODES",
    "PRESETS",
    "TrainConfig",
    "TrainResult",
    "diffusion_loss",
    "jpeg",
    "load_examples",
    "run_loop",
    "train",
    "train_identity",
    "with_preset",
]
