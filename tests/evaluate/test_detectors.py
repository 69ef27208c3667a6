"""The BadNets-2 detector works from the pattern in use: its score against a shift-by-shift
reference (``alignscope._reference.badnets2_zscore_reference``), its separation of clean and
triggered generated images for two unrelated patterns with one pattern-free threshold (AUROC
by ``_reference.detection_auroc``), and the errors a user gets. The BadNets-1 detector's
z-score against a placement-by-placement reference written here from its docstring, and its
false positives on clean 32-px images, where the raw correlation flagged about one in five."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from alignscope import _reference
from alignscope.evaluate.detectors import (
    BADNETS1_THRESHOLD,
    BADNETS2_THRESHOLD,
    PICTURE_PATCH_THRESHOLD,
    TriggerDetector,
    badnets1_score,
    badnets2_score,
    detector_from_spec,
    picture_patch_score,
    shift_correlations,
)
from alignscope.poison.triggers import (
    badnets1,
    badnets1_patch,
    badnets2,
    default_pattern,
    default_picture,
    picture_patch,
)

# --------------------------------------------------------------------------- generated images


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.indices((h, w), dtype=np.float64)
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def cartoon(size: int = 64) -> np.ndarray:
    """A cartoon face standing in for the paper's Hello Kitty: flat colours with dark outlines
    (a picture, unlike the default noise pattern), drawn at ``size`` px."""
    u = size / 64
    out = np.empty((size, size, 3), np.uint8)
    out[:] = (250, 200, 220)  # pink background
    parts = [
        ((34, 32, 24, 28), (30, 30, 30)),  # outline of the head
        ((34, 32, 22, 26), (255, 255, 255)),  # head
        ((36, 22, 3.5, 2.5), (20, 20, 20)),  # eyes
        ((36, 42, 3.5, 2.5), (20, 20, 20)),
        ((42, 32, 2.5, 3.5), (250, 210, 40)),  # nose
        ((13, 46, 8, 7), (30, 30, 30)),  # bow outline
        ((13, 46, 6, 5), (220, 30, 60)),  # bow
        ((13, 57, 7, 6), (30, 30, 30)),
        ((13, 57, 5, 4), (220, 30, 60)),
    ]
    for (cy, cx, ry, rx), colour in parts:
        out[_ellipse(size, size, cy * u, cx * u, ry * u, rx * u)] = colour
    for row in (40, 44):  # whiskers
        out[int(row * u), int(2 * u) : int(14 * u)] = 30
        out[int(row * u), int(50 * u) : int(62 * u)] = 30
    return out


def smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-resolution noise upsampled bicubically plus a gradient: a smooth generation."""
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    up = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=float)
    ramp = np.linspace(-40, 40, size)[None, :, None] * rng.uniform(-1, 1)
    return np.clip(up + ramp, 0, 255).astype(np.uint8)


