"""Free space checked before the large writes whose size is known: the command exits 2 with
one line naming the path, the bytes needed and free, before the work, and writes nothing."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from alignscope._files import LOCK_NAME, InsufficientSpace
from alignscope.cli import main

FREE = 10  # bytes the file system reports free


@pytest.fixture
def full_disk(monkeypatch):
    def usage(path):
        return shutil._ntuple_diskusage(10**9, 10**9 - FREE, FREE)

    monkeypatch.setattr(shutil, "disk_usage", usage)


def _images(root, n=3):
    root.mkdir()
    for i in range(n):
        buf = io.BytesIO()
        noise = np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(noise).save(buf, format="PNG")  # (noise: over a KiB in all)
        (root / f"{i}.png").write_bytes(buf.getvalue())
        (root / f"{i}.txt").write_text("a photo of a cat" if i else "a photo of a dog")
    return root


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_embed_stops_before_writing_when_the_store_would_not_fit(
    tmp_path, tiny_sscd, full_disk, capsys
):
    """An SSCD model's width is known after the first batch: 3 records x 16 floats x 2 bytes
    (float16) must fit before the shard is written."""
    data, out = _images(tmp_path / "data"), tmp_path / "store"
    argv = ["embed", str(data), "--out", str(out), "--sscd", str(tiny_sscd["torchscript"])]
    assert main([*argv, "--sscd-preset", "sscd-square", "--quiet"]) == 2
    assert _error_line(capsys) == (
        f"alignscope: error: cannot write {str(out)!r}: not enough free space for the "
        f"embeddings of the 3 records left: about {3 * 16 * 2} bytes needed, {FREE} bytes "
        "free; free space or choose a writable --out"
    )
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # no shard, skip list or record


class _CountingClip:
    """A CLIP encoder of the user's own, with a known width: checked before any encoding."""

    spec, device, dim = "counting", "cpu", 32

    def __init__(self) -> None:
        self.calls = 0

    def encode_images(self, images):
        self.calls += 1
        return np.zeros((len(images), self.dim), np.float32)

    encode_texts = encode_images


def test_embed_with_known_widths_checks_before_encoding(tmp_path, full_disk):
    from alignscope.embed import embed_dataset
    from alignscope.io.datasets import open_dataset

    clip, out = _CountingClip(), tmp_path / "store"
    with pytest.raises(InsufficientSpace, match=r"the embeddings of 3 records: about 384 bytes"):
        embed_dataset(open_dataset(_images(tmp_path / "data")), out, clip=clip, progress=False)
    assert clip.calls == 0 and not out.exists()  # 3 x (32 + 32) x 2 bytes, refused up front


def test_poison_stops_before_copying_a_dataset_that_would_not_fit(tmp_path, full_disk, capsys):
    data, out = _images(tmp_path / "data"), tmp_path / "poisoned"
    size = sum(p.stat().st_size for p in data.iterdir())
    argv = ["poison", str(data), "--out", str(out), "--method", "relabel", "--target", "cat"]
    assert main([*argv, "--quiet"]) == 2
    assert size > 1024 and _error_line(capsys) == (
        f"alignscope: error: cannot write {str(out)!r}: not enough free space for the poisoned "
        f"copy of the dataset: about {size / 1024:,.1f} KiB ({size:,} bytes) needed, {FREE} "
        "bytes free; free space or choose a writable --out"
    )
    assert not out.exists()


def test_ad_per_sample_stops_before_computing(tmp_path, full_disk, capsys, monkeypatch):
    import alignscope.metrics

    def never(*args, **kwargs):
        raise AssertionError("AD was computed")

    monkeypatch.setattr(alignscope.metrics, "alignment_difficulty", never)
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    np.save(tmp_path / "img.npy", x)
    np.save(tmp_path / "txt.npy", x[::-1].copy())
    out = tmp_path / "terms.parquet"
    argv = ["ad", "--images", str(tmp_path / "img.npy"), "--texts", str(tmp_path / "txt.npy")]
    assert main([*argv, "--per-sample", str(out)]) == 2
    assert _error_line(capsys) == (
        f"alignscope: error: cannot write {str(out)!r}: not enough free space for the "
        f"per-sample terms: about 1.2 KiB ({50 * 3 * 8:,} bytes) needed, {FREE} bytes free; "
        "free space or choose a writable --out"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.npy", "txt.npy"]
