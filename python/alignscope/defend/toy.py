"""A tiny synthetic class-labelled image set for tests and toy runs (CPU, seconds).

Class k is a grating, horizontal or vertical (k % 2) with a period of 9 / 2.2**(k // 2)
pixels, with random phase, period jitter, colour and brightness, plus pixel noise: the class is
in the image's structure, not its mean colour, so a network has to learn a (small) feature to
tell classes apart. Both features survive a horizontal flip, so flipped views stay in their class.

The default contrast (a grating amplitude of 0.03-0.05, 8-13 levels) is of the order of the
poisons' 8/255 budget. That is what it takes, at this scale, for error-minimising noise to win
over the images' own features: with stronger gratings a tiny surrogate learns the real feature
within its first training steps and the min-min noise then mostly *amplifies* that feature,
which leaves a model trained on it accurate. On CIFAR-10 the real features are far harder than
any 8/255 pattern, so the papers need no such tuning.
"""

from __future__ import annotations

import numpy as np


def gratings(
    n_per_class: int,
    n_classes: int = 4,
    size: int = 16,
    *,
    contrast: tuple[float, float] = (0.03, 0.05),
    noise: float = 0.02,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` images of each of ``n_classes`` gratings, (N, size, size, 3) uint8, and
    their labels (N,) int64, in class-interleaved order (row i is of class i % n_classes)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1123]))
    n = n_per_class * n_classes
    labels = np.arange(n, dtype=np.int64) % n_classes
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # horizontal or vertical stripes, coarse or fine (and finer for more classes): features a
    # horizontal flip keeps, so flipped views stay in their class
    theta = (labels % 2) * np.pi / 2 + rng.normal(0, 0.08, n)
    period = 9.0 / (2.2 ** (labels // 2)) * rng.uniform(0.9, 1.1, n)
    freq = 2 * np.pi / period
    phase = rng.uniform(0, 2 * np.pi, n)
    proj = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy
    wave = np.sin(freq[:, None, None] * proj + phase[:, None, None])
    base = rng.uniform(0.3, 0.7, (n, 1, 1, 3))
    tint = rng.uniform(0.5, 1.0, (n, 1, 1, 3))
    amplitude = rng.uniform(*contrast, (n, 1, 1, 1))
    image = base + amplitude * tint * wave[..., None] + rng.normal(0, noise, (n, size, size, 3))
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8), labels


def write_folder(root, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    """``images`` as ``root/00000.png`` ... with sidecar captions "a photo of a {class}"."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(root / f"{i:05d}.png")
        (root / f"{i:05d}.txt").write_text(f"a photo of a {classes[label]}", encoding="utf-8")
