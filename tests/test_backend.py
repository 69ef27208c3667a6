"""The compiled primitives against dense float64 numpy, and the shared arithmetic."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import alignscope
from alignscope import _backend, _reference, backend_info
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


# --- backend="cuda" routing, without a GPU ---------------------------------------------------
# A stand-in for alignscope._cuda (the compiled CUDA module) records each call and answers with
# the kernels' arithmetic emulated in float64 (_reference.cuda_kernel_pair_abs_sum); a recorder
# around the CPU engine logs its calls. Each kind of call must reach the engine
# _backend.pair_abs_sum documents, with the arrays in the layout the compiled module requires.

CUDA_TILE = 128  # alignscope._cuda.tile (csrc/cuda/launch.h kTile)


def _check_host_arguments(args: tuple) -> None:
    """The contract of _cuda.pair_abs_sum_host (its pybind11 signature takes no conversion)."""
    rows, cols, zscale, _, row_labels, col_labels, _, row_ids, col_ids, block, device = args
    for a in (rows, cols, zscale):
        assert a is None or (a.dtype == np.float32 and a.flags.c_contiguous)
    for a in (row_labels, col_labels):
        assert a is None or (a.dtype == np.int32 and a.flags.c_contiguous)
    for a in (row_ids, col_ids):
        assert a is None or (a.dtype == np.int64 and a.flags.c_contiguous)
    assert (row_labels is None) == (col_labels is None)
    assert (row_ids is None) == (col_ids is None)
    if block is not None:  # the binding refuses these with a ValueError
        assert cols is not None and rows.shape[0] == cols.shape[0] and 1 <= block <= CUDA_TILE
    assert device == 0


class _RecordingCore:
    """The CPU engine (alignscope._core), logging each pair_abs_sum call."""

    def __init__(self, core, calls: list) -> None:
        self._core = core
        self._calls = calls

    def __getattr__(self, name: str):
        return getattr(self._core, name)

    def pair_abs_sum(self, *args):
        self._calls.append(("cpu", args))
        return self._core.pair_abs_sum(*args)


@pytest.fixture
def engines(monkeypatch) -> list:
    """Install the stand-in CUDA module (1 device) and the CPU recorder; returns the call log
    of (engine, positional arguments)."""
    calls: list = []

    def host(*args):
        _check_host_arguments(args)
        calls.append(("cuda", args))
        return _reference.cuda_kernel_pair_abs_sum(*args, tile=CUDA_TILE)

    fake = types.ModuleType("alignscope._cuda")
    fake.tile = CUDA_TILE
    fake.device_count = lambda: 1
    fake.device_name = lambda i: f"stand-in {i}"
    fake.pair_abs_sum_host = host
    monkeypatch.setitem(sys.modules, "alignscope._cuda", fake)
    monkeypatch.setattr(alignscope, "_cuda", fake, raising=False)
    monkeypatch.setattr(_backend, "_core", _RecordingCore(_core, calls))
    return calls


def _engines_used(calls: list) -> list[str]:
    return [engine for engine, _ in calls]


def _unit(rng, n: int, k: int) -> np.ndarray:
    x = rng.normal(size=(n, k))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# fp16 input rounding: a relative error of 2^-11 per operand; |<z, w>| <= |zscale|max for unit
# rows, so each term is off by at most ~2 * 2^-11 * |zscale|max (plus the fp32 sums).
def _fp16_atol(zscale_max: float, terms: int) -> float:
    return 2.0 * 2.0**-11 * zscale_max * terms


@pytest.mark.parametrize(
    ("kind", "zmax", "engine"),
    [
        ("none", 0.0, "cuda"),  # no scale: w = rows on both sides
        ("scale", 2.0, "cuda"),
        ("scale", 59_999.0, "cuda"),  # just inside the fp16 range
        ("scale", 60_000.0, "cpu"),  # |zscale| >= 6e4: fp16 would overflow
        ("negative", 70_000.0, "cpu"),  # the largest |zscale|, whatever its sign
    ],
)
def test_cuda_symmetric_calls_route_by_the_scale(rng, engines, kind, zmax, engine):
    n, k = 2 * CUDA_TILE + 7, 6  # several tiles: the kernels' schedule is emulated
    rows = _unit(rng, n, k)
    zscale = None
    if kind != "none":
        zscale = np.full(k, 0.5, np.float32)
        zscale[3] = zmax if kind == "scale" else -zmax
    labels = rng.integers(0, 3, size=n).astype(np.int32)
    progress = []
    got, squares, cols = _backend.pair_abs_sum(
        rows,
        zscale=zscale,
        c0=0.25,
        row_labels=labels,
        c_label=-0.5,
        backend="cuda",
        threads=2,
        progress=lambda d, t: progress.append((d, t)),
    )
    assert _engines_used(engines) == [engine]
    assert squares is None and cols is None
    z = rows.astype(np.float64) * (1.0 if zscale is None else zscale.astype(np.float64))
    dense = _dense_abs(z, rows, 0.25, labels, labels, -0.5)
    np.fill_diagonal(dense, 0.0)
    # The symmetric form is symmetric: v(i, k) = v(k, i) for z = zscale * w.
    expected = np.triu(dense, 1).sum(axis=1) + np.triu(dense, 1).sum(axis=0)
    if engine == "cuda":
        assert progress == [(1, 1)]
        atol = _fp16_atol(max(zmax, 1.0), n) + 1e-6 * expected.max()
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
        args = engines[0][1]
        assert args[1] is None and args[9] is None  # symmetric: no columns, no block
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("block", "engine"), [(1, "cuda"), (64, "cuda"), (CUDA_TILE, "cuda"), (CUDA_TILE + 1, "cpu")]
)
def test_cuda_block_calls_route_by_the_block_size(rng, engines, block, engine):
    n_blocks, k = 3, 5
    rows = _unit(rng, n_blocks * block, k)
    cols = _unit(rng, n_blocks * block, k)
    rid = rng.integers(0, 40, size=n_blocks * block)
    cid = rng.integers(0, 40, size=n_blocks * block)
    zscale = np.linspace(-1.0, 1.0, k).astype(np.float32)
    rs, sq, cs = _backend.pair_abs_sum(
        rows, cols, zscale=zscale, c0=0.1, row_ids=rid, col_ids=cid, block=block, backend="cuda"
    )
    assert _engines_used(engines) == [engine]
    assert sq is None and cs is None
    dense = _dense_abs(rows * zscale, cols, 0.1)
    dense[rid[:, None] == cid[None, :]] = 0.0
    expected = np.concatenate(
        [
            dense[b * block : (b + 1) * block, b * block : (b + 1) * block].sum(axis=1)
            for b in range(n_blocks)
        ]
    )
    atol = _fp16_atol(1.0, block) + 1e-6 if engine == "cuda" else 1e-5
    np.testing.assert_allclose(rs, expected, rtol=0, atol=atol)
    if engine == "cuda":
        assert engines[0][1][9] == block


@pytest.mark.parametrize(("squares", "engine"), [(False, "cuda"), (True, "cpu")])
def test_cuda_rectangular_calls_route_by_squares(rng, engines, squares, engine):
    n, m, k = 37, 150, 7
    pool = _unit(rng, 120, k)
    pool_labels = rng.integers(0, 4, size=120).astype(np.int32)
    rid = rng.integers(0, 120, size=n)
    cid = rng.integers(0, 120, size=m)
    zscale = np.full(k, -0.5, np.float32)
    rs, sq, cs = _backend.pair_abs_sum(
        pool[rid],
        pool[cid],
        zscale=zscale,
        c0=0.5,
        row_labels=pool_labels[rid],
        col_labels=pool_labels[cid],
        c_label=-1.0,
        row_ids=rid,
        col_ids=cid,
        squares=squares,
        backend="cuda",
    )
    assert _engines_used(engines) == [engine]
    dense = _dense_abs(pool[rid] * zscale, pool[cid], 0.5, pool_labels[rid], pool_labels[cid], -1.0)
    dense[rid[:, None] == cid[None, :]] = 0.0
    tol = {"rtol": 1e-5, "atol": 0.0}
    if engine == "cuda":
        tol = {"rtol": 0.0, "atol": _fp16_atol(1.0, max(n, m)) + 1e-6}
    np.testing.assert_allclose(rs, dense.sum(axis=1), **tol)
    np.testing.assert_allclose(cs, dense.sum(axis=0), **tol)
    if squares:
        np.testing.assert_allclose(sq, (dense**2).sum(axis=1), rtol=1e-5)
    else:
        assert sq is None


def test_cpu_and_auto_never_reach_the_cuda_engine(rng, engines):
    a = rng.normal(size=(50, 6))
    b = rng.normal(size=(50, 6))
    for backend in ("cpu", "auto"):
        result = alignscope.alignment_difficulty(a, b, backend=backend, threads=1)
        assert result.backend == "cpu"
    assert _engines_used(engines) == ["cpu", "cpu"]
    assert _backend.resolve_backend("cuda") == "cuda"  # the stand-in offers one device


def test_cuda_without_devices_is_refused(monkeypatch, engines):
    monkeypatch.setattr(alignscope._cuda, "device_count", lambda: 0)
    assert _backend.cuda_status() == (True, 0, "no CUDA device")
    with pytest.raises(ValueError, match=r"backend='cuda' is unavailable: no CUDA device; run on"):
        _backend.resolve_backend("cuda")


@pytest.mark.parametrize("labels", [False, True], ids=["embeddings", "labels"])
def test_exact_ad_with_cuda_runs_the_structure_pass_on_the_cuda_engine(rng, engines, labels):
    n = 300
    a = rng.normal(size=(n, 16))
    b = 0.5 * a + rng.normal(size=(n, 16))
    if labels:
        lab = rng.integers(0, 5, size=n)
        truth = np.where(rng.random(n) < 0.1, (lab + 1) % 5, lab)
        result = alignscope.alignment_difficulty(
            a, labels=lab, true_labels=truth, per_sample=True, backend="cuda"
        )
        ref = _reference.alignment_difficulty(a, labels=lab, true_labels=truth)
    else:
        result = alignscope.alignment_difficulty(a, b, per_sample=True, backend="cuda")
        ref = _reference.alignment_difficulty(a, b)
    assert _engines_used(engines) == ["cuda"]
    assert result.backend == "cuda"
    assert result.ad == pytest.approx(ref["ad"], abs=1e-5)  # README "CUDA": the fp16 bound
    assert result.structure == pytest.approx(ref["structure"], abs=5e-5)
    np.testing.assert_allclose(result.per_sample.d_s, ref["d_s"], atol=5e-5)


def test_exact_ad_beyond_the_fp16_range_runs_on_the_cpu(rng, engines):
    """Image bounds 1e-5 wide give |zscale| = 1e5: the CPU engine computes it, exactly."""
    from alignscope import Bounds

    a = rng.normal(size=(200, 8))
    b = 0.5 * a + rng.normal(size=(200, 8))
    bounds = Bounds(feature=(0.55, 0.8), image=(0.4, 0.40001), text=(0.0, 1.0))
    result = alignscope.alignment_difficulty(a, b, profile=bounds, backend="cuda")
    ref = _reference.alignment_difficulty(a, b, profile=((0.55, 0.8), (0.4, 0.40001), (0.0, 1.0)))
    assert _engines_used(engines) == ["cpu"]
    assert result.backend == "cuda"  # asked for; the engine chose the CPU for this call
    assert result.structure == pytest.approx(ref["structure"], rel=1e-5)
    assert result.ad == pytest.approx(ref["ad"], rel=1e-5)


@pytest.mark.parametrize(("block", "engine"), [(64, "cuda"), (CUDA_TILE, "cuda"), (256, "cpu")])
def test_sampled_ad_with_cuda_samples_blocks_by_size_and_landmarks_on_the_cpu(
    rng, engines, block, engine
):
    n = 2000
    a = rng.normal(size=(n, 16))
    b = 0.5 * a + rng.normal(size=(n, 16))
    kwargs = {"method": "sampled", "seed": 11, "budget": 8 * block * block, "block": block}
    kwargs |= {"per_sample": "landmarks", "landmarks": 32, "threads": 2}
    cuda = alignscope.alignment_difficulty(a, b, backend="cuda", **kwargs)
    used = _engines_used(engines)
    # block samples first (one call here), then the landmark scan: squares, CPU only
    assert used[0] == engine and set(used[1:]) == {"cpu"}
    scan_calls = [args for _, args in engines[1:]]
    assert all(args[9] is True for args in scan_calls)  # squares
    if engine == "cuda":
        assert engines[0][1][9] == block
    else:
        assert engines[0][1][9] is False and engines[0][1][10] is True  # block-diagonal form
    engines.clear()
    cpu = alignscope.alignment_difficulty(a, b, backend="cpu", **kwargs)
    assert set(_engines_used(engines)) == {"cpu"}
    # the same samples on two engines: equal up to the fp16 input rounding
    assert cuda.samples == cpu.samples == 8 * block * block
    assert cuda.structure == pytest.approx(cpu.structure, abs=1e-5 if engine == "cuda" else 1e-9)
    np.testing.assert_array_equal(cuda.per_sample.d_s, cpu.per_sample.d_s)
    np.testing.assert_array_equal(cuda.per_sample.d_s_se, cpu.per_sample.d_s_se)
    ref = _reference.alignment_difficulty(a, b)
    assert cuda.feature == pytest.approx(ref["feature"], abs=1e-6)
    assert cuda.ci.guaranteed.low <= ref["ad"] <= cuda.ci.guaranteed.high


def test_torch_engine_checks_its_labels_itself(rng):
    # called directly (past _backend's check): rectangular with row labels only is refused as
    # _backend refuses it (it used to label the columns with them, then fail on a None slice);
    # the symmetric form takes the row labels for both sides
    pytest.importorskip("torch")
    from alignscope import _torch_engine

    rows = rng.normal(size=(6, 4)).astype(np.float32)
    cols = rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.arange(6, dtype=np.int32) % 2
    with pytest.raises(ValueError) as err:
        _torch_engine.pair_abs_sum(rows, cols, row_labels=labels, c_label=1.0)
    assert str(err.value) == (
        "pair_abs_sum: give both row_labels and col_labels (the rectangular form), or neither"
    )
    sym = _torch_engine.pair_abs_sum(rows, None, row_labels=labels, c_label=1.0)[0]
    both = _torch_engine.pair_abs_sum(rows, None, row_labels=labels, col_labels=labels, c_label=1.0)
    np.testing.assert_allclose(sym, both[0], rtol=1e-6)
    plain = _torch_engine.pair_abs_sum(rows, None, c_label=1.0)[0]
    assert not np.allclose(sym, plain)  # the labels count


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_rectangular_form_needs_both_label_arrays(rng, backend):
    # checked in Python before either engine: the compiled one refused inside C++
    if backend == "torch":
        pytest.importorskip("torch")
    rows = rng.normal(size=(6, 4)).astype(np.float32)
    cols = rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.arange(6, dtype=np.int32) % 2
    for given in ({"row_labels": labels}, {"col_labels": labels[:5]}):
        with pytest.raises(ValueError) as err:
            _backend.pair_abs_sum(rows, cols, c_label=1.0, backend=backend, **given)
        assert str(err.value) == (
            "pair_abs_sum: give both row_labels and col_labels (the rectangular form), or neither"
        )
