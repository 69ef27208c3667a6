"""The Ray backend on a local instance with 2 CPUs: exact equality with the single-process
engine, a failing task retried, and a resumed run computing only the missing pairs."""

from __future__ import annotations

import numpy as np
import pytest

import alignscope
from alignscope.distributed import block_pairs
from alignscope.distributed.tiles import pair_set_checksum, ray_alignment_difficulty
from alignscope.io import open_store, write_store
from alignscope.synth import concept_world

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    w = concept_world(20_000, concepts=200, poisoned_concepts=20, dim=16, seed=3)
    root = tmp_path_factory.mktemp("ray_store")
    write_store(root, w.image_emb, w.text_emb, shard_rows=6000, dtype=np.float32)
    return root


def test_block_pairs_cover_the_upper_triangle_once():
    pairs = block_pairs(10_000, 4096)
    assert pairs == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]


def test_equals_the_single_process_engine(local_ray, store, tmp_path):
    single = alignscope.alignment_difficulty(open_store(store), per_sample=True, tile=512)
    dist = ray_alignment_difficulty(
        store, work_dir=tmp_path / "w", block=4096, tile=512, per_sample=True, progress=False
    )
    assert dist["complete"] and dist["pairs"] == 15 and dist["computed"] == 15
    assert dist["structure"] == pytest.approx(single.structure, abs=1e-12)
    assert dist["ad"] == pytest.approx(single.ad, abs=1e-12)
    np.testing.assert_allclose(dist["d_s"], single.per_sample.d_s, rtol=0, atol=1e-12)
    assert dist["checksum"] == pair_set_checksum(block_pairs(20_000, 4096))


def test_failed_task_is_retried_and_result_unchanged(local_ray, store, tmp_path):
    clean = ray_alignment_difficulty(store, work_dir=tmp_path / "a", block=4096, progress=False)
    flaky = ray_alignment_difficulty(
        store, work_dir=tmp_path / "b", block=4096, progress=False, _fail_once=((0, 1), (2, 3))
    )
    assert (tmp_path / "b" / ".attempted_0_1").exists()  # the first attempt did fail
    assert flaky["ad"] == clean["ad"] and flaky["checksum"] == clean["checksum"]


def test_interrupted_run_resumes_with_only_the_missing_pairs(local_ray, store, tmp_path):
    first = ray_alignment_difficulty(
        store, work_dir=tmp_path / "w", block=4096, max_pairs=6, progress=False
    )
    assert not first["complete"] and first["computed"] == 6 and "ad" not in first
    second = ray_alignment_difficulty(store, work_dir=tmp_path / "w", block=4096, progress=False)
    assert second["complete"] and second["computed"] == 15 - 6
    full = ray_alignment_difficulty(store, work_dir=tmp_path / "fresh", block=4096, progress=False)
    assert second["ad"] == pytest.approx(full["ad"], abs=1e-15)


def test_cli_ad_on_ray(local_ray, store, tmp_path, capsys):
    import json

    from alignscope.cli import main

    argv = [
        "ad",
        str(store),
        "--ray",
        "--work-dir",
        str(tmp_path / "w"),
        "--block",
        "8192",
        "--json",
        "--quiet",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    single = alignscope.alignment_difficulty(open_store(store))
    assert out["ad"] == pytest.approx(single.ad, abs=1e-9) and out["pairs"] == 6
    assert main(["ad", "--images", "x.npy", "--texts", "y.npy", "--ray"]) == 2
    assert "--ray needs a STORE" in capsys.readouterr().err


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