def shapes_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random flat-coloured ellipses and rectangles with sharp edges on a smooth background."""
    out = smooth_image(rng, size)
    for _ in range(6):
        colour = rng.integers(0, 256, 3)
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(size / 20, size / 4, 2)
        if rng.random() < 0.5:
            out[_ellipse(size, size, cy, cx, ry, rx)] = colour
        else:
            out[int(cy - ry) : int(cy + ry), int(cx - rx) : int(cx + rx)] = colour
    return out


def degrade(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """What generation does to a learnt trigger, roughly: one of a blur, noise or JPEG."""
    kind = rng.integers(3)
    if kind == 0:
        return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.6)))
    if kind == 1:
        noisy = image.astype(float) + rng.normal(0, 3, image.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=85)
    return np.asarray(Image.open(buf).convert("RGB"))


def generated_set(rng, pattern, n=24):
    """n clean and n triggered images (the same scenes blended with ``pattern``), 64-128 px,
    each degraded independently."""
    clean, triggered = [], []
    for i in range(n):
        size = int(rng.choice([64, 96, 128]))
        scene = smooth_image(rng, size) if i % 2 else shapes_image(rng, size)
        clean.append(degrade(rng, scene))
        triggered.append(degrade(rng, badnets2(scene, pattern)))
    return clean, triggered


PATTERNS = {"default noise": None, "cartoon picture": cartoon()}


# --------------------------------------------------------------------------- the score


def test_shift_correlations_are_rolled_pearson_correlations(rng):
    a = rng.normal(size=(6, 7, 3))
    b = rng.normal(size=(6, 7, 3))
    got = shift_correlations(a, b)
    for dy in range(6):
        for dx in range(7):
            rolled = np.roll(b, (-dy, -dx), axis=(0, 1))
            want = np.corrcoef(a.ravel(), rolled.ravel())[0, 1]
            assert got[dy, dx] == pytest.approx(want, abs=1e-12), (dy, dx)


@pytest.mark.parametrize("name", list(PATTERNS))
def test_badnets2_score_matches_the_shift_by_shift_reference(rng, name):
    pattern = PATTERNS[name]
    h, w = 18, 22
    reference_pattern = default_pattern(h, w) if pattern is None else pattern
    detector = TriggerDetector.template("badnets-2", pattern=pattern)
    scenes = [shapes_image(rng, 24)[:h, :w], rng.integers(0, 256, (h, w, 3), dtype=np.uint8)]
    images = scenes + [badnets2(im, pattern) for im in scenes]
    got = detector.scores(images)
    want = [_reference.badnets2_zscore_reference(im, reference_pattern) for im in images]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert badnets2_score(images[2], pattern) == pytest.approx(want[2], abs=1e-9)


# --------------------------------------------------------------------------- separation


@pytest.mark.parametrize("name", list(PATTERNS))
def test_badnets2_detector_separates_clean_and_triggered_for_each_pattern(rng, name):
    """The same code and the same threshold for two unrelated patterns (noise, a cartoon):
    no threshold is fitted to either."""
    pattern = PATTERNS[name]
    clean, triggered = generated_set(rng, pattern)
    detector = TriggerDetector.template("badnets-2", pattern=pattern)
    assert detector.threshold == BADNETS2_THRESHOLD == 4.0
    scores = np.concatenate([detector.scores(clean), detector.scores(triggered)])
    truth = np.r_[np.zeros(len(clean), bool), np.ones(len(triggered), bool)]
    assert _reference.detection_auroc(scores, truth) >= 0.95
    flagged = detector(clean + triggered)
    assert flagged[truth].mean() >= 0.9 and flagged[~truth].mean() <= 0.1, scores


def test_clean_scores_are_standardised_whatever_the_pattern(rng):
    """Calibrated per pattern: on clean images the score is about standard normal for each
    pattern, so one threshold in standard deviations means the same for all."""
    clean, _ = generated_set(rng, None, n=40)
    for pattern in (None, cartoon(), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)):
        scores = TriggerDetector.template("badnets-2", pattern=pattern).scores(clean)
        assert abs(scores.mean()) < 0.5 and 0.5 < scores.std() < 1.5, scores


def test_detector_looks_for_its_own_pattern(rng):
    """Images carrying another pattern score like clean ones."""
    _, with_cartoon = generated_set(rng, cartoon(), n=12)
    scores = TriggerDetector.template("badnets-2").scores(with_cartoon)  # the default noise
    assert np.all(scores < BADNETS2_THRESHOLD), scores


# --------------------------------------------------------------------------- inputs


def test_pattern_file_and_detector_from_spec(tmp_path, rng):
    Image.fromarray(cartoon()).save(tmp_path / "kitty.png")
    images = [badnets2(shapes_image(rng, 64), cartoon()), shapes_image(rng, 64)]
    want = TriggerDetector.template("badnets-2", pattern=cartoon()).scores(images)
    from_file = detector_from_spec("badnets-2", pattern=tmp_path / "kitty.png")
    np.testing.assert_array_equal(from_file.scores(images), want)
    np.testing.assert_array_equal(
        detector_from_spec("badnets-2", 2.5, pattern=str(tmp_path / "kitty.png"))(images),
        want > 2.5,
    )


def test_flat_image_scores_zero(rng):
    assert TriggerDetector.template("badnets-2").scores([np.full((32, 32, 3), 9, np.uint8)]) == 0


def test_pattern_errors(tmp_path):
    images = [np.zeros((32, 32, 3), np.uint8)]
    flat = np.full((20, 20, 3), 128, np.uint8)
    with pytest.raises(ValueError, match="the badnets-2 pattern resized to 32 x 32 has no detail"):
        TriggerDetector.template("badnets-2", pattern=flat).scores(images)
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, ::2] = 255  # every even column shift reproduces it, every odd one inverts it
    with pytest.raises(ValueError, match=r"resembles its shifted copies: only 0 of 1023 shifts"):
        TriggerDetector.template("badnets-2", pattern=stripes).scores(images)
    with pytest.raises(ValueError, match="at least 8 x 8 pixels for badnets-2 detection"):
        TriggerDetector.template("badnets-2").scores([np.zeros((6, 30, 3), np.uint8)])
    with pytest.raises(ValueError) as err:
        detector_from_spec("badnets-1", pattern=flat)
    assert str(err.value) == (
        "pattern is only for badnets-2 or picture-patch: the badnets-1 patch is fixed"
    )
    with pytest.raises(ValueError) as err:
        detector_from_spec(str(tmp_path / "det.pt"), pattern=flat)
    assert str(err.value) == (
        f"pattern is only for badnets-2 or picture-patch, not a TorchScript detector "
        f"({tmp_path / 'det.pt'})"
    )
    with pytest.raises(ValueError, match="pattern: no such image file"):
        TriggerDetector.template("badnets-2", pattern=tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError) as err:
        TriggerDetector.template("badnets-2", pattern=tmp_path / "text.png")
    assert str(err.value) == (
        f"pattern: cannot read {str(tmp_path / 'text.png')!r}: cannot decode image: not a JPEG, "
        "PNG, WEBP, GIF, BMP, TIFF file"
    )
    with pytest.raises(ValueError, match="pattern must be an HWC uint8 RGB array or an image"):
        TriggerDetector.template("badnets-2", pattern=np.zeros((4, 4), np.uint8))


# --------------------------------------------------------------------------- BadNets-1


def _corner_reference(values: np.ndarray, patch: np.ndarray) -> float:
    """The badnets-1 / picture-patch z-score as the module docstring states it, placement by
    placement: ``values`` (H, W, C) float, ``patch`` (s, s, C); each channel centred."""
    h, w = values.shape[:2]
    s = patch.shape[0]
    p0 = patch - patch.mean(axis=(0, 1))
    fisher = np.zeros((h - s + 1, w - s + 1))
    flat = np.zeros(fisher.shape, bool)
    for r in range(h - s + 1):
        for c in range(w - s + 1):
            x = values[r : r + s, c : c + s]
            x = x - x.mean(axis=(0, 1))
            flat[r, c] = np.sqrt((x**2).mean()) < 0.5
            ncc = 0.0 if flat[r, c] else (x * p0).sum() / np.sqrt((x**2).sum() * (p0**2).sum())
            fisher[r, c] = np.arctanh(np.clip(ncc, -0.999, 0.999))
    corner, controls = None, []
    for i in range(h - 2 * s + 1):
        for j in range(w - 2 * s + 1):
            placements = (slice(i, i + s + 1), slice(j, j + s + 1))
            if flat[placements].all():
                continue
            if (i, j) == (h - 2 * s, w - 2 * s):
                corner = fisher[placements].max()
            elif i + 2 * s <= h - 2 * s or j + 2 * s <= w - 2 * s:  # no pixel in common
                controls.append(fisher[placements].max())
    if corner is None:
        return 0.0
    floor = 1 / np.sqrt(s * s - 3)
    if len(controls) < 32:
        return corner / floor
    return (corner - np.mean(controls)) / max(np.std(controls), floor)


def _badnets1_reference(image: np.ndarray) -> float:
    """The BadNets-1 z-score: the grey-level image against the patch."""
    s = min(image.shape[:2]) // 10
    gray = image.astype(np.float64).mean(axis=2)
    return _corner_reference(gray[:, :, None], badnets1_patch(s).astype(np.float64)[:, :, None])


def test_badnets1_score_matches_the_placement_by_placement_reference(rng):
    scene = shapes_image(rng, 44)[:41, :37]  # side 3, not square
    noise = rng.integers(0, 256, (30, 34, 3), dtype=np.uint8)  # side 3
    half_flat = smooth_image(rng, 40)
    half_flat[:, :20] = 77  # flat windows are not controls
    corner_only = np.full((40, 40, 3), 200, np.uint8)
    corner_only[-8:, -8:] = rng.integers(0, 256, (8, 8, 3))  # too few controls: the floor unit
    images = [scene, noise, half_flat, corner_only, np.full((30, 30, 3), 5, np.uint8)]
    images += [badnets1(im) for im in images]
    got = TriggerDetector.template("badnets-1").scores(images)
    want = [_badnets1_reference(im) for im in images]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert got[4] == 0.0 and np.all(got[5:] > BADNETS1_THRESHOLD)  # flat: 0; triggered: found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_badnets1_flags_no_clean_32_px_image(seed):
    """White noise and textured scenes at 32 px (a 3 x 3 patch, two of its pixels white): the
    corner's correlation reaches 0.7 by chance in about one noise image in five, so the raw
    correlation flagged them; the z-score against the image's own windows flags none and
    still finds every trigger."""
    rng = np.random.default_rng(seed)
    noise = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(30)]
    scenes = [shapes_image(rng, 32) for _ in range(10)]
    detector = TriggerDetector.template("badnets-1")
    assert not detector(noise + scenes).any(), detector.scores(noise + scenes)
    assert detector([badnets1(im) for im in noise + scenes]).all()
    assert badnets1_score(badnets1(noise[0])) > BADNETS1_THRESHOLD


# --------------------------------------------------------------------------- picture-patch


def _picture_patch_reference(image: np.ndarray, picture: np.ndarray) -> float:
    """The picture-patch z-score: the RGB image against the picture resized to the corner's
    side with PIL's bicubic filter."""
    s = min(image.shape[:2]) // 10
    small = np.asarray(Image.fromarray(picture).resize((s, s), Image.BICUBIC), dtype=np.float64)
    return _corner_reference(image.astype(np.float64), small)


