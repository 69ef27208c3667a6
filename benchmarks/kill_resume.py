"""`kill -9` in the middle of `alignscope screen`, then a rerun: does it give what an
uninterrupted run gives, and how much of the work did the rerun keep? (issue #16's resumption
measurement; the suite tests the same at a small N in tests/screen/test_kill.py).

    python benchmarks/kill_resume.py STORE --manifest truth.npz [--knn ivf] [--at 0.5]
        [--workdir EMPTY_DIR]

1. The uninterrupted run into ``reference/`` (its wall time T).
2. The same command into ``killed/``, sent SIGKILL (its whole process group) at ``--at`` x T.
3. The rerun into ``killed/``: its wall time, and whether every published file (scores.parquet,
   scores/part-*.parquet, keep.txt, summary.json, plots, report.html) is byte-identical to the
   reference's.

STORE is any store, e.g. the one ``benchmarks/bench_screen_scale.py --keep`` leaves.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _command(store: Path, out: Path, manifest: str | None, knn: str) -> list[str]:
    cmd = [sys.executable, "-m", "alignscope", "screen", str(store), "--out", str(out)]
    cmd += ["--knn", knn, "--json", "--quiet"]
    return cmd + (["--manifest", manifest] if manifest else [])


def _published(root: Path) -> dict[str, bytes]:
    """The files a user reads (the resumable work folder and the lock left out)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
        and not p.relative_to(root).as_posix().startswith(".alignscope-work/")
        and p.name != ".alignscope-run.lock"
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--manifest")
    parser.add_argument("--knn", default="ivf")
    parser.add_argument("--at", type=float, default=0.5, help="kill at this share of T")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if not 0.0 < args.at < 1.0:
        parser.error("--at must be in (0, 1)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kill_resume_"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        parser.error(f"--workdir {str(work)!r} is not empty")

    start = time.perf_counter()
    subprocess.run(
        _command(args.store, work / "reference", args.manifest, args.knn),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    full = time.perf_counter() - start

    proc = subprocess.Popen(
        _command(args.store, work / "killed", args.manifest, args.knn),
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(args.at * full)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    spans = sorted(p.name for p in (work / "killed").rglob("span-*.npz"))

    start = time.perf_counter()
    subprocess.run(
        _command(args.store, work / "killed", args.manifest, args.knn),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rerun = time.perf_counter() - start
    want, got = _published(work / "reference"), _published(work / "killed")
    differ = sorted(n for n in set(want) | set(got) if want.get(n) != got.get(n))
    result = {
        "store": str(args.store),
        "knn": args.knn,
        "uninterrupted_s": round(full, 1),
        "killed_at_s": round(args.at * full, 1),
        "killed_returncode": proc.returncode,
        "span_files_before_rerun": len(spans),
        "rerun_s": round(rerun, 1),
        "files_compared": len(want),
        "files_differing": differ,
        "identical": not differ,
    }
    print(json.dumps(result, indent=2))
    return 0 if not differ else 1


if __name__ == "__main__":
    raise SystemExit(main())
