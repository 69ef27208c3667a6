"""The documented error bound of the CUDA kernels' fp16 inputs, checked on the CPU.

The kernels round z and w to fp16 and multiply on tensor cores with fp32 accumulation; fp16 x
fp16 products are exact in fp32, so the error is the input rounding plus fp32 summation. This
test applies the same rounding in float64 and checks the bound the README states.
"""

from __future__ import annotations

import numpy as np
import pytest

from alignscope import _reference


@pytest.mark.parametrize("d", [64, 512])
@pytest.mark.parametrize("corr", [0.0, 0.6])
def test_fp16_input_rounding_keeps_ad_within_1e_5(rng, d, corr):
    n = 1500
    a = _reference.unit_rows(rng.normal(size=(n, d)))
    b = _reference.unit_rows(corr * a + rng.normal(size=(n, d)))
    exact = np.abs(b @ b.T - a @ a.T)

    def half(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float16).astype(np.float64)

    rounded = np.abs(half(b) @ half(b).T + half(-a) @ half(a).T)
    for m in (exact, rounded):
        np.fill_diagonal(m, 0.0)
    structure_error = abs(exact.sum() - rounded.sum()) / n**2
    assert 0.2 * structure_error <= 1e-5  # AD error, alpha = 0.8 (the feature term is float64)
    assert np.abs(exact.sum(axis=1) - rounded.sum(axis=1)).max() / n <= 5e-5  # per-sample D_s
