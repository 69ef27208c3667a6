"""`alignscope screen` killed with SIGKILL part-way through its neighbour searches, then rerun
(issue #16: resumable screening).

A ``kill -9`` gives the process no chance to clean up: whatever the searches wrote before it
must be either whole and reusable or recognised as unusable. The reference is the same command
run once, uninterrupted, into an empty folder; the killed run is a real subprocess killed by the
kernel right after a chosen span file was saved (or while a span file or an index was being
written), and the rerun (same command, same --out) must publish the reference's files while
searching only the spans the killed run did not save and building no index it saved. Span files
damaged on disk are searched again; a store rewritten in place is searched afresh.

The searches run with QUERY_ROWS = 300 so the 2,000 rows are 7 spans per view.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from alignscope.cli import main
from alignscope.io import write_store
from alignscope.search import knn
from alignscope.synth import concept_world

pytest.importorskip("matplotlib")
pytest.importorskip("pyarrow")

N = 2000
SPAN = 300
SPAN_STARTS = list(range(0, N, SPAN))  # 7 spans: six of 300 rows, one of 200
WORK = ".alignscope-work"


def _write(root: Path, seed: int) -> None:
    """A 2,000-row store of 3 shards (700, 700, 600 rows) and its poison flags."""
    w = concept_world(N, concepts=40, poisoned_concepts=4, per_concept=5, dim=16, seed=seed)
    write_store(root / "store", w.image_emb, w.text_emb, shard_rows=700)
    np.savez(root / "truth.npz", poisoned=w.poisoned)


def _argv(root: Path, out: Path, method: str, *options: str) -> list[str]:
    return [
        "screen", str(root / "store"), "--out", str(out), "--quiet", "--knn", method,
        "--manifest", str(root / "truth.npz"), "--remove-fraction", "0.05", *options,
    ]  # fmt: skip


def _published(out: Path) -> dict[str, bytes]:
    """Every file the run published (all but its resumable work folder), by relative path."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and WORK not in p.relative_to(out).parts
    }


def _span_files(out: Path) -> dict[str, list[int]]:
    """Saved span starts per view: <out>/.alignscope-work/neighbours-<key>/<view>/span-*.npz."""
    found: dict[str, list[int]] = {}
    for path in sorted((out / WORK).glob("neighbours-*/*/span-*.npz")):
        found.setdefault(path.parent.name, []).append(int(path.stem.removeprefix("span-")))
    return found


# The killed run: counts the span files saved per view (the checkpoint folder is named after
# the view) and SIGKILLs itself once the third span of the second view searched is on disk.
# Each save is printed first, so the parent knows what was saved without trusting the folder.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from alignscope.search import knn

    knn.QUERY_ROWS = {span}
    saved = {{}}
    original = knn._Checkpoint.save_part

    def save_part(self, start, part):
        original(self, start, part)
        view = self.folder.name
        saved[view] = saved.get(view, 0) + 1
        print(view, start, flush=True)
        if len(saved) == 2 and saved[view] == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    knn._Checkpoint.save_part = save_part
    from alignscope.cli import main

    sys.exit(main({argv!r}))
    """
)


class _Spy:
    """Monkeypatches knn.search_span and knn._build_index to record what a run searches and
    builds (the originals still do the work)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.searched: Counter[tuple[str, int]] = Counter()
        self.built: list[str] = []
        search, build = knn.search_span, knn._build_index

        def search_span(rows, index, start, stop, k):
            self.searched[(rows.view, start)] += 1
            return search(rows, index, start, stop, k)

        def build_index(rows, method, k):
            self.built.append(rows.view)
            return build(rows, method, k)

        monkeypatch.setattr(knn, "QUERY_ROWS", SPAN)
        monkeypatch.setattr(knn, "search_span", search_span)
        monkeypatch.setattr(knn, "_build_index", build_index)


def _kill(root: Path, out: Path, method: str) -> dict[str, list[int]]:
    """Run the screen of ``root``'s store into ``out`` in a subprocess that SIGKILLs itself
    after the third span of the second view searched is saved; check it died so, published
    nothing, and left exactly the span files it reported saving; return those (per view)."""
    script = CHILD.format(span=SPAN, argv=_argv(root, out, method))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    saved: dict[str, list[int]] = {}
    for view, start in (line.split() for line in proc.stdout.splitlines()):
        saved.setdefault(view, []).append(int(start))
    # the first view searched whole, the second up to its third span
    first, second = saved
    assert saved == {first: SPAN_STARTS, second: SPAN_STARTS[:3]}
    assert _span_files(out) == saved
    assert not (out / "scores.parquet").exists()
    assert set(_published(out)) <= {".alignscope-run.lock"}  # no output, no record
    return saved


def _assert_same_outputs(got: dict[str, bytes], want: dict[str, bytes]) -> None:
    """The same published files, byte for byte (summary.json too: a resumed search restores
    its index parameters from the checkpoint in the order a fresh run records them)."""
    assert sorted(got) == sorted(want)
    for name in want:  # scores.parquet, scores/part-*, keep.txt, plots, report.html, record
        assert got[name] == want[name], name


