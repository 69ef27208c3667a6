"""Where the embedding acts: Semantic Sensitivity Maps.

SZT (Styborski et al.) visualises how a learned (poisoned or clean) textual-inversion
embedding influences the denoiser with *Semantic Sensitivity Maps*; the abstract gives no
formula, so this module makes these choices (README "Safe-Zone Training analyses"):

- the quantity is the directional derivative of the UNet's prediction with respect to the
  concept's embedding vectors e, ``J(x_t, t) u = d/ds pred(x_t, t, c(e + s u))`` at s = 0,
  computed exactly with forward-mode autodiff (one extra forward pass; attention runs on
  PyTorch's math kernel, the one forward-mode autodiff supports);
- per latent pixel, its L2 norm over the latent channels, aggregated as the root mean square
  over ``draws`` (timestep, noise) pairs, timesteps uniform in ``[t_low, t_high)``, the same
  draws for every image (so maps of different images are comparable);
- the direction u: ``"random"`` (a fresh Gaussian per draw scaled to unit expected norm: the
  RMS over draws then estimates the mean over all unit directions, i.e. the Jacobian's
  Frobenius norm over sqrt(k * dim), Hutchinson's estimator), ``"learned"`` (the unit vector
  from the initializer's embedding to the learned one: where the learning moved the
  prediction), or a given (k, dim) array;
- the latent map is upsampled bilinearly to the image for overlays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.analyze._model import (
    Concept,
    Images,
    concept_prompt,
    encode_latents,
    load_components,
    load_images,
    timestep_window,
    training_scheduler,
)
from alignscope.io.datasets import Dataset

DIRECTIONS = ("random", "learned")


@dataclass
class SensitivityResult:
    """ids, poisoned : per image; latent_maps : (n, h, w) float32 at the latent resolution;
    maps : (n, R, R) float32 at the image resolution; images : (n, R, R, 3) uint8."""

    ids: list[str]
    poisoned: np.ndarray
    latent_maps: np.ndarray
    maps: np.ndarray
    images: np.ndarray
    direction: str
    timesteps: tuple[int, int]
    draws: int


def prediction_jvp(
    unet: Any, concept: Concept, noisy: Any, t: Any, prompts: list[str], vectors: Any, direction
) -> tuple[Any, Any]:
    """(prediction, J u): the UNet's prediction and its derivative along ``direction``
    ((batch, k, dim), one per sample) at the concept vectors ``vectors`` (batch, k, dim)."""
    import warnings

    import torch.autograd.forward_ad as fwad
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with warnings.catch_warnings():
        # torch scripts its forward-mode decompositions on first use, warning that
        # torch.jit.script is deprecated: torch's own business, not the user's
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
        from torch._decomp import decompositions_for_jvp  # noqa: F401
    with sdpa_kernel(SDPBackend.MATH), fwad.dual_level():
        dual = fwad.make_dual(vectors, direction.to(vectors.dtype))
        out = unet(noisy, t, concept.encode(prompts, dual)).sample
        unpacked = fwad.unpack_dual(out)
        return unpacked.primal.detach(), unpacked.tangent.detach()


def latent_sensitivity(
    parts: dict[str, Any],
    scheduler: Any,
    concept: Concept,
    latents: Any,
    prompts: list[str],
    steps: Any,
    noise: Any,
    directions: Any,
    batch_size: int = 8,
) -> np.ndarray:
    """(n, h, w) RMS over the draws of the channel norm of J u.

    steps : (draws,) timesteps; noise : (draws, C, h, w), shared by every image;
    directions : (draws, k, dim).
    """
    import torch

    n, draws = latents.shape[0], steps.shape[0]
    total = torch.zeros((n, *latents.shape[2:]), dtype=torch.float64)
    jobs = [(i, d) for i in range(n) for d in range(draws)]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        idx = torch.tensor([i for i, _ in chunk])
        dd = torch.tensor([d for _, d in chunk])
        device = latents.device
        t = steps[dd].to(device)
        noisy = scheduler.add_noise(latents[idx.to(device)], noise[dd].to(device), t)
        vectors = concept.vectors.expand(len(chunk), -1, -1).clone()
        _, tangent = prediction_jvp(
            parts["unet"],
            concept,
            noisy,
            t,
            [prompts[i] for i, _ in chunk],
            vectors,
            directions[dd].to(vectors.device),
        )
        sq = tangent.double().pow(2).sum(dim=1).cpu()
        total.index_add_(0, idx, sq)
    return np.sqrt(total.numpy() / draws).astype(np.float32)


def sensitivity_maps(
    model: str | Path | dict[str, Any],
    dataset: Dataset | Images,
    *,
    manifest: str | Path | None = None,
    placeholder: str | None = None,
    initializer: str | None = None,
    embeds: str | Path | None = None,
    prompt: str | None = None,
    direction: str | Any = "random",
    timesteps: tuple[int, int] | None = None,
    draws: int = 8,
    resolution: int = 512,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "cpu",
) -> SensitivityResult:
    """Semantic Sensitivity Maps of every image of ``dataset`` (see the module's notes).

    Parameters
    ----------
    model : Stable Diffusion folder (or its components, as :func:`load_components` gives).
    dataset : the images; ``manifest`` marks the poisoned ones (for the report).
    placeholder, initializer, embeds : the concept (:class:`~alignscope.analyze._model.
        Concept`); ``direction="learned"`` needs ``embeds`` and ``initializer``.
    timesteps : [t_low, t_high) the draws come from (default the whole [0, T)).
    """
    import torch

    if draws < 1 or batch_size < 1:
        raise ValueError("draws and batch_size must be >= 1")
    parts = model if isinstance(model, dict) else load_components(model, device)
    images = dataset if isinstance(dataset, Images) else load_images(dataset, resolution, manifest)
    scheduler = training_scheduler(parts["scheduler"])
    low, high = timestep_window(scheduler, timesteps)
    if isinstance(direction, str) and direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if (
        isinstance(direction, str)
        and direction == "learned"
        and (embeds is None or initializer is None)
    ):
        raise ValueError(
            "direction 'learned' needs embeds= (the learned vectors) and initializer= (where "
            "they started)"
        )
    init_vector = None
    if embeds is not None and initializer is not None:
        tok = parts["tokenizer"]
        ids = tok.encode(initializer, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"initializer {initializer!r} must be a single token, got {len(ids)}")
        init_vector = parts["text_encoder"].get_input_embeddings().weight[ids[0]].detach().clone()
        initializer = None  # the vectors come from embeds; the initializer only gives u
    concept = Concept.from_components(parts, placeholder, initializer=initializer, embeds=embeds)
    prompts = [concept_prompt(concept, prompt)] * len(images.ids)
    latents = encode_latents(parts["vae"], images.pixels.to(device))
    gen = torch.Generator().manual_seed(seed)
    steps = torch.randint(low, high, (draws,), generator=gen)
    noise = torch.randn((draws, *latents.shape[1:]), generator=gen)
    k, dim = concept.vectors.shape
    if isinstance(direction, str) and direction == "random":
        dirs = torch.randn((draws, k, dim), generator=gen) / float(np.sqrt(k * dim))
    else:
        if isinstance(direction, str):  # learned: from the initializer to the learned vectors
            u = concept.vectors.cpu() - init_vector.cpu().float()[None]
        else:
            u = torch.as_tensor(np.asarray(direction, dtype=np.float32))
            if tuple(u.shape) != (k, dim):
                raise ValueError(f"direction must have shape ({k}, {dim}), got {tuple(u.shape)}")
        norm = float(u.norm())
        if norm == 0:
            raise ValueError("the direction is zero: the learned vectors equal the initializer")
        dirs = (u / norm)[None].expand(draws, -1, -1)
    lat = latent_sensitivity(
        parts, scheduler, concept, latents, prompts, steps, noise, dirs, batch_size
    )
    size = images.pixels.shape[-2:]
    up = torch.nn.functional.interpolate(
        torch.from_numpy(lat)[:, None], size=tuple(size), mode="bilinear", align_corners=False
    )[:, 0]
    pictures = np.clip(np.rint((images.pixels.permute(0, 2, 3, 1).numpy() + 1) * 127.5), 0, 255)
    return SensitivityResult(
        ids=list(images.ids),
        poisoned=np.asarray(images.poisoned, dtype=bool),
        latent_maps=lat,
        maps=up.numpy().astype(np.float32),
        images=pictures.astype(np.uint8),
        direction=direction if isinstance(direction, str) else "given",
        timesteps=(int(low), int(high)),
        draws=draws,
    )
