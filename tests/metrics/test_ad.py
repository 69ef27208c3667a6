"""Exact AD against the float64 reference, the authors' algorithm and the Theorem 4.2 oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import alignscope
from alignscope import Bounds, _reference
from alignscope.synth import concept_world

PROFILES = ["paper", "half", "minmax"]
BOUNDS = Bounds(feature=(0.4, 1.1), image=(0.1, 1.6), text=(0.0, 1.2))


def _check(result, ref, per_sample=True):
    assert result.ad == pytest.approx(ref["ad"], abs=1e-6)
    assert result.feature == pytest.approx(ref["feature"], abs=1e-6)
    assert result.structure == pytest.approx(ref["structure"], abs=1e-6)
    if per_sample:
        np.testing.assert_allclose(result.per_sample.d_s, ref["d_s"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(result.per_sample.d_ab, ref["d_ab"], atol=1e-6, rtol=0)
        np.testing.assert_allclose(result.per_sample.ad, ref["ad_xy"], atol=1e-5, rtol=0)


def _correlated(rng, n, d, dtype=np.float64):
    """Pairs whose matched cosine spreads over the paper profile's window."""
    a = rng.normal(size=(n, d))
    b = 0.6 * a + rng.normal(size=(n, d))
    return a.astype(dtype), b.astype(dtype)


def _ref_profile(profile):
    return (
        (profile.feature, profile.image, profile.text) if isinstance(profile, Bounds) else profile
    )


@pytest.mark.parametrize("profile", [*PROFILES, BOUNDS], ids=[*PROFILES, "bounds"])
@pytest.mark.parametrize(
    ("n", "d", "tile"),
    [
        (1, 1, 256),
        (2, 3, 256),
        (3, 1024, 2),
        (17, 5, 4),
        (255, 64, 16),
        (256, 33, 256),
        (257, 16, 256),
        (1000, 100, 128),
        (3000, 8, 256),
    ],
)
def test_matches_float64_reference(rng, profile, n, d, tile):
    a, b = _correlated(rng, n, d)
    result = alignscope.alignment_difficulty(a, b, profile=profile, per_sample=True, tile=tile)
    _check(result, _reference.alignment_difficulty(a, b, profile=_ref_profile(profile)))
    assert result.method == "exact" and result.n == n and result.backend == "cpu"


@pytest.mark.parametrize("profile", PROFILES)
def test_duplicated_rows(rng, profile):
    a, b = _correlated(rng, 40, 12)
    a = np.concatenate([a, a[:10], a[:3]])
    b = np.concatenate([b, b[:10], b[:3]])
    result = alignscope.alignment_difficulty(a, b, profile=profile, per_sample=True, tile=8)
    _check(result, _reference.alignment_difficulty(a, b, profile=profile))


def test_all_rows_identical_minmax_is_degenerate_zero():
    a = np.ones((5, 4))
    result = alignscope.alignment_difficulty(a, a, profile="minmax", per_sample=True)
    assert result.structure == 0.0 and result.feature == 0.0
    assert result.bounds.image[0] == pytest.approx(result.bounds.image[1])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_input_dtypes(rng, dtype):
    a, b = _correlated(rng, 300, 24, dtype)
    result = alignscope.alignment_difficulty(a, b, per_sample=True, tile=64)
    # The reference sees the same (rounded) values the engine was given.
    _check(result, _reference.alignment_difficulty(a.astype(np.float64), b.astype(np.float64)))


def test_torch_cpu_tensors(rng):
    torch = pytest.importorskip("torch")
    a, b = _correlated(rng, 200, 16, np.float32)
    result = alignscope.alignment_difficulty(torch.from_numpy(a), torch.from_numpy(b))
    assert result.ad == pytest.approx(_reference.alignment_difficulty(a, b)["ad"], abs=1e-6)


@pytest.mark.parametrize("profile", PROFILES)
def test_structure_allows_different_dimensions(rng, profile):
    a = rng.normal(size=(150, 20))
    b = rng.normal(size=(150, 7))
    result = alignscope.alignment_difficulty(
        a, b, alpha=0.0, profile=profile, per_sample=True, tile=32
    )
    ref = _reference.alignment_difficulty(a, b, alpha=0.0, profile=profile)
    assert result.feature is None
    assert result.structure == pytest.approx(ref["structure"], abs=1e-6)
    assert result.ad == pytest.approx(ref["structure"], abs=1e-6)
    np.testing.assert_allclose(result.per_sample.d_s, ref["d_s"], atol=1e-5)


@pytest.mark.parametrize("profile", [*PROFILES, BOUNDS], ids=[*PROFILES, "bounds"])
@pytest.mark.parametrize("n", [1, 2, 97, 600])
def test_label_metrics(rng, profile, n):
    a = rng.normal(size=(n, 10))
    labels = rng.integers(0, 5, size=n) * 1000  # codes need not be small or dense
    truth = np.where(rng.random(n) < 0.2, rng.integers(0, 5, size=n) * 1000, labels)
    result = alignscope.alignment_difficulty(
        a, labels=labels, true_labels=truth, profile=profile, per_sample=True, tile=32
    )
    ref_profile = _ref_profile(profile)
    if isinstance(ref_profile, tuple):
        ref_profile = (ref_profile[0], ref_profile[1], None)
    ref = _reference.alignment_difficulty(a, labels=labels, true_labels=truth, profile=ref_profile)
    _check(result, ref)
    assert result.metric == "labels" and result.bounds.text is None


