"""The Ray backend on a local instance with 2 CPUs, through ``alignment_difficulty(store,
backend="ray")``: per-sample equality with the single-process engine (embeddings and labels),
a failing task retried, an interrupted run resumed, pair files keyed by input and settings, and
``alignscope ad --ray`` writing what the in-process path writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import alignscope
from alignscope.cli import main
from alignscope.distributed import block_pairs, exact_row_sums
from alignscope.distributed import tiles as tiles_module
from alignscope.distributed.tiles import pair_set_checksum
from alignscope.io import open_store, write_store
from alignscope.metrics.sampled import structure_setup
from alignscope.synth import concept_world

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def world():
    return concept_world(20_000, concepts=200, poisoned_concepts=20, dim=16, seed=3)


@pytest.fixture(scope="module")
def store(tmp_path_factory, world):
    root = tmp_path_factory.mktemp("ray_store")
    write_store(root, world.image_emb, world.text_emb, shard_rows=6000, dtype=np.float32)
    return root


def _ray(store, work, **kw):
    return alignscope.alignment_difficulty(
        store, backend="ray", work_dir=work, task_rows=4096, tile=512, **kw
    )


def test_block_pairs_cover_the_upper_triangle_once():
    pairs = block_pairs(10_000, 4096)
    assert pairs == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]


def test_equals_the_single_process_engine_per_sample(local_ray, store, tmp_path):
    single = alignscope.alignment_difficulty(open_store(store), per_sample=True, tile=512)
    dist = _ray(open_store(store), tmp_path / "w", per_sample=True)
    assert isinstance(dist, alignscope.ADResult) and dist.backend == "ray"
    assert dist.structure == pytest.approx(single.structure, abs=1e-12)
    assert dist.feature == pytest.approx(single.feature, abs=1e-12)
    assert dist.ad == pytest.approx(single.ad, abs=1e-12)
    for term in ("d_ab", "d_s", "ad"):
        np.testing.assert_allclose(
            getattr(dist.per_sample, term), getattr(single.per_sample, term), rtol=0, atol=1e-12
        )
    assert "15 block pairs of 4096 rows, 15 computed now" in dist.note


def test_label_metrics_equal_the_single_process_engine(local_ray, store, world, tmp_path):
    np.save(tmp_path / "labels.npy", world.concept.astype(np.int64))
    truth = world.concept.copy()
    truth[world.poisoned] = (truth[world.poisoned] + 1) % 200
    kw = {"labels": str(tmp_path / "labels.npy")}
    single = alignscope.alignment_difficulty(
        open_store(store, **kw), true_labels=truth, per_sample=True, tile=512
    )
    dist = _ray(open_store(store, **kw), tmp_path / "w", true_labels=truth, per_sample=True)
    assert dist.metric == "labels" and dist.feature == pytest.approx(world.poisoned.mean())
    assert dist.ad == pytest.approx(single.ad, abs=1e-12)
    for term in ("d_ab", "d_s", "ad"):
        np.testing.assert_allclose(
            getattr(dist.per_sample, term), getattr(single.per_sample, term), rtol=0, atol=1e-12
        )


def test_failed_task_is_retried_and_result_unchanged(local_ray, store, tmp_path, monkeypatch):
    clean = _ray(open_store(store), tmp_path / "a")
    original = tiles_module.run_pair
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()

    def flaky(job, pair):  # the first attempt of two pairs fails inside the worker
        marker = marker_dir / f"{pair[0]}_{pair[1]}"
        if pair in ((0, 1), (2, 3)) and not marker.exists():
            marker.touch()
            raise RuntimeError(f"injected failure of block pair {pair}")
        return original(job, pair)

    monkeypatch.setattr(tiles_module, "run_pair", flaky)
    retried = _ray(open_store(store), tmp_path / "b")
    assert sorted(p.name for p in marker_dir.iterdir()) == ["0_1", "2_3"]  # they did fail
    assert retried.ad == clean.ad and retried.structure == clean.structure


def test_interrupted_run_resumes_with_only_the_missing_pairs(local_ray, store, tmp_path):
    s = open_store(store)
    bounds = alignscope.metrics.profiles.paper_bounds()
    setup = structure_setup(s.d_image, s.d_text, bounds.image, bounds.text, None)
    kw = {
        "zscale": setup.zscale,
        "c0": setup.c0,
        "c_label": setup.c_label,
        "codes": None,
        "work_dir": tmp_path / "w",
        "block": 4096,
        "progress": False,
    }
    first = exact_row_sums(s, max_pairs=6, **kw)
    assert not first.complete and first.computed == 6 and first.row_sums is None
    second = exact_row_sums(s, **kw)
    assert second.complete and second.computed == 15 - 6 and second.work_dir == first.work_dir
    assert second.checksum == pair_set_checksum(block_pairs(20_000, 4096))
    resumed = _ray(s, tmp_path / "w")  # the API finds the same keyed folder: nothing to compute
    assert "0 computed now" in resumed.note
    fresh = _ray(s, tmp_path / "fresh")
    assert resumed.ad == pytest.approx(fresh.ad, abs=1e-15)


def test_other_settings_never_reuse_pair_files(local_ray, store, tmp_path):
    paper = _ray(open_store(store), tmp_path / "w")
    half = _ray(open_store(store), tmp_path / "w", profile="half")
    assert "15 computed now" in half.note  # a new keyed folder, not paper's files
    single = alignscope.alignment_difficulty(open_store(store), profile="half", tile=512)
    assert half.structure == pytest.approx(single.structure, abs=1e-12)
    assert half.structure != pytest.approx(paper.structure, abs=1e-6)
    assert len(list((tmp_path / "w").glob("ad-*"))) == 2


def test_cli_ad_on_ray_writes_what_the_in_process_path_writes(local_ray, store, tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    common = ["ad", str(store), "--json", "--quiet"]
    assert main([*common, "--per-sample", str(tmp_path / "one.parquet")]) == 0
    one = json.loads(capsys.readouterr().out)
    argv = [*common, "--per-sample", str(tmp_path / "ray.parquet"), "--ray"]
    assert main([*argv, "--work-dir", str(tmp_path / "w"), "--block", "8192"]) == 0
    dist = json.loads(capsys.readouterr().out)
    assert dist["backend"] == "ray" and dist["ad"] == pytest.approx(one["ad"], abs=1e-9)
    a, b = (pq.read_table(tmp_path / f).to_pydict() for f in ("one.parquet", "ray.parquet"))
    assert list(a) == list(b) == ["row", "d_ab", "d_s", "ad"] and a["row"] == b["row"]
    for column in ("d_ab", "d_s", "ad"):  # the AD column includes alpha * D_img:txt
        np.testing.assert_allclose(b[column], a[column], rtol=0, atol=1e-9)
    assert main(["ad", "--images", "x.npy", "--texts", "y.npy", "--ray"]) == 2
    assert "--ray needs a STORE" in capsys.readouterr().err


def test_two_inputs_of_one_name_from_one_directory(local_ray, tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(5)
    results = []
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
        img = rng.normal(size=(500, 8)).astype(np.float32)
        txt = (img + rng.normal(size=img.shape)).astype(np.float32)
        np.save(tmp_path / folder / "img.npy", img)
        np.save(tmp_path / folder / "txt.npy", txt)
        results.append(alignscope.alignment_difficulty(img, txt, tile=512))
    monkeypatch.chdir(tmp_path)  # the default work dir, img.npy.ray-work, is shared by both
    for folder, expected in zip(("first", "second"), results, strict=True):
        argv = ["ad", os.path.join(folder, "img.npy"), "--texts", os.path.join(folder, "txt.npy")]
        assert main([*argv, "--ray", "--block", "512", "--json", "--quiet"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["structure"] == pytest.approx(expected.structure, abs=1e-12)
    assert len(list((tmp_path / "img.npy.ray-work").glob("ad-*"))) == 2


def test_ray_needs_a_store_opened_from_files_and_the_exact_method(rng, store):
    x = rng.normal(size=(10, 4))
    with pytest.raises(ValueError, match="backend='ray' needs a store opened with"):
        alignscope.alignment_difficulty(x, x, backend="ray")
    with pytest.raises(ValueError, match="backend='ray' computes the exact terms"):
        alignscope.alignment_difficulty(open_store(store), backend="ray", method="sampled")
    with pytest.raises(ValueError, match="exact per-sample terms: per_sample=True"):
        alignscope.alignment_difficulty(open_store(store), backend="ray", per_sample="landmarks")
    with pytest.raises(ValueError, match="profile='minmax' needs a global min/max pass"):
        alignscope.alignment_difficulty(open_store(store), backend="ray", profile="minmax")


def test_nothing_outside_distributed_imports_ray():
    import pathlib
    import re

    import alignscope as pkg

    pattern = re.compile(r"^\s*(import ray\b|from ray\b)", re.MULTILINE)
    root = pathlib.Path(pkg.__file__).parent
    offenders = [
        p
        for p in root.rglob("*.py")
        if "distributed" not in p.parts and pattern.search(p.read_text())
    ]
    assert offenders == []
    assert pattern.search((root / "distributed" / "tiles.py").read_text())  # the check can fire
