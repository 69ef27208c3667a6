"""Nightshade-style clean-label poisons (Shan et al., S&P 2024), as the released generator makes
them: an image of concept p, perturbed within an L-infinity budget so that the VAE's latent mean
approaches that of an anchor image of the target concept t.

- candidates: pairs whose caption mentions p, CLIP score with "a photo of a {p}" above 0.24,
  the 300 captions most similar to that phrase, then a seeded sample;
- optimisation: sign-PGD on the pixels (values in [0, 1]), 500 steps, the step size decaying
  linearly from the budget to budget / 100, budget 0.05 by default (the release uses
  0.04-0.05), the loss the L2 distance between the unscaled latent means; the VAE runs in
  float32;
- the paper's perceptual variant: add ``weight * max(0, P(x + delta, x) - 0.07)`` for a
  perceptual distance P (LPIPS when its weights are available locally);
- the budget holds on the saved 8-bit image: the final perturbation is rounded to whole 8-bit
  steps of at most floor(255 * budget).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SCORE_THRESHOLD = 0.24
TOP_CAPTIONS = 300
PAPER_LPIPS_BUDGET = 0.07


@dataclass
class ShadeResult:
    image: np.ndarray  # HWC uint8, the poison as saved
    latent_before: float  # ||E(x) - E(anchor)|| before the perturbation
    latent_after: float  # ... and after, measured on the saved 8-bit image
    linf: float  # in [0, 1] pixel units, on the saved image


def candidate_filter(
    clip: Any, load_image: Callable[[int], Any], captions: list[str]
) -> Callable[[str, list[int]], list[int]]:
    """The release's candidate filter for concept p, for :func:`plan_concepts`: rows whose
    image scores above 0.24 against "a photo of a {p}" under CLIP, then the 300 whose captions
    are closest to that phrase (the seeded sample of m is the plan's)."""

    def keep(concept: str, rows: list[int]) -> list[int]:
        if not rows:
            return rows
        phrase = clip.encode_texts([f"a photo of a {concept}"])[0]
        images = clip.encode_images([load_image(r) for r in rows])
        texts = clip.encode_texts([captions[r] for r in rows])
        scored = [
            (r, float(t @ phrase))
            for r, im, t in zip(rows, images, texts, strict=True)
            if float(im @ phrase) > SCORE_THRESHOLD
        ]
        scored.sort(key=lambda item: (-item[1], item[0]))
        return sorted(r for r, _ in scored[:TOP_CAPTIONS])

    return keep


def _to_tensor(image: np.ndarray, torch: Any) -> Any:
    pixels = np.array(image, dtype=np.uint8, copy=True)  # PIL arrays are read-only
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0


def shade(
    image: np.ndarray,
    anchor: np.ndarray,
    vae: Any,
    *,
    budget: float = 0.05,
    steps: int = 500,
    perceptual: Callable[[Any, Any], Any] | None = None,
    perceptual_weight: float = 10.0,
    perceptual_budget: float = PAPER_LPIPS_BUDGET,
    seed: int = 0,
) -> ShadeResult:
    """Perturb ``image`` (HWC uint8) toward ``anchor`` (resized to it) in ``vae``'s latent space.

    ``vae`` is a diffusers ``AutoencoderKL`` (float32); ``perceptual(a, b)`` takes two
    (1, 3, H, W) tensors in [-1, 1] and returns a scalar distance.
    """
    import torch
    from PIL import Image

    if not 0.0 < budget < 1.0 or steps < 1:
        raise ValueError(f"budget must be in (0, 1) and steps >= 1; got {budget}, {steps}")
    h, w = image.shape[:2]
    if anchor.shape[:2] != (h, w):
        anchor = np.asarray(Image.fromarray(anchor).resize((w, h), Image.BICUBIC))
    vae = vae.float().eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)
    x = _to_tensor(image, torch)
    with torch.no_grad():
        target = vae.encode(_to_tensor(anchor, torch) * 2 - 1).latent_dist.mean

    def distance(pixels: Any) -> Any:
        return torch.linalg.vector_norm(vae.encode(pixels * 2 - 1).latent_dist.mean - target)

    delta = torch.zeros_like(x, requires_grad=True)
    for i in range(steps):
        step = budget - (budget - budget / 100.0) * i / max(steps - 1, 1)
        moved = (x + delta).clamp(0.0, 1.0)
        loss = distance(moved)
        if perceptual is not None:
            excess = perceptual(moved * 2 - 1, x * 2 - 1) - perceptual_budget
            loss = loss + perceptual_weight * torch.clamp(excess, min=0.0)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta -= step * grad.sign()
            delta.clamp_(-budget, budget)
            delta.copy_((x + delta).clamp(0.0, 1.0) - x)
    limit = int(np.floor(255 * budget + 1e-9))
    steps8 = np.clip(np.rint(delta.detach()[0].permute(1, 2, 0).numpy() * 255), -limit, limit)
    out = np.clip(image.astype(np.int16) + steps8.astype(np.int16), 0, 255).astype(np.uint8)
    with torch.no_grad():
        before = float(distance(x))
        after = float(distance(_to_tensor(out, torch)))
    linf = float(np.abs(out.astype(np.int16) - image.astype(np.int16)).max()) / 255.0
    return ShadeResult(out, before, after, linf)


def load_lpips() -> Callable[[Any, Any], Any]:
    """LPIPS (AlexNet) as a perceptual distance, from weights already on this machine: the
    ``lpips`` package ships its linear layers, and AlexNet's weights must be in torch's hub
    cache. Raises ValueError (nothing is downloaded) when either is missing."""
    import os
    import warnings
    from pathlib import Path

    try:
        import lpips
        import torch
    except ImportError as exc:
        raise ValueError("the LPIPS penalty needs: pip install lpips") from exc
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(p.name.startswith("alexnet") for p in hub.glob("*.pth")) and not os.environ.get(
        "ALIGNSCOPE_ALLOW_DOWNLOADS"
    ):
        raise ValueError(
            f"LPIPS needs AlexNet weights in {hub} (alexnet-*.pth); place them there, or run "
            "without --lpips (the L-infinity budget alone, as the released code does)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = lpips.LPIPS(net="alex", verbose=False).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return lambda a, b: net(a, b).mean()


def load_vae(spec: str) -> Any:
    """A diffusers AutoencoderKL for :func:`shade` (:func:`alignscope._diffusers.load_vae`, the
    one loader that ``embed --vae`` shares): a VAE folder, a Stable Diffusion folder (its
    ``vae`` subfolder) or a hub id on machines that can reach it."""
    from alignscope._diffusers import load_vae as load

    return load(spec, purpose="nightshade")
