"""Trigger geometry against references written from BiBadDiff's description, not the triggers.

BadNets-1 is checked against :func:`alignscope._reference.badnets1_reference` (a pixel loop
over BiBadDiff's band offsets) at image sizes that are multiples of 10 and sizes that are not,
square and not, both on the function and on the files a poisoning run writes. BadNets-2's blend
and the picture patch are checked pixel for pixel against ``blend_reference`` and
``picture_patch_reference`` (pictures resized by PIL's bicubic, as BiBadDiff's
``Image.resize`` calls do), WaNet's grid against ``wanet_grid_reference`` (its bicubic
upsampling itself checked against torch's, the call WaNet makes) at 32, 64, 256 and 512 px in
BiBadDiff's setting and the WaNet paper's, and WaNet's sampler against torch's
``grid_sample`` (WaNet's own sampler).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from alignscope import _reference
from alignscope.io.datasets import open_dataset
from alignscope.poison import badnets1, badnets2, wanet, wanet_grid
from alignscope.poison.concepts import make_vocabulary
from alignscope.poison.run import poison_dataset
from alignscope.poison.triggers import default_picture, picture_patch

# Multiples of 10 (side exact) and not (side rounded down), square and not, down to the
# smallest images a trigger accepts (side 1 and 2, where the band is at its thinnest).
SIZES = [
    (10, 10),
    (19, 25),
    (20, 20),
    (30, 30),
    (32, 32),
    (40, 40),
    (64, 64),
    (100, 100),
    (128, 128),
    (255, 255),
    (256, 256),
    (512, 512),
    (100, 37),
    (37, 100),
    (64, 200),
    (130, 90),
]


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_badnets1_matches_the_reference(rng, h, w):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    before = image.copy()
    np.testing.assert_array_equal(badnets1(image), _reference.badnets1_reference(image))
    np.testing.assert_array_equal(image, before)  # the input is not modified


def test_badnets1_reference_band_covers_the_published_share():
    """The README's figure for BiBadDiff's trigger: about 43% of the square white at 512 px;
    a patch of side 10 (100 px images) has offsets -3..1 white, 43 of its 100 pixels."""
    out = _reference.badnets1_reference(np.full((512, 512, 3), 128, np.uint8))
    square = out[-51:, -51:, 0]
    assert set(np.unique(square)) == {0, 255}
    assert np.mean(square == 255) == pytest.approx(0.43, abs=0.005)
    assert (out[:-51] == 128).all() and (out[:, :-51] == 128).all()
    small = _reference.badnets1_reference(np.full((100, 100, 3), 7, np.uint8))[-10:, -10:, 1]
    assert int(np.sum(small == 255)) == sum(10 - abs(k) for k in range(-3, 2)) == 43


def _mixed_size_dataset(root, rng):
    """One image per size, all about "dog" except one "cat" image (the target, never
    poisoned), so that a ratio just below 1 poisons every other row."""
    root.mkdir()
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{i:02d}.png")
        (root / f"{i:02d}.txt").write_text("a photo of a cat" if i == 3 else "a photo of a dog")
    return root


def _run(tmp_path, rng, method, **options):
    pq = pytest.importorskip("pyarrow.parquet")
    data = _mixed_size_dataset(tmp_path / "data", rng)
    report = poison_dataset(
        open_dataset(data),
        tmp_path / "out",
        method=method,
        target="cat",
        ratio=0.99,
        seed=0,
        vocabulary=make_vocabulary(["dog", "cat"]),
        trigger_options=options or None,
    )
    assert report.poisoned == len(SIZES) - 1
    manifest = pq.read_table(tmp_path / "out" / "poison_manifest.parquet").to_pydict()
    pairs = []
    for row, poisoned, name in zip(
        manifest["row"], manifest["poisoned"], manifest["written_as"], strict=True
    ):
        original = np.asarray(Image.open(data / f"{row:02d}.png").convert("RGB"))
        written = np.asarray(Image.open(tmp_path / "out" / name).convert("RGB"))
        assert poisoned == (row != 3)
        if not poisoned:
            np.testing.assert_array_equal(written, original)  # the target's row is untouched
        else:
            pairs.append((original, written))
    return pairs, manifest


def test_poisoned_files_carry_the_reference_badnets1_trigger(tmp_path, rng):
    pairs, _ = _run(tmp_path, rng, "badnets-1")
    for original, written in pairs:
        np.testing.assert_array_equal(
            written, _reference.badnets1_reference(original), err_msg=str(original.shape)
        )


def _assert_rounded(out: np.ndarray, exact: np.ndarray) -> None:
    """out is exact rounded to the nearest integer; at a tie (x.5) either neighbour counts,
    the description fixes no tie rule."""
    frac = exact - np.floor(exact)
    tie = np.abs(frac - 0.5) < 1e-9
    np.testing.assert_array_equal(out[~tie], np.floor(exact[~tie] + 0.5))
    assert np.all((out[tie] == np.floor(exact[tie])) | (out[tie] == np.ceil(exact[tie])))


@pytest.mark.parametrize(("alpha", "value"), [(0.2, 255), (0.35, 40)])
def test_badnets2_blends_a_resized_pattern(rng, alpha, value):
    """A constant pattern of another size resizes to the same constant, so the blend has a
    closed form: (1 - alpha) image + alpha value."""
    image = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    pattern = np.full((17, 23, 3), value, np.uint8)
    out = badnets2(image, pattern, alpha)
    assert out.dtype == np.uint8 and out.shape == image.shape
    _assert_rounded(out.astype(np.float64), (1 - alpha) * image.astype(np.float64) + alpha * value)


def test_poisoned_files_carry_the_badnets2_blend(tmp_path, rng):
    pattern = np.full((12, 12, 3), 200, np.uint8)
    pairs, manifest = _run(tmp_path, rng, "badnets-2", pattern=pattern, alpha=0.3)
    for original, written in pairs:
        _assert_rounded(written.astype(np.float64), 0.7 * original.astype(np.float64) + 60.0)
    # an array option is recorded by shape, dtype and digest (the manifest is JSON)
    digest = hashlib.sha256(pattern.tobytes()).hexdigest()[:16]
    params = [json.loads(p) for p in manifest["params"] if p]
    assert len(params) == len(pairs)
    assert all(
        p == {"alpha": 0.3, "pattern": f"array 12x12x3 uint8 sha256:{digest}"} for p in params
    )


def _grid_sample_reference(image: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """WaNet's sampling: torch's bilinear grid_sample with align_corners=True on the grid
    clamped to [-1, 1], in float64, before rounding to 8 bits."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x = torch.from_numpy(image.astype(np.float64)).permute(2, 0, 1)[None]
    # grid_sample takes (x, y) in the last axis; wanet_grid gives (y, x)
    g = torch.from_numpy(np.clip(grid[..., ::-1], -1.0, 1.0).copy())[None]
    out = functional.grid_sample(x, g, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize(("h", "w", "s"), [(40, 40, 0.5), (64, 48, 0.5), (30, 100, 4.0)])
def test_wanet_samples_its_grid_as_wanet_does(rng, h, w, s):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    grid = wanet_grid(h, w, s=s, seed=5)
    out = wanet(image, s=s, seed=5)
    _assert_rounded(out.astype(np.float64), _grid_sample_reference(image, grid))
    if s > 1:  # a strong warp moves pixels: the test above compares something
        assert not np.array_equal(out, image)


@pytest.mark.parametrize("s", [0.5, 2.0])
def test_wanet_field_is_normalised_and_scaled_by_s_over_h(s):
    """At H = W = k the bicubic upsampling is the identity, so the displacement is the field
    itself: mean magnitude 1 (the normalisation) times s / H, on top of the identity grid of
    normalised coordinates."""
    k = 4
    grid = wanet_grid(k, k, k=k, s=s, seed=11)
    identity = np.stack(np.meshgrid(*(np.linspace(-1, 1, k),) * 2, indexing="ij"), axis=-1)
    np.testing.assert_allclose(wanet_grid(k, k, k=k, s=0.0, seed=11), identity, atol=1e-15)
    field = (grid - identity) * k / s
    assert np.mean(np.abs(field)) == pytest.approx(1.0, rel=1e-6)
    assert np.abs(field).max() > 1.0  # random displacements, not all of equal size
    np.testing.assert_array_equal(grid, wanet_grid(k, k, k=k, s=s, seed=11))  # fixed per seed
    assert not np.allclose(grid, wanet_grid(k, k, k=k, s=s, seed=12))


def test_poisoned_files_share_one_warp(tmp_path, rng):
    """Every poisoned image of a run gets the same seeded warp, sampled as WaNet samples."""
    pairs, _ = _run(tmp_path, rng, "wanet", s=3.0, seed=2)
    for original, written in pairs:
        h, w = original.shape[:2]
        reference = _grid_sample_reference(original, wanet_grid(h, w, s=3.0, seed=2))
        _assert_rounded(written.astype(np.float64), reference)


def _small_set(root, rng):
    """Six 24 x 30 images about "dog" and two about "cat" (the target)."""
    root.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text("a photo of a cat" if i < 2 else "a photo of a dog")
    return root


def test_the_warp_follows_the_runs_seed_and_evaluate_rebuilds_it(tmp_path, rng, capsys):
    """`poison --seed S --method wanet` draws its warp with S (it used seed 0 whatever S was),
    records it in every poisoned row, and evaluate's rebuilt trigger is that warp; a dissection
    that looks for another trigger than the manifest's is refused before any model loads."""
    pq = pytest.importorskip("pyarrow.parquet")
    from alignscope.cli import main
    from alignscope.evaluate import Dissection, EvalConfig
    from alignscope.evaluate.detectors import poisoning_trigger, rebuild_trigger

    data = _small_set(tmp_path / "data", rng)
    written = {}
    for seed in (3, 4):
        out = tmp_path / f"seed{seed}"
        argv = ["poison", str(data), "--out", str(out), "--method", "wanet", "--target", "cat"]
        assert main([*argv, "--ratio", "0.75", "--seed", str(seed), "--quiet"]) == 0
        manifest = out / "poison_manifest.parquet"
        table = pq.read_table(manifest).to_pydict()
        rows = [i for i, p in enumerate(table["poisoned"]) if p]
        assert len(rows) == 6 and all(
            json.loads(table["params"][i]) == {"seed": seed} for i in rows
        )
        assert poisoning_trigger(manifest) == ("wanet", {"seed": seed})
        warp = rebuild_trigger(manifest)
        grid = _reference.wanet_grid_reference(24, 30, None, 1.0, seed=seed)
        for i in rows:
            original = np.asarray(Image.open(data / f"{table['row'][i]}.png").convert("RGB"))
            image = np.asarray(Image.open(out / table["written_as"][i]).convert("RGB"))
            _assert_rounded(image.astype(np.float64), _grid_sample_reference(original, grid))
            np.testing.assert_array_equal(warp(original), image)
            written[seed, table["row"][i]] = image
    assert all(not np.array_equal(written[3, r], written[4, r]) for r in range(2, 8))
    dissection = Dissection(target_class="cat", class_names=["cat", "dog"])  # badnets-1
    config = EvalConfig(concepts=["cat"], dissection=dissection, poison_manifest=str(manifest))
    with pytest.raises(ValueError) as exc:
        config.check()
    assert str(exc.value) == (
        "dissection trigger 'badnets-1' is not the poisoning's: the poison manifest records a "
        "wanet attack; give a TorchScript detector trained on it (CLI --trigger FILE)"
    )


def test_evaluate_checks_the_badnets2_pattern_against_the_manifest(tmp_path, rng):
    from alignscope.evaluate import Dissection, EvalConfig
    from alignscope.evaluate.detectors import rebuild_trigger
    from alignscope.poison.methods import _describe

    data = _small_set(tmp_path / "data", rng)
    picture = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "picture.png")
    poison_dataset(
        open_dataset(data), tmp_path / "out", method="badnets-2", target="cat", ratio=0.75,
        vocabulary=make_vocabulary(["dog", "cat"]), trigger_options={"pattern": picture},
    )  # fmt: skip
    manifest = str(tmp_path / "out" / "poison_manifest.parquet")
    image = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    blend = rebuild_trigger(manifest, tmp_path / "picture.png")
    _assert_rounded(
        blend(image).astype(np.float64), _reference.blend_reference(image, picture, 0.2)
    )

    def check(pattern):
        dissection = Dissection("cat", ["cat", "dog"], trigger="badnets-2", pattern=pattern)
        EvalConfig(concepts=["cat"], dissection=dissection, poison_manifest=manifest).check()

    check(str(tmp_path / "picture.png"))  # the poisoning's picture: accepted
    with pytest.raises(ValueError) as exc:
        check(None)
    assert str(exc.value) == (
        "dissection pattern is not the picture the poisoning used: the manifest records "
        f"{_describe(picture)}, this is the default (CLI --trigger-pattern)"
    )


