"""Exact top-1 search: 10,000 queries against 1,000,000 x 512 float16 training embeddings.

The engine (alignscope.search.topk, and its topk_inner primitive on the same float32 unit rows
the peers get) against faiss.knn (CPU, inner product) and a blocked torch matmul + max, in one
run. Prints ratios; asserts only that every method finds the same neighbours.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_search.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from alignscope import _backend
from alignscope.search import topk


def blocked_torch(
    q: np.ndarray, x: np.ndarray, block: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    import torch

    tq = torch.from_numpy(q)
    best = torch.full((q.shape[0],), -float("inf"))
    arg = torch.zeros(q.shape[0], dtype=torch.int64)
    with torch.no_grad():
        for s in range(0, x.shape[0], block):
            v, i = (tq @ torch.from_numpy(x[s : s + block]).T).max(dim=1)
            better = v > best
            best = torch.where(better, v, best)
            arg = torch.where(better, i + s, arg)
    return best.numpy(), arg.numpy()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 training rows")
    args = parser.parse_args()
    nq, nx, d = 10_000, (100_000 if args.quick else 1_000_000), 512
    rng = np.random.default_rng(0)
    train16 = rng.standard_normal((nx, d), dtype=np.float32).astype(np.float16)
    queries16 = train16[rng.integers(0, nx, nq)] + np.float16(0.3) * rng.standard_normal(
        (nq, d), dtype=np.float32
    ).astype(np.float16)
    train = train16.astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    queries = queries16.astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flops = 2.0 * nq * nx * d
    print(
        f"top-1 search, {nq:,} queries x {nx:,} x {d} (float16 storage), {flops / 1e12:.1f} TFLOP"
    )

    rows = []
    start = time.perf_counter()
    _, i_api = topk(queries16, train16, 1)
    rows.append(("alignscope.search.topk (float16 in, end to end)", time.perf_counter() - start))
    start = time.perf_counter()
    _, i_eng = _backend.topk_inner(queries, train, 1)
    rows.append(("engine topk_inner (float32 unit rows)", time.perf_counter() - start))
    results = {"engine": i_eng[:, 0], "api": i_api[:, 0]}
    try:
        import faiss

        start = time.perf_counter()
        _, i_faiss = faiss.knn(queries, train, 1, metric=faiss.METRIC_INNER_PRODUCT)
        rows.append(("faiss.knn (CPU, inner product)", time.perf_counter() - start))
        results["faiss"] = i_faiss[:, 0]
    except ImportError:
        print("  faiss not installed: pip install faiss-cpu")
    try:
        start = time.perf_counter()
        _, i_torch = blocked_torch(queries, train)
        rows.append(("torch blocked matmul + max (CPU)", time.perf_counter() - start))
        results["torch"] = i_torch
    except ImportError:
        print("  torch not installed")
    engine_s = rows[1][1]
    for name, seconds in rows:
        print(
            f"  {name:50s} {seconds:8.2f} s  {flops / seconds / 1e9:6.1f} GFLOP/s  "
            f"engine is {seconds / engine_s:.2f}x as fast"
        )
    agree = {k: float(np.mean(v == results["engine"])) for k, v in results.items()}
    print(f"  same neighbour as the engine: {agree}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