def _reference(root: Path, out: Path, method: str) -> dict[str, bytes]:
    """The uninterrupted run into an empty folder: its published files."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(knn, "QUERY_ROWS", SPAN)
        assert main(_argv(root, out, method)) == 0
    return _published(out)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("screen_kill")
    _write(root, seed=5)
    return root


@pytest.fixture(scope="module", params=["exact", "ivf"])
def killed(request, store) -> tuple[str, dict[str, bytes], Path, dict[str, list[int]]]:
    """(method, the reference's published files, the folder the killed run left, the spans it
    saved per view in the order searched). Tests copy the folder before rerunning into it."""
    method = request.param
    want = _reference(store, store / f"reference-{method}", method)
    assert {"scores.parquet", "keep.txt", "summary.json", "scores/part-00002.parquet"} <= set(want)
    out = store / f"killed-{method}"
    return method, want, out, _kill(store, out, method)


def _missing(saved: dict[str, list[int]]) -> Counter[tuple[str, int]]:
    """Each span of both views the killed run did not save, once."""
    return Counter({(view, s): 1 for view in saved for s in SPAN_STARTS if s not in saved[view]})


def test_killed_screen_resumes_the_missing_spans(store, killed, tmp_path, monkeypatch):
    method, want, left, saved = killed
    out = tmp_path / "out"
    shutil.copytree(left, out)  # (copy2: the index files keep their mtimes)
    indexes = {
        p.parent.name: (p.stat().st_mtime_ns, p.read_bytes())
        for p in (out / WORK).glob("neighbours-*/*/index.faiss")
    }
    assert sorted(indexes) == (sorted(saved) if method == "ivf" else [])

    spy = _Spy(monkeypatch)
    assert main(_argv(store, out, method)) == 0
    _assert_same_outputs(_published(out), want)
    # only the spans the killed run did not save were searched, each once
    assert spy.searched == _missing(saved)
    # the IVF indexes the killed run saved were read back, not built again
    assert spy.built == []
    for view, (mtime, data) in indexes.items():
        index = next((out / WORK).glob(f"neighbours-*/{view}/index.faiss"))
        assert (index.stat().st_mtime_ns, index.read_bytes()) == (mtime, data)


def test_damaged_span_files_are_searched_again(store, killed, tmp_path, monkeypatch):
    method, want, left, saved = killed
    out = tmp_path / "out"
    shutil.copytree(left, out)
    first, second = saved
    work = next((out / WORK).glob("neighbours-*"))
    # a span file cut short (a zip without its central directory) and one of other bytes
    cut = work / first / f"span-{300:012d}.npz"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (work / second / f"span-{600:012d}.npz").write_bytes(b"not a span file\n" * 64)

    spy = _Spy(monkeypatch)
    assert main(_argv(store, out, method)) == 0
    _assert_same_outputs(_published(out), want)
    assert spy.searched == _missing(saved) + Counter({(first, 300): 1, (second, 600): 1})
    # and saved again whole: a second rerun searches nothing
    spy.searched.clear()
    assert main(_argv(store, out, method)) == 0
    assert spy.searched == Counter()
    _assert_same_outputs(_published(out), want)


@pytest.mark.parametrize("earlier", ["killed", "finished"])
def test_changed_store_does_not_reuse_old_neighbours(tmp_path, monkeypatch, earlier):
    # the store is rewritten in place (same path, same shape, other rows): only its contents
    # tell the old neighbour tables from the ones the new rows need
    root, out = tmp_path / "data", tmp_path / "out"
    root.mkdir()
    _write(root, seed=5)
    if earlier == "killed":
        _kill(root, out, "exact")
    else:
        _reference(root, out, "exact")
    shutil.rmtree(root / "store")
    _write(root, seed=6)
    want = _reference(root, tmp_path / "reference", "exact")

    spy = _Spy(monkeypatch)
    assert main(_argv(root, out, "exact", "--overwrite")) == 0
    _assert_same_outputs(_published(out), want)
    assert spy.searched == Counter(
        {(view, s): 1 for view in ("image", "text") for s in SPAN_STARTS}
    )
    # the old store's tables are gone, the new ones kept for a rerun
    assert [p.name for p in (out / WORK).iterdir()] == [
        p.name for p in (tmp_path / "reference" / WORK).iterdir()
    ]


# The killed run, killed while a checkpoint file is being written: after the bytes went into the
# temp file, before the rename. Exact: the 10th span file (the 3rd of the second view); IVF:
# the second view's index (the first view's index and spans are whole by then).
CHILD_WRITING = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from alignscope.search import knn
    from alignscope.search.exact import _faiss

    knn.QUERY_ROWS = {span}
    faiss = _faiss()
    calls = {{"savez": 0, "write_index": 0}}

    def killing(name, original, after):
        def write(*args, **kwargs):
            original(*args, **kwargs)
            calls[name] += 1
            if calls[name] == after:
                os.kill(os.getpid(), signal.SIGKILL)
        return write

    np.savez = killing("savez", np.savez, 10)
    faiss.write_index = killing("write_index", faiss.write_index, 2)
    from alignscope.cli import main

    sys.exit(main({argv!r}))
    """
)


def test_killed_while_writing_a_checkpoint_file(store, killed, tmp_path, monkeypatch):
    method, want, _, saved = killed
    first, second = saved
    out = tmp_path / "out"
    script = CHILD_WRITING.format(span=SPAN, argv=_argv(store, out, method))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # the file being written when killed is not there under its name
    whole = {first: SPAN_STARTS, second: SPAN_STARTS[:2] if method == "exact" else []}
    assert _span_files(out) == {view: starts for view, starts in whole.items() if starts}
    indexes = sorted(p.parent.name for p in (out / WORK).glob("neighbours-*/*/index.faiss"))
    assert indexes == ([first] if method == "ivf" else [])
    assert set(_published(out)) <= {".alignscope-run.lock"}

    spy = _Spy(monkeypatch)
    assert main(_argv(store, out, method)) == 0
    _assert_same_outputs(_published(out), want)
    assert spy.searched == _missing(whole)
    assert spy.built == ([second] if method == "ivf" else [])
    # the killed write's temp file is gone (an index's is as large as the index)
    assert sorted(p.name for p in (out / WORK).rglob("*.tmp")) == []
