"""Estimators for stores too large for the exact O(N^2) pass.

Structure term: **block sampling**. A sample unit is a block of b random rows I and b random
columns K, drawn independently and uniformly with replacement; its value is the block mean

    X = (1/b^2) sum_{r, c} |D_A(I_r, K_c) - D_B(I_r, K_c)| [I_r != K_c].

Every (I_r, K_c) is uniform on [N]^2, so E[X] = (1/N^2) sum_{i != k} |...| = structure AD
exactly (unbiased), blocks are independent and X lies in [0, R] with R the largest possible
|D_A - D_B| under the profile. One block is one GEMM of b x b x (d_A + d_B), so the estimator
runs at the engine's GEMM speed and reads only the 2b rows per block it samples.

Per-sample D_s: **landmarks**. Row i is compared with S shared random columns k_1..k_S
(uniform, with replacement): mean_s |...|[k_s != i] is unbiased for D_s(i) and its standard
error is the sample standard deviation over the S terms divided by sqrt(S).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alignscope import _backend
from alignscope._progress import TileProgress
from alignscope.metrics._source import PairSource
from alignscope.metrics.intervals import Intervals, mean_intervals

DEFAULT_BLOCK = 64
DEFAULT_BUDGET = 1 << 24  # pair evaluations for the structure term (4,096 blocks of 64 x 64)
DEFAULT_LANDMARKS = 1024
FEATURE_SAMPLES = 1 << 20  # pairs for a sampled feature term
# Rows gathered per engine call when sampling blocks (both sides), bounding the working set.
_ROWS_PER_CALL = 32768


@dataclass(frozen=True)
class StructureSetup:
    """The affine maps of a run in engine form: D_A - D_B = c0 + <z, w> (+ c_label [l != l'])."""

    zscale: np.ndarray  # (d_a + d_b,) float32
    c0: float
    c_label: float
    codes: np.ndarray | None  # (N,) int32 label codes, or None
    value_range: float  # R: every |D_A - D_B| lies in [0, R]


def structure_setup(
    d_a: int,
    d_b: int,
    image_bounds: tuple[float, float],
    text_bounds: tuple[float, float] | None,
    codes: np.ndarray | None,
) -> StructureSetup:
    c0, scale_a, scale_b, c_label = _backend.structure_constants(image_bounds, text_bounds)
    zscale = np.empty(d_a + d_b, dtype=np.float32)
    zscale[:d_a] = scale_a
    zscale[d_a:] = scale_b
    # Range of each view's distance over cosines in [-1, 1]; labels give {0, 1}.
    a_off, a_slope = _affine(image_bounds)
    a_lo, a_hi = sorted((a_off - a_slope, a_off + a_slope))
    if text_bounds is None:
        b_lo, b_hi = 0.0, 1.0
    else:
        b_off, b_slope = _affine(text_bounds)
        b_lo, b_hi = sorted((b_off - b_slope, b_off + b_slope))
    value_range = max(a_hi - b_lo, b_hi - a_lo, 0.0)
    return StructureSetup(zscale, c0, c_label, codes, value_range)


def _affine(bounds: tuple[float, float]) -> tuple[float, float]:
    lo, hi = bounds
    if hi <= lo:
        return 0.0, 0.0
    return (1.0 - lo) / (hi - lo), -1.0 / (hi - lo)


@dataclass(frozen=True)
class SampledTerm:
    mean: float
    variance: float  # unbiased sample variance of the units
    units: int
    pairs: int
    intervals: Intervals


def sample_structure(
    source: PairSource,
    setup: StructureSetup,
    *,
    budget: int,
    block: int,
    rng: np.random.Generator,
    confidence: float,
    threads: int | None,
    progress: TileProgress,
    backend: str = "cpu",
) -> SampledTerm:
    """Block-sampled structure AD (see the module docstring) with both intervals."""
    n = source.n
    n_blocks = max(2, budget // (block * block))
    per_call = max(1, _ROWS_PER_CALL // block)
    means = np.empty(n_blocks)
    done = 0
    callback = progress.callback
    while done < n_blocks:
        nb = min(per_call, n_blocks - done)
        rid = rng.integers(0, n, size=nb * block)
        cid = rng.integers(0, n, size=nb * block)
        rows, _ = source.packed(rid)
        cols, _ = source.packed(cid)
        codes = setup.codes
        sums, _, _ = _backend.pair_abs_sum(
            rows,
            cols,
            zscale=setup.zscale,
            c0=setup.c0,
            row_labels=None if codes is None else codes[rid],
            col_labels=None if codes is None else codes[cid],
            c_label=setup.c_label,
            row_ids=rid,
            col_ids=cid,
            block=block,
            threads=threads,
            backend=backend,
        )
        means[done : done + nb] = sums.reshape(nb, block).sum(axis=1) / (block * block)
        done += nb
        source.release()
        if callback is not None:
            callback(done, n_blocks)
    mean = float(means.mean())
    variance = float(means.var(ddof=1))
    intervals = mean_intervals(
        mean, variance, n_blocks, setup.value_range, confidence, 0.0, setup.value_range
    )
    return SampledTerm(mean, variance, n_blocks, n_blocks * block * block, intervals)


def sample_feature(
    source: PairSource,
    feature_bounds: tuple[float, float],
    *,
    samples: int,
    rng: np.random.Generator,
    confidence: float,
) -> SampledTerm:
    """Feature AD from ``samples`` uniform rows (values in [0, 1])."""
    ids = rng.integers(0, source.n, size=samples)
    values = np.empty(samples)
    step = _ROWS_PER_CALL
    for start in range(0, samples, step):
        _, cos = source.packed(ids[start : start + step])
        values[start : start + step] = feature_distance(cos, feature_bounds)
        source.release()
    mean = float(values.mean())
    variance = float(values.var(ddof=1)) if samples > 1 else math.inf
    return SampledTerm(
        mean,
        variance,
        samples,
        samples,
        mean_intervals(mean, variance, samples, 1.0, confidence, 0.0, 1.0),
    )


def feature_distance(cos: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """D_img:txt = clip((d - lo) / (hi - lo), 0, 1) with d = 1 - cos; 0 when hi == lo."""
    lo, hi = bounds
    if hi <= lo:
        return np.zeros_like(cos)
    return np.clip((1.0 - cos - lo) / (hi - lo), 0.0, 1.0)


def scan(
    source: PairSource,
    setup: StructureSetup,
    *,
    feature_bounds: tuple[float, float] | None,
    landmarks: int,
    rng: np.random.Generator,
    threads: int | None,
    progress: TileProgress,
    backend: str = "cpu",
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """One pass over all rows: exact D_img:txt per row (when ``feature_bounds``) and landmark
    D_s estimates with standard errors (when ``landmarks`` > 0).

    Returns (d_ab, d_s, d_s_se), each (N,) float64 or None.
    """
    n = source.n
    d_ab = np.empty(n) if feature_bounds is not None else None
    d_s = se = None
    if landmarks > 0:
        lid = rng.integers(0, n, size=landmarks)
        land, _ = source.packed(lid)
        d_s = np.empty(n)
        se = np.empty(n)
    callback = progress.callback
    for start, packed, cos in source.chunks():
        stop = start + packed.shape[0]
        if d_ab is not None:
            d_ab[start:stop] = feature_distance(cos, feature_bounds)  # type: ignore[arg-type]
        if d_s is not None:
            ids = np.arange(start, stop, dtype=np.int64)
            codes = setup.codes
            sums, squares, _ = _backend.pair_abs_sum(
                packed,
                land,
                zscale=setup.zscale,
                c0=setup.c0,
                row_labels=None if codes is None else codes[start:stop],
                col_labels=None if codes is None else codes[lid],
                c_label=setup.c_label,
                row_ids=ids,
                col_ids=lid,
                squares=True,
                threads=threads,
                backend=backend,
            )
            mean = sums / landmarks
            var = np.maximum(squares - landmarks * mean * mean, 0.0) / max(landmarks - 1, 1)
            d_s[start:stop] = mean
            se[start:stop] = np.sqrt(var / landmarks)  # type: ignore[index]
        if callback is not None:
            callback(stop, n)
    return d_ab, d_s, se
