"""The blocked torch engine (the GPU reference) against the float64 reference, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

import alignscope
from alignscope import Bounds, _reference

pytest.importorskip("torch")


@pytest.mark.parametrize(
    "profile", ["paper", "half", "minmax", Bounds(image=(0.1, 1.4), text=(0.0, 1.2))]
)
@pytest.mark.parametrize("n", [1, 2, 129, 700])
def test_torch_backend_matches_reference(rng, profile, n):
    a = rng.normal(size=(n, 24))
    b = 0.5 * a + rng.normal(size=(n, 24))
    r = alignscope.alignment_difficulty(a, b, profile=profile, per_sample=True, backend="torch")
    ref_profile = (
        (profile.feature, profile.image, profile.text) if isinstance(profile, Bounds) else profile
    )
    ref = _reference.alignment_difficulty(a, b, profile=ref_profile)
    assert r.ad == pytest.approx(ref["ad"], abs=1e-6)
    np.testing.assert_allclose(r.per_sample.d_s, ref["d_s"], atol=1e-5)


def test_torch_backend_label_metrics_and_sampling(rng):
    a = rng.normal(size=(500, 12))
    labels = rng.integers(0, 4, size=500)
    truth = labels.copy()
    truth[:40] = (truth[:40] + 1) % 4
    ref = _reference.alignment_difficulty(a, labels=labels, true_labels=truth)
    r = alignscope.alignment_difficulty(a, labels=labels, true_labels=truth, backend="torch")
    assert r.ad == pytest.approx(ref["ad"], abs=1e-6)
    cpu = alignscope.alignment_difficulty(
        a, labels=labels, true_labels=truth, method="sampled", seed=3
    )
    tor = alignscope.alignment_difficulty(
        a, labels=labels, true_labels=truth, method="sampled", seed=3, backend="torch"
    )
    assert tor.ad == pytest.approx(cpu.ad, abs=1e-6)  # same samples, two engines
