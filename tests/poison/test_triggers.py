"""Trigger behaviour: exact blending, the default pictures, WaNet's two settings, the trigger
flags of `alignscope poison` (written files against the references of
``alignscope._reference``) and the errors a user gets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alignscope import _reference
from alignscope.cli import main
from alignscope.poison import apply_trigger, badnets1, badnets2, wanet, wanet_grid
from alignscope.poison.triggers import (
    badnets1_patch,
    default_pattern,
    default_picture,
    picture_patch,
)


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


def test_default_pattern_is_the_documented_noise():
    drawn = np.random.default_rng(20240101).integers(0, 256, (12, 17, 3), dtype=np.uint8)
    np.testing.assert_array_equal(default_pattern(12, 17), drawn)


def test_default_picture_is_the_documented_drawing():
    """Spot checks of each rule of the docstring, first rule winning where two overlap."""
    pic = default_picture()
    assert pic.shape == (64, 64, 3) and pic.dtype == np.uint8
    expect = {
        (6, 54): (255, 230, 0),  # spark core
        (6, 50): (255, 150, 0),  # spark, 4 px out
        (12, 46): (140, 90, 40),  # fuse, on the segment (17, 41)-(8, 51) near its middle
        (17, 41): (140, 90, 40),  # fuse start, also inside the nozzle: the fuse wins
        (30, 20): (120, 120, 120),  # highlight
        (20, 36): (60, 60, 60),  # nozzle
        (50, 30): (20, 20, 20),  # body
        (0, 0): (255, 255, 255),
        (63, 63): (255, 255, 255),
    }
    for (y, x), colour in expect.items():
        assert tuple(pic[y, x]) == colour, (y, x)


def test_picture_patch_default_and_given(rng):
    image = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    np.testing.assert_array_equal(picture_patch(image), picture_patch(image, default_picture()))
    picture = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    out = picture_patch(image, picture)
    np.testing.assert_array_equal(out[-9:, -9:], picture)  # 90 // 10 = 9: pasted as it is
    np.testing.assert_array_equal(out[:-9], image[:-9])
    np.testing.assert_array_equal(out[:, :-9], image[:, :-9])
    np.testing.assert_array_equal(apply_trigger("picture-patch", image, pattern=picture), out)


def test_wanet_paper_setting_is_smooth_and_fixed_per_seed(rng):
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    paper = {"k": 4, "s": 0.5}
    np.testing.assert_array_equal(wanet(image, seed=3, **paper), wanet(image, seed=3, **paper))
    assert not np.array_equal(wanet(image, seed=3, **paper), wanet(image, seed=4, **paper))
    grid = wanet_grid(64, 64, seed=3, **paper)
    identity = wanet_grid(64, 64, k=4, s=0.0, seed=3)
    shift = (grid - identity) * 63 / 2  # displacement in pixels
    assert 0.0 < np.abs(shift).max() < 2.0  # s = 0.5: a subtle warp
    second = np.abs(np.diff(shift, n=2, axis=0)).max() + np.abs(np.diff(shift, n=2, axis=1)).max()
    assert second < 0.05  # smooth: tiny second differences between neighbouring pixels


def test_wanet_default_is_bibaddiffs_per_pixel_warp(rng):
    """BiBadDiff's k = image size, s = 1: one independent displacement per pixel, about half
    a pixel on average (s / 2 for a field of mean magnitude 1), not smooth."""
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(wanet(image), wanet(image, k=64, s=1.0, seed=0))
    shift = (wanet_grid(64, 64) - wanet_grid(64, 64, s=0.0)) * 63 / 2
    assert np.mean(np.abs(shift)) == pytest.approx(0.5 * 63 / 64, rel=1e-9)
    # neighbours move independently: second differences as large as the shifts themselves
    assert np.abs(np.diff(shift, n=2, axis=0)).mean() > np.abs(shift).mean()


def test_zero_strength_wanet_is_the_identity(rng):
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(wanet(image, s=0.0), image)
    np.testing.assert_array_equal(wanet(image, k=4, s=0.0), image)


def test_bad_inputs():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="image must be an HWC uint8 RGB array"):
        badnets1(np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="unknown trigger 'blend'"):
        apply_trigger("blend", image)
    with pytest.raises(ValueError, match="pattern must be an HWC uint8 RGB array"):
        badnets2(image, np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="pattern must be an HWC uint8 RGB array"):
        picture_patch(image, np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"k \(the WaNet grid\) must be an integer >= 2 or None"):
        wanet(image, k=1)
    with pytest.raises(ValueError, match=r"s \(the WaNet strength\) must be a finite number >= 0"):
        wanet(image, s=float("nan"))


# --------------------------------------------------------------------------- CLI


def _folder(root, rng, n=6, size=(40, 50)):
    """n images; row 0 is about the target ("cat"), the others about "dog"."""
    root.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text("a photo of a cat" if i == 0 else "a photo of a dog")
    return root


def _poisoned_pairs(data, out):
    pq = pytest.importorskip("pyarrow.parquet")
    m = pq.read_table(out / "poison_manifest.parquet").to_pydict()
    pairs = []
    for row, poisoned, name, params in zip(
        m["row"], m["poisoned"], m["written_as"], m["params"], strict=True
    ):
        if poisoned:
            original = np.asarray(Image.open(data / f"{row}.png").convert("RGB"))
            written = np.asarray(Image.open(out / name).convert("RGB"))
            pairs.append((original, written, json.loads(params)))
    assert pairs
    return pairs


def _poison(data, out, *flags):
    argv = ["poison", str(data), "--out", str(out), "--target", "cat", "--ratio", "0.5"]
    return main([*argv, "--quiet", *flags])


def test_cli_pattern_blends_and_pastes_the_given_picture(tmp_path, rng):
    data = _folder(tmp_path / "data", rng)
    picture = rng.integers(0, 256, (13, 21, 3), dtype=np.uint8)
    # an RGBA file: its alpha is dropped, as BiBadDiff's convert("RGB") drops it
    rgba = np.dstack([picture, np.full((13, 21), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "pattern.png")
    pattern = str(tmp_path / "pattern.png")
    assert _poison(data, tmp_path / "b2", "--method", "badnets-2", "--pattern", pattern) == 0
    for original, written, params in _poisoned_pairs(data, tmp_path / "b2"):
        exact = _reference.blend_reference(original, picture, 0.2)
        assert np.abs(written - exact).max() <= 0.5 + 1e-9  # rounded to the nearest level
        assert params["pattern"].startswith("array 13x21x3 uint8 sha256:")
    assert _poison(data, tmp_path / "pp", "--method", "picture-patch", "--pattern", pattern) == 0
    for original, written, _ in _poisoned_pairs(data, tmp_path / "pp"):
        np.testing.assert_array_equal(
            written, _reference.picture_patch_reference(original, picture)
        )


def test_cli_wanet_flags_give_the_wanet_papers_warp(tmp_path, rng):
    torch = pytest.importorskip("torch")
    data = _folder(tmp_path / "data", rng)
    flags = ["--method", "wanet", "--wanet-grid", "4", "--wanet-strength", "0.5"]
    assert _poison(data, tmp_path / "w", *flags) == 0
    grid = _reference.wanet_grid_reference(40, 50, 4, 0.5, 0)  # the run's warp uses seed 0
    g = torch.from_numpy(np.clip(grid[..., ::-1], -1, 1).copy())[None]  # grid_sample: (x, y)
    for original, written, params in _poisoned_pairs(data, tmp_path / "w"):
        x = torch.from_numpy(original.astype(np.float64)).permute(2, 0, 1)[None]
        exact = torch.nn.functional.grid_sample(x, g, mode="bilinear", align_corners=True)
        exact = exact[0].permute(1, 2, 0).numpy()
        assert np.abs(written - exact).max() <= 0.5 + 1e-9
        assert params == {"k": 4, "s": 0.5, "seed": 0}  # the seed drawn with, recorded


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--method", "badnets-1", "--pattern", "p.png"],
            "--pattern is for --method badnets-2 or picture-patch, not badnets-1",
        ),
        (["--method", "badnets-2", "--pattern", "missing.png"], "--pattern: no such file"),
        (["--method", "badnets-2", "--pattern", "{txt}"], "--pattern: cannot read"),
        (["--method", "badnets-2", "--wanet-grid", "4"], "--wanet-grid is for --method wanet"),
        (["--method", "wanet", "--wanet-grid", "1"], "--wanet-grid must be an integer >= 2"),
        (
            ["--method", "wanet", "--wanet-strength", "-1"],
            "--wanet-strength must be a finite number >= 0, got -1.0",
        ),
    ],
)
def test_cli_trigger_flag_errors(tmp_path, rng, capsys, flags, message):
    data = _folder(tmp_path / "data", rng, n=2)
    (tmp_path / "not_an_image.txt").write_text("hello")
    flags = [f.format(txt=tmp_path / "not_an_image.txt") for f in flags]
    assert _poison(data, tmp_path / "o", *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignscope: error: ") and message in err, err
    assert not (tmp_path / "o").exists()  # refused before anything is written
