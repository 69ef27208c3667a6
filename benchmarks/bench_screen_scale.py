"""How far `alignscope screen` scales on this machine: wall time, peak RSS and neighbour
recall of the real CLI at each N for each ``--knn`` method, and every score's AUROC from the
approximate searches against the exact one's (issue #16's measurements).

    python benchmarks/bench_screen_scale.py [--sizes 50000,100000,200000]
        [--methods exact,ivf,hnsw] [--world realistic|concept] [--second-view]
        [--exact-budget 600] [--timeout 1500] [--workdir EMPTY_DIR] [--keep] [--profile]
        [--json results.json]

Each N gets one float16 store in the clip-retrieval layout (d = 512, shards of
``--shard-rows``) with its ground truth in truth.npz:

- ``--world realistic`` (default): synth.realistic_world (every factor on; dirty-label
  poisons, C_P = 100 concepts x m = round(0.0008 N)), written with io.StoreWriter. The world
  is generated whole in memory, in a child process, so the parent stays small while the
  screening runs.
- ``--world concept``: synth.write_concept_world, generated shard by shard (for N beyond what
  realistic_world holds in memory; the easy geometry, so AUROCs are near 1).

Each (N, method) runs ``python -m alignscope screen STORE --out OUT --manifest truth.npz
--knn METHOD --json --quiet`` in a fresh child; its wall time and peak RSS come from
``os.wait4`` (that child's own rusage, not the cumulative maximum over all children). The
recall@k of each searched view and the AUROCs come from its summary.json. The default scores
are screened (no second view); ``--second-view`` saves the world's latent view as an .npy and
passes it, which adds view_density and cross_view (and their two searches).

An exact run is skipped when the exact run at the largest smaller N, scaled by (N / n)^2
(the search is O(N^2 d)), predicts more than ``--exact-budget`` seconds; any run is killed
after ``--timeout`` seconds. Both are reported in the table, with the numbers that decided.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("exact", "ivf", "hnsw")
POISONED_CONCEPTS = 100
# The largest realistic world generated in one piece (memory while generating: ~5 GB).
PIECE_ROWS = 200_000
DIM = 512
LATENT_DIM = 64
# How the exact search's time grows with N (all pairs).
EXACT_EXPONENT = 2.0


def _gb(kib: int) -> float:
    """Linux reports ru_maxrss in KiB."""
    return kib * 1024 / 1e9


def _run_child(cmd: list[str], log: Path, timeout: float) -> dict[str, Any]:
    """Run ``cmd`` with stdout and stderr to ``log``; wall seconds, peak RSS (GB) and exit code
    of that one child. A child past ``timeout`` is killed (its process group)."""
    start = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = start + timeout
        timed_out = False
        try:
            while True:
                # wait4 returns this child's own rusage; WNOHANG lets the timeout be enforced.
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    break
                if time.perf_counter() > deadline:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.2)
        except BaseException:
            # The child has its own session, so Ctrl-C does not reach it: end it here.
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_gb": round(_gb(usage.ru_maxrss), 3),
        "returncode": proc.returncode,
        "timed_out": timed_out,
    }


def build_store(
    root: Path, n: int, world: str, second_view: bool, shard_rows: int, seed: int
) -> None:
    """Write the store of N rows (and truth.npz, and latent.npy when asked) into ``root``."""
    from alignscope import synth
    from alignscope.io import StoreWriter

    m = max(1, round(0.0008 * n))
    c_p = min(POISONED_CONCEPTS, max(1, n // 200))
    if world == "concept":
        synth.write_concept_world(
            root, n, shard_rows=shard_rows, concepts=n // 50, poisoned_concepts=c_p,
            per_concept=m, dim=DIM, seed=seed, dtype=np.float16,
        )  # fmt: skip
        return
    # Beyond PIECE_ROWS the world is written as independent pieces (seeds seed, seed + 1, ...):
    # one realistic_world of 1M rows at d = 512 would need ~25 GB while it is generated. The
    # pieces' concepts are distinct concepts (numbered apart), so the store is one world with
    # more concept groups, each piece with its own poisoned concepts in the same proportions.
    writer = StoreWriter(root, np.float16)
    truth: dict[str, list[np.ndarray]] = {"poisoned": [], "concept": [], "target": []}
    latents = []
    concepts_before = 0
    pieces = -(-n // PIECE_ROWS)
    for piece in range(pieces):
        rows = n // pieces + (piece < n % pieces)
        w = synth.realistic_world(
            rows,
            poisoned_concepts=min(POISONED_CONCEPTS, max(1, rows // 200)),
            per_concept=max(1, round(0.0008 * rows)),
            dim=DIM,
            latent_dim=LATENT_DIM,
            seed=seed + piece,
        )
        for start in range(0, rows, shard_rows):
            stop = min(rows, start + shard_rows)
            writer.add_shard(w.image_emb[start:stop], w.text_emb[start:stop])
        truth["poisoned"].append(w.poisoned)
        truth["concept"].append(w.concept + concepts_before)
        truth["target"].append(np.where(w.target >= 0, w.target + concepts_before, w.target))
        concepts_before += int(w.concept.max()) + 1
        if second_view:
            latents.append(w.latent_emb.astype(np.float16))
        del w
    np.savez(root / "truth.npz", **{key: np.concatenate(v) for key, v in truth.items()})
    if second_view:
        np.save(root.parent / "latent.npy", np.concatenate(latents))


def _screen(
    store: Path, method: str, out: Path, second: Path | None, timeout: float, profile: Path | None
) -> dict[str, Any]:
    """One screening run of the real CLI; its measurements and what summary.json records."""
    head = [sys.executable]
    if profile is not None:
        head += ["-m", "cProfile", "-o", str(profile)]
    cmd = [
        *head, "-m", "alignscope", "screen", str(store), "--out", str(out),
        "--manifest", str(store / "truth.npz"), "--knn", method, "--json", "--quiet",
    ]  # fmt: skip
    if second is not None:
        cmd += ["--second-view", str(second)]
    log = out.parent / f"{out.name}.log"
    row: dict[str, Any] = {"command": " ".join(cmd)}
    row.update(_run_child(cmd, log, timeout))
    summary_path = out / "summary.json"
    if row["returncode"] != 0 or not summary_path.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        row["error"] = "timed out" if row["timed_out"] else " | ".join(tail)
        return row
    summary = json.loads(summary_path.read_text())
    row["neighbours"] = summary["neighbours"]
    row["auroc"] = {name: m["auroc"] for name, m in (summary["metrics"] or {}).items()}
    row["score_methods"] = summary["scores"]
    return row


def _predicted_exact(results: list[dict[str, Any]], n: int) -> tuple[float, int] | None:
    """Seconds an exact run at N is predicted to take, from the largest smaller exact run."""
    done = [r for r in results if r["knn"] == "exact" and r["n"] < n and "error" not in r]
    if not done:
        return None
    base = max(done, key=lambda r: r["n"])
    return base["seconds"] * (n / base["n"]) ** EXACT_EXPONENT, base["n"]


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    builds: list[dict[str, Any]] = []
    for n in args.sizes:
        root = work / f"n{n}"
        store = root / "store"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        cmd = [
            sys.executable, __file__, "--_build", str(n), "--world", args.world,
            "--shard-rows", str(args.shard_rows), "--seed", str(args.seed), "--workdir", str(store),
        ] + (["--second-view"] if args.second_view else [])  # fmt: skip
        built = _run_child(cmd, root / "build.log", args.timeout)
        built["n"] = n
        builds.append(built)
        print(
            f"N = {n:,}: store written in {built['seconds']:.0f} s "
            f"(peak RSS {built['peak_rss_gb']:.2f} GB)",
            file=sys.stderr,
            flush=True,
        )
        if built["returncode"] != 0:
            tail = (root / "build.log").read_text(errors="replace").strip().splitlines()[-3:]
            built["error"] = " | ".join(tail)
            print(f"  build failed: {built['error']}", file=sys.stderr, flush=True)
            continue
        second = root / "latent.npy" if args.second_view else None
        for method in args.methods:
            row: dict[str, Any] = {"n": n, "knn": method}
            predicted = _predicted_exact(results, n) if method == "exact" else None
            if predicted is not None and predicted[0] > args.exact_budget:
                row["skipped"] = (
                    f"predicted {predicted[0]:.0f} s from the exact run at N = {predicted[1]:,} "
                    f"x (N/n)^2 > --exact-budget {args.exact_budget:.0f} s"
                )
                results.append(row)
                print(f"  {method}: skipped, {row['skipped']}", file=sys.stderr, flush=True)
                continue
            profile = root / f"{method}.prof" if args.profile else None
            row.update(_screen(store, method, root / method, second, args.timeout, profile))
            if profile is not None and profile.exists():
                row["profile"] = _profile_top(profile)
            results.append(row)
            print(
                f"  {method}: {row['seconds']:.0f} s, {row['peak_rss_gb']:.2f} GB"
                + (f", FAILED: {row['error']}" if "error" in row else ""),
                file=sys.stderr,
                flush=True,
            )
            shutil.rmtree(root / method, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(store, ignore_errors=True)
    return {"builds": builds, "runs": results}


def _profile_top(path: Path, count: int = 12) -> list[str]:
    """The ``count`` functions with the most own time in a cProfile dump."""
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(path), stream=buf).sort_stats("tottime").print_stats(count)
    lines = buf.getvalue().splitlines()
    first = next((i for i, s in enumerate(lines) if s.lstrip().startswith("ncalls")), 0)
    return [s.rstrip() for s in lines[first : first + count + 1] if s.strip()]


def _recall_cell(neighbours: dict[str, Any]) -> str:
    cells = []
    for view, d in neighbours.items():
        recall = d.get("recall_at_k")
        if recall is None:
            cells.append(f"{view} exact")
            continue
        at10 = f"{d['recall_at_10']:.4f}@10, " if "recall_at_10" in d else ""
        probes = f", nprobe {d['nprobe']}" if "nprobe" in d else ""
        cells.append(f"{view} {at10}{recall:.4f}@{d['k']}{probes}")
    return "; ".join(cells)


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"alignscope screen, default scores{' + second view' if args.second_view else ''}; "
        f"{args.world} world, float16 store, d = {DIM}; {os.cpu_count()} CPU cores"
    )
    print(f"\n{'N':>9} {'store s':>8} {'store GB':>9}")
    for b in out["builds"]:
        print(f"{b['n']:>9,} {b['seconds']:>8.0f} {b['peak_rss_gb']:>9.2f}")
    print(f"\n{'N':>9} {'knn':6} {'seconds':>8} {'peak GB':>8}  recall@k per view (k searched)")
    for r in out["runs"]:
        if "skipped" in r:
            print(f"{r['n']:>9,} {r['knn']:6} {'-':>8} {'-':>8}  skipped: {r['skipped']}")
        elif "error" in r:
            print(
                f"{r['n']:>9,} {r['knn']:6} {r['seconds']:>8.0f} {r['peak_rss_gb']:>8.2f}  "
                f"FAILED: {r['error']}"
            )
        else:
            print(
                f"{r['n']:>9,} {r['knn']:6} {r['seconds']:>8.0f} {r['peak_rss_gb']:>8.2f}  "
                f"{_recall_cell(r['neighbours'])}"
            )
    ok = [r for r in out["runs"] if "auroc" in r]
    for n in sorted({r["n"] for r in ok}):
        at_n = {r["knn"]: r["auroc"] for r in ok if r["n"] == n}
        if "exact" not in at_n:
            continue
        others = [m for m in args.methods if m != "exact" and m in at_n]
        print(f"\nN = {n:,}: AUROC of the exact path, and approximate minus exact")
        print(f"{'score':20} {'exact':>7} " + " ".join(f"{m + ' diff':>10}" for m in others))
        for score, value in at_n["exact"].items():
            diffs = " ".join(f"{at_n[m].get(score, float('nan')) - value:>+10.4f}" for m in others)
            print(f"{score:20} {value:7.4f} {diffs}")
        for m in others:
            worst = max(abs(at_n[m][s] - v) for s, v in at_n["exact"].items() if s in at_n[m])
            print(f"{'max |diff| ' + m:20} {'':7} {worst:10.4f}")
    for r in ok:
        if "profile" in r:
            print(f"\nN = {r['n']:,}, {r['knn']}: most own time (cProfile)")
            print("\n".join(r["profile"]))


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes: comma-separated integers, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1000:
        raise argparse.ArgumentTypeError(f"--sizes: each N must be >= 1000, got {text!r}")
    return sorted(sizes)


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise argparse.ArgumentTypeError(
            f"--methods: choose from {', '.join(METHODS)}, got {text!r}"
        )
    # exact first: the other methods' AUROCs are compared with it, and its time gates the next N
    return sorted(methods, key=METHODS.index)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=_sizes, default=_sizes("50000,100000,200000"))
    parser.add_argument("--methods", type=_methods, default=list(METHODS))
    parser.add_argument("--world", choices=("realistic", "concept"), default="realistic")
    parser.add_argument(
        "--second-view", action="store_true", help="pass the latent view as --second-view"
    )
    parser.add_argument("--shard-rows", type=int, default=100_000, help="rows per store shard")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--exact-budget",
        type=float,
        default=600.0,
        help="skip an exact run predicted to take longer (seconds; 600)",
    )
    parser.add_argument(
        "--timeout", type=float, default=1500.0, help="kill any run after this (seconds)"
    )
    parser.add_argument("--workdir", help="where stores and outputs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument(
        "--profile", action="store_true", help="run each screening under cProfile; print the top"
    )
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--_build", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._build is not None:  # the child that writes one store
        build_store(
            Path(args.workdir), args._build, args.world, args.second_view, args.shard_rows,
            args.seed,
        )  # fmt: skip
        return 0
    if args.shard_rows < 1:
        parser.error(f"--shard-rows must be >= 1, got {args.shard_rows}")
    if args.second_view and args.world == "concept":
        parser.error("--second-view needs --world realistic (the concept store has no latent view)")
    if args.workdir and Path(args.workdir).exists() and any(Path(args.workdir).iterdir()):
        # run() deletes and rebuilds each n<N> folder: never do that to a folder of the user's
        parser.error(f"--workdir {args.workdir!r} is not empty; give an empty or new folder")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="screen-scale-"))
    try:
        out = run(args, work)
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(out, args)
    if args.json:
        out["settings"] = {
            k: v for k, v in vars(args).items() if k not in ("json", "_build", "workdir")
        }
        out["cpu_count"] = os.cpu_count()
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
