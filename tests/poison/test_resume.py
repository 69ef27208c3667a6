"""`alignscope poison` stopped after some images, then rerun: the output equals an
uninterrupted run's, byte for byte, and the stopped run leaves no temp file behind.

Poisoning does not resume (a rerun starts over and overwrites); what it promises is that the
same inputs and seed give the same bytes, so the reference is the same call run once without
interruption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignscope.io.datasets import open_dataset
from alignscope.poison.concepts import make_vocabulary
from alignscope.poison.run import poison_dataset
from alignscope.poison.writers import DatasetWriter

pytest.importorskip("pyarrow")

NOUNS = ["dog", "cat", "car", "tree", "boat"]
N = 15


def _dataset(root: Path, rng: np.random.Generator) -> Path:
    root.mkdir()
    for i in range(N):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:03d}.png")
        (root / f"{i:03d}.txt").write_text(f"a photo of a {NOUNS[i % 5]}")
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden temp files included) by relative path, but the run's
    provenance record and lock (``.alignscope-run.*``), which are not outputs."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".alignscope-run")
    }


def _poison(data: Path, out: Path, fmt: str):
    # dirty-label draws its donor images from a seeded generator as it goes: a rerun that did
    # not start that stream over would pair other images with the poisoned captions
    return poison_dataset(
        open_dataset(data),
        out,
        method="dirty-label",
        concepts=2,
        per_concept=2,
        seed=11,
        vocabulary=make_vocabulary(NOUNS),
        out_format=fmt,
    )


@pytest.mark.parametrize("fmt", ["folder", "webdataset"])
def test_poison_interrupted_after_some_images_then_rerun(tmp_path, rng, monkeypatch, fmt):
    data = _dataset(tmp_path / "data", rng)
    report = _poison(data, tmp_path / "reference", fmt)
    assert report.rows == N and report.poisoned == 4
    want = _snapshot(tmp_path / "reference")

    written = []
    original = DatasetWriter.add

    def stop_at_the_seventh(self, row, image, caption):
        if len(written) == 6:
            raise KeyboardInterrupt  # Ctrl-C after six images
        written.append(row)
        return original(self, row, image, caption)

    monkeypatch.setattr(DatasetWriter, "add", stop_at_the_seventh)
    out = tmp_path / "out"
    # the kept traceback holds the stopped run's frames: nothing may rely on their collection
    # to clean up (and an unclosed file fails the test as an unraisable ResourceWarning)
    with pytest.raises(KeyboardInterrupt) as stopped:
        _poison(data, out, fmt)
    monkeypatch.undo()
    assert written == list(range(6))
    partial = _snapshot(out)
    del stopped
    # no manifest or report (an incomplete output is recognisable), no temp file; in a folder
    # the six pairs written so far are whole and final
    if fmt == "folder":
        assert sorted(partial) == sorted(f"{r:08d}.{e}" for r in range(6) for e in ("png", "txt"))
        assert all(partial[name] == want[name] for name in partial)
    else:
        assert partial == {}  # the tar is renamed into place only when complete

    again = _poison(data, out, fmt)
    assert again.to_dict() == {**report.to_dict(), "out": str(out)}
    got = _snapshot(out)
    assert sorted(got) == sorted(want)
    for name in want:  # images, captions, tar, manifest and report: byte-identical
        assert got[name] == want[name], name


def test_a_rerun_with_another_seed_is_refused_until_overwrite(tmp_path, rng, capsys):
    """A poisoned set is never silently replaced by one of another plan: its manifest would no
    longer match a store embedded from the old images."""
    from alignscope.cli import main

    data = _dataset(tmp_path / "data", rng)
    base = ["poison", str(data), "--out", str(tmp_path / "out"), "--method", "relabel"]
    base += ["--target", "dog", "--ratio", "0.3", "--quiet"]
    assert main([*base, "--seed", "0"]) == 0
    manifest = (tmp_path / "out" / "poison_manifest.parquet").read_bytes()
    assert main([*base, "--seed", "0"]) == 0  # the same run again: allowed, same files
    assert (tmp_path / "out" / "poison_manifest.parquet").read_bytes() == manifest
    capsys.readouterr()
    assert main([*base, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "holds the output of another run (plan:" in err and "seed: 0 there, 1 now" in err
    assert (tmp_path / "out" / "poison_manifest.parquet").read_bytes() == manifest
    assert main([*base, "--seed", "1", "--overwrite"]) == 0
    assert (tmp_path / "out" / "poison_manifest.parquet").read_bytes() != manifest
