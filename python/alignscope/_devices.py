"""Torch device arguments, checked before any model moves: a clear error instead of a driver
traceback from deep inside torch."""

from __future__ import annotations

import re


def check_device(device: object, name: str = "device") -> str:
    """Return ``device`` if it is "cpu", "cuda", "cuda:N" or "mps" and torch can use it.

    Raises
    ------
    ValueError naming ``name`` when the string is malformed or the device is not visible.
    """
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
        raise ValueError(f"{name} must be cpu, cuda, cuda:N or mps; got {device!r}")
    if device == "cpu":
        return device
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name} {device!r}: torch sees no CUDA device here "
                "(torch.cuda.is_available() is False); use cpu"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"{name} {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif not torch.backends.mps.is_available():
        raise ValueError(f"{name} 'mps': torch sees no Apple GPU here; use cpu")
    return device