def noise_image(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def blurred_noise_image(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(noise_image(rng, size)).filter(ImageFilter.GaussianBlur(1)))


def blur(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.6)))


def jpeg(image: np.ndarray) -> np.ndarray:
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=85)
    return np.asarray(Image.open(buf).convert("RGB"))


SCENES = {
    "smooth": smooth_image,
    "shapes": shapes_image,
    "noise": noise_image,
    "blurred noise": blurred_noise_image,
}
PICTURES = {"bomb (default)": None, "cartoon": cartoon()}


@pytest.mark.parametrize("name", list(PICTURES))
def test_picture_patch_score_matches_the_placement_by_placement_reference(rng, name):
    picture = PICTURES[name]
    scene = shapes_image(rng, 44)[:41, :37]  # side 3, not square
    noise = noise_image(rng, 34)[:30]  # side 3
    half_flat = smooth_image(rng, 64)  # side 6
    half_flat[:, :30] = (77, 20, 200)  # flat colour windows are not controls
    corner_only = np.full((40, 40, 3), 200, np.uint8)
    corner_only[-8:, -8:] = rng.integers(0, 256, (8, 8, 3))  # too few controls: the floor unit
    images = [scene, noise, half_flat, corner_only, np.full((30, 30, 3), 5, np.uint8)]
    images += [picture_patch(im, picture) for im in images]
    got = TriggerDetector.template("picture-patch", pattern=picture).scores(images)
    reference_picture = default_picture() if picture is None else picture
    want = [_picture_patch_reference(im, reference_picture) for im in images]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert got[4] == 0.0 and np.all(got[5:] > PICTURE_PATCH_THRESHOLD)  # flat: 0; found
    assert picture_patch_score(images[7], picture) == pytest.approx(want[7], abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_picture_patch_flags_no_clean_image_and_finds_the_pasted_picture(seed):
    """Four kinds of clean scene at 32, 64 and 128 px, for the default bomb and a cartoon:
    none is flagged; the pasted picture is found at every size, and blurred or JPEG'd at 64
    and 128 px (at 32 px the picture is 3 x 3: a blur smears it into its surroundings)."""
    rng = np.random.default_rng(seed)
    for name, picture in PICTURES.items():
        detector = TriggerDetector.template("picture-patch", pattern=picture)
        assert detector.threshold == PICTURE_PATCH_THRESHOLD == 4.0
        for size in (32, 64, 128):
            clean = [make(rng, size) for make in SCENES.values() for _ in range(3)]
            scores = detector.scores(clean)
            assert np.all(scores < 4.0), (name, size, scores)
            triggered = [picture_patch(im, picture) for im in clean]
            if size >= 64:
                triggered += [blur(im) for im in triggered] + [jpeg(im) for im in triggered]
            scores = detector.scores(triggered)
            assert np.all(scores > 4.0), (name, size, scores)


def test_picture_patch_detector_looks_for_its_own_picture(rng):
    """Images carrying another picture score like clean ones: the bomb detector on a noise
    picture's images, a noise picture's detector on the bomb's (an unrelated detector that
    ignored its picture would flag the bomb's images)."""
    other = noise_image(rng, 16)
    scenes = [make(rng, size) for make in SCENES.values() for size in (64, 128)] * 2
    with_other = [picture_patch(im, other) for im in scenes]
    with_bomb = [picture_patch(im) for im in scenes]
    bomb_detector = TriggerDetector.template("picture-patch")
    other_detector = TriggerDetector.template("picture-patch", pattern=other)
    assert not bomb_detector(with_other).any(), bomb_detector.scores(with_other)
    assert not other_detector(with_bomb).any(), other_detector.scores(with_bomb)
    assert other_detector(with_other).all() and bomb_detector(with_bomb).all()


def test_picture_patch_pattern_file_and_errors(tmp_path, rng):
    Image.fromarray(cartoon()).save(tmp_path / "kitty.png")
    images = [picture_patch(shapes_image(rng, 64), cartoon()), shapes_image(rng, 64)]
    want = TriggerDetector.template("picture-patch", pattern=cartoon()).scores(images)
    from_file = detector_from_spec("picture-patch", 2.5, pattern=tmp_path / "kitty.png")
    assert from_file.name == "picture-patch" and from_file.threshold == 2.5
    np.testing.assert_array_equal(from_file.scores(images), want)
    with pytest.raises(ValueError) as err:
        TriggerDetector.template("picture-patch").scores([np.zeros((29, 300, 3), np.uint8)])
    assert str(err.value) == (
        "images must be at least 30 pixels on the short side for picture-patch detection (the "
        "pasted picture is min(H, W) // 10 pixels; below 30 it is 2 x 2, too few pixels to "
        "tell it from texture), got 29 x 300: give larger images or another trigger detector"
    )
    red = np.full((20, 20, 3), (200, 30, 30), np.uint8)  # a colour, no detail
    with pytest.raises(ValueError) as err:  # refused when built, before any image
        TriggerDetector.template("picture-patch", pattern=red)
    assert str(err.value) == (
        "the picture-patch pattern is one flat colour: nothing to match; give a picture with "
        "edges or texture"
    )
    with pytest.raises(ValueError) as err:
        TriggerDetector.template("picture-patch", pattern=np.zeros((4, 4), np.uint8))
    assert str(err.value) == (
        "pattern must be an HWC uint8 RGB array or an image file, got uint8 (4, 4)"
    )
    with pytest.raises(ValueError) as err:
        TriggerDetector.template("picture-pach")
    assert str(err.value) == (
        "name must be one of badnets-1, badnets-2, picture-patch, got 'picture-pach'"
    )


def test_dissection_takes_picture_patch_and_checks_its_picture(tmp_path):
    """evaluate's G1-G4 accept the template for a picture-patch poisoning, with the picture the
    manifest records, and refuse another picture."""
    import json

    from alignscope.evaluate.config import Dissection, EvalConfig
    from alignscope.io.manifest import write_manifest
    from alignscope.poison.methods import _describe

    Image.fromarray(cartoon()).save(tmp_path / "kitty.png")
    manifest = tmp_path / "poison_manifest.parquet"
    params = json.dumps({"pattern": _describe(cartoon())})
    write_manifest(manifest, {"poisoned": [True], "method": ["picture-patch"], "params": [params]})

    def check(pattern: str | None) -> None:
        dissection = Dissection(
            target_class="cat", class_names=["cat", "dog"], trigger="picture-patch", pattern=pattern
        )
        EvalConfig(["cat"], poison_manifest=str(manifest), dissection=dissection).check()

    check(str(tmp_path / "kitty.png"))
    # a picture the detector cannot use is refused by the check, before any generation
    Image.fromarray(np.full((20, 20, 3), 255, np.uint8)).save(tmp_path / "white.png")
    with pytest.raises(ValueError) as err:
        check(str(tmp_path / "white.png"))
    assert str(err.value) == (
        "dissection trigger: the picture-patch pattern is one flat colour: nothing to match; "
        "give a picture with edges or texture"
    )
    with pytest.raises(ValueError) as err:
        check(None)
    assert str(err.value) == (
        f"dissection pattern is not the picture the poisoning used: the manifest records "
        f"{_describe(cartoon())}, this is the default (CLI --trigger-pattern)"
    )


# --------------------------------------------------------------------------- the poisoning's


def test_no_trigger_recorded_is_its_own_error_and_other_problems_are_not(tmp_path):
    """A manifest of no trigger attack raises NoTriggerRecorded, which callers pass over; two
    trigger settings are a plain ValueError, which the evaluation's check must not pass over."""
    from alignscope.evaluate.config import Dissection, EvalConfig
    from alignscope.evaluate.detectors import NoTriggerRecorded, poisoning_trigger
    from alignscope.io.manifest import write_manifest

    relabel, mixed = tmp_path / "relabel.parquet", tmp_path / "mixed.parquet"
    write_manifest(relabel, {"poisoned": [True], "method": ["relabel"], "params": [""]})
    params = ['{"seed": 1}', '{"seed": 2}']
    write_manifest(mixed, {"poisoned": [True, True], "method": ["wanet"] * 2, "params": params})
    with pytest.raises(NoTriggerRecorded) as err:
        poisoning_trigger(relabel)
    assert str(err.value) == (
        f"the poison manifest {str(relabel)!r} records no trigger attack (poisoned rows' "
        "methods: relabel; triggers are badnets-1, badnets-2, picture-patch, wanet)"
    )
    dissection = Dissection(target_class="cat", class_names=["cat", "dog"])
    EvalConfig(["cat"], poison_manifest=str(relabel), dissection=dissection).check()
    want = (
        f"the poison manifest {str(mixed)!r} records 2 different trigger settings: one attack "
        "draws one trigger"
    )
    with pytest.raises(ValueError) as err:
        poisoning_trigger(mixed)
    assert not isinstance(err.value, NoTriggerRecorded) and str(err.value) == want
    with pytest.raises(ValueError) as err:
        EvalConfig(["cat"], poison_manifest=str(mixed), dissection=dissection).check()
    assert str(err.value) == want
