"""Anchor images of target concepts generated with a diffusers text-to-image pipeline, as the
Nightshade release does: "A photo of a {target}", seed 123, guidance 7.5, 50 steps, 512 x 512,
generated once per target and cached as ``{target}.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path
from alignscope._hub import hub_download_blocked, is_hub_id

PROMPT = "A photo of a {target}"


def load_pipeline(spec: str, device: str = "cpu") -> Any:
    """A diffusers text-to-image pipeline from a local directory (or a hub id where one can
    be reached), as it was saved, on ``device``.

    Not :func:`alignscope._diffusers.load_sd_pipeline`, which training and evaluation share:
    that one takes only local Stable Diffusion folders (``StableDiffusionPipeline``), turns the
    safety checker off and casts to fp16 on CUDA; anchors come from any ``DiffusionPipeline``
    class, with the components the pipeline was saved with (its safety checker included), in
    diffusers' default dtype.
    """
    try:
        from diffusers import DiffusionPipeline
    except ImportError as exc:
        raise ValueError("generating anchors needs diffusers: pip install diffusers") from exc
    if not Path(spec).exists() and is_hub_id(spec):
        blocked = hub_download_blocked(spec, ["model_index.json"])
        if blocked:  # fail now rather than after the hub client's retries
            raise ValueError(
                f"{spec!r} is not a local folder, and as a hub id it is {blocked}; offline, "
                "give a local diffusers pipeline folder (with model_index.json)"
            )
    return DiffusionPipeline.from_pretrained(spec).to(device)


def generate_anchor(
    pipeline: Any,
    target: str,
    cache: str | Path,
    *,
    seed: int = 123,
    guidance_scale: float = 7.5,
    steps: int = 50,
    size: int = 512,
    name: str | None = None,
) -> np.ndarray:
    """The cached anchor of ``target`` (HWC uint8), generating it on first use; ``name``
    overrides the cache file's stem (several images of one target, one per seed)."""
    import torch

    path = Path(cache) / f"{_safe_name(name or target)}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        image = pipeline(
            PROMPT.format(target=target),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=size,
            width=size,
            generator=generator,
        ).images[0]
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
    from alignscope.io.datasets import read_image_file

    return np.asarray(read_image_file(path))


def _safe_name(target: str) -> str:
    """A file name from a concept name: letters, digits, '-' and '_' only."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in target.strip())
    if not cleaned:
        raise ValueError(f"cannot name an anchor file after {target!r}")
    return cleaned
