"""Argument checks of the evaluation functions: images (HWC uint8 RGB arrays or PIL images),
image files and numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def as_array(image: Any, where: str) -> np.ndarray:
    """An RGB HWC uint8 array from a numpy array or a PIL image."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"{where} must be an HWC uint8 RGB numpy array or a PIL image, "
            f"got {type(image).__name__}"
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{where} must be an HWC uint8 RGB array, got {image.dtype} {image.shape} "
            "(convert with np.asarray(pil_image.convert('RGB')))"
        )
    return image


def as_pil(image: Any, where: str) -> Any:
    from PIL import Image

    if hasattr(image, "convert") and hasattr(image, "size"):
        return image.convert("RGB")
    return Image.fromarray(as_array(image, where))


def image_list(images: Any, name: str = "images") -> list[Any]:
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)  # a (n, H, W, 3) stack
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise TypeError(
            f"{name} must be a list of HWC uint8 RGB arrays or PIL images, "
            f"got {type(images).__name__}"
        )
    return list(images)


def load_images(paths: Sequence[Path]) -> list[Any]:
    """The image files as RGB PIL images, each file closed once read."""
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(im.convert("RGB"))
    return out


def is_number(value: Any) -> bool:
    """Whether ``value`` is a Python or numpy int or float (bool is not a number here)."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