# --------------------------------------------------------------------------- #19: the papers'
# settings pixel for pixel at the sizes of the papers' experiments (CIFAR-10 32 px, 64 px,
# Caltech-15 256 px, ImageNette 512 px)

PAPER_SIZES = [32, 64, 256, 512]
WANET_SETTINGS = [(None, 1.0), (4, 0.5)]  # BiBadDiff's (k = image size, s = 1), WaNet's


def _documented_default_pattern(h: int, w: int) -> np.ndarray:
    """The default BadNets-2 pattern as its docstring describes it."""
    return np.random.default_rng(20240101).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", PAPER_SIZES)
def test_badnets2_matches_the_reference(rng, size):
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    same = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)  # resized to the image
    for pattern, alpha in ((same, 0.2), (other, 0.2), (other, 0.35)):
        exact = _reference.blend_reference(image, pattern, alpha)
        _assert_rounded(badnets2(image, pattern, alpha).astype(np.float64), exact)
    exact = _reference.blend_reference(image, _documented_default_pattern(size, size), 0.2)
    _assert_rounded(badnets2(image).astype(np.float64), exact)


@pytest.mark.parametrize("size", PAPER_SIZES)
def test_picture_patch_matches_the_reference(rng, size):
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    picture = rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        picture_patch(image, picture), _reference.picture_patch_reference(image, picture)
    )
    np.testing.assert_array_equal(
        picture_patch(image), _reference.picture_patch_reference(image, default_picture())
    )


