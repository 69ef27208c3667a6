"""Type stubs of alignscope._core, the compiled CPU engine (generated from the module with
pybind11-stubgen, then kept by hand). Use the Python API in alignscope, not this module."""

from __future__ import annotations

import typing

import numpy
import numpy.typing

__all__: list[str] = [
    "blas_info",
    "cosine_distance_map",
    "default_threads",
    "embedding_structure_constants",
    "gather_file_rows",
    "label_structure_constants",
    "pack_unit_rows",
    "pack_unit_rows_f16",
    "pair_abs_sum",
    "pair_extrema",
    "simd_level",
    "topk_inner",
    "upper_tile",
    "upper_tile_count",
]

def blas_info() -> str: ...
def cosine_distance_map(
    lo: typing.SupportsFloat | typing.SupportsIndex, hi: typing.SupportsFloat | typing.SupportsIndex
) -> tuple[float, float]: ...
def default_threads() -> int: ...
def embedding_structure_constants(
    lo_a: typing.SupportsFloat | typing.SupportsIndex,
    hi_a: typing.SupportsFloat | typing.SupportsIndex,
    lo_b: typing.SupportsFloat | typing.SupportsIndex,
    hi_b: typing.SupportsFloat | typing.SupportsIndex,
) -> tuple[float, float, float, float]: ...
def gather_file_rows(
    fd: typing.SupportsInt | typing.SupportsIndex,
    data_offset: typing.SupportsInt | typing.SupportsIndex,
    row_bytes: typing.SupportsInt | typing.SupportsIndex,
    ids: numpy.typing.NDArray[numpy.int64],
    out: numpy.typing.NDArray[numpy.uint8],
    threads: typing.SupportsInt | typing.SupportsIndex = 0,
) -> int:
    """
    pread rows ids of a row-major file matrix into out; -1, or the first unreadable index.
    """

def label_structure_constants(
    lo_a: typing.SupportsFloat | typing.SupportsIndex,
    hi_a: typing.SupportsFloat | typing.SupportsIndex,
) -> tuple[float, float, float, float]: ...
@typing.overload
def pack_unit_rows(
    a: numpy.typing.NDArray[numpy.float32],
    b: numpy.typing.NDArray[numpy.float32] | None,
    dst: numpy.typing.NDArray[numpy.float32],
    with_cos: bool,
    threads: typing.SupportsInt | typing.SupportsIndex = 0,
) -> tuple: ...
@typing.overload
def pack_unit_rows(
    a: numpy.typing.NDArray[numpy.float64],
    b: numpy.typing.NDArray[numpy.float64] | None,
    dst: numpy.typing.NDArray[numpy.float32],
    with_cos: bool,
    threads: typing.SupportsInt | typing.SupportsIndex = 0,
) -> tuple:
    """
    Unit-normalise rows of a (and b) into dst (float32, side by side); returns (problem, view,
    row, cos): problem 0 ok, 1 NaN/inf, 2 zero row.
    """

def pack_unit_rows_f16(
    a: numpy.typing.NDArray[numpy.uint16],
    b: numpy.typing.NDArray[numpy.uint16] | None,
    dst: numpy.typing.NDArray[numpy.float32],
    with_cos: bool,
    threads: typing.SupportsInt | typing.SupportsIndex = 0,
) -> tuple:
    """
    pack_unit_rows for float16 inputs passed as their uint16 bits.
    """

def pair_abs_sum(
    rows: numpy.typing.NDArray[numpy.float32],
    cols: numpy.typing.NDArray[numpy.float32] | None = None,
    zscale: numpy.typing.NDArray[numpy.float32] | None = None,
    c0: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    row_labels: numpy.typing.NDArray[numpy.int32] | None = None,
    col_labels: numpy.typing.NDArray[numpy.int32] | None = None,
    c_label: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    row_ids: numpy.typing.NDArray[numpy.int64] | None = None,
    col_ids: numpy.typing.NDArray[numpy.int64] | None = None,
    squares: bool = False,
    block_diagonal: bool = False,
    tile: typing.SupportsInt | typing.SupportsIndex = 256,
    threads: typing.SupportsInt | typing.SupportsIndex = 0,
    progress: typing.Any = None,
) -> tuple:
    """
    (row_sums, row_sq_sums | None, col_sums | None) of |c0 + <zscale*rows_i, cols_k>| (+
    c_label*[label_i != label_k]) in float64. Without cols: the symmetric form over i != k of
    one matrix.
    """

def pair_extrema(
    x: numpy.typing.NDArray[numpy.float32],
    tile: typing.SupportsInt | typing.SupportsIndex = 256,
    threads: typing.SupportsInt | typing.SupportsIndex = 0,
    progress: typing.Any = None,
) -> typing.Any:
    """
    (min, i, k, max, i, k) of <x_i, x_k> over i != k, or None when there is no pair.
    """

def simd_level() -> str: ...
def topk_inner(
    queries: numpy.typing.NDArray[numpy.float32],
    database: numpy.typing.NDArray[numpy.float32],
    k: typing.SupportsInt | typing.SupportsIndex = 1,
    x_offset: typing.SupportsInt | typing.SupportsIndex = 0,
    query_ids: numpy.typing.NDArray[numpy.int64] | None = None,
    threads: typing.SupportsInt | typing.SupportsIndex = 0,
    progress: typing.Any = None,
) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]:
    """
    (values, indices), each (nq, k): the k largest <q, x> per query, descending; indices are
    x_offset + database row; -inf / -1 where fewer than k rows exist.
    """

def upper_tile(
    t: typing.SupportsInt | typing.SupportsIndex, grid: typing.SupportsInt | typing.SupportsIndex
) -> tuple[int, int]: ...
def upper_tile_count(grid: typing.SupportsInt | typing.SupportsIndex) -> int: ...
