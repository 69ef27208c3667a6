"""Rows: one view read by span or by id, the same whether it lives in an array or a store; and
the screening scores computed from a store's Rows equal those computed from its arrays."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope.io import open_store, write_store
from alignscope.screen import compute_scores
from alignscope.search.rows import Rows, as_rows
from alignscope.synth import concept_world


@pytest.fixture(scope="module")
def world_store(tmp_path_factory):
    w = concept_world(900, concepts=30, poisoned_concepts=3, per_concept=6, dim=16, seed=4)
    root = tmp_path_factory.mktemp("rows") / "store"
    write_store(root, w.image_emb, w.text_emb, shard_rows=250)  # 4 shards, the last short
    return open_store(root)


def test_store_rows_read_and_gather_as_the_array_does(world_store):
    store = world_store
    stored = store.read(0, store.n, "text")  # what the store holds (its dtype)
    rows = Rows(store, "text")
    assert rows.shape == (900, 16) and rows.name.endswith("text")
    np.testing.assert_array_equal(rows.read(240, 510), stored[240:510])  # across shards
    ids = np.array([[899, 0, 250], [250, 249, 3]])
    np.testing.assert_array_equal(rows.gather(ids), stored[ids])
    assert [s for s in rows.spans(400)] == [(0, 400), (400, 800), (800, 900)]
    in_memory = as_rows(stored, "text_emb")
    np.testing.assert_array_equal(in_memory.gather(ids), rows.gather(ids))
    assert as_rows(rows, "x") is rows


def test_scores_from_store_rows_equal_scores_from_arrays(world_store):
    store = world_store
    image, text = store.read(0, store.n, "image"), store.read(0, store.n, "text")
    from_arrays = compute_scores(image, text, k=5)
    from_store = compute_scores(Rows(store, "image"), Rows(store, "text"), k=5)
    assert list(from_store.scores) == list(from_arrays.scores)
    for name, values in from_arrays.scores.items():
        np.testing.assert_array_equal(from_store.scores[name], values, err_msg=name)
