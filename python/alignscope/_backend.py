"""The one place that picks a backend and bridges arrays to the compiled engine.

Everything here receives arrays that :mod:`alignscope.metrics` has already validated; the
functions only enforce the exact memory layout the compiled layer expects (C-contiguous
float32 / int32) and choose which engine runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from alignscope._torch_engine import paired_labels  # numpy only: torch loads lazily

_BUILD_HINT = (
    "alignscope's compiled engine (alignscope._core) could not be imported. Build it by "
    "installing the package from its source tree: `pip install .` (needs a C++17 compiler and "
    "the scipy-openblas32 wheel, which pip installs)."
)


def _load_core() -> Any:
    # The engine links libscipy_openblas.so; load it into the process first so the compiled
    # module finds it wherever the wheel was installed (editable installs included).
    try:
        import scipy_openblas32

        scipy_openblas32.get_openblas_config()
    except (ImportError, OSError) as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "alignscope needs the scipy-openblas32 package at run time: "
            "pip install scipy-openblas32"
        ) from exc
    try:
        from alignscope import _core
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(_BUILD_HINT) from exc
    return _core


_core = _load_core()

BACKENDS = ("auto", "cpu", "cuda", "torch", "ray")
_CUDA_NOT_BUILT = "CUDA backend not built"
_NO_DEVICE = "no CUDA device"
DEFAULT_TILE = 256
_TILE_CHOICES = (512, 256, 128, 64)


def choose_tile(n: int, threads: int) -> int:
    """Tile edge for an n-row symmetric run: the largest whose upper-tile count keeps every
    thread busy (at least 8 tiles per thread). Larger tiles amortise OpenBLAS's packing."""
    for tile in _TILE_CHOICES:
        grid = -(-n // tile)
        if grid * (grid + 1) // 2 >= 8 * threads:
            return tile
    return _TILE_CHOICES[-1]


Progress = Callable[[int, int], None] | None


def _cuda_module() -> Any:
    """alignscope._cuda, or None when it was not built (loaded lazily: CPU-only imports never
    touch it)."""
    try:
        from alignscope import _cuda
    except ImportError:
        return None
    return _cuda


def cuda_status() -> tuple[bool, int, str]:
    """(built, devices, reason): reason is "" when the CUDA backend can run here."""
    module = _cuda_module()
    if module is None:
        return False, 0, _CUDA_NOT_BUILT
    devices = int(module.device_count())
    return True, devices, "" if devices > 0 else _NO_DEVICE


# "auto" reaches the CUDA kernels only once they have passed tests/gpu on hardware (issue #20:
# no GPU has been lent to a session yet). Until then a user with a GPU gets the validated CPU
# engine unless they ask for backend="cuda" themselves.
AUTO_USES_CUDA = False


def resolve_backend(backend: str, precision: str | None = None) -> str:
    """Return the concrete backend: "cpu" (the C++ engine), "cuda" (the tensor-core kernels),
    "torch" (the blocked torch reference, on CUDA when torch sees a GPU) or "ray" (exact AD as
    tasks on a Ray cluster, see :func:`ray_row_sums`).

    "auto" means "cuda" (once :data:`AUTO_USES_CUDA` is on) when the CUDA module is built and
    a device is visible, unless
    ``precision`` (already checked) asks for another format than its fp16: then "torch" for
    "bf16" / "tf32" (the only engine that has them) and "cpu" for "fp32". Without a usable GPU,
    "auto" means "cpu", or "torch" when ``precision`` is a low-precision format.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}"
        )
    if backend == "auto":
        if AUTO_USES_CUDA and precision in (None, "fp16") and not cuda_status()[2]:
            return "cuda"
        return "cpu" if precision in (None, "fp32") else resolve_backend("torch")
    if backend == "cuda":
        built, _, reason = cuda_status()
        if reason:
            hint = (
                "reinstall from source on a machine with nvcc (ALIGNSCOPE_CUDA=ON)"
                if not built
                else "run on a machine with an NVIDIA GPU and driver"
            )
            raise ValueError(f"backend='cuda' is unavailable: {reason}; {hint}, or use 'cpu'")
        return "cuda"
    if backend == "torch":
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                "backend='torch' needs torch: pip install 'alignscope[torch]'"
            ) from exc
        return "torch"
    if backend == "ray":
        import importlib.util

        # only distributed/ imports ray itself
        if importlib.util.find_spec("ray") is None:
            raise ValueError("backend='ray' needs ray: pip install 'alignscope[distributed]'")
        return "ray"
    return "cpu"


def ray_row_sums(store: Any, **options: Any) -> Any:
    """Exact per-row structure sums of a store as Ray tasks: the distributed layer's
    :func:`alignscope.distributed.tiles.exact_row_sums` (imported here, lazily, so that the
    metrics never import ray themselves)."""
    from alignscope.distributed.tiles import exact_row_sums

    return exact_row_sums(store, **options)


def resolve_threads(threads: int | None) -> int:
    """Validate ``threads`` (None = all cores) and return the count the engine will use."""
    if threads is None:
        env = os.environ.get("ALIGNSCOPE_NUM_THREADS")
        return int(env) if env and env.isdigit() and int(env) > 0 else int(_core.default_threads())
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be a positive integer or None, got {type(threads).__name__}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return int(threads)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _i32(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.ascontiguousarray(a, dtype=np.int32)


def _i64(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.ascontiguousarray(a, dtype=np.int64)


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
    tile: int | None = None,
    threads: int | None = None,
    progress: Progress = None,
    backend: str = "cpu",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Row sums of ``|c0 + <zscale * rows_i, cols_k>| (+ c_label [l_i != l_k])``.

    Parameters
    ----------
    rows : (n, K) float32 array, host memory.
    cols : (m, K) float32 array or None. None selects the symmetric form over the pairs
        i != k of ``rows`` with itself (upper tiles only).
    zscale : (K,) float32 or None, the per-column scale that turns a row w_i into z_i.
    row_labels, col_labels : (n,), (m,) int32 or None; in the symmetric form pass the same array.
    row_ids, col_ids : (n,), (m,) int64 global sample ids (rectangular form): pairs with equal
        ids are one sample with itself and contribute 0 (their labels must be equal).
    squares : also return per-row sums of the squared terms (rectangular form).
    block : rectangular form with n == m: only the diagonal blocks of ``block`` rows are
        computed (independent block x block samples laid end to end).
    tile : tile edge in rows (CPU); None chooses one from the size (:func:`choose_tile`).
    backend : "cpu", "cuda" or "torch" (already resolved). ``squares``, blocks above 128 rows
        and scales beyond the fp16 range run on the CPU engine even with "cuda".

    Returns
    -------
    row_sums : (n,) float64; row_sq_sums : (n,) float64 or None; col_sums : (m,) float64, or
    None for the symmetric and block forms.
    """
    # checked here, before either engine (the compiled one refused inside C++)
    col_labels = paired_labels(row_labels, col_labels, cols)
    if backend == "torch":
        from alignscope import _torch_engine

        return _torch_engine.pair_abs_sum(
            rows,
            cols,
            zscale=zscale,
            c0=c0,
            row_labels=row_labels,
            col_labels=col_labels,
            c_label=c_label,
            row_ids=row_ids,
            col_ids=col_ids,
            squares=squares,
            block=block,
        )
    # The compiled engines take the same arrays in the same order.
    arrays = (
        _f32(rows),
        None if cols is None else _f32(cols),
        None if zscale is None else _f32(zscale),
        float(c0),
        _i32(row_labels),
        _i32(col_labels),
        float(c_label),
        _i64(row_ids),
        _i64(col_ids),
    )
    # The CUDA kernels have no squared sums and no blocks above one tile, and their fp16
    # operands overflow for |zscale| above the fp16 range (profile bounds narrower than ~2e-5):
    # those calls run on the CPU engine.
    cuda_ok = (
        (
            not squares
            and (block is None or block <= int(_cuda_module().tile))
            and (zscale is None or float(np.abs(zscale).max(initial=0.0)) < 6.0e4)
        )
        if backend == "cuda"
        else False
    )
    if cuda_ok:
        row_sums, col_sums = _cuda_module().pair_abs_sum_host(*arrays, block, 0)
        if progress is not None:
            progress(1, 1)
        return row_sums, None, col_sums
    n_threads = resolve_threads(threads)
    if block is not None:
        tile = block
    elif tile is None:
        tile = choose_tile(rows.shape[0], n_threads) if cols is None else DEFAULT_TILE
    return _core.pair_abs_sum(
        *arrays, bool(squares), block is not None, int(tile), n_threads, progress
    )


_RATE_CACHE: dict[tuple[int, int], float] = {}


def measured_gflops(kdim: int, threads: int) -> float:
    """GEMM rate (GFLOP/s) of the symmetric engine here, measured once per (kdim, threads) on
    1,536 random rows; used to predict the exact pass's time."""
    key = (int(kdim), int(threads))
    if key not in _RATE_CACHE:
        import time

        n = 1536
        x = np.random.default_rng(0).standard_normal((n, kdim), dtype=np.float32)
        tile = choose_tile(n, threads)
        _core.pair_abs_sum(
            x, None, None, 0.0, None, None, 0.0, None, None, False, False, tile, threads, None
        )
        start = time.perf_counter()
        _core.pair_abs_sum(
            x, None, None, 0.0, None, None, 0.0, None, None, False, False, tile, threads, None
        )
        seconds = time.perf_counter() - start
        grid = -(-n // tile)
        flops = 2.0 * kdim * tile * tile * grid * (grid + 1) / 2.0
        _RATE_CACHE[key] = flops / max(seconds, 1e-9) / 1e9
    return _RATE_CACHE[key]


def pack_unit_rows(
    a: np.ndarray,
    b: np.ndarray | None,
    dst: np.ndarray,
    *,
    with_cos: bool,
    threads: int | None = None,
) -> tuple[int, int, int, np.ndarray | None]:
    """Unit-normalise rows of ``a`` (and ``b``) into ``dst`` side by side, checking every value.

    Parameters
    ----------
    a : (n, d_a), b : (n, d_b) or None; float16/32/64 host arrays (any layout).
    dst : (n, d_a + d_b) C-contiguous float32, written in place.
    with_cos : also return cos(a_i, b_i) in float64 (needs d_a == d_b).

    Returns
    -------
    (problem, view, row, cos): problem 0 = fine, 1 = NaN/inf, 2 = zero row, at ``row`` of view
    ``view`` (0 = a, 1 = b); cos is (n,) float64 or None.
    """
    dtypes = {a.dtype, a.dtype if b is None else b.dtype}
    if dtypes == {np.dtype(np.float16)}:
        # widened row by row in C++ (F16C where the CPU has it): no float32 copy of the input
        a16 = np.ascontiguousarray(a).view(np.uint16)
        b16 = None if b is None else np.ascontiguousarray(b).view(np.uint16)
        problem, view, row, cos = _core.pack_unit_rows_f16(
            a16, b16, dst, bool(with_cos), resolve_threads(threads)
        )
        return int(problem), int(view), int(row), cos
    dtype = np.float64 if np.dtype(np.float64) in dtypes else np.float32
    a = np.ascontiguousarray(a, dtype=dtype)
    b = None if b is None else np.ascontiguousarray(b, dtype=dtype)
    problem, view, row, cos = _core.pack_unit_rows(
        a, b, dst, bool(with_cos), resolve_threads(threads)
    )
    return int(problem), int(view), int(row), cos


def gather_file_rows(fd: int, data_offset: int, ids: np.ndarray, out: np.ndarray) -> int:
    """Read rows ``ids`` of a row-major matrix stored in file ``fd`` at ``data_offset`` into
    ``out`` (len(ids), d) with pread (nothing is memory-mapped). Returns -1 on success, else
    the first index of ``ids`` whose row could not be read whole (a truncated file)."""
    raw = out.view(np.uint8).reshape(out.shape[0], -1)
    return int(
        _core.gather_file_rows(
            int(fd),
            int(data_offset),
            raw.shape[1],
            np.ascontiguousarray(ids, dtype=np.int64),
            raw,
            resolve_threads(None),
        )
    )


def topk_inner(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    offset: int = 0,
    query_ids: np.ndarray | None = None,
    threads: int | None = None,
    progress: Progress = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of (nq, d) queries against (nx, d) database rows (float32).

    Returns (values (nq, k) float32 descending, indices (nq, k) int64 = offset + row), with
    -inf / -1 where the database has fewer than k rows. ``query_ids`` (nq,) excludes, per
    query, the database row whose global index equals its id.
    """
    return _core.topk_inner(
        _f32(queries),
        _f32(database),
        int(k),
        int(offset),
        _i64(query_ids),
        resolve_threads(threads),
        progress,
    )


def pair_extrema(
    x: np.ndarray, *, tile: int | None = None, threads: int | None = None, progress: Progress = None
) -> tuple[tuple[float, int, int], tuple[float, int, int]] | None:
    """Min and max of <x_i, x_k> over i != k of a (n, d) float32 array.

    Returns ``((min, i, k), (max, i, k))`` with float32-accurate values and the pair that
    attains each, or None when n < 2.
    """
    n_threads = resolve_threads(threads)
    tile = choose_tile(x.shape[0], n_threads) if tile is None else tile
    found = _core.pair_extrema(_f32(x), int(tile), n_threads, progress)
    if found is None:
        return None
    mn, mi, mk, mx, xi, xk = found
    return (float(mn), int(mi), int(mk)), (float(mx), int(xi), int(xk))


def structure_constants(
    image_bounds: tuple[float, float], text_bounds: tuple[float, float] | None
) -> tuple[float, float, float, float]:
    """(c0, scale_a, scale_b, c_label) of ``D_A - D_B = c0 + <z, w>`` (csrc/common/pair_math.h).

    ``text_bounds`` None selects the label view, D_B = [label_i != label_k].
    """
    if text_bounds is None:
        return tuple(_core.label_structure_constants(*image_bounds))  # type: ignore[return-value]
    return tuple(_core.embedding_structure_constants(*image_bounds, *text_bounds))  # type: ignore[return-value]


def backend_info() -> dict[str, Any]:
    """What was built and what this machine offers.

    Returns
    -------
    dict with ``backends`` (built engines), ``cpu`` (threads, SIMD level, BLAS), ``cuda``
    (built: bool, devices: int, reason: str, "" when usable; names of the devices).
    """
    built, devices, reason = cuda_status()
    cuda: dict[str, Any] = {"built": built, "devices": devices, "reason": reason}
    if devices:
        cuda["names"] = [str(_cuda_module().device_name(i)) for i in range(devices)]
    return {
        "version": _version(),
        "backends": ["cpu", "cuda"] if built else ["cpu"],
        "cpu": {
            "threads": int(_core.default_threads()),
            "simd": str(_core.simd_level()),
            "blas": str(_core.blas_info()),
        },
        "cuda": cuda,
    }


def _version() -> str:
    from alignscope import __version__

    return __version__
