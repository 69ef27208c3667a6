"""The k-NN layer of the screening scores: exact against brute force, approximate with a
recall that is measured (checked against a recount), "auto" choosing by a timed probe, and one
search per view in compute_scores."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope import _reference as ref
from alignscope.screen import compute_scores
from alignscope.screen import scores as scores_module
from alignscope.search import knn as knn_module
from alignscope.search.knn import self_neighbours

pytest.importorskip("faiss")


def _clustered(n=600, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, d))
    return (centers[rng.integers(30, size=n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def test_exact_equals_brute_force():
    x = _clustered(200)
    got = self_neighbours(x, 7)
    assert got.method == "exact" and got.recall is None
    np.testing.assert_array_equal(got.idx, ref.nearest_others(x, 7))
    assert got.describe() == {"method": "exact", "k": 7}


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_reports_the_recall_it_has(method):
    x = _clustered(3000)
    got = self_neighbours(x, 10, method=method, sample=300, seed=2)
    rows = np.sort(np.random.default_rng(2).choice(3000, size=300, replace=False))
    # float64 brute force for the sampled rows: a found row counts when its cosine reaches the
    # exact 10th nearest one (within the tie tolerance), the recall the layer documents
    u = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    sims = u[rows] @ u.T
    sims[np.arange(rows.size), rows] = -np.inf
    tenth = np.sort(sims, axis=1)[:, -10]
    found = np.take_along_axis(sims, got.idx[rows], axis=1)
    want = np.mean(found >= tenth[:, None] - knn_module.TIE_TOLERANCE)
    assert got.recall == pytest.approx(want, abs=1e-12)
    assert 0.5 < got.recall <= 1.0
    assert got.method == method and got.recall_sample == 300
    assert (got.idx >= 0).all() and not (got.idx == np.arange(3000)[:, None]).any()
    described = got.describe()
    assert described["recall_at_k"] == got.recall
    if method == "ivf":
        assert described["index"] == f"IVF{described['nlist']},SQfp16"
        # probes doubled from 8 until the sample's recall reached the target (or the cap)
        tried = described["nprobe_recall"]
        assert described["nprobe"] == int(max(tried, key=int))
        assert all(
            r < knn_module.RECALL_TARGET for p, r in tried.items() if int(p) < got.params["nprobe"]
        )
    else:
        assert described["index"] == "HNSWFlat"


def test_ties_count_as_found():
    # 40 copies of one caption: any 10 of the 39 others are its 10 nearest
    rng = np.random.default_rng(5)
    x = np.concatenate([np.repeat(rng.normal(size=(1, 8)), 40, axis=0), rng.normal(size=(60, 8))])
    rows = knn_module.Rows(x.astype(np.float32))
    sample = np.arange(5)
    truth = self_neighbours(x, 10).sims[sample]
    other_copies = np.arange(20, 30)[None, :].repeat(5, axis=0)
    assert knn_module._tie_aware_recall(rows, sample, other_copies, truth) == 1.0
    strangers = np.arange(40, 50)[None, :].repeat(5, axis=0)
    assert knn_module._tie_aware_recall(rows, sample, strangers, truth) == 0.0


def test_short_ivf_rows_are_searched_exactly(monkeypatch):
    x = _clustered(500)
    real = knn_module._search_index

    def sparse_ivf(index, q, k, offset, exclude, n):
        sims, idx = real(index, q, k, offset, exclude, n)
        if q.shape[0] == n:  # the full search: a probe found fewer than k rows for rows 0..4
            idx[:5, -3:] = -1
            sims[:5, -3:] = -np.inf
        return sims, idx

    monkeypatch.setattr(knn_module, "_search_index", sparse_ivf)
    got = self_neighbours(x, 6, method="ivf", sample=50)
    assert got.params["rows_searched_exactly"] == 5
    np.testing.assert_array_equal(got.idx[:5], ref.nearest_others(x, 6)[:5])


def test_auto_chooses_by_the_timed_probe():
    x = _clustered(400)
    assert self_neighbours(x, 5, method="auto", budget_s=1e9).method == "exact"
    chosen = self_neighbours(x, 5, method="auto", budget_s=0.0, sample=50)
    assert chosen.method == "ivf" and chosen.params["exact_seconds_predicted"] >= 0.0


def test_bad_arguments():
    x = _clustered(10)
    with pytest.raises(ValueError, match="knn method must be one of exact, ivf, hnsw, auto"):
        self_neighbours(x, 3, method="annoy")
    with pytest.raises(ValueError, match="neighbour scores need at least two samples"):
        self_neighbours(x[:1], 3)


def test_compute_scores_searches_each_view_once(monkeypatch):
    rng = np.random.default_rng(1)
    image, text, second = (rng.normal(size=(300, 12)).astype(np.float32) for _ in range(3))
    calls = []
    real = scores_module.self_neighbours

    def counted(x, k, **kw):
        calls.append((x.shape, k))
        return real(x, k, **kw)

    monkeypatch.setattr(scores_module, "self_neighbours", counted)
    table = compute_scores(
        image,
        text,
        scores=("combined", "concept_consistency", "k_distance", "lid", "view_residual"),
        second_view=second,
        k=10,
    )
    # image (2k for the combined weights), text (k = 50 for relative_alignment), second view,
    # whitened second view: four searches, not one per score.
    assert sorted(k for _, k in calls) == [10, 10, 20, 50]
    assert set(table.neighbours) == {"image", "text", "second", "second_whitened"}
    assert table.neighbours["text"] == {"method": "exact", "k": 50}


def test_compute_scores_with_hnsw_records_recall_and_matches_exact_at_recall_one():
    x = _clustered(400, seed=3)
    t = _clustered(400, seed=4)
    exact = compute_scores(x, t, scores=("concept_consistency", "k_distance"), k=5)
    approx = compute_scores(x, t, scores=("concept_consistency", "k_distance"), k=5, knn="hnsw")
    # On 400 rows the recall sample is every row, and HNSW finds every neighbour here: a
    # recall of 1 means each table is the exact one, so the scores must be the exact ones.
    assert [v["recall_sample"] for v in approx.neighbours.values()] == [400, 400]
    assert [v["recall_at_k"] for v in approx.neighbours.values()] == [1.0, 1.0]
    for name in exact.scores:
        np.testing.assert_allclose(approx.scores[name], exact.scores[name], atol=1e-6)
    assert approx.methods["concept_consistency"] == "hnsw k-NN, k=5"
