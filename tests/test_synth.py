from __future__ import annotations

import numpy as np
import pytest

from alignscope.synth import (
    EASY,
    FACTOR_GROUPS,
    REALISTIC,
    Factors,
    concept_world,
    only,
    realistic_world,
)


def test_shapes_flags_and_plan():
    w = concept_world(5000, concepts=100, poisoned_concepts=20, dim=16, seed=7)
    assert w.image_emb.shape == w.text_emb.shape == (5000, 16)
    assert w.image_emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(w.image_emb, axis=1), 1.0, atol=1e-6)
    m = round(0.0008 * 5000)
    assert w.poisoned.sum() == 20 * m
    assert len(np.unique(w.concept[w.poisoned])) == 20
    assert np.all(w.target[w.poisoned] != w.concept[w.poisoned])  # t != p
    assert np.all(w.target[~w.poisoned] == -1)
    np.testing.assert_array_equal(w.image_concept[w.poisoned], w.target[w.poisoned])  # dirty label
    np.testing.assert_array_equal(np.unique(w.concept[w.poisoned]), w.poisoned_concepts)


def test_clean_label_keeps_the_image_concept():
    w = concept_world(2000, concepts=50, poisoned_concepts=5, per_concept=4, kind="clean", seed=1)
    np.testing.assert_array_equal(w.image_concept, w.concept)
    assert w.poisoned.sum() == 20


def test_same_seed_same_world():
    a = concept_world(1000, concepts=10, poisoned_concepts=3, seed=5)
    b = concept_world(1000, concepts=10, poisoned_concepts=3, seed=5)
    c = concept_world(1000, concepts=10, poisoned_concepts=3, seed=6)
    np.testing.assert_array_equal(a.image_emb, b.image_emb)
    np.testing.assert_array_equal(a.poisoned, b.poisoned)
    assert not np.array_equal(a.image_emb, c.image_emb)


def test_geometry_matches_the_documented_cosines():
    w = concept_world(20000, concepts=200, seed=0)
    matched = np.sum(w.image_emb * w.text_emb, axis=1)
    assert 0.25 < matched.mean() < 0.40  # inside the paper profile's window


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be >= 1"),
        ({"n": 100, "concepts": 200}, "cannot exceed n"),
        ({"n": 100, "concepts": 10, "poisoned_concepts": 11}, "must be <= concepts"),
        (
            {"n": 100, "concepts": 10, "poisoned_concepts": 2, "per_concept": 11},
            "exceeds the samples",
        ),
        ({"n": 100, "kind": "nightshade"}, "kind must be one of"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        concept_world(**kwargs)


# --- realistic_world (the screening benchmark's world) ---------------------------------------


def test_realistic_world_shapes_plan_and_truth():
    w = realistic_world(4000, concepts=80, poisoned_concepts=10, per_concept=5, seed=3)
    assert w.image_emb.shape == w.text_emb.shape == (4000, 64)
    assert w.latent_emb.shape == (4000, 64) and w.latent_emb.dtype == np.float32
    for x in (w.image_emb, w.text_emb, w.latent_emb):
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert w.poisoned.sum() == 50
    assert np.array_equal(np.unique(w.concept[w.poisoned]), w.poisoned_concepts)
    assert np.all(w.target[w.poisoned] != w.concept[w.poisoned])
    assert np.all(w.target[~w.poisoned] == -1)
    # One target per poisoned concept (the paper's protocol: m poisons of p, all toward t).
    for p in w.poisoned_concepts:
        assert np.unique(w.target[w.poisoned & (w.concept == p)]).size == 1
    # Rows are shuffled: the poisons are not a block at the end.
    assert np.flatnonzero(w.poisoned).min() < 3000
    # Poisons are clean captions of p: never generic, never two-concept.
    assert not (w.generic & w.poisoned).any() and np.all(w.second_concept[w.poisoned] == -1)


def test_realistic_world_factors_do_what_they_say():
    n = 8000
    easy = realistic_world(n, concepts=100, poisoned_concepts=10, per_concept=6, factors=EASY)
    real = realistic_world(n, concepts=100, poisoned_concepts=10, per_concept=6)
    benign = ~easy.poisoned
    sizes = np.bincount(easy.concept[benign], minlength=100)
    assert sizes.max() < 2 * sizes.min()  # zipf off: about equal
    sizes = np.bincount(real.concept[~real.poisoned], minlength=100)
    assert sizes[0] > 20 * np.median(sizes)  # Zipf: concept 0 the most frequent by far
    # Poisoned concepts come from the 2 * C_P most frequent.
    assert real.poisoned_concepts.max() < 20 and easy.poisoned_concepts.max() >= 20
    assert not easy.generic.any() and (easy.second_concept == -1).all()
    assert 0.05 < real.generic.mean() < 0.15 and 0.1 < (real.second_concept >= 0).mean() < 0.2
    # Generic captions align worse with their image than captions naming the concept.
    align = np.sum(real.image_emb * real.text_emb, axis=1)
    named = ~real.generic & ~real.poisoned & (real.second_concept < 0)
    assert align[real.generic].mean() < align[named].mean() - 0.1


def test_clean_label_poisons_move_the_latent_not_clip():
    kw = dict(concepts=60, poisoned_concepts=10, per_concept=8, kind="clean", seed=2)
    w = realistic_world(6000, factors=EASY, **kw)
    # EASY: latent moved all the way to the concept's anchor, so a concept's poisons share it.
    for p in w.poisoned_concepts[:3]:
        rows = np.flatnonzero(w.poisoned & (w.concept == p))
        lat = w.latent_emb[rows]
        np.testing.assert_allclose(lat @ lat.T, 1.0, atol=1e-5)
    # CLIP view: the poison still aligns with its own caption like a benign pair.
    align = np.sum(w.image_emb * w.text_emb, axis=1)
    assert abs(align[w.poisoned].mean() - align[~w.poisoned].mean()) < 0.05


def test_factor_groups_switch_one_factor_each():
    for group, fields in FACTOR_GROUPS.items():
        f = only(group)
        for name in Factors.__dataclass_fields__:
            want = getattr(REALISTIC if name in fields else EASY, name)
            assert getattr(f, name) == want, (group, name)
    with pytest.raises(ValueError, match="unknown factor group 'nope'; choose from zipf"):
        only("nope")


def test_realistic_world_same_seed_same_world_and_bad_input():
    a = realistic_world(2000, concepts=40, poisoned_concepts=4, per_concept=3, seed=9)
    b = realistic_world(2000, concepts=40, poisoned_concepts=4, per_concept=3, seed=9)
    np.testing.assert_array_equal(a.latent_emb, b.latent_emb)
    np.testing.assert_array_equal(a.poisoned, b.poisoned)
    with pytest.raises(ValueError, match=r"kind must be one of \('dirty', 'clean'\)"):
        realistic_world(2000, kind="both")
    with pytest.raises(ValueError, match=r"poisoned_concepts \(40\) must be < concepts \(40\)"):
        realistic_world(2000, concepts=40, poisoned_concepts=40)
    with pytest.raises(ValueError, match="leave 0 benign rows for 10 concepts"):
        realistic_world(100, concepts=10, poisoned_concepts=5, per_concept=20)
    with pytest.raises(ValueError, match=r"factor mix must be a finite number >= 0, got -0\.1"):
        realistic_world(2000, factors=Factors(mix=-0.1))
    with pytest.raises(TypeError, match=r"factors must be a synth\.Factors, got dict"):
        realistic_world(2000, factors={})  # type: ignore[arg-type]
