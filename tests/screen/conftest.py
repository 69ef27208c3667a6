"""Test data shared by the screening tests."""

from __future__ import annotations

import numpy as np
import pytest


def make_pairs(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, text, second view) float32 rows whose paper-profile D_img:txt spans exact 0s,
    exact 1s and values in between.

    cos(x, x + sigma g) is about 1 / sqrt(1 + sigma^2): sigma log-uniform in [1, 8] puts the
    pair cosines on both sides of the profile's clip points 0.45 and 0.2, so the clipped score
    has heavy ties at both ends, as real CLIP data has. The second view is a noisy copy of the
    image, so its neighbourhoods overlap the image's only partly.
    """
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, d))
    sigma = np.exp(rng.uniform(np.log(1.0), np.log(8.0), size=(n, 1)))
    text = image + sigma * rng.normal(size=(n, d))
    second = image + 0.8 * rng.normal(size=(n, d))
    return image.astype(np.float32), text.astype(np.float32), second.astype(np.float32)


@pytest.fixture(scope="session")
def pairs():
    """The :func:`make_pairs` generator."""
    return make_pairs
