"""Nightshade as the release runs it: the step sizes its sign-PGD takes, recorded on a tiny VAE
run, the 512 resize-and-crop of the sources, and the command line's budget.

``torch.autograd.grad`` is replaced by a stand-in that records the perturbation it is asked
about (the same tensor every step, updated in place) and returns a gradient of chosen sign and
random magnitude. With alternating signs and a decaying step the perturbation stays inside the
budget and the image range, so nothing is clipped and the change between two recorded states
is exactly -sign * step. These are compared with the release's schedule re-implemented from its
opt.py (:func:`alignscope._reference.nightshade_release_step_sizes`), and the crop with
torchvision's Resize + CenterCrop (what the release calls) and its re-implementation
(:func:`alignscope._reference.short_side_crop_reference`).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from alignscope import _reference
from alignscope.poison.nightshade import shade, square_crop, step_sizes

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


def _recorded_run(monkeypatch, tiny_vae, image, budget, steps, size=None):
    states: list[np.ndarray] = []
    seen: list = []
    signs: list[float] = []
    magnitudes = torch.Generator().manual_seed(0)

    def fake_grad(outputs, inputs, *args, **kwargs):
        delta = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
        seen.append(delta)
        states.append(delta.detach().numpy().astype(np.float64))
        sign = 1.0 if len(states) % 2 else -1.0
        signs.append(sign)
        # magnitudes vary per pixel: only the sign may reach the update
        size = 0.1 + torch.rand(delta.shape, generator=magnitudes, dtype=delta.dtype)
        return (sign * size,)

    monkeypatch.setattr(torch.autograd, "grad", fake_grad)
    result = shade(image, image, tiny_vae, budget=budget, steps=steps, size=size)
    assert len(states) == steps and all(d is seen[0] for d in seen)  # one tensor, in place
    final = seen[0].detach().numpy().astype(np.float64)
    return result, np.stack([*states, final]), np.array(signs)


@pytest.mark.parametrize(("budget", "steps"), [(0.04, 9), (0.05, 4), (0.03, 2), (0.04, 1)])
def test_recorded_steps_follow_the_release_schedule(monkeypatch, rng, tiny_vae, budget, steps):
    # mid-range pixels: x + delta never leaves [0, 1], so no projection hides a step
    image = rng.integers(64, 192, (32, 32, 3), dtype=np.uint8)
    result, states, signs = _recorded_run(monkeypatch, tiny_vae, image, budget, steps)
    np.testing.assert_array_equal(states[0], 0.0)  # the perturbation starts at zero
    increments = np.diff(states, axis=0)  # (steps, 1, 3, H, W)
    taken = -increments.reshape(steps, -1) * signs[:, None]
    expected = np.array(_reference.nightshade_release_step_sizes(budget, steps))
    # float32 pixels: (x + delta) - x re-rounds delta by up to ~1e-7
    np.testing.assert_allclose(taken, np.broadcast_to(expected[:, None], taken.shape), atol=1e-6)
    # the saved image: the final perturbation in whole 8-bit steps, at most floor(255 budget)
    limit = np.floor(255 * budget + 1e-9)
    exact = states[-1][0].transpose(1, 2, 0) * 255
    away = np.abs(exact - np.floor(exact) - 0.5) > 1e-3  # float32 products may tie-break apart
    want = image.astype(np.int64) + np.clip(np.rint(exact), -limit, limit).astype(np.int64)
    np.testing.assert_array_equal(result.image[away], np.clip(want, 0, 255)[away])
    assert result.linf == np.abs(result.image.astype(int) - image.astype(int)).max() / 255


@pytest.mark.parametrize(("budget", "steps"), [(0.04, 500), (0.05, 500), (0.04, 7)])
def test_the_schedule_is_the_release_one(budget, steps):
    """Linear from the budget, ending at budget (1 - 0.99 (T - 1) / T): 0.01198 budget for the
    release's 500 steps, not budget / 100."""
    got = step_sizes(budget, steps)
    want = _reference.nightshade_release_step_sizes(budget, steps)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == pytest.approx(budget, rel=1e-12)
    if steps == 500:
        assert got[-1] == pytest.approx(0.01198 * budget, rel=1e-12)
        assert got[-1] == pytest.approx(0.012 * budget, rel=2e-3)


