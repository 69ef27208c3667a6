"""The compiled primitives against dense float64 numpy, and the shared arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope import _backend, backend_info
from alignscope._backend import _core


def _dense_abs(
    z: np.ndarray, w: np.ndarray, c0: float, lz=None, lw=None, c_label=0.0
) -> np.ndarray:
    m = c0 + z.astype(np.float64) @ w.astype(np.float64).T
    if lz is not None:
        m = m + c_label * (lz[:, None] != lw[None, :])
    return np.abs(m)


@pytest.mark.parametrize("n", [1, 2, 3, 15, 16, 17, 64, 100])
@pytest.mark.parametrize("tile", [1, 5, 16, 256])
def test_symmetric_pair_abs_sum_matches_dense(rng, n, tile):
    k = 13
    w = rng.normal(size=(n, k)).astype(np.float32)
    zscale = rng.normal(size=k).astype(np.float32)
    rows, squares, cols = _backend.pair_abs_sum(w, zscale=zscale, c0=0.3, tile=tile, threads=2)
    dense = _dense_abs(w * zscale, w, 0.3)
    np.fill_diagonal(dense, 0.0)
    assert cols is None and squares is None
    # The symmetric form computes each unordered pair once: it relies on v(i,k) = v(k,i),
    # which holds for the engine's z/w construction, so symmetrise the reference the same way.
    expected = np.triu(dense, 1).sum(axis=1) + np.triu(dense, 1).sum(axis=0)
    np.testing.assert_allclose(rows, expected, rtol=1e-5, atol=1e-5)


def test_symmetric_form_with_labels(rng):
    n, d = 203, 9
    a = rng.normal(size=(n, d)).astype(np.float32)
    labels = rng.integers(0, 4, size=n).astype(np.int32)
    rows, _, _ = _backend.pair_abs_sum(
        a, zscale=np.full(d, -0.5, np.float32), c0=0.5, row_labels=labels, c_label=-1.0, tile=32
    )
    g = a.astype(np.float64) @ a.astype(np.float64).T
    dense = np.abs(0.5 - 0.5 * g - (labels[:, None] != labels[None, :]))
    np.fill_diagonal(dense, 0.0)
    np.testing.assert_allclose(rows, dense.sum(axis=1), rtol=1e-5)


@pytest.mark.parametrize(("n", "m", "overlap"), [(1, 1, False), (7, 30, False), (40, 33, True)])
def test_rectangular_form_row_column_and_square_sums(rng, n, m, overlap):
    k = 11
    pool = rng.normal(size=(60, k)).astype(np.float32)
    pool_labels = rng.integers(0, 3, size=60).astype(np.int32)
    # Rows and columns drawn from one pool of samples: equal ids are the same sample.
    rid = rng.integers(0, 60, size=n) if overlap else rng.integers(0, 30, size=n)
    cid = rng.integers(0, 60, size=m) if overlap else rng.integers(30, 60, size=m)
    rs, sq, cs = _backend.pair_abs_sum(
        pool[rid],
        pool[cid],
        c0=-0.2,
        row_labels=pool_labels[rid],
        col_labels=pool_labels[cid],
        c_label=0.7,
        row_ids=rid,
        col_ids=cid,
        squares=True,
        tile=8,
    )
    dense = _dense_abs(pool[rid], pool[cid], -0.2, pool_labels[rid], pool_labels[cid], 0.7)
    dense[rid[:, None] == cid[None, :]] = 0.0
    assert overlap == bool((rid[:, None] == cid[None, :]).any())
    np.testing.assert_allclose(rs, dense.sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(sq, (dense**2).sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(cs, dense.sum(axis=0), rtol=1e-5)


@pytest.mark.parametrize("block", [1, 4, 16])
def test_block_diagonal_form(rng, block):
    n_blocks, k = 7, 9
    rows_in = rng.normal(size=(n_blocks * block, k)).astype(np.float32)
    cols_in = rng.normal(size=(n_blocks * block, k)).astype(np.float32)
    rs, _, cs = _backend.pair_abs_sum(rows_in, cols_in, c0=0.1, block=block)
    assert cs is None
    dense = _dense_abs(rows_in, cols_in, 0.1)
    for b in range(n_blocks):
        sl = slice(b * block, (b + 1) * block)
        np.testing.assert_allclose(rs[sl], dense[sl, sl].sum(axis=1), rtol=1e-5)


@pytest.mark.parametrize("n", [2, 3, 31, 100])
def test_pair_extrema_matches_dense(rng, n):
    x = rng.normal(size=(n, 6)).astype(np.float32)
    (mn, i0, k0), (mx, i1, k1) = _backend.pair_extrema(x, tile=8)
    g = x.astype(np.float64) @ x.astype(np.float64).T
    off = g[~np.eye(n, dtype=bool)]
    assert mn == pytest.approx(off.min(), abs=1e-5)
    assert mx == pytest.approx(off.max(), abs=1e-5)
    assert i0 != k0 and i1 != k1
    assert g[i0, k0] == pytest.approx(off.min(), abs=1e-5)
    assert g[i1, k1] == pytest.approx(off.max(), abs=1e-5)


def test_pair_extrema_without_pairs_is_none():
    assert _backend.pair_extrema(np.ones((1, 3), np.float32)) is None


def test_thread_counts_agree(rng):
    w = rng.normal(size=(500, 20)).astype(np.float32)
    one, _, _ = _backend.pair_abs_sum(w, c0=0.1, tile=32, threads=1)
    two, _, _ = _backend.pair_abs_sum(w, c0=0.1, tile=32, threads=2)
    np.testing.assert_allclose(one, two, rtol=1e-12)


@pytest.mark.parametrize("grid", [*range(1, 70), 255, 1000, 4097])
def test_upper_tile_schedule_covers_each_tile_once(grid):
    count = _core.upper_tile_count(grid)
    assert count == grid * (grid + 1) // 2
    tiles = [_core.upper_tile(t, grid) for t in range(count)]
    assert len(set(tiles)) == count
    assert all(0 <= i <= k < grid for i, k in tiles)
    assert tiles == sorted(tiles)  # row by row, columns increasing


def test_upper_tile_schedule_at_large_grid():
    grid = 3_000_000  # N ~ 7.7e8 rows at tile 256
    count = _core.upper_tile_count(grid)
    for t in [0, 1, grid - 1, grid, count // 2, count - 2, count - 1]:
        i, k = _core.upper_tile(t, grid)
        assert i * grid - i * (i - 1) // 2 + (k - i) == t


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.0), (0.0, 2.0), (0.55, 0.8), (0.3, 0.3)])
def test_cosine_distance_map(lo, hi):
    offset, slope = _core.cosine_distance_map(lo, hi)
    for g in (-1.0, -0.2, 0.0, 0.4, 1.0):
        expected = 0.0 if hi == lo else ((1.0 - g) - lo) / (hi - lo)
        assert offset + slope * g == pytest.approx(expected, abs=1e-12)


def test_structure_constants_reproduce_the_difference_of_maps():
    c0, sa, sb, cl = _backend.structure_constants((0.1, 1.3), (0.2, 0.9))
    for ga, gb in [(0.3, -0.1), (1.0, 1.0), (-0.5, 0.7)]:
        da = ((1 - ga) - 0.1) / 1.2
        db = ((1 - gb) - 0.2) / 0.7
        assert c0 + sa * ga + sb * gb == pytest.approx(da - db, abs=1e-12)
    assert cl == 0.0
    c0, sa, sb, cl = _backend.structure_constants((0.0, 1.0), None)
    assert (c0, sa, sb, cl) == (1.0, -1.0, 0.0, -1.0)


def test_progress_callback_sees_all_tiles(rng):
    calls = []
    w = rng.normal(size=(300, 8)).astype(np.float32)
    _backend.pair_abs_sum(w, tile=16, progress=lambda d, t: calls.append((d, t)))
    total = _core.upper_tile_count(19)
    assert calls[-1] == (total, total)


def test_exception_in_progress_callback_cancels_the_run(rng):
    w = rng.normal(size=(4000, 64)).astype(np.float32)

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _backend.pair_abs_sum(w, tile=8, threads=2, progress=stop)


def test_backend_info_reports_the_build():
    info = backend_info()
    assert info["backends"][0] == "cpu"
    assert info["cpu"]["threads"] >= 1
    assert info["cpu"]["simd"] in {"avx512f", "avx2", "avx", "sse4.2", "sse2", "neon", "scalar"}
    assert "OpenBLAS" in info["cpu"]["blas"]
    assert set(info["cuda"]) >= {"built", "devices", "reason"}
    if not info["cuda"]["built"]:
        assert info["cuda"]["devices"] == 0


def test_float16_rows_pack_exactly_as_their_float32_values():
    """Every finite half bit pattern (subnormals included), widened in C++ (F16C or the
    portable path), packs bit for bit as numpy's float32 conversion of it does."""
    halves = np.arange(65536, dtype=np.uint16).view(np.float16)
    values = halves[np.isfinite(halves) & (halves != 0)]
    a = np.stack([values, np.ones_like(values)], axis=1)
    b = np.stack([np.ones_like(values), values], axis=1)
    got = np.empty((values.size, 4), np.float32)
    want = np.empty_like(got)
    r16 = _backend.pack_unit_rows(a, b, got, with_cos=True)
    r32 = _backend.pack_unit_rows(a.astype(np.float32), b.astype(np.float32), want, with_cos=True)
    assert r16[:3] == r32[:3] == (0, -1, -1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(r16[3], r32[3])
    # rows wider than the 8-lane F16C step, odd tails
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 77)).astype(np.float16)
    got, want = np.empty((300, 77), np.float32), np.empty((300, 77), np.float32)
    _backend.pack_unit_rows(x, None, got, with_cos=False, threads=2)
    _backend.pack_unit_rows(x.astype(np.float32), None, want, with_cos=False)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("value", "problem"), [(np.inf, 1), (np.nan, 1), (0.0, 2)])
def test_float16_rows_report_the_first_bad_row(value, problem):
    x = np.ones((600, 9), np.float16)
    y = np.ones((600, 9), np.float16)
    if problem == 2:
        y[417] = 0.0
    else:
        y[417, 8] = value
    out = _backend.pack_unit_rows(x, y, np.empty((600, 18), np.float32), with_cos=True, threads=2)
    assert out[:3] == (problem, 1, 417)
