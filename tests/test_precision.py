"""The documented error bound of backend="cuda", checked on the CPU through the package.

README "CUDA": the kernels round z = zscale * rows and w = rows to fp16 and multiply on tensor
cores with fp32 accumulation (fp16 x fp16 products are exact in fp32), which keeps |ΔAD| <= 1e-5
and per-sample |ΔD_s| <= 5e-5 for unit-norm embeddings. Here a stand-in for alignscope._cuda
applies that input rounding (``_reference.cuda_kernel_pair_abs_sum``, written from the kernels'
description) to exactly the arrays the package hands the kernel: the package's own packing,
structure constants, routing and sums run with backend="cuda" and are compared with the dense
float64 reference. A package that handed the kernel unnormalised rows, a wrong scale or
constant, or a scale beyond the fp16 range, fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

import alignscope
from alignscope import Bounds, _backend, _reference

AD_BOUND = 1e-5  # README "CUDA"
D_S_BOUND = 5e-5


def _pairs(rng, n: int, d: int, corr: float) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(size=(n, d))
    return a, corr * a + rng.normal(size=(n, d))


@pytest.mark.parametrize("d", [64, 512])
@pytest.mark.parametrize("corr", [0.0, 0.6])
def test_cuda_path_keeps_ad_and_d_s_within_the_documented_bound(rng, cuda_stand_in, d, corr):
    a, b = _pairs(rng, 1500, d, corr)
    gpu = alignscope.alignment_difficulty(a, b, per_sample=True, backend="cuda")
    ref = _reference.alignment_difficulty(a, b)
    assert len(cuda_stand_in) == 1  # the structure pass ran on the (emulated) kernel
    assert abs(gpu.ad - ref["ad"]) <= AD_BOUND
    assert np.abs(gpu.per_sample.d_s - ref["d_s"]).max() <= D_S_BOUND
    assert gpu.feature == pytest.approx(ref["feature"], abs=1e-12)  # float64 on the host
    # the rounding is modelled: the kernel's sums differ from the float32 CPU engine's
    cpu = alignscope.alignment_difficulty(a, b, per_sample=True, backend="cpu")
    assert np.abs(gpu.per_sample.d_s - cpu.per_sample.d_s).max() > 0.0


@pytest.mark.parametrize(
    "profile",
    ["half", "minmax", Bounds(image=(0.1, 1.4), text=(0.0, 1.2))],
    ids=["half", "minmax", "bounds"],
)
def test_every_profile_stays_within_the_bound(rng, cuda_stand_in, profile):
    a, b = _pairs(rng, 800, 64, 0.5)
    gpu = alignscope.alignment_difficulty(a, b, profile=profile, per_sample=True, backend="cuda")
    ref_profile = (
        (profile.feature, profile.image, profile.text) if isinstance(profile, Bounds) else profile
    )
    ref = _reference.alignment_difficulty(a, b, profile=ref_profile)
    assert len(cuda_stand_in) == 1
    assert abs(gpu.ad - ref["ad"]) <= AD_BOUND
    assert np.abs(gpu.per_sample.d_s - ref["d_s"]).max() <= D_S_BOUND


def test_label_metrics_stay_within_the_bound(rng, cuda_stand_in):
    a = rng.normal(size=(900, 32))
    labels = rng.integers(0, 7, size=900)
    truth = np.where(np.arange(900) % 9 == 0, (labels + 1) % 7, labels)
    gpu = alignscope.alignment_difficulty(
        a, labels=labels, true_labels=truth, per_sample=True, backend="cuda"
    )
    ref = _reference.alignment_difficulty(a, labels=labels, true_labels=truth)
    assert len(cuda_stand_in) == 1 and cuda_stand_in[0][4] is not None  # labels reached it
    assert abs(gpu.ad - ref["ad"]) <= AD_BOUND
    assert np.abs(gpu.per_sample.d_s - ref["d_s"]).max() <= D_S_BOUND


def test_float16_embeddings_on_the_cuda_path(rng, cuda_stand_in):
    """float16 inputs are widened in C++ before packing: the bound holds against the float64
    reference of the same half values."""
    a, b = _pairs(rng, 1000, 128, 0.6)
    a16, b16 = a.astype(np.float16), b.astype(np.float16)
    gpu = alignscope.alignment_difficulty(a16, b16, per_sample=True, backend="cuda")
    ref = _reference.alignment_difficulty(a16.astype(np.float64), b16.astype(np.float64))
    assert len(cuda_stand_in) == 1
    assert abs(gpu.ad - ref["ad"]) <= AD_BOUND
    assert np.abs(gpu.per_sample.d_s - ref["d_s"]).max() <= D_S_BOUND


def test_scales_beyond_the_fp16_range_never_reach_the_kernel(rng, cuda_stand_in):
    """Image bounds 1e-5 wide scale z by 1e5, beyond fp16's 65504: on the kernel every term
    would be inf. The package computes them on the CPU engine, in range."""
    a, b = _pairs(rng, 300, 16, 0.5)
    bounds = ((0.55, 0.8), (0.3, 0.30001), (0.0, 1.0))
    gpu = alignscope.alignment_difficulty(a, b, profile=Bounds(*bounds), backend="cuda")
    ref = _reference.alignment_difficulty(a, b, profile=bounds)
    assert cuda_stand_in == []
    assert gpu.ad == pytest.approx(ref["ad"], rel=1e-5)
    # what the kernel would have returned for these arrays: overflowed terms
    packed = np.concatenate([_reference.unit_rows(a), _reference.unit_rows(b)], axis=1)
    c0, sa, sb, _ = _backend.structure_constants(bounds[1], bounds[2])
    zscale = np.array([sa] * 16 + [sb] * 16, np.float32)
    sums, _ = _reference.cuda_kernel_pair_abs_sum(packed.astype(np.float32), None, zscale, c0)
    assert not np.isfinite(sums).all()
