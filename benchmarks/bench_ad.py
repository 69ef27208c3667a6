"""Exact AD on the CPU: the engine against peers measured in the same run.

Peers: (a) a blocked numpy implementation of the same quantity (two Gram blocks, abs, sum),
(b) the Implosion authors' row-by-row algorithm, (c) a blocked torch CPU implementation when
torch is installed, and the machine's own sgemm throughput (numpy's BLAS, all cores) as the
limit. Run:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_ad.py [--quick]

Every timing is the best of several runs (one run for N > 16,384), engine and peers alike, so
a busy moment on a shared machine penalises neither. Prints ratios; asserts nothing. --json
writes the numbers to stdout as JSON as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np

import alignscope
from alignscope import _backend

BLOCK = 2048


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sgemm_gflops(size: int = 4096, repeat: int = 3) -> float:
    x = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    x @ x  # warm up the BLAS thread pool
    return 2.0 * size**3 / best_of(lambda: x @ x, repeat) / 1e9


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def numpy_blocked(a: np.ndarray, b: np.ndarray) -> float:
    """Structure term, paper profile: sum over all (i, k) of |<a_i,a_k> - <b_i,b_k>| / N^2."""
    n = a.shape[0]
    total = 0.0
    for s in range(0, n, BLOCK):
        total += float(
            np.abs(a[s : s + BLOCK] @ a.T - b[s : s + BLOCK] @ b.T).sum(dtype=np.float64)
        )
    return total / n**2


def torch_blocked(a: np.ndarray, b: np.ndarray) -> float:
    import torch

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    n = a.shape[0]
    total = 0.0
    with torch.no_grad():
        for s in range(0, n, BLOCK):
            diff = ta[s : s + BLOCK] @ ta.T - tb[s : s + BLOCK] @ tb.T
            total += float(diff.abs_().sum(dtype=torch.float64))
    return total / n**2


def authors_rows(a: np.ndarray, b: np.ndarray, rows: np.ndarray) -> float:
    """The authors' loop body (one mat-vec per view per row) for the given rows."""
    total = 0.0
    for i in rows:
        total += float(np.abs(a[i + 1 :] @ a[i] - b[i + 1 :] @ b[i]).sum())
    return total


def engine_flops(n: int, kdim: int, tile: int | None = None) -> float:
    """FLOPs of the GEMMs the engine runs: upper tiles only, diagonal tiles in full."""
    if tile is None:
        tile = _backend.choose_tile(n, _backend.resolve_threads(None))
    sizes = np.minimum(tile, n - np.arange(0, n, tile)).astype(np.float64)
    upper = (np.sum(np.outer(sizes, sizes)) + np.sum(sizes * sizes)) / 2.0
    return 2.0 * kdim * upper


def headline(n: int, d: int, authors_sample: int, repeat: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    a = unit(rng.standard_normal((n, d), dtype=np.float32))
    b = unit(0.5 * a + rng.standard_normal((n, d), dtype=np.float32))
    limit = sgemm_gflops()
    engine = best_of(lambda: alignscope.alignment_difficulty(a, b), repeat)
    value = alignscope.alignment_difficulty(a, b).structure
    flops = engine_flops(n, 2 * d)
    numpy_s = best_of(lambda: numpy_blocked(a, b), repeat)
    assert abs(numpy_blocked(a, b) - value) < 1e-5, "numpy peer disagrees with the engine"
    # The authors' loop costs hours at large N; rows spread evenly over [0, N) give an unbiased
    # extrapolation (row i costs N - i mat-vec rows) measured on `authors_sample` rows.
    rows = np.linspace(0, n - 2, authors_sample).astype(np.int64)
    t0 = time.perf_counter()
    authors_rows(a, b, rows)
    authors_s = (time.perf_counter() - t0) * (n - 1) / len(rows)
    out = {
        "n": n,
        "d": d,
        "sgemm_gflops": limit,
        "engine_s": engine,
        "engine_gflops": flops / engine / 1e9,
        "numpy_blocked_s": numpy_s,
        "authors_s_extrapolated": authors_s,
        "authors_rows_timed": len(rows),
    }
    try:
        import torch  # noqa: F401

        out["torch_blocked_s"] = best_of(lambda: torch_blocked(a, b), repeat)
    except ImportError:
        pass
    return out


def scaling(ns: list[int], d: int, numpy_max: int) -> list[dict[str, float]]:
    rows = []
    rng = np.random.default_rng(2)
    for n in ns:
        a = unit(rng.standard_normal((n, d), dtype=np.float32))
        b = unit(0.5 * a + rng.standard_normal((n, d), dtype=np.float32))
        repeat = 3 if n <= 16384 else 1
        engine = best_of(lambda a=a, b=b: alignscope.alignment_difficulty(a, b), repeat)
        row = {"n": n, "engine_s": engine, "engine_gflops": engine_flops(n, 2 * d) / engine / 1e9}
        if n <= numpy_max:
            row["numpy_blocked_s"] = best_of(lambda a=a, b=b: numpy_blocked(a, b), repeat)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    info = alignscope.backend_info()
    print(
        f"alignscope {info['version']}, cpu x{info['cpu']['threads']}, {info['cpu']['simd']}, "
        f"{info['cpu']['blas']}",
        file=sys.stderr,
    )

    n = 8192 if args.quick else 16384
    h = headline(n, 512, authors_sample=64 if args.quick else 256, repeat=2 if args.quick else 3)
    print(f"\nExact AD, N = {h['n']:,}, d = {h['d']} (structure term dominates; paper profile)")
    print(f"  machine sgemm (numpy, 4096^3)     {h['sgemm_gflops']:8.1f} GFLOP/s")
    print(
        f"  engine                            {h['engine_s']:8.3f} s   "
        f"{h['engine_gflops']:.1f} GFLOP/s "
        f"= {100 * h['engine_gflops'] / h['sgemm_gflops']:.0f}% of sgemm"
    )
    print(
        f"  (a) numpy blocked                 {h['numpy_blocked_s']:8.3f} s   engine is "
        f"{h['numpy_blocked_s'] / h['engine_s']:.1f}x faster"
    )
    print(
        f"  (b) authors' row-by-row (extrap.) {h['authors_s_extrapolated']:8.1f} s   engine is "
        f"{h['authors_s_extrapolated'] / h['engine_s']:.0f}x faster  "
        f"({h['authors_rows_timed']} rows timed)"
    )
    if "torch_blocked_s" in h:
        print(
            f"  (c) torch blocked (CPU)           {h['torch_blocked_s']:8.3f} s   engine is "
            f"{h['torch_blocked_s'] / h['engine_s']:.1f}x faster"
        )
    else:
        print("  (c) torch blocked: torch not installed")

    ns = [2048, 4096, 8192, 16384] if args.quick else [2048, 4096, 8192, 16384, 32768, 65536]
    table = scaling(ns, 512, numpy_max=16384 if args.quick else 32768)
    print("\nScaling, d = 512")
    print(f"  {'N':>7}  {'engine s':>9}  {'GFLOP/s':>8}  {'numpy s':>9}  {'ratio':>6}")
    for row in table:
        np_s = row.get("numpy_blocked_s")
        ratio = f"{np_s / row['engine_s']:6.1f}" if np_s else "     -"
        np_text = f"{np_s:9.3f}" if np_s else "        -"
        print(
            f"  {row['n']:>7,}  {row['engine_s']:9.3f}  {row['engine_gflops']:8.1f}  "
            f"{np_text}  {ratio}"
        )
    if args.json:
        print(json.dumps({"headline": h, "scaling": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
