"""Every DCR statistic of ``ReplicationResult.summary()`` against a float64 reference.

The reference (:func:`alignscope._reference.dcr_statistics`) sums and sorts in plain Python:
mean, population std, linearly interpolated percentiles and the fractions strictly above the
thresholds. The key set is pinned literally, so a renamed, dropped or added statistic fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from alignscope import _reference
from alignscope.search import replication
from alignscope.search.replication import ReplicationResult

STAT_KEYS = {
    "count",
    "mean",
    "std",
    "p50",
    "p75",
    "p90",
    "p95",
    "p99",
    "fraction_above_0.5",
    "fraction_above_0.75",
}
TOP_KEYS = {"generated_to_train", "train_to_train", "n_generated", "k", "method"}


def _result(top1: np.ndarray, dup: np.ndarray, **kwargs) -> ReplicationResult:
    """A result with chosen similarities (k = 2: a worse second match), so the summary is
    tested on exact inputs, thresholds included."""
    n = top1.shape[0]
    sims = np.stack([top1, top1 - 1.0], axis=1).astype(np.float32)
    index = np.stack([np.arange(n), np.arange(n) + n], axis=1)
    return ReplicationResult(
        sims, index, np.asarray(dup, dtype=np.float32), np.arange(n) + 2 * n, **kwargs
    )


def _assert_matches(got: dict, values: np.ndarray) -> None:
    want = _reference.dcr_statistics(values)
    assert set(got) == STAT_KEYS and set(want) == STAT_KEYS
    assert got["count"] == want["count"] and isinstance(got["count"], int)
    for key in STAT_KEYS - {"count"}:
        assert isinstance(got[key], float), key
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-7), key


def test_summary_key_set_is_pinned(rng):
    r = _result(rng.uniform(-1, 1, 9), rng.uniform(-1, 1, 9))
    s = r.summary()
    assert set(s) == TOP_KEYS
    assert (s["n_generated"], s["k"], s["method"]) == (9, 2, "engine")
    assert set(s["generated_to_train"]) == STAT_KEYS and set(s["train_to_train"]) == STAT_KEYS
    approx = _result(
        rng.uniform(-1, 1, 9),
        rng.uniform(-1, 1, 9),
        method="faiss-hnsw",
        recall=0.75,
        recall_sample=9,
    )
    s = approx.summary()
    assert set(s) == TOP_KEYS | {"recall_at_1_vs_exact", "recall_sample"}
    assert (s["recall_at_1_vs_exact"], s["recall_sample"], s["method"]) == (0.75, 9, "faiss-hnsw")


@pytest.mark.parametrize("n", [1, 2, 7, 40, 101])
def test_every_statistic_matches_the_reference(rng, n):
    """Skewed values (a beta distribution), so that the p-th and the (100 - p)-th percentile
    differ and each percentile lands between two order statistics."""
    top1 = rng.beta(5, 2, n)
    dup = rng.beta(2, 5, n) * 2 - 1
    s = _result(top1, dup).summary()
    _assert_matches(s["generated_to_train"], top1.astype(np.float32))
    _assert_matches(s["train_to_train"], dup.astype(np.float32))
    if n >= 7:  # the percentiles are not symmetric about p50: 100 - p would give other values
        g = s["generated_to_train"]
        assert g["p75"] != pytest.approx(
            _reference.percentile_linear(top1.astype(np.float32), 25), abs=1e-3
        )
        assert g["p50"] < g["p75"] < g["p90"] < g["p95"] < g["p99"]


def test_percentiles_interpolate_between_order_statistics():
    """Ten values 0, 1/9, ..., 1 (times 0.9): p-th percentile = 0.9 p / 100 exactly."""
    values = np.linspace(0.0, 0.9, 10)
    s = _result(values, values).summary()["generated_to_train"]
    for p in (50, 75, 90, 95, 99):
        assert s[f"p{p}"] == pytest.approx(0.9 * p / 100, abs=1e-6), p
    assert s["mean"] == pytest.approx(0.45, abs=1e-7)
    assert s["std"] == pytest.approx(np.sqrt(np.mean((values - 0.45) ** 2)), abs=1e-7)


def test_fractions_count_values_strictly_above_the_thresholds():
    """'Above 0.5' (DCR: a replica when the similarity exceeds 0.5): values exactly at 0.5 and
    0.75 (exact in float32) do not count."""
    top1 = np.array([0.5, 0.5, 0.75, 0.75, 0.75, 0.9, 0.2, 0.500001])
    dup = np.array([0.75, 0.75, 0.75, 0.75, 0.5, 0.5, 0.5, 0.5])
    s = _result(top1, dup).summary()
    g, t = s["generated_to_train"], s["train_to_train"]
    assert g["fraction_above_0.5"] == 5 / 8  # 0.75 x3, 0.9, 0.500001
    assert g["fraction_above_0.75"] == 1 / 8  # 0.9 only
    assert t["fraction_above_0.5"] == 4 / 8
    assert t["fraction_above_0.75"] == 0.0
    _assert_matches(g, top1.astype(np.float32))
    _assert_matches(t, dup.astype(np.float32))


def test_non_finite_values_are_left_out():
    """Unmatched items carry -inf (no other training item); they are not statistics."""
    top1 = np.array([0.9, 0.6, 0.3, 0.8])
    dup = np.array([0.7, -np.inf, 0.1, np.nan])
    s = _result(top1, dup).summary()
    _assert_matches(s["train_to_train"], np.array([0.7, 0.1], dtype=np.float32))
    assert s["train_to_train"]["count"] == 2
    s = _result(top1, np.full(4, -np.inf)).summary()
    assert s["train_to_train"] == {"count": 0}


def test_replication_summary_against_brute_force(rng):
    """End to end: brute-force cosine top-1 (float64) and, for each matched training item, its
    nearest other training item; the summary's statistics of both against the reference."""
    train = rng.normal(size=(300, 48))
    # altered copies from near-exact to barely similar, then unrelated items
    noise = rng.uniform(0.1, 1.6, size=(40, 1)) * rng.normal(size=(40, 48))
    gen = np.concatenate([train[:40] + noise, rng.normal(size=(60, 48))])
    result = replication(gen, train)
    ug, ut = _reference.unit_rows(gen), _reference.unit_rows(train)
    cross = ug @ ut.T
    top1 = cross.max(axis=1)
    matched = cross.argmax(axis=1)
    np.testing.assert_array_equal(result.index[:, 0], matched)
    self_sim = ut @ ut.T
    np.fill_diagonal(self_sim, -np.inf)
    dup = self_sim[matched].max(axis=1)
    # a value this close to a threshold could fall on either side in float32: none here
    for t in (0.5, 0.75):
        assert np.abs(np.concatenate([top1, dup]) - t).min() > 1e-4
    s = result.summary()
    assert (s["n_generated"], s["k"], s["method"]) == (100, 1, "engine")
    for got, values in ((s["generated_to_train"], top1), (s["train_to_train"], dup)):
        want = _reference.dcr_statistics(values)
        assert set(got) == STAT_KEYS and got["count"] == want["count"]
        for key in STAT_KEYS - {"count"}:
            assert got[key] == pytest.approx(want[key], abs=1e-5), key
    for key in ("fraction_above_0.5", "fraction_above_0.75"):  # the thresholds split the data
        assert 0 < s["generated_to_train"][key] < 1, key


def test_a_single_training_item_has_no_duplicate_baseline(rng):
    result = replication(rng.normal(size=(5, 4)), rng.normal(size=(1, 4)))
    s = result.summary()
    assert s["train_to_train"] == {"count": 0}
    _assert_matches(s["generated_to_train"], result.similarity[:, 0])