def test_paper_profile_equals_the_authors_algorithm(rng):
    a, b = _correlated(rng, 700, 32)
    result = alignscope.alignment_difficulty(a, b, profile="paper")
    authors = _reference.authors_algorithm(a, b)
    assert result.feature == pytest.approx(authors["feature"], abs=1e-9)
    assert result.structure == pytest.approx(authors["structure"], abs=1e-6)
    assert result.ad == pytest.approx(authors["ad"], abs=1e-6)


def _theorem_setting(n_concepts, per_concept, poisoned, m, d, rng):
    """One-hot (well-separated) embeddings realising the binary metrics of Appendix 8.4."""
    caption = np.repeat(np.arange(n_concepts), per_concept)
    image = caption.copy()
    targets = rng.permutation(np.arange(poisoned, n_concepts))[:poisoned]  # distinct, unpoisoned
    for p, t in zip(range(poisoned), targets, strict=True):
        rows = np.flatnonzero(caption == p)[:m]
        image[rows] = t
    axes = rng.permutation(d)[:n_concepts]  # one orthogonal axis per concept
    scale = rng.uniform(0.5, 3.0, size=(caption.size, 1))  # the engine normalises rows
    img = np.zeros((caption.size, d))
    txt = np.zeros((caption.size, d))
    img[np.arange(caption.size), axes[image]] = 1.0
    txt[np.arange(caption.size), axes[caption]] = 1.0
    return img * scale, txt * scale[::-1], image, caption


@pytest.mark.parametrize(
    ("n_concepts", "per_concept", "m"), [(10, 20, 5), (40, 25, 10), (12, 8, 8)]
)
def test_theorem_4_2_closed_form(rng, n_concepts, per_concept, m):
    values = []
    for poisoned in range(n_concepts // 2 + 1):
        img, txt, u, v = _theorem_setting(n_concepts, per_concept, poisoned, m, n_concepts + 3, rng)
        result = alignscope.alignment_difficulty(img, txt, profile="paper", tile=16)
        exact = _reference.theorem_4_2_setting_ad(n_concepts, per_concept, poisoned, m)
        assert result.ad == pytest.approx(exact, abs=1e-9)
        assert result.ad == pytest.approx(_reference.concept_label_ad(u, v)["ad"], abs=1e-9)
        assert (
            result.ad
            >= _reference.theorem_4_2_lower_bound(n_concepts, per_concept, poisoned, m) - 1e-12
        )
        values.append(result.ad)
    assert values[0] == 0.0
    assert all(x < y for x, y in itertools.pairwise(values))  # AD grows with C_P


def test_theorem_4_2_with_label_metrics(rng):
    img, _, u, v = _theorem_setting(10, 20, 3, 5, 10, rng)
    result = alignscope.alignment_difficulty(img, labels=v, true_labels=u, profile="paper")
    assert result.ad == pytest.approx(_reference.theorem_4_2_setting_ad(10, 20, 3, 5), abs=1e-9)


def test_ad_grows_with_poisoned_concepts_on_synthetic_data():
    ads = [
        alignscope.alignment_difficulty(w.image_emb, w.text_emb).ad
        for w in (
            concept_world(4000, concepts=100, poisoned_concepts=cp, seed=3) for cp in (0, 10, 30)
        )
    ]
    assert ads[0] < ads[1] < ads[2]


def test_threads_and_tiles_do_not_change_the_result(rng):
    a, b = _correlated(rng, 900, 40)
    one = alignscope.alignment_difficulty(a, b, threads=1, tile=64)
    two = alignscope.alignment_difficulty(a, b, threads=2, tile=300)
    # Each schedule against the float64 reference, so that a schedule-independent error (the
    # same wrong answer from both) fails too, then against each other at summation precision.
    ref = _reference.alignment_difficulty(a, b)
    for result in (one, two):
        assert result.structure == pytest.approx(ref["structure"], abs=1e-6)
        assert result.ad == pytest.approx(ref["ad"], abs=1e-6)
    assert one.ad == pytest.approx(two.ad, abs=1e-9)


def test_to_dict_is_json_safe(rng):
    import json

    a, b = _correlated(rng, 50, 8)
    result = alignscope.alignment_difficulty(a, b, per_sample=True)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["profile"] == "paper" and data["bounds"]["feature"] == [0.55, 0.8]
    assert len(data["per_sample"]["d_s"]) == 50
    assert "per_sample" not in result.to_dict(per_sample=False)


def test_finetune_ad(rng):
    a, b = _correlated(rng, 80, 8)
    base = alignscope.alignment_difficulty(a[:40], b[:40])
    tuned = alignscope.alignment_difficulty(a[40:], b[40:])
    combined = alignscope.finetune_ad(base, tuned, 0.3)
    assert combined.ad == pytest.approx(0.7 * base.ad + 0.3 * tuned.ad, abs=1e-15)
