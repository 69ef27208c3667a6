"""Exact AD on a GPU: the CUDA kernel against (a) a blocked torch fp16 implementation and
(b) a cuBLAS fp16 GEMM of the same FLOP count (torch.matmul), the limit. Prints ratios.

    python benchmarks/bench_ad_gpu.py [--sizes 100000,1000000] [--dims 512,768]

Needs the CUDA module (alignscope.backend_info()["cuda"]["built"]), a device, and torch with
CUDA. Top-1 search against faiss.knn_gpu waits for the CUDA topk_inner kernel (not written).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import alignscope
from alignscope import _backend


def _sync() -> None:
    import torch

    torch.cuda.synchronize()


def torch_blocked_fp16(a, b, block: int = 8192) -> float:
    """Structure term (paper profile) with fp16 GEMMs on the GPU, full N x N (no symmetry)."""
    import torch

    n = a.shape[0]
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for s in range(0, n, block):
        diff = b[s : s + block] @ b.T - a[s : s + block] @ a.T
        total += diff.float().abs_().sum(dtype=torch.float64)
    return float(total) / n**2


def cublas_same_flops(kdim: int, flops: float) -> float:
    """Seconds for fp16 GEMMs (8192 x kdim x 8192) adding up to ``flops``."""
    import torch

    m = 8192
    x = torch.randn(m, kdim, device="cuda", dtype=torch.float16)
    y = torch.randn(kdim, m, device="cuda", dtype=torch.float16)
    per = 2.0 * m * m * kdim
    reps = max(1, round(flops / per))
    x @ y
    _sync()
    start = time.perf_counter()
    for _ in range(reps):
        x @ y
    _sync()
    return (time.perf_counter() - start) * flops / (reps * per)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dims", default="512,768")
    args = parser.parse_args()
    _, _, reason = _backend.cuda_status()
    if reason:
        print(f"bench_ad_gpu: {reason}; nothing to measure", file=sys.stderr)
        return 0
    import torch

    print(alignscope.backend_info()["cuda"]["names"][0])
    heads = ("N", "d", "kernel s", "torch s", "cuBLAS s", "% of cuBLAS", "vs torch")
    print(" ".join(f"{h:>11}" for h in heads))
    for n in (int(v) for v in args.sizes.split(",")):
        for d in (int(v) for v in args.dims.split(",")):
            rng = np.random.default_rng(0)
            a = rng.standard_normal((n, d), dtype=np.float32)
            b = 0.5 * a + rng.standard_normal((n, d), dtype=np.float32)
            start = time.perf_counter()
            alignscope.alignment_difficulty(a, b, backend="cuda")
            kernel = time.perf_counter() - start
            ta = torch.nn.functional.normalize(torch.from_numpy(a).cuda(), dim=1).half()
            tb = torch.nn.functional.normalize(torch.from_numpy(b).cuda(), dim=1).half()
            _sync()
            start = time.perf_counter()
            torch_blocked_fp16(ta, tb)
            _sync()
            peer = time.perf_counter() - start
            flops = float(n) * n * 2 * d  # symmetric half of N^2 pairs, inner dim 2d, 2 FLOP each
            limit = cublas_same_flops(2 * d, flops)
            cells = (f"{n:,}", d, f"{kernel:.3f}", f"{peer:.3f}", f"{limit:.3f}")
            ratios = (f"{100 * limit / kernel:.0f}%", f"{peer / kernel:.1f}x")
            print(" ".join(f"{c:>11}" for c in (*cells, *ratios)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
