"""The loaders of local diffusers folders: Stable Diffusion pipelines (training and evaluation)
and AutoencoderKL VAEs (Nightshade poisoning and ``embed --vae``).

It loads a ``StableDiffusionPipeline`` from a folder with ``model_index.json``, safety checker
off, fp16 on CUDA. Poisoning's anchor images load through their own
:func:`alignscope.poison.anchors.load_pipeline`, which differs in what it accepts and
returns: any diffusers text-to-image pipeline class (``DiffusionPipeline``), a hub id as well
as a folder, and the pipeline as it was saved (its safety checker kept, no fp16 cast).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignscope._hub import hub_download_blocked, is_hub_id


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


def check_vae_folder(path: str | Path) -> tuple[Path, str | None]:
    """(folder, subfolder) to load a diffusers AutoencoderKL from: ``path`` itself when its
    config.json is an AutoencoderKL's, or its ``vae`` subfolder (a Stable Diffusion folder).
    Only the config is read, so a wrong folder is refused before any weights load."""
    folder = Path(path)
    for sub in (None, "vae"):
        config = folder / sub / "config.json" if sub else folder / "config.json"
        try:
            name = json.loads(config.read_text()).get("_class_name")
        except (OSError, ValueError, AttributeError):
            continue  # no config here (or not a JSON object): try the next place
        if name == "AutoencoderKL":
            return folder, sub
    raise ValueError(
        f"{str(folder)!r} is not a diffusers AutoencoderKL folder: neither its config.json nor "
        "vae/config.json names _class_name AutoencoderKL"
    )


def load_vae(spec: str | Path, *, purpose: str = "this") -> Any:
    """A diffusers AutoencoderKL in float32 on the CPU, from a local directory (a VAE folder, or
    a Stable Diffusion folder's ``vae`` subfolder; checked by :func:`check_vae_folder`) or a hub
    id on machines that can reach it (refused at once, with the local form, when it is not
    cached and the hub cannot be reached). ``purpose`` names what needs diffusers in the error
    when it is missing."""
    try:
        from diffusers import AutoencoderKL
    except ImportError as exc:
        raise ValueError(f"{purpose} needs diffusers: pip install diffusers") from exc
    if not Path(spec).exists():
        blocked = hub_download_blocked(str(spec), ["config.json"]) if is_hub_id(str(spec)) else None
        if blocked:
            raise ValueError(
                f"{str(spec)!r} is not a local folder, and as a hub id it is {blocked}; offline, "
                "give a local folder: a diffusers AutoencoderKL folder or a Stable Diffusion "
                "folder (its vae/ subfolder)"
            )
        return AutoencoderKL.from_pretrained(str(spec)).float()
    folder, sub = check_vae_folder(spec)
    try:
        vae = AutoencoderKL.from_pretrained(folder, subfolder=sub, torch_dtype=None)
    except (OSError, ValueError, RuntimeError) as exc:  # missing or damaged weights
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ValueError(
            f"{str(folder)!r} cannot be loaded as a diffusers AutoencoderKL: "
            f"{first or type(exc).__name__}"
        ) from exc
    return vae.float()
