"""Every screening score against a float64 brute-force reference (alignscope._reference),
including duplicate rows, several k, k above N - 1 and the landmark path above EXACT_MAX_N."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope import _reference as ref
from alignscope.screen import SCORES, compute_scores
from alignscope.screen import scores as scores_module

PEER_SCORES = {"combined", "relative_alignment", "view_residual", "view_density", "purification"}
# The engine searches neighbours in float32, so a cosine distance carries ~1e-7 of rounding.
ATOL = 1e-6


def _assert_close(name, got, want, atol=ATOL):
    np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=name)


def _neighbour_sets_are_well_separated(x, k):
    """The k-th and (k+1)-th nearest distances of every row differ by far more than float32
    rounding, so the engine must find the same neighbour set as the float64 sort."""
    d = np.sort(ref.cosine_distances(x) + np.diag(np.full(x.shape[0], np.inf)), axis=1)
    return np.min(d[:, k] - d[:, k - 1]) > 1e-5


@pytest.mark.parametrize("k", [1, 3, 10])
def test_every_score_matches_brute_force(pairs, k):
    image, text, second = pairs(150, 12, seed=3)
    # The peer-relative scores and the combined score have their own references
    # (test_relative_scores.py, test_combined.py).
    classic = tuple(s for s in SCORES if s not in PEER_SCORES)
    names = classic if k > 1 else tuple(s for s in classic if s != "lid")  # LID needs k >= 2
    table = compute_scores(image, text, scores=names, second_view=second, k=k)
    want = ref.screening_scores(image, text, second, scores=names, k=k)
    # Preconditions that make this data able to catch a wrong answer.
    align = want["alignment"]
    assert (align == 0).sum() >= 10 and (align == 1).sum() >= 10
    assert ((align > 0) & (align < 1)).sum() >= 30
    for view in (image, text, second):
        assert _neighbour_sets_are_well_separated(view, k)
    if k > 1:  # a k_distance taken from the first neighbour is far off
        first = ref.screen_k_distance(image, 1)
        assert np.abs(want["k_distance"] - first).min() > 1e-4
    assert set(table.scores) == set(names)
    for name in names:
        assert table.scores[name].shape == (150,) and table.scores[name].dtype == np.float64
        if name != "lid":
            _assert_close(name, table.scores[name], want[name])
    if k > 1:
        # LID = -1 / mean log ratio: compare the well-conditioned mean log ratio tightly (an
        # error of 1e-7 in a distance of 0.1 moves a log by 1e-6), then LID itself relatively.
        _assert_close("lid: mean log ratio", -1.0 / table.scores["lid"], -1.0 / want["lid"], 1e-5)
        np.testing.assert_allclose(table.scores["lid"], want["lid"], rtol=1e-4)
    assert table.methods == {
        "alignment": "exact",
        "d_s": "exact",
        "ad_xy": "exact",
        "concept_consistency": f"exact k-NN, k={k}",
        "cross_view": f"neighbourhood D_s, k={k} per view",
        "k_distance": f"k={k}",
        **({"lid": f"MLE, k={k}"} if k > 1 else {}),
    }


def test_alpha_weights_ad_xy(pairs):
    image, text, _ = pairs(60, 8, seed=4)
    table = compute_scores(image, text, scores=("ad_xy",), alpha=0.3)
    want = ref.screening_scores(image, text, scores=("ad_xy",), alpha=0.3)
    _assert_close("ad_xy", table.scores["ad_xy"], want["ad_xy"])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_duplicate_pairs(k):
    """Rows repeated 1 to 4 times (image, caption and second view alike): the copies sit at
    cosine distance 0 and must count as neighbours (only the row itself is excluded). Which copy
    the search returns among ties cannot change a score, since the copies are identical."""
    rng = np.random.default_rng(11)
    base_image = rng.normal(size=(40, 10))
    base_text = base_image + 2.5 * rng.normal(size=(40, 10))
    base_second = base_image + 0.8 * rng.normal(size=(40, 10))
    copies = np.repeat(np.arange(40), np.arange(40) % 4 + 1)  # 1, 2, 3 or 4 copies of each row
    image, text, second = (
        v[copies].astype(np.float32) for v in (base_image, base_text, base_second)
    )
    names = ("alignment", "d_s", "ad_xy", "concept_consistency", "cross_view", "k_distance")
    table = compute_scores(image, text, scores=names, second_view=second, k=k)
    want = ref.screening_scores(image, text, second, scores=names, k=k)
    # Both exact-zero k-th distances (rows with >= k other copies) and non-zero ones occur.
    assert (want["k_distance"] < 1e-12).sum() > 0 and (want["k_distance"] > 0.01).sum() > 0
    for name in names:
        _assert_close(name, table.scores[name], want[name], atol=2e-6)


def test_k_above_n_minus_one_uses_every_other_row(pairs):
    image, text, second = pairs(8, 6, seed=5)
    names = ("concept_consistency", "cross_view", "k_distance", "lid")
    table = compute_scores(image, text, scores=names, second_view=second, k=20)
    want = ref.screening_scores(image, text, second, scores=names, k=7)
    for name in ("concept_consistency", "cross_view", "k_distance"):
        _assert_close(name, table.scores[name], want[name])
    np.testing.assert_allclose(table.scores["lid"], want["lid"], rtol=1e-4)
    assert table.methods["k_distance"] == "k=7" and table.methods["lid"] == "MLE, k=7"


def test_landmark_path_above_the_exact_limit(pairs, monkeypatch):
    """Above EXACT_MAX_N, d_s (and so ad_xy) are landmark estimates; alignment stays exact."""
    monkeypatch.setattr(scores_module, "EXACT_MAX_N", 50)
    image, text, _ = pairs(200, 12, seed=6)
    names = ("alignment", "d_s", "ad_xy", "k_distance")
    table = compute_scores(image, text, scores=names, seed=7, k=4)
    want = ref.screening_scores(image, text, scores=names, k=4)
    assert table.methods == {
        "alignment": "exact",
        "d_s": "landmarks (S=1024, seed 7)",
        "ad_xy": "landmarks (S=1024, seed 7)",
        "k_distance": "k=4",
    }
    _assert_close("alignment", table.scores["alignment"], want["alignment"])
    _assert_close("k_distance", table.scores["k_distance"], want["k_distance"])
    # The estimate of D_s(i) averages S = 1024 draws of a bounded term, so it is close to
    # normal with the exact standard error below; 5 standard errors on each of 200 rows fails
    # by chance with probability ~1e-4, and the seed is fixed.
    se = ref.landmark_standard_error(image, text, 1024)
    assert se.min() > 1e-4  # a real sampling error, not an exact pass in disguise
    d_s_error = np.abs(table.scores["d_s"] - want["d_s"])
    assert np.all(d_s_error <= 5 * se)
    assert d_s_error.max() > 1e-6  # estimated, not computed exactly
    assert np.all(np.abs(table.scores["ad_xy"] - want["ad_xy"]) <= 0.2 * 5 * se + ATOL)
    # ad_xy combines the exact alignment with the estimate as documented (Eq. 4, alpha 0.8).
    _assert_close(
        "ad_xy = 0.8 alignment + 0.2 d_s",
        table.scores["ad_xy"],
        0.8 * want["alignment"] + 0.2 * table.scores["d_s"],
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores": ("magic",)}, "unknown score 'magic'"),
        ({"scores": ("d_s",), "text": False}, "need text embeddings"),
        ({"scores": ("cross_view",)}, "cross_view needs a second image view"),
        ({"scores": ("cross_view",), "second_view": 5}, "second_view has 5 rows, image_emb 12"),
    ],
)
def test_compute_scores_rejects_bad_input(pairs, kwargs, message):
    image, text, _ = pairs(12, 4, seed=0)
    kwargs = dict(kwargs)
    if kwargs.pop("text", True) is False:
        text = None
    if "second_view" in kwargs:
        kwargs["second_view"] = np.ones((kwargs["second_view"], 4), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        compute_scores(image, text, **kwargs)
