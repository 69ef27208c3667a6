"""Generation of the evaluation prompts: ``images_per_concept`` images of "a photo of {C}".

Every image has its own seed, drawn from (seed, concept name, image index), so an image does
not depend on the batch it was generated in and an interrupted run resumes by generating only
the files that are missing. Each PNG is written to a temp file and renamed. The folder records
the settings and the model's fingerprint (``alignscope._files.claimed_output``), so images of
another model or other settings are never mixed in.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path, claimed_output

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
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ValueError(f"guidance must be a finite number >= 0, got {self.guidance}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.template.count("{}") != 1 or "{" in self.template.replace("{}", ""):
            raise ValueError(
                f"template must contain {{}} exactly once (the concept) and no other braces, "
                f"got {self.template!r}"
            )
        for name in ("height", "width"):
            size = getattr(self, name)
            if size is not None and (size < 8 or size % 8):
                raise ValueError(f"{name} must be a multiple of 8, got {size}")

    def identity(self) -> dict[str, Any]:
        """What determines the images (the batch size does not)."""
        out = asdict(self)
        del out["batch_size"]
        return out


@dataclass(frozen=True)
class Generated:
    concept: str
    concept_index: int
    image_index: int
    prompt: str
    seed: int
    path: Path


def _name_key(concept: str) -> int:
    return zlib.crc32(concept.encode("utf-8"))


def image_seed(seed: int, concept: str, image_index: int) -> int:
    """The seed of one image: independent streams per (seed, concept name, image), so adding or
    reordering concepts changes no other concept's images."""
    key = [seed, _name_key(concept), image_index]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def slug(concept: str) -> str:
    """A directory name for a concept: a filesystem-safe form and a checksum of the name (two
    names with the same safe form still differ)."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", concept).strip("_")[:40]
    return f"{safe or 'concept'}-{_name_key(concept):08x}"


def plan(concepts: Sequence[str], out: Path, settings: GenerationSettings) -> list[Generated]:
    return [
        Generated(
            concept=c,
            concept_index=ci,
            image_index=k,
            prompt=settings.template.format(c),
            seed=image_seed(settings.seed, c, k),
            path=out / slug(c) / f"{k}.png",
        )
        for ci, c in enumerate(concepts)
        for k in range(settings.images_per_concept)
    ]


def model_fingerprint(model: str | os.PathLike[str]) -> str:
    """A digest of a model folder: every file's path, size and first and last MiB.

    Cheap on multi-GB weights, and it changes when a model is retrained or replaced."""
    root = Path(model)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root).as_posix()}\0{size}\0".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                digest.update(fh.read())
    return digest.hexdigest()


def generate_images(
    pipe: Any,
    concepts: Sequence[str],
    out: str | Path,
    settings: GenerationSettings,
    *,
    fingerprint: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> list[Generated]:
    """Generate the missing images of every concept; return the full list, in order.

    Parameters
    ----------
    pipe : a diffusers text-to-image pipeline (StableDiffusionPipeline or alike).
    concepts : concept names; the prompt is ``settings.template.format(concept)``.
    out : directory of ``<concept>-<crc32>/k.png`` files (created), claimed with a record of
        ``settings.identity()`` and ``fingerprint`` (``model_fingerprint``): a rerun with
        other settings or weights is refused naming what differs instead of mixing old and
        new images; ``overwrite`` deletes the old images instead. The concepts are not part
        of the record: a rerun with more concepts generates only theirs.
    """
    settings.check()
    if not concepts:
        raise ValueError("concepts is empty: give at least one concept to generate")
    identity = {"settings": settings.identity(), "model": fingerprint}
    with claimed_output(out, "generate", identity, overwrite=overwrite) as root:
        return _generate_missing(pipe, plan(concepts, root, settings), settings, progress)


def _generate_missing(
    pipe: Any, items: list[Generated], settings: GenerationSettings, progress: bool
) -> list[Generated]:
    """Generate the images of ``items`` whose files are missing; return ``items``."""
    import torch
    from PIL import Image

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
