"""`alignscope screen` stopped part-way, then rerun, over the outputs of an earlier run.

Screening does not resume: a rerun computes everything again. What it must promise is that a
stopped run never leaves a mix of its own files and an earlier run's (a keep.txt of one setting
beside the scores.parquet of another), and that the rerun writes exactly what an uninterrupted
run writes, with nothing of the earlier run left over. The reference is the same command run
once, uninterrupted, into an empty directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from alignscope.cli import EXIT_INTERRUPTED, main
from alignscope.io import write_store
from alignscope.report import screening
from alignscope.synth import concept_world

pytest.importorskip("matplotlib")
pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    w = concept_world(400, concepts=20, poisoned_concepts=4, per_concept=5, dim=16, seed=3)
    root = tmp_path_factory.mktemp("screen_resume")
    write_store(root / "store", w.image_emb, w.text_emb, shard_rows=150)
    np.savez(root / "truth.npz", poisoned=w.poisoned)
    return root


def _argv(root: Path, out: Path, *options: str) -> list[str]:
    return ["screen", str(root / "store"), "--out", str(out), "--quiet", *options]


# the run under test: two scores, ground truth (so a trade-off plot), a removal fraction
NEW = ("--scores", "alignment,k_distance", "--k", "5", "--remove-fraction", "0.1")
# an earlier run with other scores (cdf_lid.png, which the new run does not draw), another
# ranking and no truth: every file it writes differs from the new run's
OLD = ("--scores", "alignment,lid", "--rank-by", "lid", "--remove-fraction", "0.3")


def _snapshot(root: Path, *, outputs_only: bool = False) -> dict[str, bytes]:
    """Every file under ``root`` (hidden temp files and folders included) by relative path;
    ``outputs_only`` leaves out the neighbour tables a run keeps to resume from (they are the
    new run's from the moment its searches finish: a rerun picks them up)."""
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    kept = ".alignscope-work/neighbours-"
    return {
        name: p.read_bytes()
        for name, p in files.items()
        if not (outputs_only and name.startswith(kept))
    }


@pytest.fixture(scope="module")
def runs(store) -> tuple[dict[str, bytes], Path]:
    """The reference (the new command run uninterrupted into an empty folder) and a folder
    holding the earlier run's outputs."""
    assert main(_argv(store, store / "reference", *NEW, *_truth(store))) == 0
    want = _snapshot(store / "reference")
    assert "plots/tradeoff.png" in want and "plots/cdf_k_distance.png" in want
    assert main(_argv(store, store / "old", *OLD)) == 0
    old = _snapshot(store / "old")
    assert "plots/cdf_lid.png" in old
    outputs = {n for n in set(old) & set(want) if not n.startswith(".alignscope-run")}
    assert all(old[name] != want[name] for name in outputs)
    return want, store / "old"


def _truth(store: Path) -> tuple[str, str]:
    return ("--manifest", str(store / "truth.npz"))


@pytest.mark.parametrize(
    ("stage", "call"),
    [("write_scores", 1), ("plot_cdf", 2), ("write_keep", 1), ("write_report", 1)],
    ids=["before-scores", "after-scores", "after-summary", "at-the-report"],
)
def test_screen_stopped_then_rerun_leaves_no_mix(store, runs, tmp_path, monkeypatch, stage, call):
    want, earlier = runs
    out = tmp_path / "out"
    shutil.copytree(earlier, out)

    calls = []
    original = getattr(screening, stage)

    def stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt  # Ctrl-C while this output is being written
        return original(*args, **kwargs)

    monkeypatch.setattr(screening, stage, stop)
    assert main(_argv(store, out, *NEW, *_truth(store), "--overwrite")) == EXIT_INTERRUPTED
    monkeypatch.undo()
    assert len(calls) == call
    # the earlier run's outputs, whole and alone: no new file beside them, no temp file
    assert _snapshot(out, outputs_only=True) == _snapshot(earlier, outputs_only=True)

    assert main(_argv(store, out, *NEW, *_truth(store), "--overwrite")) == 0
    got = _snapshot(out)
    assert sorted(got) == sorted(want)  # cdf_lid.png of the earlier run is gone
    for name in want:  # scores.parquet, summary.json, keep.txt, plots, report: byte-identical
        assert got[name] == want[name], name