def test_bicubic_reference_is_torchs_align_corners_upsampling(rng):
    """The reference's upsampling is the one WaNet and BiBadDiff call:
    ``F.interpolate(mode="bicubic", align_corners=True)``."""
    torch = pytest.importorskip("torch")
    for (kh, kw), (h, w) in (((4, 4), (32, 32)), ((4, 4), (512, 512)), ((5, 7), (30, 100))):
        field = rng.uniform(-1, 1, (kh, kw))
        want = torch.nn.functional.interpolate(
            torch.from_numpy(field)[None, None], size=(h, w), mode="bicubic", align_corners=True
        )[0, 0].numpy()
        got = _reference.bicubic_align_corners_reference(field, h, w)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", PAPER_SIZES)
@pytest.mark.parametrize(("k", "s"), WANET_SETTINGS)
def test_wanet_matches_the_reference(rng, size, k, s):
    grid = _reference.wanet_grid_reference(size, size, k, s, seed=7)
    np.testing.assert_allclose(wanet_grid(size, size, k=k, s=s, seed=7), grid, rtol=0, atol=1e-12)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = wanet(image, k=k, s=s, seed=7)
    _assert_rounded(out.astype(np.float64), _grid_sample_reference(image, grid))
    assert not np.array_equal(out, image)  # the warp moves pixels at every size


def test_wanet_defaults_are_bibaddiffs(rng):
    """No options: k = the image size and s = 1 (BiBadDiff), also on a non-square image."""
    image = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    grid = _reference.wanet_grid_reference(40, 70, None, 1.0, seed=0)
    np.testing.assert_allclose(wanet_grid(40, 70), grid, rtol=0, atol=1e-12)
    _assert_rounded(wanet(image).astype(np.float64), _grid_sample_reference(image, grid))
