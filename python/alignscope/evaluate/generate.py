"""Generation of the evaluation prompts: ``images_per_concept`` images of "a photo of {C}".

Every image has its own seed, drawn from (seed, concept index, image index), so an image does
not depend on the batch it was generated in and an interrupted run resumes by generating only
the files that are missing. Each PNG is written to a temp file and renamed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.report.files import atomic_path

TEMPLATE = "a photo of {}"  # the Implosion paper's evaluation prompt


@dataclass(frozen=True)
class GenerationSettings:
    """How images are generated (the paper: 5 images, guidance 7.5, 50 steps)."""

    images_per_concept: int = 5
    steps: int = 50
    guidance: float = 7.5
    seed: int = 0
    batch_size: int = 4
    template: str = TEMPLATE
    height: int | None = None
    width: int | None = None

    def check(self) -> None:
        for name in ("images_per_concept", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {self.guidance}")
        if "{}" not in self.template:
            raise ValueError(f"template must contain {{}} for the concept, got {self.template!r}")


@dataclass(frozen=True)
class Generated:
    concept: str
    concept_index: int
    image_index: int
    prompt: str
    seed: int
    path: Path


def image_seed(seed: int, concept_index: int, image_index: int) -> int:
    """The seed of one image: independent streams per (seed, concept, image)."""
    return int(np.random.SeedSequence([seed, concept_index, image_index]).generate_state(1)[0])


def slug(concept: str, index: int) -> str:
    """A directory name for a concept: its index (unique) and a filesystem-safe form."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", concept).strip("_")[:40]
    return f"{index:04d}_{safe or 'concept'}"


def plan(concepts: Sequence[str], out: Path, settings: GenerationSettings) -> list[Generated]:
    return [
        Generated(
            concept=c,
            concept_index=ci,
            image_index=k,
            prompt=settings.template.format(c),
            seed=image_seed(settings.seed, ci, k),
            path=out / slug(c, ci) / f"{k}.png",
        )
        for ci, c in enumerate(concepts)
        for k in range(settings.images_per_concept)
    ]


def generate_images(
    pipe: Any,
    concepts: Sequence[str],
    out: str | Path,
    settings: GenerationSettings,
    *,
    progress: bool = True,
) -> list[Generated]:
    """Generate the missing images of every concept; return the full list, in order.

    Parameters
    ----------
    pipe : a diffusers text-to-image pipeline (StableDiffusionPipeline or alike).
    concepts : concept names; the prompt is ``settings.template.format(concept)``.
    out : directory of ``NNNN_concept/k.png`` files (created).
    """
    import torch
    from PIL import Image

    settings.check()
    if not concepts:
        raise ValueError("concepts is empty: give at least one concept to generate")
    root = Path(out)
    items = plan(concepts, root, settings)
    todo = [g for g in items if not g.path.exists()]
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="generate", unit="img", file=sys.stderr)
    try:
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start : start + settings.batch_size]
            result = pipe(
                [g.prompt for g in batch],
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                height=settings.height,
                width=settings.width,
                generator=[torch.Generator("cpu").manual_seed(g.seed) for g in batch],
                output_type="np",
            )
            for g, pixels in zip(batch, result.images, strict=True):
                g.path.parent.mkdir(parents=True, exist_ok=True)
                image = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
                with atomic_path(g.path) as tmp:
                    Image.fromarray(image).save(tmp, format="PNG")
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return items
