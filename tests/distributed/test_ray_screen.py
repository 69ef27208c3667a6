"""`alignscope screen --ray` on a local 2-CPU Ray instance: the query spans of every neighbour
search run as Ray tasks (reading the store from disk, or the second view put in the object
store), and the outputs are byte for byte the single-process run's, for the exact search and
for IVF (an index built by the driver, shipped to the workers); a failing task is retried; a
store not opened from files is refused with the error a user gets."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest

from alignscope.cli import main
from alignscope.distributed import neighbours as neighbours_module
from alignscope.distributed.neighbours import RaySpanRunner
from alignscope.io import open_store, write_store
from alignscope.screen.run import screen_store
from alignscope.search import knn
from alignscope.synth import concept_world

ray = pytest.importorskip("ray")
pytest.importorskip("matplotlib")  # screen draws its plots

N = 1500
SPAN = 400  # query rows per span: spans start at 0, 400, 800, 1200


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():  # another module's instance
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 3-shard store, a second view (.npy) and the poison flags (.npy)."""
    root = tmp_path_factory.mktemp("ray_screen")
    w = concept_world(N, concepts=30, poisoned_concepts=3, dim=16, seed=4, latent_view=True)
    write_store(root / "store", w.image_emb, w.text_emb, shard_rows=600, dtype=np.float32)
    np.save(root / "second.npy", w.latent_emb)
    np.save(root / "truth.npy", w.poisoned)
    return root


@pytest.fixture
def small_spans(monkeypatch):
    monkeypatch.setattr(knn, "QUERY_ROWS", SPAN)


def _screen(inputs, out, knn_method, *extra):
    argv = [
        "screen", str(inputs / "store"), "--out", str(out), "--knn", knn_method,
        "--second-view", str(inputs / "second.npy"), "--manifest", str(inputs / "truth.npy"),
        "--remove-fraction", "0.05", "--quiet", "--json", *extra,
    ]  # fmt: skip
    assert main(argv) == 0


def _outputs(out):
    """Every file a screening writes that holds scores or decisions, as bytes."""
    names = ["scores.parquet", "summary.json", "keep.txt"]
    names += sorted(f"scores/{p.name}" for p in (out / "scores").iterdir())
    return {name: (out / name).read_bytes() for name in names}


def _searched_spans(out):
    """{view label: span starts} of the searches' checkpoints."""
    (work,) = (out / ".alignscope-work").glob("neighbours-*")
    return {
        view.name: sorted(int(p.stem.split("-")[1]) for p in view.glob("span-*.npz"))
        for view in work.iterdir()
    }


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_ray_screen_writes_the_single_process_outputs(
    local_ray, inputs, small_spans, tmp_path, method, capsys
):
    _screen(inputs, tmp_path / "single", method)
    _screen(inputs, tmp_path / "ray", method, "--ray", "--workers", "2")
    capsys.readouterr()
    single, dist = _outputs(tmp_path / "single"), _outputs(tmp_path / "ray")
    assert list(dist) == list(single) and len(dist) == 6  # 3 store shards: 3 parts
    for name in single:
        assert dist[name] == single[name], name
    summary = json.loads(dist["summary.json"])
    # the store's views and the in-memory second views were all searched in 4 spans
    spans = _searched_spans(tmp_path / "ray")
    assert set(spans) == {"image", "text", "second", "second_whitened"}
    assert all(starts == [0, 400, 800, 1200] for starts in spans.values())
    assert {v["method"] for v in summary["neighbours"].values()} == {method}
    if method == "ivf":  # the driver chose more probes than faiss's default 1: equal outputs
        # mean the workers searched with its choice
        assert all(v["nprobe"] >= 8 for v in summary["neighbours"].values())


def test_a_failed_span_task_is_retried_in_a_worker(
    local_ray, inputs, small_spans, tmp_path, monkeypatch, capsys
):
    original = neighbours_module.search_task
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def flaky(source, index, start, stop, k):  # each search's first attempt at span 400 fails
        kind = "store" if source["store"] is not None else "array"
        (attempts / f"{kind}-{source['key']}-{start}-{os.getpid()}-{uuid.uuid4().hex}").touch()
        failed = attempts.parent / f"failed-{source['key']}"
        if start == 400 and not failed.exists():
            failed.touch()
            raise RuntimeError(f"injected failure of span {start}")
        return original(source, index, start, stop, k)

    monkeypatch.setattr(neighbours_module, "search_task", flaky)
    _screen(inputs, tmp_path / "ray", "exact", "--ray")
    _screen(inputs, tmp_path / "single", "exact")
    capsys.readouterr()
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "single")
    ran = [p.name.split("-")[:4] for p in attempts.iterdir()]
    # 4 searches (image and text read from the store; the second view and its whitened form
    # put in the object store) of 4 spans, and one retry each
    searches = {(kind, key) for kind, key, _, _ in ran}
    assert sorted(kind for kind, _ in searches) == ["array", "array", "store", "store"]
    assert (
        sorted(int(start) for _, _, start, _ in ran) == [0] * 4 + [400] * 8 + [800] * 4 + [1200] * 4
    )
    assert os.getpid() not in {int(pid) for *_, pid in ran}  # every attempt ran in a worker


def test_a_store_not_opened_from_files_is_refused(inputs, tmp_path):
    store = open_store(inputs / "store")
    store.reopen_args = None  # as a store built in memory has none
    with pytest.raises(ValueError) as err:
        screen_store(store, tmp_path / "out", scores=("k_distance",), runner=RaySpanRunner())
    assert str(err.value) == (
        f"the Ray backend reads rows in its workers, and '{store.source} image' was not opened "
        "from files: open the store with alignscope.io.open_store (or write arrays with "
        "write_store first)"
    )


def test_workers_without_ray_is_a_usage_error(inputs, tmp_path, capsys):
    argv = ["screen", str(inputs / "store"), "--out", str(tmp_path / "o"), "--workers", "2"]
    assert main(argv) == 2
    assert (
        capsys.readouterr().err
        == "alignscope: error: --workers applies to --ray (Ray tasks at once)\n"
    )
