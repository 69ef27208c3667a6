"""What a poison does to its pair: the image (and caption) it ends up with."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignscope.io.datasets import BadImage
from alignscope.poison.triggers import apply_trigger

METHODS = (
    "dirty-label",
    "nightshade",
    "relabel",
    "badnets-1",
    "badnets-2",
    "picture-patch",
    "wanet",
    # availability poisons of class-labelled sets (every row, caption kept): availability.py
    "unlearnable",
    "classwise-noise",
    "ops",
)
CONCEPT_METHODS = ("dirty-label", "nightshade")
AVAILABILITY_METHODS = ("unlearnable", "classwise-noise", "ops")
TARGET_CAPTION = "A photo of a {target}"


@dataclass
class Poisoned:
    """The poisoned pair: HWC uint8 image, caption, and what was done (for the manifest)."""

    image: np.ndarray
    caption: str
    params: dict[str, Any] = field(default_factory=dict)
    perturbation: bool = False  # the image is a modified copy of the original (measurable)


def dirty_label(
    caption: str, target: str, donors: list[int], load: Any, rng: np.random.Generator
) -> Poisoned:
    """An image of the target concept, taken from the dataset (a row whose caption mentions t
    and not p), paired with the original caption of the poisoned concept. A donor whose image
    does not decode is passed over for another drawn the same way (a corrupt donor used to stop
    the run half-way, with no manifest)."""
    remaining = list(donors)
    while remaining:
        donor = int(remaining.pop(int(rng.integers(len(remaining)))))
        try:
            return Poisoned(np.asarray(load(donor)), caption, {"donor_row": donor})
        except BadImage:
            continue
    raise ValueError(
        f"no decodable image of target {target!r} in the dataset to pair with {caption!r}"
    )


def relabel(image: np.ndarray, target: str) -> Poisoned:
    return Poisoned(image, TARGET_CAPTION.format(target=target), {}, perturbation=True)


def triggered(method: str, image: np.ndarray, target: str, options: dict[str, Any]) -> Poisoned:
    out = apply_trigger(method, image, **options)
    params = {k: _describe(v) for k, v in options.items()}
    return Poisoned(out, TARGET_CAPTION.format(target=target), params, perturbation=True)


def _describe(value: Any) -> Any:
    """An option as the manifest's JSON can hold it: an array (a BadNets-2 pattern) by its
    shape, dtype and digest, anything else as it is."""
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        return f"array {'x'.join(map(str, value.shape))} {value.dtype} sha256:{digest}"
    return value


def measurements(original: np.ndarray, poisoned: np.ndarray) -> dict[str, float]:
    """L-inf and L2 in [0, 1] pixel units and PSNR (dB) of a perturbation (same size)."""
    if original.shape != poisoned.shape:
        return {"linf": float("nan"), "l2": float("nan"), "psnr": float("nan")}
    diff = (poisoned.astype(np.float64) - original.astype(np.float64)) / 255.0
    mse = float(np.mean(diff**2))
    return {
        "linf": float(np.abs(diff).max()),
        "l2": float(np.sqrt(np.sum(diff**2))),
        "psnr": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)),
    }
