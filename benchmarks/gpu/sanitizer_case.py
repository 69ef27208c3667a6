"""A small CUDA-engine run for ``compute-sanitizer``: every form of ``pair_abs_sum_host`` on
edge shapes (one row, a tile +- 1, rectangular with labels and sample ids, blocks), each
checked against the CPU engine, so a memory error or an unwritten row shows up in one pass.

    compute-sanitizer --tool memcheck --error-exitcode 3 python3 benchmarks/gpu/sanitizer_case.py

Exits 0 when the CUDA module is not built or sees no device (prints why), 1 on a mismatch.
"""

from __future__ import annotations

import sys

import numpy as np

from alignscope import _backend


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> int:
    _, _, reason = _backend.cuda_status()
    if reason:
        print(f"sanitizer_case: {reason}; nothing to run")
        return 0
    rng = np.random.default_rng(7)
    tile = int(_backend._cuda_module().tile)
    failures = 0
    cases = []
    for n in (1, 2, tile - 1, tile + 1, 2 * tile + 3):
        cases.append(("symmetric", {"rows": _unit(rng, n, 40), "c0": 0.1}))
    labels = rng.integers(0, 3, size=tile + 5).astype(np.int32)
    cases.append(
        ("labels", {"rows": _unit(rng, tile + 5, 24), "row_labels": labels, "c_label": 0.5})
    )
    rows, cols = _unit(rng, tile + 7, 33), _unit(rng, 2 * tile - 1, 33)
    ids_r = rng.integers(0, 40, size=rows.shape[0]).astype(np.int64)
    ids_c = rng.integers(0, 40, size=cols.shape[0]).astype(np.int64)
    cases.append(("rectangular", {"rows": rows, "cols": cols, "row_ids": ids_r, "col_ids": ids_c}))
    square = _unit(rng, 3 * 64, 20)
    cases.append(("block", {"rows": square, "cols": square[::-1].copy(), "block": 64}))
    for name, kwargs in cases:
        gpu = _backend.pair_abs_sum(**kwargs, backend="cuda")
        cpu = _backend.pair_abs_sum(**kwargs, backend="cpu")
        n = kwargs["rows"].shape[0]
        # the fp16 operand bound per term (README "CUDA"), summed over a row's terms
        atol = 2e-3 * max(n, kwargs.get("cols", kwargs["rows"]).shape[0]) + 1e-4
        ok = np.all(np.isfinite(gpu[0])) and np.allclose(gpu[0], cpu[0], rtol=0, atol=atol)
        if gpu[2] is not None:
            ok = ok and np.allclose(gpu[2], cpu[2], rtol=0, atol=atol)
        print(f"{name:12s} n={n:5d} max|gpu-cpu|={np.abs(gpu[0] - cpu[0]).max():.3g} "
              f"{'ok' if ok else 'MISMATCH'}")  # fmt: skip
        failures += not ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
