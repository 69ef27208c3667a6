"""Images of target concepts generated with a diffusers text-to-image pipeline.

- Nightshade anchors, as the Nightshade release makes them: "A photo of a {target}", seed 123,
  guidance 7.5, 50 steps, 512 x 512, generated once per target and cached as ``{target}.png``
  (:func:`generate_anchor`).
- Dirty-label poison images, as the Implosion paper makes them (Sec. 5.1: "We generate a
  dirty-label poison image x_t by prompting SD1.5 with 'a photo of t'"): one image per poison
  from "a photo of {target}" with its own seed, guidance 7.5 and 50 steps (the paper's
  generation defaults) at the pipeline's own resolution, 512 for SD 1.5
  (:func:`generate_target_image`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path
from alignscope._hub import hub_download_blocked, is_hub_id

PROMPT = "A photo of a {target}"  # the Nightshade release's anchor prompt
DIRTY_LABEL_PROMPT = "a photo of {target}"  # the Implosion paper's (Sec. 5.1)
# its generation defaults (Sec. 5.1: "the default parameters for generation with a guidance
# scale of 7.5 and 50 diffusion steps")
DIRTY_LABEL_GUIDANCE = 7.5
DIRTY_LABEL_STEPS = 50
DIRTY_IMAGES = ("generated", "dataset")


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
    size: int | None = 512,
    name: str | None = None,
    prompt: str = PROMPT,
) -> np.ndarray:
    """The cached anchor of ``target`` (HWC uint8), generating it on first use from
    ``prompt``; ``name`` overrides the cache file's stem (several images of one target, one
    per seed); ``size`` None generates at the pipeline's default resolution."""
    import torch

    path = Path(cache) / f"{_safe_name(name or target)}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        image = pipeline(
            prompt.format(target=target),
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


def dirty_label_source(dirty_images: str | None, pipeline: Any) -> str:
    """Where dirty-label takes its images of t: "generated" (the paper's) when a pipeline is
    given, else "dataset"; ``dirty_images`` chooses explicitly.

    Raises
    ------
    ValueError
        For an unknown choice, or "generated" without a pipeline.
    """
    if dirty_images is None:
        return "dataset" if pipeline is None else "generated"
    if dirty_images not in DIRTY_IMAGES:
        raise ValueError(f"dirty_images must be {' or '.join(DIRTY_IMAGES)}, got {dirty_images!r}")
    if dirty_images == "generated" and pipeline is None:
        raise ValueError(
            "dirty-label images generated need a pipeline: --anchor-pipeline DIR (a diffusers "
            "text-to-image pipeline, SD 1.5 in the paper)"
        )
    return dirty_images


def generate_target_image(
    pipeline: Any, target: str, cache: str | Path, *, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """A dirty-label poison image of ``target`` (HWC uint8) and what made it (for the
    manifest): "a photo of {target}", generator seeded with ``seed`` on the CPU,
    :data:`DIRTY_LABEL_GUIDANCE` (7.5) and :data:`DIRTY_LABEL_STEPS` (50), the pipeline's
    default resolution; cached in ``cache`` as ``{target}-seed{seed}.png`` so that a rerun
    reuses it."""
    prompt = DIRTY_LABEL_PROMPT.format(target=target)
    image = generate_anchor(
        pipeline,
        target,
        cache,
        seed=seed,
        guidance_scale=DIRTY_LABEL_GUIDANCE,
        steps=DIRTY_LABEL_STEPS,
        size=None,
        name=f"{target}-seed{seed}",
        prompt=DIRTY_LABEL_PROMPT,
    )
    return image, {"generated_seed": seed, "prompt": prompt}


def _safe_name(target: str) -> str:
    """A file name from a concept name: letters, digits, '-' and '_' only."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in target.strip())
    if not cleaned:
        raise ValueError(f"cannot name an anchor file after {target!r}")
    return cleaned