@pytest.mark.parametrize("shape", [(40, 56), (56, 40), (33, 24), (24, 24)])
def test_sources_are_resized_and_cropped_as_the_release(rng, tiny_vae, shape):
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    anchor = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    result = shade(image, anchor, tiny_vae, steps=1, size=24)
    want = _reference.short_side_crop_reference(image, 24, Image.BILINEAR)
    np.testing.assert_array_equal(result.source, want)
    assert result.image.shape == (24, 24, 3)
    # the release's resizer: torchvision's Resize(512, BILINEAR) then CenterCrop(512)
    tv = pytest.importorskip("torchvision.transforms")
    transform = tv.Compose(
        [tv.Resize(24, interpolation=tv.InterpolationMode.BILINEAR), tv.CenterCrop(24)]
    )
    np.testing.assert_array_equal(result.source, np.asarray(transform(Image.fromarray(image))))
    # the budget holds against the cropped source
    diff = np.abs(result.image.astype(int) - want.astype(int)).max()
    assert diff <= np.floor(255 * 0.04) and result.linf == diff / 255


def test_the_release_settings_are_the_defaults_of_a_poisoning_run(
    tmp_path, monkeypatch, rng, tiny_vae
):
    """poison_dataset (and the command line) crop sources to 512 and use the 0.04 budget and
    500 steps by default. A stand-in for shade records what it is given and returns the 512
    crop (a real run at 512 px costs the tiny VAE half a minute: its attention is quadratic)."""
    import json

    pq = pytest.importorskip("pyarrow.parquet")
    from alignscope.cli import build_parser
    from alignscope.io.datasets import open_dataset
    from alignscope.poison import run as run_module
    from alignscope.poison.concepts import make_vocabulary
    from alignscope.poison.nightshade import ShadeResult, square_crop
    from alignscope.poison.run import poison_dataset

    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(f"a {['dog', 'cat'][i % 2]} in the park")
    given = []

    def recording_shade(image, anchor, vae, **settings):
        given.append(settings)
        crop = square_crop(image, settings["size"])
        return ShadeResult(crop, 1.0, 0.5, 0.0, source=crop)

    monkeypatch.setattr(run_module, "shade", recording_shade)
    poison_dataset(
        open_dataset(data),
        tmp_path / "out",
        method="nightshade",
        concepts=1,
        per_concept=1,
        vae=tiny_vae,
        vocabulary=make_vocabulary(["dog", "cat"]),
    )
    assert [(g["budget"], g["steps"], g["size"]) for g in given] == [(0.04, 500, 512)]
    m = pq.read_table(tmp_path / "out" / "poison_manifest.parquet").to_pydict()
    (i,) = [i for i, p in enumerate(m["poisoned"]) if p]
    original = np.asarray(Image.open(data / f"{m['row'][i]}.png").convert("RGB"))
    written = np.asarray(Image.open(tmp_path / "out" / m["written_as"][i]).convert("RGB"))
    np.testing.assert_array_equal(
        written, _reference.short_side_crop_reference(original, 512, Image.BILINEAR)
    )
    assert m["linf"][i] == 0.0  # measured against the crop, not the 20 x 28 original
    params = json.loads(m["params"][i])
    assert (params["budget"], params["steps"], params["size"]) == (0.04, 500, 512)
    args = build_parser().parse_args(["poison", "d", "--out", "o", "--method", "nightshade"])
    assert (args.budget, args.steps, args.nightshade_size) == (0.04, 500, 512)


@pytest.mark.parametrize("shape", [(300, 700), (700, 300), (511, 513), (400, 400)])
def test_the_512_crop_is_the_releases(rng, shape):
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = square_crop(image, 512)
    np.testing.assert_array_equal(
        got, _reference.short_side_crop_reference(image, 512, Image.BILINEAR)
    )
    tv = pytest.importorskip("torchvision.transforms")
    transform = tv.Compose(
        [tv.Resize(512, interpolation=tv.InterpolationMode.BILINEAR), tv.CenterCrop(512)]
    )
    np.testing.assert_array_equal(got, np.asarray(transform(Image.fromarray(image))))
