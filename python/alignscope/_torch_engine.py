"""A blocked torch implementation of ``pair_abs_sum``: the independent reference the CUDA
kernels are tested against on a GPU, and a portable engine on any torch device.

It computes full row blocks (no symmetry) in float32 and sums in float64: simple and clearly
correct, not fast.
"""

from __future__ import annotations

import numpy as np

_ROWS = 2048


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pair_abs_sum(
    rows: np.ndarray,
    cols: np.ndarray | None = None,
    *,
    zscale: np.ndarray | None = None,
    c0: float = 0.0,
    row_labels: np.ndarray | None = None,
    col_labels: np.ndarray | None = None,
    c_label: float = 0.0,
    row_ids: np.ndarray | None = None,
    col_ids: np.ndarray | None = None,
    squares: bool = False,
    block: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Same contract as :func:`alignscope._backend.pair_abs_sum` (host arrays in and out)."""
    import torch

    dev = device()
    symmetric = cols is None
    w = torch.as_tensor(np.asarray(rows if symmetric else cols, dtype=np.float32), device=dev)
    z = torch.as_tensor(np.asarray(rows, dtype=np.float32), device=dev)
    if zscale is not None:
        z = z * torch.as_tensor(np.asarray(zscale, dtype=np.float32), device=dev)
    n, m = z.shape[0], w.shape[0]
    lr = lc = None
    if row_labels is not None:
        lr = torch.as_tensor(np.asarray(row_labels, dtype=np.int64), device=dev)
        lc = lr
        if col_labels is not None:
            lc = torch.as_tensor(np.asarray(col_labels, dtype=np.int64), device=dev)
    ir = ic = None
    if row_ids is not None:
        ir = torch.as_tensor(np.asarray(row_ids, dtype=np.int64), device=dev)
        ic = torch.as_tensor(np.asarray(col_ids, dtype=np.int64), device=dev)
    row_sums = torch.zeros(n, dtype=torch.float64, device=dev)
    row_sq = torch.zeros(n, dtype=torch.float64, device=dev) if squares else None
    col_sums = None
    if not symmetric and block is None:
        col_sums = torch.zeros(m, dtype=torch.float64, device=dev)
    step = block if block is not None else _ROWS
    with torch.no_grad():
        for s in range(0, n, step):
            e = min(n, s + step)
            c_lo, c_hi = (s, e) if block is not None else (0, m)
            v = c0 + z[s:e] @ w[c_lo:c_hi].T
            if lr is not None:
                v = v + c_label * (lr[s:e, None] != lc[None, c_lo:c_hi])
            v = v.abs()
            if symmetric:
                idx = torch.arange(s, e, device=dev)
                v[idx - s, idx] = 0.0
            if ir is not None:
                v = v.masked_fill(ir[s:e, None] == ic[None, c_lo:c_hi], 0.0)
            row_sums[s:e] = v.sum(dim=1, dtype=torch.float64)
            if row_sq is not None:
                row_sq[s:e] = (v.double() ** 2).sum(dim=1)
            if col_sums is not None:
                col_sums += v.sum(dim=0, dtype=torch.float64)

    def out(t: object) -> np.ndarray | None:
        return None if t is None else t.cpu().numpy()  # type: ignore[attr-defined]

    return out(row_sums), out(row_sq), out(col_sums)
