"""The user's image models of the dissection: loading a TorchScript file and running a model
(TorchScript, or a torchvision / timm module) on images, shared by the trigger detectors and
the class classifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alignscope._torchscript import load_torchscript
from alignscope.embed.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preset, geometry, normalise
from alignscope.evaluate._images import as_pil

BATCH = 32  # images per forward


def load_model_file(path: str | Path, device: str, trust: bool) -> Any:
    """A TorchScript file through :func:`alignscope._torchscript.load_torchscript` (its
    operators checked unless ``trust``)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"path {str(file)!r} does not exist: pass a TorchScript model file")
    return load_torchscript(file, device, trust=trust)


def check_size(size: Any) -> int:
    """The model's input side, a positive int."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int (the model's input side), got {size!r}")
    return int(size)


def run_image_model(model: Any, images: list[Any], size: int, device: str) -> np.ndarray:
    """(n, k) float64 outputs of ``model`` on the images resized to size x size,
    ImageNet-normalised NCHW float32, in batches of :data:`BATCH`."""
    import torch

    preset = Preset("imagenet", None, size, None, IMAGENET_MEAN, IMAGENET_STD)
    outs = []
    for start in range(0, len(images), BATCH):
        chunk = images[start : start + BATCH]
        pixels = [
            geometry(as_pil(im, f"images[{start + j}]"), preset) for j, im in enumerate(chunk)
        ]
        batch = torch.from_numpy(np.stack([normalise(p, preset) for p in pixels]))
        with torch.no_grad():
            out = model(batch.to(device))
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"the TorchScript model returned {type(out).__name__}, not a tensor")
        outs.append(out.detach().double().cpu().numpy().reshape(len(chunk), -1))
    return np.concatenate(outs)
