from __future__ import annotations

import numpy as np
import pytest

from alignscope.synth import concept_world


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
