"""Argument checks and row normalisation, run before any compiled call.

Messages name the argument and, for bad values, the first offending row, and say what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignscope import _backend
from alignscope._devices import array_device, host_only_error

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
# Rows are checked and packed this many at a time, so a memory-mapped or float16 input never
# needs a full-size converted copy.
CHUNK_ROWS = 65536


def as_matrix(x: object, name: str) -> np.ndarray:
    """View ``x`` as a 2-D float16/32/64 numpy array (no copy when possible).

    Accepts numpy arrays and objects with the array protocol (CPU torch tensors, etc.).
    """
    if x is None:
        raise TypeError(f"{name} is required")
    where = array_device(x)
    if where is not None:
        raise host_only_error(name, where)
    if hasattr(x, "detach") and callable(x.detach):
        x = x.detach()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # an object numpy cannot read is the caller's error
        raise TypeError(
            f"{name} must be an array (numpy, or with the array protocol): {exc}"
        ) from exc
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        raise TypeError(
            f"{name} must be a float16, float32 or float64 array; got dtype {arr.dtype}"
        )
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D with shape (N, d); got shape {arr.shape}")
    if arr.dtype.type not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, float32 or float64; got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows); alignment difficulty needs at least one pair")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 columns; embeddings need at least one dimension")
    return arr


def as_labels(x: object, name: str, n: int) -> np.ndarray:
    """View ``x`` as a 1-D integer array of length ``n``."""
    where = array_device(x)
    if where is not None:
        raise host_only_error(name, where)
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name} must be an integer array: {exc}") from exc
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array (class ids); got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one label per sample; got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but image_emb has {n} rows")
    return arr


def label_codes(labels: np.ndarray) -> np.ndarray:
    """Dense int32 codes with the same equality pattern as ``labels`` (any integer dtype)."""
    _, codes = np.unique(labels, return_inverse=True)
    return codes.astype(np.int32).reshape(-1)


def unit_rows64(x: np.ndarray, rows: list[int], name: str) -> np.ndarray:
    """Selected rows of ``x`` as float64 unit vectors (exact refinement of a few pairs).

    The rows were validated by :func:`prepare_views` already.
    """
    sel = np.asarray(x[rows], dtype=np.float64)
    sel = sel / np.abs(sel).max(axis=1, keepdims=True)  # huge values cannot overflow the norm
    return sel / np.linalg.norm(sel, axis=1, keepdims=True)


@dataclass
class PreparedViews:
    """Unit-normalised views packed for the engine.

    packed : (N, d_a + d_b) float32, rows [a_i, b_i] (or [a_i] with label metrics).
    cos_ab : (N,) float64 cosine between a_i and b_i, or None when d differs or labels are used.
    """

    packed: np.ndarray
    d_a: int
    d_b: int
    cos_ab: np.ndarray | None


PROBLEMS = {
    1: "{name} row {row} contains NaN or inf; clean or drop that row",
    2: "{name} row {row} is all zeros; a zero embedding has no direction, drop that row",
}


def prepare_views(
    a: np.ndarray, b: np.ndarray | None, names: tuple[str, str], threads: int | None = None
) -> PreparedViews:
    """Validate every row and pack unit rows of ``a`` (and ``b``) side by side in float32.

    Works in chunks of CHUNK_ROWS rows, so memory-mapped inputs stream through and the first
    bad row is reported by its global index. Memory: the float32 packed array.
    """
    n, d_a = a.shape
    d_b = 0 if b is None else b.shape[1]
    packed = np.empty((n, d_a + d_b), dtype=np.float32)
    with_cos = b is not None and d_a == d_b
    cos_ab = np.empty(n, dtype=np.float64) if with_cos else None
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        problem, view, row, cos = _backend.pack_unit_rows(
            a[start:stop],
            None if b is None else b[start:stop],
            packed[start:stop],
            with_cos=with_cos,
            threads=threads,
        )
        if problem:
            raise ValueError(PROBLEMS[problem].format(name=names[view], row=start + row))
        if cos_ab is not None:
            cos_ab[start:stop] = cos
    return PreparedViews(packed=packed, d_a=d_a, d_b=d_b, cos_ab=cos_ab)


def check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise TypeError(f"alpha must be a number in [0, 1], got {type(alpha).__name__}")
    value = float(alpha)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"alpha must be in [0, 1] (the weight of the feature term); got {value}")
    return value
