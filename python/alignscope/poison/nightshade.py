"""Nightshade-style clean-label poisons (Shan et al., S&P 2024), as the released generator makes
them: an image of concept p, perturbed within an L-infinity budget so that the VAE's latent mean
approaches that of an anchor image of the target concept t.

- candidates: pairs whose caption mentions p, CLIP score with "a photo of a {p}" above 0.24,
  the 300 captions most similar to that phrase, then a seeded sample;
- preprocessing: the source image's short side resized to 512 (bilinear) and the centred
  512 x 512 square cropped, as the release's ``PoisonGeneration.resizer`` does with
  torchvision's ``Resize(512)`` and ``CenterCrop(512)``; the poison is that square (the
  default of ``poison_dataset`` and ``alignscope poison``; :func:`shade` itself perturbs the
  image it is given unless ``size`` is set); the anchor is resized (bicubic) to the source;
- optimisation: sign-PGD on the pixels (values in [0, 1]), 500 steps, step i of T taken with
  size ``budget * (1 - 0.99 i / T)`` (the release's ``step_size - (step_size - step_size /
  100) / t_size * i``: from the budget down to 0.01198 budget at the last step, never quite
  budget / 100), budget 0.04 by default (the release's command-line default; its class
  default is 0.05), the loss the L2 distance between the unscaled latent means; the VAE runs
  in float32 (the release: float16);
- the paper's perceptual variant: add ``weight * max(0, P(x + delta, x) - 0.07)`` for a
  perceptual distance P (LPIPS when its weights are available locally);
- the budget holds on the saved 8-bit image: the final perturbation is rounded to whole 8-bit
  steps of at most floor(255 * budget).

Where we still differ from the release: it keeps the perturbation only within the budget and
clamps x + delta inside the loss, we also project x + delta into [0, 1] after every step; it
truncates the final pixels to 8 bits, we round them (so that the saved image keeps the budget).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SCORE_THRESHOLD = 0.24
TOP_CAPTIONS = 300
PAPER_LPIPS_BUDGET = 0.07
NIGHTSHADE_BUDGET = 0.04  # gen_poison.py's --eps default (0.04-0.05 in [0, 1] pixel units)
NIGHTSHADE_STEPS = 500  # opt.py's t_size
NIGHTSHADE_SIZE = 512  # opt.py's resizer: Resize(512) then CenterCrop(512)


@dataclass
class ShadeResult:
    image: np.ndarray  # HWC uint8, the poison as saved
    latent_before: float  # ||E(x) - E(anchor)|| before the perturbation
    latent_after: float  # ... and after, measured on the saved 8-bit image
    linf: float  # in [0, 1] pixel units, on the saved image
    source: np.ndarray  # HWC uint8, the resized and cropped image that was perturbed


def step_sizes(budget: float, steps: int) -> np.ndarray:
    """The sign-PGD step size of each of ``steps`` iterations, in [0, 1] pixel units.

    The release's opt.py takes step i (from 0) of T with size
    ``s - (s - s / 100) / T * i`` for s the budget (it works in [-1, 1] units, budget and step
    both doubled): linear from the budget, ending at ``s (1 - 0.99 (T - 1) / T)``, 0.01198 s
    for its 500 steps.

    Returns
    -------
    (steps,) float64.
    """
    s = float(budget)
    return np.array([s - (s - s / 100.0) / steps * i for i in range(steps)], dtype=np.float64)


def check_shade_settings(budget: Any, steps: Any, size: Any) -> None:
    """Refuse a budget outside (0, 1), fewer than one step or a size below 8 pixels, each in one
    line naming the setting (before any image is loaded)."""
    real = (int, float, np.integer, np.floating)
    if isinstance(budget, bool) or not isinstance(budget, real) or not 0 < budget < 1:
        raise ValueError(
            f"nightshade budget (--budget) must be in (0, 1), in [0, 1] pixel units (0.04 the "
            f"release's), got {budget!r}"
        )
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"nightshade steps (--steps) must be an int >= 1, got {steps!r}")
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8
    ):
        raise ValueError(
            f"nightshade size (--nightshade-size) must be an int >= 8, the side of the square "
            f"the sources are cropped to (512 the release's), or None (0 on the command line) "
            f"to keep each image's size; got {size!r}"
        )


def square_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The release's source preprocessing: torchvision's ``Resize(size)`` (bilinear, on a PIL
    image) then ``CenterCrop(size)``.

    :func:`alignscope.io.datasets.resize_center_crop` with the release's bilinear filter (the
    diffusion classifier's :func:`~alignscope.evaluate.diffusion_classifier.fit_image` is the
    same crop with Li et al.'s bicubic one). An image already ``size`` square is returned as
    it is.
    """
    from alignscope.io.datasets import resize_center_crop

    return resize_center_crop(image, size, size, "bilinear")


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
    budget: float = NIGHTSHADE_BUDGET,
    steps: int = NIGHTSHADE_STEPS,
    size: int | None = None,
    perceptual: Callable[[Any, Any], Any] | None = None,
    perceptual_weight: float = 10.0,
    perceptual_budget: float = PAPER_LPIPS_BUDGET,
    seed: int = 0,
) -> ShadeResult:
    """Perturb ``image`` toward ``anchor`` in ``vae``'s latent space.

    Parameters
    ----------
    image : HWC uint8 RGB, the source image of concept p.
    anchor : HWC uint8 RGB image of the target concept; resized (bicubic) to the source.
    vae : a diffusers ``AutoencoderKL`` (run in float32).
    budget : L-infinity budget in [0, 1] pixel units (0.04, the release's command line).
    steps : sign-PGD steps (500); their sizes are :func:`step_sizes`.
    size : the source is first made a ``size`` square by :func:`square_crop` (the release
        uses 512, :data:`NIGHTSHADE_SIZE`, which ``poison_dataset`` and ``alignscope poison``
        pass by default); None (the default here) perturbs the image as given.
    perceptual : optional ``perceptual(a, b)`` on two (1, 3, H, W) tensors in [-1, 1],
        returning a scalar distance, penalised above ``perceptual_budget``.
    seed : torch's seed for the run.

    Returns
    -------
    :class:`ShadeResult`; its ``image`` and ``source`` are the ``size`` square (the given
    image's shape when ``size`` is None).
    """
    import torch
    from PIL import Image

    check_shade_settings(budget, steps, size)
    if size is not None:
        image = square_crop(image, int(size))
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
    for step in step_sizes(budget, steps).tolist():
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
    return ShadeResult(out, before, after, linf, source=image)


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
