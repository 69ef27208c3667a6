"""Perturbation measurements (L-inf, L2, PSNR) against closed forms and an integer reference,
on the function and in the manifest columns a poisoning run writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from alignscope import _reference
from alignscope.io.datasets import open_dataset
from alignscope.poison.concepts import make_vocabulary
from alignscope.poison.methods import measurements
from alignscope.poison.run import poison_dataset


@pytest.mark.parametrize(("h", "w", "shift"), [(32, 32, 1), (40, 30, -1), (17, 64, 3)])
def test_a_constant_shift_has_a_closed_form(rng, h, w, shift):
    """Every value moved by shift / 255: L-inf |shift| / 255, L2 sqrt(3 H W) |shift| / 255,
    MSE (shift / 255)^2, so PSNR = 20 log10(255 / |shift|) (48.13 dB for one 8-bit step)."""
    original = rng.integers(10, 246, (h, w, 3), dtype=np.uint8)
    poisoned = (original.astype(np.int16) + shift).astype(np.uint8)
    m = measurements(original, poisoned)
    assert m["linf"] == pytest.approx(abs(shift) / 255, rel=1e-12)
    assert m["l2"] == pytest.approx(np.sqrt(3 * h * w) * abs(shift) / 255, rel=1e-12)
    assert m["psnr"] == pytest.approx(20 * np.log10(255 / abs(shift)), rel=1e-12)
    if shift == 1:
        assert m["psnr"] == pytest.approx(48.1308036, abs=1e-6)


def test_one_full_scale_value_has_a_closed_form():
    """One channel of one pixel from 0 to 255: L-inf = L2 = 1, MSE = 1 / (3 H W)."""
    original = np.zeros((20, 50, 3), np.uint8)
    poisoned = original.copy()
    poisoned[7, 11, 2] = 255
    m = measurements(original, poisoned)
    assert m == pytest.approx({"linf": 1.0, "l2": 1.0, "psnr": 10 * np.log10(3 * 20 * 50)})


def test_equal_and_mismatched_images():
    image = np.full((12, 12, 3), 77, np.uint8)
    assert measurements(image, image.copy()) == {"linf": 0.0, "l2": 0.0, "psnr": float("inf")}
    m = measurements(image, np.zeros((12, 13, 3), np.uint8))  # not a perturbation of it
    assert set(m) == {"linf", "l2", "psnr"} and all(np.isnan(v) for v in m.values())


@pytest.mark.parametrize("spread", [1, 6, 255])
def test_random_perturbations_match_the_reference(rng, spread):
    original = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    noise = rng.integers(-spread, spread + 1, original.shape)
    poisoned = np.clip(original.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    got = measurements(original, poisoned)
    want = _reference.perturbation_measurements(original, poisoned)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12), key


@pytest.mark.parametrize("method", ["badnets-1", "badnets-2", "wanet", "relabel"])
def test_manifest_columns_match_the_reference(tmp_path, rng, method):
    """The manifest's linf / l2 / psnr of every poisoned row equal the reference computed from
    the original file and the file the run wrote; unpoisoned rows have none (NaN)."""
    pq = pytest.importorskip("pyarrow.parquet")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(8):
        h, w = (32, 32) if i % 2 else (40, 56)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text("a photo of a cat" if i == 0 else "a photo of a dog")
    poison_dataset(
        open_dataset(data),
        tmp_path / "out",
        method=method,
        target="cat",
        ratio=0.5,
        seed=1,
        vocabulary=make_vocabulary(["dog", "cat"]),
    )
    m = pq.read_table(tmp_path / "out" / "poison_manifest.parquet").to_pydict()
    assert sum(m["poisoned"]) == 4
    for i, row in enumerate(m["row"]):
        if not m["poisoned"][i]:
            assert all(np.isnan(m[key][i]) for key in ("linf", "l2", "psnr"))
            continue
        original = np.asarray(Image.open(data / f"{row}.png").convert("RGB"))
        written = np.asarray(Image.open(tmp_path / "out" / m["written_as"][i]).convert("RGB"))
        want = _reference.perturbation_measurements(original, written)
        for key in ("linf", "l2", "psnr"):
            assert m[key][i] == pytest.approx(want[key], rel=1e-12), (method, row, key)
        if method == "relabel":  # the image is unchanged
            assert (m["linf"][i], m["l2"][i], m["psnr"][i]) == (0.0, 0.0, float("inf"))
        else:
            assert 0 < m["linf"][i] <= 1 and np.isfinite(m["psnr"][i])
