"""`alignscope embed` stopped part-way, then rerun: the store equals an uninterrupted run's.

The reference is the same command run once without interruption; an interruption is injected
(an encoder or the metadata writer raising) or real (SIGINT to a `python -m alignscope embed`
subprocess that blocks on a named pipe, so it cannot finish before the signal arrives).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignscope.cli import main
from alignscope.embed import SSCDEncoder, embed_dataset, load_clip
from alignscope.io.datasets import open_dataset
from alignscope.io.write import StoreWriter

pq = pytest.importorskip("pyarrow.parquet")

# 8 records in shards of 3 ([0, 1, 2], [3, 4, 5], [6, 7]) and batches of 2: every shard but the
# last ends in a short batch, and record 7 is corrupt (skipped and listed, in a resumed shard).
N, SHARD_ROWS, BATCH = 8, 3, 2


def _dataset(root: Path, rng: np.random.Generator, n: int = N) -> Path:
    """Low-frequency colour images with captions; the last image is a corrupt PNG."""
    root.mkdir(parents=True)
    for i in range(n):
        coarse = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((64, 64), Image.BICUBIC).save(root / f"{i:03d}.png")
        (root / f"{i:03d}.txt").write_text(f"caption {i}")
    (root / f"{n - 1:03d}.png").write_bytes(b"\x89PNG broken")
    return root


def _snapshot(store: Path) -> dict[str, bytes]:
    """Every file of a store but the per-run report, by relative path (temp files included:
    an interrupted write must leave none behind)."""
    return {
        p.relative_to(store).as_posix(): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file()
        and p.name != "embed_report.json"
        and not p.name.startswith(".alignscope-run")  # the run's provenance record and lock
    }


def _assert_same_store(got: Path, want: Path) -> None:
    a, b = _snapshot(got), _snapshot(want)
    assert sorted(a) == sorted(b)
    for name in sorted(b):
        if name.endswith(".parquet"):  # the rows, not the writer's byte layout
            assert pq.read_table(got / name).equals(pq.read_table(want / name)), name
        else:
            assert a[name] == b[name], name  # .npy shards byte-identical


class CountingSSCD:
    """An SSCD encoder that counts the images it encodes and raises on call ``fail_at``."""

    def __init__(self, inner: SSCDEncoder, fail_at: int | None = None) -> None:
        self.inner, self.fail_at = inner, fail_at
        self.calls = self.images = 0

    def __getattr__(self, name):  # path, preset, device...: what the store records
        return getattr(self.inner, name)

    def encode(self, images):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt  # what Ctrl-C raises between two batches
        self.images += len(images)
        return self.inner.encode(images)


@pytest.fixture(scope="module")
def encoders(tiny_open_clip, tiny_sscd):
    return load_clip(tiny_open_clip), SSCDEncoder(tiny_sscd["torchscript"], "sscd-square")


def _embed(data: Path, store: Path, clip, sscd):
    return embed_dataset(
        open_dataset(data),
        store,
        clip=clip,
        sscd=sscd,
        batch_size=BATCH,
        shard_rows=SHARD_ROWS,
        progress=False,
    )


@pytest.mark.parametrize("where", ["encoder", "metadata"])
def test_embed_interrupted_mid_shard_resumes_to_the_uninterrupted_store(
    tmp_path, rng, encoders, monkeypatch, where
):
    """Stopped inside shard 1 -- between its two batches (nothing of it on disk), or after its
    three .npy views but before its metadata (a partial shard on disk) -- a rerun re-embeds
    shards 1 and 2 only and writes the store of an uninterrupted run."""
    clip, sscd = encoders
    data = _dataset(tmp_path / "data", rng)
    reference = _embed(data, tmp_path / "reference", clip, sscd)
    assert reference.images == N - 1 and reference.shards_written == [0, 1, 2]

    store = tmp_path / "store"
    if where == "encoder":
        # calls 1-2 are shard 0, call 3 the first batch of shard 1: call 4 is its second batch
        with pytest.raises(KeyboardInterrupt):
            _embed(data, store, clip, CountingSSCD(sscd, fail_at=4))
    else:
        original = StoreWriter._write_metadata

        def fail_on_shard_1(self, i, metadata, rows):
            if i == 1:
                raise KeyboardInterrupt
            original(self, i, metadata, rows)

        monkeypatch.setattr(StoreWriter, "_write_metadata", fail_on_shard_1)
        with pytest.raises(KeyboardInterrupt):
            _embed(data, store, clip, sscd)
        monkeypatch.undo()
    partial = set(_snapshot(store))
    views = {f"{v}/{v}_1.npy" for v in ("img_emb", "text_emb", "sscd_emb")}
    assert "metadata/metadata_0.parquet" in partial and "metadata/metadata_1.parquet" not in partial
    assert (partial & views == views) if where == "metadata" else not partial & views
    assert not (store / "embed_report.json").exists()

    counter = CountingSSCD(sscd)
    resumed = _embed(data, store, clip, counter)
    assert resumed.shards_skipped == [0] and resumed.shards_written == [1, 2]
    # shard 0's three images are not encoded again; records 3-6 are, record 7 is corrupt
    assert counter.images == resumed.images == 4
    assert [r for r, _ in resumed.skipped] == [r for r, _ in reference.skipped] == ["007.png"]
    _assert_same_store(store, tmp_path / "reference")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and named pipes")
def test_ctrl_c_on_the_embed_command_then_rerun(tmp_path, rng, tiny_sscd, monkeypatch, capsys):
    """SIGINT to `python -m alignscope embed` once shard 0 is on disk: exit 130, shard 0 whole,
    nothing else and no temp file; the rerun embeds only the rest and equals an uninterrupted
    run. A sitecustomize module in the child holds its third SSCD call (the first of shard 1)
    until the signal comes, so it cannot finish first, however slow the machine."""
    data = _dataset(tmp_path / "data", rng)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import time\n"
        "from alignscope.embed import sscd\n"
        "_encode, _calls = sscd.SSCDEncoder.encode, []\n"
        "def encode(self, images):\n"
        "    _calls.append(1)\n"
        "    while len(_calls) == 3:\n"
        "        time.sleep(0.05)  # held inside shard 1 until the test sends SIGINT\n"
        "    return _encode(self, images)\n"
        "sscd.SSCDEncoder.encode = encode\n"
    )
    store = tmp_path / "store"
    argv = [
        "embed",
        str(data),
        "--out",
        str(store),
        "--sscd",
        str(tiny_sscd["torchscript"]),
        "--sscd-preset",
        "sscd-square",
        "--batch-size",
        str(BATCH),
        "--shard-rows",
        str(SHARD_ROWS),
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignscope", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        # a shell that started pytest in the background ignores SIGINT, and the child would
        # inherit that: Python installs its KeyboardInterrupt handler only over SIG_DFL
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 300  # imports and model loading on a busy machine
        while not (store / "metadata" / "metadata_0.parquet").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "shard 0 never appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed assertion above: do not leave it running
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert b"alignscope: interrupted" in err
    # shard 0 complete, nothing of shard 1, no temp file, no report
    assert set(_snapshot(store)) == {
        "sscd_emb/sscd_emb_0.npy",
        "metadata/metadata_0.parquet",
        "metadata/skipped_0.json",
    }
    assert not (store / "embed_report.json").exists()

    encoded = []
    original = SSCDEncoder.encode

    def counting(self, images):
        encoded.append(len(images))
        return original(self, images)

    monkeypatch.setattr(SSCDEncoder, "encode", counting)
    assert main(argv) == 0
    assert sum(encoded) == 4  # records 3-6 (7 is corrupt); shard 0 is not encoded again
    encoded.clear()
    assert main([*argv[:3], str(tmp_path / "reference"), *argv[4:]]) == 0
    assert sum(encoded) == N - 1
    capsys.readouterr()
    _assert_same_store(store, tmp_path / "reference")


def test_the_report_of_a_resumed_run_lists_the_skips_of_earlier_shards(tmp_path, rng, encoders):
    """embed_report.json after a resume covered only the last run: a corrupt image in a shard
    completed before the interruption was no longer listed."""
    clip, sscd = encoders
    data = _dataset(tmp_path / "data", rng)
    (data / "001.png").write_bytes(b"\x89PNG broken")  # in shard 0, done before the stop
    reference = _embed(data, tmp_path / "reference", clip, sscd)
    with pytest.raises(KeyboardInterrupt):  # call 3 is the first batch of shard 1
        _embed(data, tmp_path / "store", clip, CountingSSCD(sscd, fail_at=3))
    resumed = _embed(data, tmp_path / "store", clip, sscd)
    assert resumed.shards_skipped == [0]
    assert [r for r, _ in resumed.skipped] == [r for r, _ in reference.skipped]
    assert [r for r, _ in resumed.skipped] == ["001.png", "007.png"]
