"""A constructed poisoning whose answer is known: four smooth images, each also present with a
high-frequency checkerboard added (the "poisoned" copies, marked in a manifest). The
checkerboard is faint next to the diffusion noise except at the lowest timesteps, so its
gradient signal must sit there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("pyarrow")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every analysis test on one torch thread (tests/conftest.py: one_torch_thread); a
    conftest's pytestmark would not reach the tests."""


def checkerboard(size: int) -> np.ndarray:
    """(size, size, 1) of +-1, alternating every pixel: the highest frequency an image has."""
    yy, xx = np.mgrid[:size, :size]
    return np.where((yy + xx) % 2 == 0, 1.0, -1.0)[..., None]


@pytest.fixture
def planted(tmp_path, rng) -> Path:
    """16 x 16 images 0..7: odd ones are the even ones plus a +-60 checkerboard (poisoned)."""
    from alignscope.io.manifest import write_manifest

    data = tmp_path / "planted"
    data.mkdir()
    for i in range(8):
        if i % 2 == 0:
            small = rng.integers(60, 196, (4, 4, 3), dtype=np.uint8)
            base = np.asarray(Image.fromarray(small).resize((16, 16), Image.BICUBIC), float)
        image = base + 60.0 * checkerboard(16) if i % 2 else base
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text("a photo of a thing")
    write_manifest(
        data / "poison_manifest.parquet",
        {"row": list(range(8)), "poisoned": [bool(i % 2) for i in range(8)]},
    )
    return data
