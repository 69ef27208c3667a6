"""`alignscope embed --ray` with tiny local models equals the single-process embedding."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alignscope.cli import main
from alignscope.io import open_store

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_embedding_matches_single_process(
    local_ray, tmp_path, rng, tiny_open_clip, tiny_sscd, tiny_vae, capsys
):
    tiny_vae.save_pretrained(tmp_path / "vae")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(9):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(f"caption {i}")
    common = [
        str(data),
        "--clip",
        tiny_open_clip,
        "--sscd",
        str(tiny_sscd["torchscript"]),
        "--sscd-preset",
        "sscd-square",
        "--vae",
        str(tmp_path / "vae"),
        "--vae-size",
        "16",
        "--shard-rows",
        "4",
        "--quiet",
        "--json",
    ]
    assert main(["embed", *common, "--out", str(tmp_path / "single")]) == 0
    capsys.readouterr()
    assert main(["embed", *common, "--out", str(tmp_path / "ray"), "--ray", "--workers", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 9 and report["shards_written"] == [0, 1, 2]
    a, b = open_store(tmp_path / "single"), open_store(tmp_path / "ray")
    for view in ("image", "text", "sscd", "vae", "vae_purified"):
        np.testing.assert_allclose(
            a.read(0, 9, view).astype(np.float32), b.read(0, 9, view).astype(np.float32), atol=2e-3
        )
    again = main(["embed", *common, "--out", str(tmp_path / "ray"), "--ray"])  # resume: all done
    assert again == 0 and json.loads(capsys.readouterr().out)["shards_skipped"] == [0, 1, 2]
    # the single-process run may resume the Ray run's store: one record for both embedders
    assert main(["embed", *common, "--out", str(tmp_path / "ray")]) == 0
    assert json.loads(capsys.readouterr().out)["shards_skipped"] == [0, 1, 2]
    # another dataset into the Ray run's store is refused, not mixed in
    (data / "9.png").write_bytes((data / "0.png").read_bytes())
    assert main(["embed", *common, "--out", str(tmp_path / "ray"), "--ray"]) == 2
    assert "holds the output of another run (dataset." in capsys.readouterr().err
