"""The loader of local Stable Diffusion folders that training and evaluation share.

It loads a ``StableDiffusionPipeline`` from a folder with ``model_index.json``, safety checker
off, fp16 on CUDA. Poisoning's anchor images load through their own
:func:`alignscope.poison.anchors.load_pipeline`, which differs in what it accepts and
returns: any diffusers text-to-image pipeline class (``DiffusionPipeline``), a hub id as well
as a folder, and the pipeline as it was saved (its safety checker kept, no fp16 cast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def check_pipeline_folder(path: str | Path) -> Path:
    """``path`` as a Path if it is a diffusers pipeline folder (it has model_index.json)."""
    folder = Path(path)
    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"{str(folder)!r} is not a diffusers pipeline folder (no model_index.json)"
        )
    return folder


def load_sd_pipeline(path: str | Path, *, device: str = "cpu", purpose: str = "this") -> Any:
    """A StableDiffusionPipeline from a local folder, safety checker off, on ``device`` (fp16 on
    CUDA). ``purpose`` names what needs diffusers in the error when it is missing."""
    try:
        import torch
        from diffusers import StableDiffusionPipeline
    except ImportError as exc:
        raise ValueError(f"{purpose} needs diffusers: pip install 'alignscope[train]'") from exc
    pipe = StableDiffusionPipeline.from_pretrained(
        check_pipeline_folder(path), safety_checker=None, requires_safety_checker=False
    ).to(device)
    if device.startswith("cuda"):
        pipe = pipe.to(torch.float16)
    return pipe
