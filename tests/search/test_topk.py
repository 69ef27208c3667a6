"""Exact top-k and replication metrics against brute force and FAISS."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope import _reference
from alignscope.io import open_store, write_store
from alignscope.search import exact as exact_module
from alignscope.search import replication, topk


def _brute(q: np.ndarray, x: np.ndarray, k: int, exclude=None):
    s = _reference.unit_rows(q) @ _reference.unit_rows(x).T
    if exclude is not None:
        s[np.arange(len(q)), exclude] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(x.shape[0]), s.shape), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), order


@pytest.mark.parametrize(("nq", "nx", "k"), [(1, 1, 1), (3, 2, 5), (300, 2100, 1), (257, 5000, 7)])
def test_topk_equals_brute_force(rng, nq, nx, k):
    q = rng.normal(size=(nq, 19))
    x = rng.normal(size=(nx, 19))
    sims, idx = topk(q, x, k)
    ref_s, ref_i = _brute(q, x, min(k, nx))
    np.testing.assert_array_equal(idx[:, : min(k, nx)], ref_i)
    np.testing.assert_allclose(sims[:, : min(k, nx)], ref_s, atol=1e-5)
    if k > nx:  # padding when the database is smaller than k
        assert (idx[:, nx:] == -1).all() and np.isneginf(sims[:, nx:]).all()


def test_exclusion_by_index_not_by_rank(rng):
    x = rng.normal(size=(400, 8))
    x[10] = x[3]  # an exact duplicate: excluding "rank 1" would drop it, excluding index must not
    ids = np.arange(400)
    sims, idx = topk(x, x, 1, exclude=ids)
    assert idx[3, 0] == 10 and idx[10, 0] == 3
    assert sims[3, 0] == pytest.approx(1.0, abs=1e-6)
    assert (idx[:, 0] != ids).all()
    np.testing.assert_array_equal(idx[:, 0], _brute(x, x, 1, exclude=ids)[1][:, 0])


def test_database_is_streamed_in_chunks(rng, monkeypatch):
    monkeypatch.setattr(exact_module, "DATABASE_CHUNK", 333)
    q = rng.normal(size=(50, 6))
    x = rng.normal(size=(2000, 6))
    _, idx = topk(q, x, 4, exclude=np.arange(50))
    _, ref_i = _brute(q, x, 4, exclude=np.arange(50))
    np.testing.assert_array_equal(idx, ref_i)


def test_ties_across_database_chunks_keep_the_smaller_index(monkeypatch):
    # One-hot rows give similarities of exactly 1.0 or 0.0, so every tie is exact. With chunks
    # of 4 rows, the copies of each direction sit in different chunks: only the merge of the
    # chunks' candidates can order them, and the docstring's "ties by smaller index" says how.
    monkeypatch.setattr(exact_module, "DATABASE_CHUNK", 4)
    x = np.eye(3)[[2, 0, 1, 2, 1, 0, 2, 0, 1, 1, 0, 2]]  # 12 rows, three chunks of 4
    q = np.eye(3)
    sims, idx = topk(q, x, 7)
    for j in range(3):
        copies = np.flatnonzero(x[:, j] == 1.0)  # ascending, as the rule requires
        others = np.flatnonzero(x[:, j] == 0.0)
        np.testing.assert_array_equal(idx[j], np.concatenate([copies, others])[:7])
        np.testing.assert_array_equal(sims[j], np.where(np.arange(7) < len(copies), 1.0, 0.0))
    np.testing.assert_array_equal(idx, _brute(q, x, 7)[1])


def test_store_database(tmp_path, rng):
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    write_store(tmp_path, x, None, shard_rows=700, dtype=np.float32)
    q = rng.normal(size=(40, 16))
    _, idx = topk(q, open_store(tmp_path), 2)
    np.testing.assert_array_equal(idx, _brute(q, x, 2)[1])


def test_faiss_agrees_with_the_engine(rng):
    pytest.importorskip("faiss")
    q = rng.normal(size=(120, 24))
    x = rng.normal(size=(3000, 24))
    a = topk(q, x, 5, exclude=np.arange(120))
    b = topk(q, x, 5, exclude=np.arange(120), method="faiss")
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)


def test_copies_rank_their_source_first(rng):
    train = rng.normal(size=(5000, 32))
    src = rng.integers(0, 5000, size=100)
    copies = train[src] + 0.2 * rng.normal(size=(100, 32))  # slightly altered copies
    result = replication(copies, train)
    np.testing.assert_array_equal(result.index[:, 0], src)
    summary = result.summary()
    assert summary["generated_to_train"]["fraction_above_0.75"] == 1.0
    assert summary["train_to_train"]["mean"] < 0.75
    assert (result.duplicate_index != result.index[:, 0]).all()


def test_replication_summary_values():
    train = np.eye(4)
    train[3] = [1.0, 1.0, 0.0, 0.0]  # cos(e0, train3) = 0.707
    gen = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.1]])
    r = replication(gen, train)
    np.testing.assert_array_equal(r.index[:, 0], [0, 2])
    np.testing.assert_allclose(r.duplicate_similarity, [np.sqrt(0.5), 0.0], atol=1e-6)
    s = r.summary()
    assert s["generated_to_train"]["fraction_above_0.75"] == 1.0
    assert s["train_to_train"]["fraction_above_0.5"] == 0.5
    assert s["generated_to_train"]["p50"] == pytest.approx((1.0 + 1 / np.sqrt(1.01)) / 2, abs=1e-6)


def test_bad_search_arguments(rng):
    with pytest.raises(ValueError, match="queries have d=3 but the database has d=4"):
        topk(np.ones((2, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        topk(np.ones((2, 3)), np.ones((5, 3)), 0)
    q = np.ones((2, 3))
    q[1] = np.nan
    with pytest.raises(ValueError, match="queries row 1 contains NaN or inf"):
        topk(q, np.ones((5, 3)))


@pytest.mark.parametrize("method", ["faiss-ivf", "faiss-hnsw"])
def test_approximate_indexes_report_recall(rng, method):
    pytest.importorskip("faiss")
    train = rng.normal(size=(4000, 16))
    src = rng.integers(0, 4000, size=300)
    gen = train[src] + 0.05 * rng.normal(size=(300, 16))
    r = replication(gen, train, method=method)
    assert r.recall_sample == 256
    assert 0.9 <= r.recall <= 1.0  # near copies are easy: the index must find them
    summary = r.summary()
    assert summary["method"] == method and summary["recall_at_1_vs_exact"] == r.recall
    assert np.mean(r.index[:, 0] == src) >= 0.9
