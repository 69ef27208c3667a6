"""Fixtures shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def four_images(tmp_path, rng) -> Path:
    """Four 16 x 16 images with captions, the training tests' dataset."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).resize(
            (16, 16), Image.BICUBIC
        ).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(f"a photo of thing {i}")
    return data
