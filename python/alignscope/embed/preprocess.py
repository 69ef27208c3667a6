"""Image preprocessing presets, in PIL + numpy (no torchvision).

Published replication numbers depend on these, so they are named and documented:

- ``sscd``: resize the short side to 288 (aspect kept), ImageNet mean/std (SSCD's README);
- ``sscd-square``: resize to 320 x 320, ImageNet mean/std (SSCD's batched setting);
- ``dcr``: resize the short side to 256, centre crop 224, mean = std = 0.5 (DCR, Somepalli
  et al.).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    name: str
    short_side: int | None  # resize so the shorter side has this length
    square: int | None  # or resize to square x square
    crop: int | None  # then centre-crop crop x crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def fixed_size(self) -> bool:
        """Whether every image comes out the same size (so images can be batched)."""
        return self.square is not None or self.crop is not None


PRESETS = {
    "sscd": Preset("sscd", 288, None, None, IMAGENET_MEAN, IMAGENET_STD),
    "sscd-square": Preset("sscd-square", None, 320, None, IMAGENET_MEAN, IMAGENET_STD),
    "dcr": Preset("dcr", 256, None, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(
            f"unknown preprocessing preset {name!r}; choose one of {', '.join(PRESETS)}"
        )
    return PRESETS[name]


def geometry(image: object, preset: Preset, size: tuple[int, int] | None = None) -> np.ndarray:
    """The preset's resize (and crop) of an RGB PIL image, as HWC uint8. ``size`` (h, w)
    overrides the geometry (a model that declares a fixed input size)."""
    from PIL import Image

    img = image
    if size is not None:
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    elif preset.square is not None:
        img = img.resize((preset.square, preset.square), Image.BILINEAR)
    elif preset.short_side is not None:
        w, h = img.size
        scale = preset.short_side / min(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    if size is None and preset.crop is not None:
        w, h = img.size
        left, top = (w - preset.crop) // 2, (h - preset.crop) // 2
        img = img.crop((left, top, left + preset.crop, top + preset.crop))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def normalise(hwc: np.ndarray, preset: Preset) -> np.ndarray:
    """HWC uint8 -> CHW float32 with the preset's mean and std."""
    x = hwc.astype(np.float32) / 255.0
    x = (x - np.asarray(preset.mean, dtype=np.float32)) / np.asarray(preset.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))
