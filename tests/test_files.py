"""The output-folder mechanism every command writes through: atomic files, fingerprints, and
the provenance record that decides whether a rerun may resume."""

from __future__ import annotations

import json
import os

import pytest

from alignscope._files import (
    LOCK_NAME,
    RECORD_NAME,
    OutputConflict,
    atomic_path,
    claimed_output,
    fingerprint_files,
    fingerprint_tree,
)


def test_atomic_path_leaves_the_old_file_on_error(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("stop")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_fingerprints_change_with_content_and_listing(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("one")
    before = fingerprint_tree(tmp_path / "d")
    assert before["files"] == 1
    (tmp_path / "d" / "b.txt").write_text("two")
    after = fingerprint_tree(tmp_path / "d")
    assert after["listing_sha256"] != before["listing_sha256"] and after["files"] == 2
    f = tmp_path / "d" / "a.txt"
    first = fingerprint_files([f])[0]
    f.write_text("ONE")
    os.utime(f, ns=(first["mtime_ns"], first["mtime_ns"]))  # same size and time, other bytes
    assert fingerprint_files([f])[0]["edges_sha256"] != first["edges_sha256"]


def test_a_rerun_with_the_same_identity_resumes(tmp_path):
    out = tmp_path / "out"
    with claimed_output(out, "embed", {"dataset": "a", "shard_rows": 3}):
        (out / "part.npy").write_text("x")
    record = json.loads((out / RECORD_NAME).read_text())
    assert record == {
        "command": "embed",
        "identity": {"dataset": "a", "shard_rows": 3},
        "complete": True,
    }
    with claimed_output(out, "embed", {"dataset": "a", "shard_rows": 3}):
        assert (out / "part.npy").exists()  # kept for the resumed run


def test_another_identity_is_refused_naming_the_difference(tmp_path):
    out = tmp_path / "out"
    with claimed_output(out, "embed", {"dataset": "a", "shard_rows": 3, "clip": "x"}):
        (out / "part.npy").write_text("x")
    with pytest.raises(OutputConflict) as err:
        with claimed_output(out, "embed", {"dataset": "b", "shard_rows": 3, "clip": "x"}):
            pass
    message = str(err.value)
    assert 'dataset: "a" there, "b" now' in message and "--overwrite" in message
    assert "shard_rows" not in message and (out / "part.npy").exists()
    with claimed_output(out, "poison", {"dataset": "a"}, overwrite=True):
        assert not (out / "part.npy").exists()  # the other run's outputs are gone
    assert json.loads((out / RECORD_NAME).read_text())["command"] == "poison"


def test_an_interrupted_run_is_recorded_incomplete_and_resumable(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), claimed_output(out, "embed", {"k": 3}):
        (out / "shard_0").write_text("x")
        raise KeyboardInterrupt
    assert json.loads((out / RECORD_NAME).read_text())["complete"] is False
    with claimed_output(out, "embed", {"k": 3}):
        pass
    assert json.loads((out / RECORD_NAME).read_text())["complete"] is True


def test_a_run_that_fails_before_writing_claims_nothing(tmp_path):
    # a bad flag found after the claim must not bind the folder to the bad settings
    out = tmp_path / "out"
    with pytest.raises(ValueError), claimed_output(out, "replicate", {"sscd": None}):
        raise ValueError("give --sscd MODEL")
    assert not (out / RECORD_NAME).exists()
    with claimed_output(out, "replicate", {"sscd": "model.pt"}):
        (out / "summary.json").write_text("{}")


def test_folders_not_written_by_alignscope_are_never_emptied(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(OutputConflict, match="not empty and was not written by alignscope"):
            with claimed_output(out, "embed", {}, overwrite=overwrite):
                pass
    assert (out / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputConflict, match="is a file; give a folder"):
        with claimed_output(tmp_path / "file", "embed", {}):
            pass


def test_two_runs_cannot_write_one_folder_at_once(tmp_path):
    out = tmp_path / "out"
    with claimed_output(out, "embed", {"dataset": "a"}):
        with pytest.raises(OutputConflict, match="being written by another alignscope run"):
            with claimed_output(out, "embed", {"dataset": "a"}):
                pass
    assert (out / LOCK_NAME).exists()


# ---- free space checked before large writes


def _disk_with(monkeypatch, free: int) -> list[str]:
    """shutil.disk_usage reports ``free`` bytes; returns the paths it was asked about."""
    import shutil

    asked: list[str] = []

    def usage(path):
        asked.append(str(path))
        return shutil._ntuple_diskusage(10**12, 10**12 - free, free)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    return asked


def test_too_little_free_space_is_one_line_naming_path_need_and_free(tmp_path, monkeypatch):
    import errno

    from alignscope._files import InsufficientSpace, ensure_free_space

    asked = _disk_with(monkeypatch, 3 * 2**20)
    target = tmp_path / "new" / "deeper" / "store"  # not there yet: its nearest folder is asked
    ensure_free_space(target, 3 * 2**20, "the embeddings")  # exactly what is free: fine
    with pytest.raises(InsufficientSpace) as info:
        ensure_free_space(target, 3 * 2**20 + 1, "the embeddings")
    assert str(info.value) == (
        f"cannot write {str(target)!r}: not enough free space for the embeddings: about "
        "3.0 MiB (3,145,729 bytes) needed, 3.0 MiB (3,145,728 bytes) free"
    )
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert (info.value.need, info.value.free) == (3 * 2**20 + 1, 3 * 2**20)
    assert asked == [str(tmp_path)] * 2 and not (tmp_path / "new").exists()
    with pytest.raises(InsufficientSpace, match=r"about 900 bytes needed, 0 bytes free$"):
        _disk_with(monkeypatch, 0)
        ensure_free_space(tmp_path, 900, "x")


def test_a_need_of_nothing_asks_no_disk(tmp_path, monkeypatch):
    from alignscope._files import ensure_free_space

    asked = _disk_with(monkeypatch, 0)
    ensure_free_space(tmp_path, 0, "x")
    ensure_free_space(tmp_path, -5, "x")  # an output that is already there, larger
    assert asked == []


def test_tree_bytes_counts_regular_files_only(tmp_path):
    from alignscope._files import tree_bytes

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"1" * 100)
    (tmp_path / "y").write_bytes(b"2" * 20)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "x")  # not followed: not counted twice
    os.mkfifo(tmp_path / "pipe")
    assert tree_bytes(tmp_path) == 120
    assert tree_bytes(tmp_path / "y") == 20 and tree_bytes(tmp_path / "missing") == 0
