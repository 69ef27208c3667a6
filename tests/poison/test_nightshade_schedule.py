"""The step sizes Nightshade's sign-PGD actually takes, recorded on a tiny VAE run.

``torch.autograd.grad`` is replaced by a stand-in that records the perturbation it is asked
about (the same tensor every step, updated in place) and returns a gradient of chosen sign and
random magnitude. With alternating signs and a decaying step the perturbation stays inside the
budget and the image range, so nothing is clipped and the change between two recorded states
is exactly -sign * step. These are compared with the documented schedule (linear from the
budget to budget / 100, :func:`alignscope._reference.nightshade_step_sizes`).
"""

from __future__ import annotations

import numpy as np
import pytest

from alignscope import _reference
from alignscope.poison.nightshade import shade

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


def _recorded_run(monkeypatch, tiny_vae, image, budget, steps):
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
    result = shade(image, image, tiny_vae, budget=budget, steps=steps)
    assert len(states) == steps and all(d is seen[0] for d in seen)  # one tensor, in place
    final = seen[0].detach().numpy().astype(np.float64)
    return result, np.stack([*states, final]), np.array(signs)


@pytest.mark.parametrize(("budget", "steps"), [(0.05, 9), (0.04, 4), (0.03, 2), (0.05, 1)])
def test_recorded_steps_follow_the_linear_decay(monkeypatch, rng, tiny_vae, budget, steps):
    # mid-range pixels: x + delta never leaves [0, 1], so no projection hides a step
    image = rng.integers(64, 192, (32, 32, 3), dtype=np.uint8)
    result, states, signs = _recorded_run(monkeypatch, tiny_vae, image, budget, steps)
    np.testing.assert_array_equal(states[0], 0.0)  # the perturbation starts at zero
    increments = np.diff(states, axis=0)  # (steps, 1, 3, H, W)
    taken = -increments.reshape(steps, -1) * signs[:, None]
    expected = _reference.nightshade_step_sizes(budget, steps)
    assert expected[0] == budget and (steps == 1 or expected[-1] == pytest.approx(budget / 100))
    # float32 pixels: (x + delta) - x re-rounds delta by up to ~1e-7
    np.testing.assert_allclose(taken, np.broadcast_to(expected[:, None], taken.shape), atol=1e-6)
    # the saved image: the final perturbation in whole 8-bit steps, at most floor(255 budget)
    limit = np.floor(255 * budget + 1e-9)
    exact = states[-1][0].transpose(1, 2, 0) * 255
    away = np.abs(exact - np.floor(exact) - 0.5) > 1e-3  # float32 products may tie-break apart
    want = image.astype(np.int64) + np.clip(np.rint(exact), -limit, limit).astype(np.int64)
    np.testing.assert_array_equal(result.image[away], np.clip(want, 0, 255)[away])
    assert result.linf == np.abs(result.image.astype(int) - image.astype(int)).max() / 255


def test_the_schedule_reference_is_linear():
    """The reference itself: first the budget, last a hundredth of it, equal decrements."""
    s = _reference.nightshade_step_sizes(0.05, 500)
    assert s[0] == 0.05 and s[-1] == pytest.approx(0.0005, rel=1e-12)
    np.testing.assert_allclose(np.diff(s), -(0.05 - 0.0005) / 499, rtol=1e-9)
