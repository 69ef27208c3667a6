"""Type stubs of alignscope._cuda, the compiled CUDA engine (built when nvcc is found; see
csrc/bindings/cuda_module.cpp). Use the Python API in alignscope, not this module."""

from __future__ import annotations

import typing

import numpy
import numpy.typing

tile: int

def device_count() -> int:
    """CUDA devices visible (0 without a driver)."""

def device_name(device: typing.SupportsInt) -> str: ...
def pair_abs_sum_host(
    rows: numpy.typing.NDArray[numpy.float32],
    cols: numpy.typing.NDArray[numpy.float32] | None = None,
    zscale: numpy.typing.NDArray[numpy.float32] | None = None,
    c0: typing.SupportsFloat = 0.0,
    row_labels: numpy.typing.NDArray[numpy.int32] | None = None,
    col_labels: numpy.typing.NDArray[numpy.int32] | None = None,
    c_label: typing.SupportsFloat = 0.0,
    row_ids: numpy.typing.NDArray[numpy.int64] | None = None,
    col_ids: numpy.typing.NDArray[numpy.int64] | None = None,
    block: typing.SupportsInt | None = None,
    device: typing.SupportsInt = 0,
) -> tuple[numpy.typing.NDArray[numpy.float64], numpy.typing.NDArray[numpy.float64] | None]:
    """(row_sums, col_sums | None) on the GPU from host float32 arrays (fp16 tensor cores,
    fp32 accumulation, float64 sums). Same forms as alignscope._core.pair_abs_sum."""
