"""A blocked torch implementation of ``pair_abs_sum``: the independent reference the CUDA
kernels are tested against on a GPU, and a portable engine on any torch device.

It computes full row blocks (no symmetry) in float32 and sums in float64: simple and clearly
correct, not fast. Host arrays stay on the host and move to the device one block at a time,
so inputs larger than the device's memory stream through it (issue #20, item 4).

Precision
---------
``precision`` says to which format the GEMM operands z = zscale * rows and w are rounded before
their products are accumulated in float32: "fp32" (no rounding), "tf32" (10-bit mantissa,
fp32 range), "fp16" (10-bit mantissa, range 6.5e4) or "bf16" (7-bit mantissa, fp32 range).
The rounding is emulated on every device (round, then an fp32 GEMM with TF32 off), which is
what tensor cores do with such operands: their products are exact in fp32. So this engine
models the error of a low-precision GPU kernel, not its speed. :func:`error_bound` gives the
documented bound of each precision.
"""

from __future__ import annotations

import contextvars
import math

import numpy as np

_ROWS = 2048
PRECISIONS = ("fp16", "bf16", "tf32", "fp32")
# Unit roundoff of the operand formats (half an ulp at 1): fp16 and tf32 keep 10 mantissa
# bits, bf16 7, fp32 operands are not rounded at all.
UNIT_ROUNDOFF = {"fp16": 2.0**-11, "bf16": 2.0**-8, "tf32": 2.0**-11, "fp32": 0.0}
_FP32_U = 2.0**-24
FP16_MAX_SCALE = 6.0e4  # |z| = |zscale * unit row| must stay below fp16's largest, 65504
# The precision of the torch engine for the current call: alignment_difficulty sets it for
# the duration of one computation, so the layers in between need no extra argument.
PRECISION: contextvars.ContextVar[str] = contextvars.ContextVar(
    "alignscope_torch_precision", default="fp32"
)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_precision(precision: object, name: str = "precision") -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming it."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, PRECISIONS))} or None; got {precision!r}"
        )
    return precision


def error_bound(
    precision: str,
    kdim: int,
    z_norm: float,
    w_norm: float,
    offsets: float = 0.0,
) -> float:
    """Largest |error| of one pair term ``|c0 + <z_i, w_k>| (+ c_label [...])`` against float64.

    With u the unit roundoff of the operand format (fp16, tf32: 2^-11; bf16: 2^-8; fp32: 0),
    K = ``kdim`` and u32 = 2^-24::

        (2u + u^2 + (K + 4) * 1.01 * u32) * |z_i| |w_k|  +  2 u32 * offsets
          + (fp16 only) 2^-25 * sqrt(K) * (|z_i| + |w_k|) * 1.01

    The first term is the operand rounding (each of z and w off by at most u relative, per
    element) and the float32 packing, scaling and K-term accumulation (gamma_K); the second the
    float32 additions of c0 and the label term (``offsets`` = |c0| + |c_label|); the last the
    absolute error of fp16's subnormals. Mean absolute values are 1-Lipschitz, so the structure
    term and every D_s are off by at most this bound taken at the largest norms, and AD by
    (1 - alpha) times it (the feature term is computed in float64 whatever the precision).
    For unit embeddings under the paper profile this is about 1e-2 (bf16), 2e-3 (fp16, tf32)
    and 1e-4 (fp32) per pair: worst cases; measured errors of the mean are far smaller.
    """
    u = UNIT_ROUNDOFF[check_precision(precision)]
    bound = (2.0 * u + u * u + (kdim + 4) * 1.01 * _FP32_U) * z_norm * w_norm
    bound += 2.0 * _FP32_U * offsets
    if precision == "fp16":
        bound += 2.0**-25 * math.sqrt(kdim) * (z_norm + w_norm) * 1.01
    return bound


