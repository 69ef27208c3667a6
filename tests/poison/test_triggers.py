"""Trigger geometry pixel by pixel, exact blending, a smooth and reproducible WaNet warp."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope.poison import apply_trigger, badnets1, badnets2, wanet, wanet_grid
from alignscope.poison.triggers import badnets1_patch, default_pattern


@pytest.mark.parametrize(("h", "w"), [(32, 32), (64, 48), (256, 256), (100, 37)])
def test_badnets1_geometry(rng, h, w):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = badnets1(image)
    side = min(h, w) // 10
    offsets = range(-side // 4, side // 4)  # BiBadDiff's band around the anti-diagonal
    for r in range(h):
        for c in range(w):
            if r >= h - side and c >= w - side:
                rr, cc = r - (h - side), c - (w - side)
                expected = 255 if rr + cc - (side - 1) in offsets else 0
                assert (out[r, c] == expected).all(), (r, c)
            else:
                assert (out[r, c] == image[r, c]).all(), (r, c)
    assert not np.shares_memory(out, image)


def test_badnets1_patch_is_an_anti_diagonal():
    patch = badnets1_patch(8)
    assert patch[0, 7] == 255 and patch[7, 0] == 255 and patch[0, 0] == 0 and patch[7, 7] == 0
    np.testing.assert_array_equal(patch, patch.T)  # symmetric about the main diagonal


@pytest.mark.parametrize("alpha", [0.0, 0.2, 1.0])
def test_badnets2_blends_exactly(rng, alpha):
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    pattern = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    out = badnets2(image, pattern, alpha)
    expected = np.rint((1 - alpha) * image.astype(float) + alpha * pattern.astype(float))
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    default = badnets2(image)
    np.testing.assert_array_equal(default, badnets2(image, default_pattern(40, 30), 0.2))


def test_wanet_is_smooth_and_fixed_per_seed(rng):
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(wanet(image, seed=3), wanet(image, seed=3))
    assert not np.array_equal(wanet(image, seed=3), wanet(image, seed=4))
    grid = wanet_grid(64, 64, seed=3)
    identity = wanet_grid(64, 64, s=0.0, seed=3)
    shift = (grid - identity) * 64 / 2  # displacement in pixels
    assert 0.0 < np.abs(shift).max() < 2.0  # s = 0.5: a subtle warp
    second = np.abs(np.diff(shift, n=2, axis=0)).max() + np.abs(np.diff(shift, n=2, axis=1)).max()
    assert second < 0.05  # smooth: tiny second differences between neighbouring pixels


def test_zero_strength_wanet_is_the_identity(rng):
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(wanet(image, s=0.0), image)


def test_bad_inputs():
    with pytest.raises(ValueError, match="HWC uint8 RGB"):
        badnets1(np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="unknown trigger 'blend'"):
        apply_trigger("blend", np.zeros((32, 32, 3), dtype=np.uint8))
