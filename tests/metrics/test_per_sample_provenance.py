"""`ad --per-sample FILE` records what produced FILE beside it (``.FILE.alignscope/``, through
the one provenance mechanism, ``alignscope._files.claimed_file``): a rerun with the same inputs
and settings rewrites it, one with another input or setting is refused with exit 2 naming the
difference, ``--overwrite`` replaces it, and an interrupted rerun leaves the earlier file and
record as they were. The file's values are checked against the dense float64 reference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from alignscope import _reference
from alignscope._files import LOCK_NAME, RECORD_NAME, claimed_file
from alignscope.cli import main

REFUSED = "): pass --overwrite to replace it, or choose another file"


@pytest.fixture
def pair(tmp_path, rng, monkeypatch):
    """img.npy and txt.npy (40 x 6) in a fresh working directory; relative paths in argv."""
    monkeypatch.chdir(tmp_path)
    a = rng.normal(size=(40, 6))
    np.save("img.npy", a.astype(np.float32))
    np.save("txt.npy", (a + rng.normal(size=a.shape)).astype(np.float32))
    return ["ad", "--images", "img.npy", "--texts", "txt.npy", "--quiet"]


def _rows(path) -> np.ndarray:
    return np.load(path)["ad"]


def _want(alpha: float) -> np.ndarray:
    ref = _reference.alignment_difficulty(
        np.load("img.npy").astype(np.float64), np.load("txt.npy").astype(np.float64), alpha=alpha
    )
    return ref["ad_xy"]


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_rerun_resumes_only_with_the_same_inputs_and_settings(pair, capsys):
    out = ["--per-sample", "terms.npy"]
    assert main([*pair, *out]) == 0
    np.testing.assert_allclose(_rows("terms.npy"), _want(0.8), rtol=0, atol=1e-6)
    record = json.loads(Path(".terms.npy.alignscope", RECORD_NAME).read_text())
    assert record["command"] == "ad --per-sample" and record["complete"] is True
    assert record["identity"]["alpha"] == 0.8 and record["identity"]["per_sample"] == "exact"
    first = Path("terms.npy").read_bytes()

    # the same everything: rewritten, no --overwrite needed (--threads changes no value)
    assert main([*pair, *out, "--threads", "1"]) == 0
    assert Path("terms.npy").read_bytes() == first

    # another setting: refused, naming it, before any computation; the file is untouched
    capsys.readouterr()
    assert main([*pair, *out, "--alpha", "0.5"]) == 2
    assert _error(capsys) == (
        "alignscope: error: --per-sample 'terms.npy' holds the output of another run "
        f"(alpha: 0.8 there, 0.5 now{REFUSED}"
    )
    assert main([*pair, *out, "--bounds", "0,1,0,1"]) == 2
    assert _error(capsys).startswith(
        "alignscope: error: --per-sample 'terms.npy' holds the output of another run "
        '(profile: "paper" there, {"feature": [0.0, 1.0], "image": [0.0, 1.0], '
    )
    assert Path("terms.npy").read_bytes() == first

    # another input: the caption embeddings rewritten in place
    np.save("txt.npy", np.load("txt.npy")[::-1].copy())
    assert main([*pair, *out]) == 2
    err = _error(capsys)
    assert err.startswith(
        "alignscope: error: --per-sample 'terms.npy' holds the output of another run "
        "(texts.edges_sha256: "
    )
    assert "; texts.mtime_ns: " in err and err.endswith(REFUSED)
    assert Path("terms.npy").read_bytes() == first

    # --overwrite starts over: the new inputs and alpha, and the record says so
    assert main([*pair, *out, "--alpha", "0.5", "--overwrite"]) == 0
    np.testing.assert_allclose(_rows("terms.npy"), _want(0.5), rtol=0, atol=1e-6)
    record = json.loads(Path(".terms.npy.alignscope", RECORD_NAME).read_text())
    assert record["identity"]["alpha"] == 0.5
    assert main([*pair, *out, "--alpha", "0.5"]) == 0  # and now that run resumes


def test_landmark_files_record_their_seed(pair, capsys):
    out = ["--per-sample", "lm.parquet", "--per-sample-method", "landmarks", "--landmarks", "8"]
    assert main([*pair, *out, "--seed", "1"]) == 0
    assert main([*pair, *out, "--seed", "1"]) == 0
    capsys.readouterr()
    assert main([*pair, *out, "--seed", "2"]) == 2
    assert _error(capsys) == (
        "alignscope: error: --per-sample 'lm.parquet' holds the output of another run "
        f"(landmarks.seed: 1 there, 2 now{REFUSED}"
    )


def test_a_file_alignscope_did_not_write_is_replaced_only_with_overwrite(pair, capsys):
    Path("mine.npy").write_bytes(b"the user's own file")
    assert main([*pair, "--per-sample", "mine.npy"]) == 2
    assert _error(capsys) == (
        "alignscope: error: --per-sample 'mine.npy' already exists and no alignscope record "
        "says what wrote it: pass --overwrite to replace it, or choose another file"
    )
    assert Path("mine.npy").read_bytes() == b"the user's own file"
    assert not os.path.exists(".mine.npy.alignscope")
    assert main([*pair, "--per-sample", "mine.npy", "--overwrite"]) == 0
    np.testing.assert_allclose(_rows("mine.npy"), _want(0.8), rtol=0, atol=1e-6)
    # --overwrite names the one file ad writes: without --per-sample it is a usage error
    assert main([*pair, "--overwrite"]) == 2
    assert _error(capsys) == (
        "alignscope: error: --overwrite applies to --per-sample FILE, the one file ad writes"
    )


def test_a_deleted_file_binds_nothing_and_a_failed_run_leaves_nothing(pair, capsys, monkeypatch):
    assert main([*pair, "--per-sample", "t.npy"]) == 0
    os.remove("t.npy")  # the record beside it is left: it describes nothing now
    assert main([*pair, "--per-sample", "t.npy", "--alpha", "0.3"]) == 0
    np.testing.assert_allclose(_rows("t.npy"), _want(0.3), rtol=0, atol=1e-6)

    # a first run into a new name that stops part-way leaves neither file nor record folder
    from alignscope.metrics import ad as ad_module

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ad_module, "exact_in_process", stop)
        assert main([*pair, "--per-sample", "new.npy"]) == 130
        assert not os.path.exists("new.npy") and not os.path.exists(".new.npy.alignscope")
        # one that stops over an earlier run leaves that run's file and record as they were
        record = Path(".t.npy.alignscope", RECORD_NAME)
        before = Path("t.npy").read_bytes(), record.read_text()
        assert main([*pair, "--per-sample", "t.npy", "--alpha", "0.9", "--overwrite"]) == 130
        assert (Path("t.npy").read_bytes(), record.read_text()) == before
    capsys.readouterr()
    assert main([*pair, "--per-sample", "t.npy", "--alpha", "0.9"]) == 2  # still the 0.3 run's
    assert "(alpha: 0.3 there, 0.9 now)" in _error(capsys)


def test_a_file_being_written_is_refused(pair, capsys):
    assert main([*pair, "--per-sample", "busy.npy"]) == 0
    identity = json.loads(Path(".busy.npy.alignscope", RECORD_NAME).read_text())["identity"]
    # another run holds the lock (flock is per open file, so this process can play it)
    with claimed_file("busy.npy", "ad --per-sample", identity, flag="--per-sample"):
        assert main([*pair, "--per-sample", "busy.npy"]) == 2
    assert _error(capsys) == (
        "alignscope: error: --per-sample 'busy.npy' is being written by another alignscope "
        "run; wait for it or choose another file"
    )
    assert sorted(os.listdir(".busy.npy.alignscope")) == sorted([LOCK_NAME, RECORD_NAME])


def test_store_and_ray_runs_share_the_record(tmp_path, rng, capsys, monkeypatch):
    """`ad STORE --per-sample` records the store's shard files; `--ray` goes through the same
    claim and, computing the same values, may rewrite the in-process run's file (the Ray
    structure pass is replaced here by the in-process one: the record is under test, and
    tests/distributed compare the values)."""
    from alignscope.io import write_store
    from alignscope.metrics import ad as ad_module

    def in_process(inputs, profile, ray, tile, threads, progress):
        return ad_module.exact_in_process(
            inputs, profile, "exact", 2, np.random.default_rng(0), threads, tile, progress, "cpu"
        )

    monkeypatch.setattr(ad_module, "exact_on_ray", in_process)
    a = rng.normal(size=(30, 5))
    store = tmp_path / "store"
    write_store(store, a, a + rng.normal(size=a.shape), shard_rows=20, dtype=np.float32)
    out = tmp_path / "t.npy"
    argv = ["ad", str(store), "--per-sample", str(out), "--quiet"]
    assert main(argv) == 0
    first = np.load(out)["ad"]
    ray = ["--ray", "--work-dir", str(tmp_path / "w"), "--block", "1024"]
    assert main([*argv, *ray]) == 0  # no --overwrite needed: the same record
    np.testing.assert_allclose(np.load(out)["ad"], first, rtol=0, atol=1e-12)
    capsys.readouterr()
    assert main([*argv, *ray, "--alpha", "0.5"]) == 2
    assert _error(capsys) == (
        f"alignscope: error: --per-sample {str(out)!r} holds the output of another run "
        f"(alpha: 0.8 there, 0.5 now{REFUSED}"
    )
    # the second shard of the caption view rewritten: the message names that file
    shard = store / "text_emb" / "text_emb_1.npy"
    np.save(shard, np.load(shard)[::-1].copy())
    assert main(argv) == 2
    assert _error(capsys).startswith(
        f"alignscope: error: --per-sample {str(out)!r} holds the output of another run "
        f"(store.{shard.resolve()}.edges_sha256: "
    )
