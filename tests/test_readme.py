"""Every Python block of the README runs as written, in a folder holding small versions of the
files it names (embeddings, a store, an image folder, tiny models at the paths it uses)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from alignscope.io import StoreWriter, write_store
from alignscope.synth import concept_world

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_the_blocks_this_test_prepares_for():
    assert len(BLOCKS) == 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The files the README's blocks name, small."""
    root = tmp_path_factory.mktemp("readme")
    w = concept_world(300, concepts=30, poisoned_concepts=3, dim=16, seed=5)
    np.save(root / "img_emb.npy", w.image_emb)
    np.save(root / "text_emb.npy", w.text_emb)
    np.save(root / "labels.npy", w.concept)
    np.save(root / "true_labels.npy", w.image_concept)
    base = concept_world(200, concepts=20, poisoned_concepts=0, dim=16, seed=6)
    np.save(root / "base_img_emb.npy", base.image_emb)
    np.save(root / "base_text_emb.npy", base.text_emb)
    captions = [f"a photo of concept {c}" for c in w.concept]
    write_store(root / "laion_part", w.image_emb, w.text_emb, metadata={"caption": captions})
    np.save(root / "img.npy", w.image_emb)
    np.save(root / "txt.npy", w.text_emb)
    np.save(root / "y.npy", w.concept)
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(
        pa.table(
            {
                "image_embedding": [list(map(float, r)) for r in w.image_emb],
                "text_embedding": [list(map(float, r)) for r in w.text_emb],
            }
        ),
        root / "emb.parquet",
    )
    return root


def _run(block: str, where: Path, monkeypatch) -> dict:
    monkeypatch.chdir(where)
    namespace: dict = {"__name__": "readme"}
    exec(compile(block, f"README block {BLOCKS.index(block)}", "exec"), namespace)
    return namespace


def test_python_api_block(folder, monkeypatch):
    ns = _run(BLOCKS[0], folder, monkeypatch)
    assert ns["r"].per_sample.ad.shape == (300,) and ns["tuned"].profile == "bounds"


def test_stores_and_sampled_ad_block(folder, monkeypatch):
    ns = _run(BLOCKS[1], folder, monkeypatch)
    assert ns["r"].per_sample.d_s.shape == (300,) and (folder / "out" / "img_emb").is_dir()


def test_datasets_encoders_and_search_block(folder, monkeypatch, rng, tiny_hf_clip, tiny_sscd):
    from PIL import Image

    images = folder / "images"
    images.mkdir(exist_ok=True)
    for i in range(5):
        pixels = rng.integers(0, 256, (24 + 4 * i, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text(f"a photo of thing {i}")
    models = folder / "models"
    shutil.copytree(tiny_hf_clip.removeprefix("hf:"), models / "clip-vit-base-patch32")
    shutil.copy(tiny_sscd["torchscript"], models / "sscd_disc_mixup.torchscript.pt")
    np.save(folder / "queries.npy", rng.normal(size=(3, 16)).astype(np.float32))
    gen = StoreWriter(folder / "gen", np.float32)
    gen.write_shard(0, {"sscd": rng.normal(size=(4, 16)).astype(np.float32)}, {"id": list("abcd")})
    ns = _run(BLOCKS[2], folder, monkeypatch)
    assert ns["idx"].shape == (3, 5) and ns["r"].summary()["n_generated"] == 4


def test_ray_block(folder, monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # another module's instance: the block starts its own
        ray.shutdown()
    try:
        ns = _run(BLOCKS[3], folder, monkeypatch)
    finally:
        ray.shutdown()  # leave no instance for the tests that start theirs
    assert ns["r"].backend == "ray" and ns["r"].per_sample.ad.shape == (300,)
