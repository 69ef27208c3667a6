"""Pooled VAE latent means of images and of mildly purified copies (``embed --vae``).

The latent is the one Nightshade optimises (:func:`alignscope.poison.nightshade.shade`): the
mean of a diffusers AutoencoderKL's latent distribution for pixels in [0, 1] mapped to
[-1, 1]. It is average-pooled to a ``POOL_GRID`` x ``POOL_GRID`` grid, so a row holds
``latent_channels * POOL_GRID**2`` floats (64 for Stable Diffusion's 4-channel VAE) whatever
the input size, and stores stay small.

The purified view is the same latent of a mildly purified copy of the image (JPEG, a small
down-and-up resize, a slight blur). Adversarial perturbations such as Nightshade's are brittle
under it, so a poison's latent moves back toward its image's content; a benign image's latent
barely moves. The screening scores compare the two views.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._devices import check_device
from alignscope.embed.preprocess import Preset, geometry, normalise

POOL_GRID = 4
"""Side of the spatial grid the latent mean is averaged onto: 4 x 4 cells keep a coarse layout
(where in the image the content sits) at 16 values per latent channel."""

DEFAULT_SIZE = 256
"""Side of the square the VAE sees: 32 x 32 latent cells for Stable Diffusion's VAE (8x down),
enough for the pooled grid and cheap enough to embed datasets on a CPU."""

# Mild purification. Each step is the lightest of its kind that is known to undo part of an
# L-infinity adversarial perturbation (a budget of 0.03-0.05, i.e. 8-13 steps of 255) while
# leaving what the image shows unchanged: a person sees the same picture, CLIP the same concept.
PURIFY_JPEG_QUALITY = 75
"""JPEG re-encoding at quality 75: libjpeg's default, the quality most web images already have,
so it loses little more than they have lost; it quantises away high-frequency perturbations."""
PURIFY_SCALE = 0.75
"""Downscale to 3/4 of each side and back (bicubic): drops the finest quarter of the spectrum,
where sign-gradient perturbations concentrate, while edges and textures remain."""
PURIFY_BLUR_RADIUS = 0.5
"""Gaussian blur of radius (sigma) 0.5 pixel: smooths pixel-to-pixel noise only."""


def purify(image: Any) -> Any:
    """The mildly purified copy of an RGB PIL image (same size): JPEG re-encoding at
    ``PURIFY_JPEG_QUALITY``, a bicubic resize to ``PURIFY_SCALE`` of each side and back, then a
    Gaussian blur of radius ``PURIFY_BLUR_RADIUS``; each step is PIL's."""
    from PIL import Image, ImageFilter

    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=PURIFY_JPEG_QUALITY)
    out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    w, h = out.size
    # each side scaled and rounded half up (52.5 -> 53), at least 1 pixel
    small = (max(1, int(w * PURIFY_SCALE + 0.5)), max(1, int(h * PURIFY_SCALE + 0.5)))
    out = out.resize(small, Image.BICUBIC).resize((w, h), Image.BICUBIC)
    return out.filter(ImageFilter.GaussianBlur(PURIFY_BLUR_RADIUS))


def check_vae_size(size: int) -> int:
    """``size`` if it is a usable VAE input side: a multiple of 8 (Stable Diffusion's VAE
    halves the side three times) and at least 8."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 8 or size % 8:
        raise ValueError(f"the VAE input size must be a multiple of 8 and >= 8, got {size!r}")
    return size


class VAEEncoder:
    """Image -> (pooled latent mean, pooled latent mean of its purified copy).

    Parameters
    ----------
    path : a diffusers AutoencoderKL folder, or a Stable Diffusion folder (its ``vae``).
    size : side of the square the VAE sees (a multiple of 8): each image's short side is
        resized to it (bilinear, aspect kept), then the centre square is cropped.
    device : torch device ("cpu", "cuda"); the VAE runs in float32.

    Attributes
    ----------
    path, size, device : as given. dim : floats per row, latent channels x ``POOL_GRID**2``.
    """

    def __init__(self, path: str | Path, size: int = DEFAULT_SIZE, device: str = "cpu") -> None:
        from alignscope._diffusers import load_vae

        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"VAE folder {str(self.path)!r} does not exist")
        self.size = check_vae_size(size)
        self.device = check_device(device)
        self.model = load_vae(self.path, purpose="embedding with a VAE").to(self.device).eval()
        self.dim = int(self.model.config.latent_channels) * POOL_GRID**2
        # mean = std = 0.5 maps [0, 1] to [-1, 1]: the ``pixels * 2 - 1`` of Nightshade
        self._preset = Preset("vae", size, None, size, (0.5,) * 3, (0.5,) * 3)

    def encode(self, images: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Two (len(images), dim) float32 arrays for RGB PIL images of any sizes: the pooled
        latent means of the images and of their purified copies (:func:`purify`, applied at
        the image's own size before the resize, as a curator's pipeline would see it)."""
        if not images:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, self.dim), np.float32)
        return self._pooled(images), self._pooled([purify(im) for im in images])

    def _pooled(self, images: list[Any]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        batch = np.stack([normalise(geometry(im, self._preset), self._preset) for im in images])
        with torch.no_grad():
            x = torch.from_numpy(batch).to(self.device)
            mean = self.model.encode(x).latent_dist.mean
            pooled = F.adaptive_avg_pool2d(mean.float(), POOL_GRID)
        return pooled.reshape(len(images), -1).cpu().numpy().astype(np.float32, copy=False)
