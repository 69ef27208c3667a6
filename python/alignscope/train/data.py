"""Training images and captions as tensors, with Safe-Zone Training's JPEG compression and
loss masks applied at load time."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.io.datasets import BadImage, Dataset, read_image_file, resize_center_crop


@dataclass
class Example:
    pixels: Any  # (3, R, R) float32 in [-1, 1]
    caption: str
    mask: Any | None  # (1, R, R) float32 in [0, 1] (1 = learn here), or None


# How a training image becomes resolution x resolution: diffusers' train_text_to_image.py
# (Resize(resolution, BILINEAR) of the short side, then CenterCrop), the fine-tuning the papers
# ran; recorded in each training run's identity so a run never resumes across a change of it.
PREPROCESSING = "short side to the resolution (bilinear, torchvision's sizes), centre crop"


def square_image(image: Any, resolution: int) -> np.ndarray:
    """A PIL image (RGB or L) as (resolution, resolution[, C]) uint8: :data:`PREPROCESSING`
    (:func:`alignscope.io.datasets.resize_center_crop`)."""
    return resize_center_crop(np.asarray(image), resolution, resolution, "bilinear")


def jpeg(image: Any, quality: int) -> Any:
    """SZT's JPEG compression: the image re-encoded at ``quality`` and decoded again."""
    from PIL import Image

    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def load_examples(
    dataset: Dataset,
    resolution: int,
    *,
    jpeg_quality: int | None = None,
    mask_dir: str | Path | None = None,
) -> list[Example]:
    """Decode, (JPEG-compress,) square-crop and normalise every usable record.

    ``mask_dir/<stem>.png`` (white = learn, black = ignore) gives SZT's per-image loss mask;
    a record without one learns everywhere.
    """
    import torch

    if mask_dir is not None and not Path(mask_dir).is_dir():
        raise ValueError(f"loss-mask directory {str(mask_dir)!r} does not exist")
    examples = []
    for record in dataset:
        try:
            image = record.load()
        except BadImage as exc:
            dataset.skipped.append((record.id, str(exc)))
            continue
        if jpeg_quality is not None:
            image = jpeg(image, jpeg_quality)
        image = square_image(image, resolution)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(
            2, 0, 1
        )
        mask = None
        if mask_dir is not None:
            path = Path(mask_dir) / f"{Path(record.id).stem}.png"
            if path.exists():
                m = square_image(read_image_file(path, "L"), resolution)
                mask = torch.from_numpy(np.asarray(m, dtype=np.float32) / 255.0)[None]
        if not examples:
            first_id = record.id
        examples.append(Example(pixels.contiguous(), record.caption, mask))
    if not examples:
        raise ValueError(f"no usable training images in {dataset.source!r}")
    if mask_dir is not None and all(e.mask is None for e in examples):
        raise ValueError(
            f"no loss mask in {str(mask_dir)!r} matches a training image: masks are named "
            f"<image stem>.png (e.g. {Path(first_id).stem}.png)"
        )
    return examples
