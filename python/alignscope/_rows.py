"""Row normalisation of embeddings that are already on the host (encoder outputs, chunks)."""

from __future__ import annotations

from typing import Any

import numpy as np


def unit_rows(x: Any, dtype: Any = np.float32) -> np.ndarray:
    """(n, d) rows scaled to unit L2 norm in ``dtype``; an all-zero row stays zero.

    ``x`` is a numpy array or a torch tensor (any device, any float dtype)."""
    if hasattr(x, "cpu"):
        x = x.float().cpu().numpy()
    arr = np.asarray(x, dtype=dtype)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.where(norms == 0, 1.0, norms)