def _round(x: object, precision: str) -> object:
    """``x`` (float32 tensor) rounded to ``precision``'s format, kept in float32."""
    import torch

    t: torch.Tensor = x  # type: ignore[assignment]
    if precision == "fp16":
        return t.half().float()
    if precision == "bf16":
        return t.bfloat16().float()
    if precision == "tf32":
        # Round to nearest even on the 13 low mantissa bits, on the bit pattern: sign and
        # magnitude are separate in IEEE floats, so this rounds the magnitude (inputs are finite).
        bits = t.contiguous().view(torch.int32)
        bits = (bits + 0x0FFF + ((bits >> 13) & 1)) & -8192
        return bits.view(torch.float32)
    return t


def _device_bytes(dev: str) -> int | None:
    """Bytes this engine may keep on ``dev`` (half of what is free on a GPU; None: no limit)."""
    if dev != "cuda":
        return None
    import torch

    free, _ = torch.cuda.mem_get_info()
    return int(free) // 2


def column_block(m: int, kdim: int, rows: int, budget: int | None) -> int:
    """Columns moved to the device at once: all ``m`` when their operand and a ``rows`` x m
    float32 product fit in ``budget`` bytes, else the most that do (at least 1)."""
    if budget is None:
        return max(m, 1)
    per_column = 4 * (kdim + 2 * rows)  # the column's operand and its product column (x2 temps)
    return int(max(1, min(m, (budget - 4 * rows * kdim) // per_column)))


def paired_labels(
    row_labels: np.ndarray | None, col_labels: np.ndarray | None, cols: np.ndarray | None
) -> np.ndarray | None:
    """The column labels pair_abs_sum uses: the row labels in the symmetric form (``cols``
    None) when no column labels are given; otherwise both arrays or neither (ValueError)."""
    if row_labels is not None and col_labels is None and cols is None:
        return row_labels
    if (row_labels is None) != (col_labels is None):
        raise ValueError(
            "pair_abs_sum: give both row_labels and col_labels (the rectangular form), or neither"
        )
    return col_labels


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
    precision: str | None = None,
    device_bytes: int | None = None,
    block_rows: int = _ROWS,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Same contract as :func:`alignscope._backend.pair_abs_sum` (host arrays in and out).

    Parameters
    ----------
    precision : operand format (see the module docstring); None: the current
        :data:`PRECISION` ("fp32" unless :func:`alignscope.alignment_difficulty` set one).
    device_bytes : bytes the engine may hold on its device; None: half the free memory of a
        GPU, no limit on the CPU. Columns that do not fit are streamed in blocks.
    block_rows : rows of ``rows`` per step.
    """
    import torch

    precision = check_precision(PRECISION.get() if precision is None else precision)
    dev = device()
    symmetric = cols is None
    w_host = np.asarray(rows if symmetric else cols)
    z_host = np.asarray(rows)
    n, m, kdim = z_host.shape[0], w_host.shape[0], z_host.shape[1]
    zs = None
    if zscale is not None:
        zs = torch.as_tensor(np.asarray(zscale, dtype=np.float32), device=dev)
        if precision == "fp16" and float(np.abs(zscale).max(initial=0.0)) >= FP16_MAX_SCALE:
            raise ValueError(
                f"precision='fp16' cannot hold this profile's scale {np.abs(zscale).max():.3g} "
                "(fp16 ends at 65504): use precision='bf16' or 'fp32', or wider profile bounds"
            )

    def upload(a: np.ndarray, lo: int, hi: int, dtype: object = np.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a[lo:hi], dtype=dtype), device=dev)

    def ints(a: np.ndarray | None, lo: int, hi: int) -> torch.Tensor | None:
        return None if a is None else upload(a, lo, hi, np.int64)

    col_labels = paired_labels(row_labels, col_labels, cols)
    step = block if block is not None else int(block_rows)
    col_step = m if block is not None else column_block(m, kdim, step, _budget(device_bytes, dev))
    # Columns that fit stay on the device for the whole pass; the rest are re-sent per row block.
    resident = _round(upload(w_host, 0, m), precision) if col_step >= m and m else None
    row_sums = torch.zeros(n, dtype=torch.float64, device=dev)
    row_sq = torch.zeros(n, dtype=torch.float64, device=dev) if squares else None
    col_sums = None
    if not symmetric and block is None:
        col_sums = torch.zeros(m, dtype=torch.float64, device=dev)
    # A caller who turned on TF32 for float32 matmuls (torch's default leaves it off) would add
    # a rounding this engine did not ask for: then multiply in float64, which only tightens.
    wide = dev == "cuda" and torch.get_float32_matmul_precision() != "highest"
    with torch.no_grad():
        for s in range(0, n, step):
            e = min(n, s + step)
            z = upload(z_host, s, e)
            z = _round(z * zs if zs is not None else z, precision)
            lr, ir = ints(row_labels, s, e), ints(row_ids, s, e)
            c_lo, c_hi = (s, e) if block is not None else (0, m)
            for b_lo in range(c_lo, c_hi, max(col_step, 1)):
                b_hi = min(c_hi, b_lo + col_step)
                if resident is not None:
                    w = resident[b_lo:b_hi]
                else:
                    w = _round(upload(w_host, b_lo, b_hi), precision)
                v = c0 + (z.double() @ w.double().T).float() if wide else c0 + z @ w.T
                if lr is not None:
                    lc = ints(col_labels, b_lo, b_hi)
                    v = v + c_label * (lr[:, None] != lc[None, :])
                v = v.abs()
                if symmetric:
                    # the diagonal i == k inside this (row block, column block) tile
                    lo, hi = max(s, b_lo), min(e, b_hi)
                    if lo < hi:
                        idx = torch.arange(lo, hi, device=dev)
                        v[idx - s, idx - b_lo] = 0.0
                if ir is not None:
                    ic = ints(col_ids, b_lo, b_hi)
                    v = v.masked_fill(ir[:, None] == ic[None, :], 0.0)
                row_sums[s:e] += v.sum(dim=1, dtype=torch.float64)
                if row_sq is not None:
                    row_sq[s:e] += (v.double() ** 2).sum(dim=1)
                if col_sums is not None:
                    col_sums[b_lo:b_hi] += v.sum(dim=0, dtype=torch.float64)

    def out(t: object) -> np.ndarray | None:
        return None if t is None else t.cpu().numpy()  # type: ignore[attr-defined]

    return out(row_sums), out(row_sq), out(col_sums)


def _budget(device_bytes: int | None, dev: str) -> int | None:
    if device_bytes is None:
        return _device_bytes(dev)
    if isinstance(device_bytes, bool) or not isinstance(device_bytes, (int, np.integer)):
        raise TypeError(f"device_bytes must be a positive integer or None, got {device_bytes!r}")
    if device_bytes < 1:
        raise ValueError(f"device_bytes must be >= 1, got {device_bytes}")
    return int(device_bytes)


# The format each engine multiplies in: the CPU engine (and Ray's tasks, which run it) in
# float32, the CUDA kernels with fp16 operands (WMMA); only the torch engine takes any.
NATIVE_PRECISION = {"cpu": "fp32", "ray": "fp32", "cuda": "fp16"}


def engine_precision(precision: str | None, engine: str, backend: str) -> str:
    """The operand format ``engine`` will use for a requested ``precision`` (None: its own).

    Raises
    ------
    ValueError naming ``precision`` and ``backend`` when the engine cannot compute in it.
    """
    native = NATIVE_PRECISION.get(engine)
    if precision is None:
        return native or "fp32"
    check_precision(precision)
    if native is None or precision == native:
        return precision
    chose = f" (auto chose {engine!r})" if backend == "auto" else ""
    raise ValueError(
        f"precision={precision!r} is not available with backend={backend!r}{chose}: that engine "
        f"computes in {native}; pass precision={native!r}, or backend='torch' for {precision}"
    )
