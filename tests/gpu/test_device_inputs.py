"""Device arrays, backend="auto", precision and streaming: what the CPU can check of issue #20.

These run without a GPU (and pass with one): device availability is monkeypatched with a
stand-in ``alignscope._cuda`` whose kernel is ``_reference.cuda_kernel_pair_abs_sum`` (the fp16
rounding written from the kernels' description), device arrays are a fake object exposing
``__cuda_array_interface__`` and torch tensors on the "meta" device, and every number is
compared with a dense float64 reference written here or in ``_reference``.
"""

from __future__ import annotations

import numpy as np
import pytest

import alignscope
from alignscope import _backend, _reference, _torch_engine
from alignscope.screen import compute_scores
from alignscope.search import topk

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakeCudaArray:
    """What CuPy (or Numba, JAX) hands over: a device pointer behind the CUDA array interface,
    and no host buffer (np.asarray of a real CuPy array raises TypeError)."""

    def __init__(self, shape: tuple[int, ...], typestr: str = "<f4") -> None:
        self.shape = shape
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (0xDEAD0000, False),
            "version": 3,
            "strides": None,
            "stream": 1,
        }

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")


def _device_message(name: str, where: str) -> str:
    """The documented one-line error, restated here (the exact text a user reads)."""
    return (
        f"{name} is in device memory on {where}; alignscope reads host arrays only (the CUDA "
        f"backend copies host rows to the GPU itself): pass {name}.cpu() for a torch tensor or "
        f"cupy.asnumpy({name}) for a CuPy array"
    )


CAI = "a CUDA device (__cuda_array_interface__)"


@pytest.fixture
def no_cuda(monkeypatch) -> None:
    """The CUDA module not built (whatever this machine has)."""
    monkeypatch.setattr(_backend, "_cuda_module", lambda: None)


def _pairs(rng, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(size=(n, d))
    return a, 0.5 * a + rng.normal(size=(n, d))


# ----------------------------------------------------------------- device arrays: clear errors


@pytest.mark.parametrize("backend", ["auto", "cuda", "cpu", "torch"])
def test_cuda_array_interface_inputs_are_named_for_every_backend(rng, cuda_stand_in, backend):
    a, b = _pairs(rng, 20, 8)
    fake = FakeCudaArray((20, 8))
    for kwargs, name in (
        ({"data": fake, "text_emb": b}, "image_emb"),
        ({"data": a, "text_emb": fake}, "text_emb"),
        ({"data": a, "labels": FakeCudaArray((20,), "<i8")}, "labels"),
    ):
        with pytest.raises(TypeError) as err:
            alignscope.alignment_difficulty(**kwargs, backend=backend)
        assert str(err.value) == _device_message(name, CAI)
    assert cuda_stand_in == []  # nothing reached the kernel


def test_search_and_screening_name_the_device_argument(rng, cuda_stand_in):
    x = rng.normal(size=(30, 8)).astype(np.float32)
    fake = FakeCudaArray((30, 8))
    cases = (
        (lambda: topk(fake, x, 2), "queries"),
        (lambda: topk(x, fake, 2), "database"),
        (lambda: topk(x, x, 2, exclude=FakeCudaArray((30,), "<i8")), "exclude"),
        (lambda: compute_scores(fake, x), "image_emb"),
        (lambda: compute_scores(x, fake), "text_emb"),
    )
    for call, name in cases:
        with pytest.raises(TypeError) as err:
            call()
        assert str(err.value) == _device_message(name, CAI)


def test_torch_tensors_off_the_host_are_named_and_host_ones_accepted(rng):
    a, b = _pairs(rng, 40, 6)
    off_host = torch.empty((40, 6), device="meta")
    with pytest.raises(TypeError) as err:
        alignscope.alignment_difficulty(off_host, b, backend="cpu")
    assert str(err.value) == _device_message("image_emb", "meta")
    # a CPU tensor has the interface's property on its class (it raises for CPU tensors): it
    # must still be read as host memory, with the same result as the numpy array
    on_host = alignscope.alignment_difficulty(torch.from_numpy(a), b, backend="cpu")
    assert on_host.ad == alignscope.alignment_difficulty(a, b, backend="cpu").ad


# ----------------------------------------------------------------- backend="auto"


def test_auto_stays_off_unvalidated_kernels_even_with_a_device(rng, cuda_stand_in):
    a, b = _pairs(rng, 50, 6)
    assert not _backend.AUTO_USES_CUDA  # until tests/gpu has passed on hardware
    assert alignscope.alignment_difficulty(a, b).backend == "cpu"
    assert _backend.resolve_backend("auto", "fp16") == "torch"
    assert cuda_stand_in == []


def test_auto_runs_the_cuda_engine_when_built_with_a_device(rng, cuda_stand_in, monkeypatch):
    monkeypatch.setattr(_backend, "AUTO_USES_CUDA", True)  # as it will be once validated
    a, b = _pairs(rng, 300, 16)
    result = alignscope.alignment_difficulty(a, b, per_sample=True)
    assert result.backend == "cuda" and len(cuda_stand_in) == 1
    ref = _reference.alignment_difficulty(a, b)
    # the stand-in is the kernel's fp16 emulation: this checks routing and plumbing, not the
    # kernel's bound (tests/gpu checks that on hardware)
    assert abs(result.ad - ref["ad"]) <= 1e-5
    assert _backend.resolve_backend("auto", "fp16") == "cuda"
    assert _backend.resolve_backend("auto", "fp32") == "cpu"  # fp32 asked: not the fp16 kernels
    assert _backend.resolve_backend("auto", "bf16") == "torch"


def test_auto_stays_on_the_cpu_without_a_device_or_a_build(rng, cuda_stand_in, monkeypatch):
    monkeypatch.setattr(_backend, "AUTO_USES_CUDA", True)
    a, b = _pairs(rng, 50, 6)
    monkeypatch.setattr(alignscope._cuda, "device_count", lambda: 0)
    assert alignscope.alignment_difficulty(a, b).backend == "cpu"
    monkeypatch.setattr(_backend, "_cuda_module", lambda: None)
    assert alignscope.alignment_difficulty(a, b).backend == "cpu"
    assert _backend.resolve_backend("auto", "tf32") == "torch"
    assert cuda_stand_in == []


# ----------------------------------------------------------------- precision


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"precision": "fp64"},
            "precision must be one of 'fp16', 'bf16', 'tf32', 'fp32' or None; got 'fp64'",
        ),
        (
            {"precision": 16},
            "precision must be one of 'fp16', 'bf16', 'tf32', 'fp32' or None; got 16",
        ),
        (
            {"precision": "bf16", "backend": "cpu"},
            "precision='bf16' is not available with backend='cpu': that engine computes in fp32; "
            "pass precision='fp32', or backend='torch' for bf16",
        ),
        (
            {"precision": "fp32", "backend": "cuda"},
            "precision='fp32' is not available with backend='cuda': that engine computes in fp16; "
            "pass precision='fp16', or backend='torch' for fp32",
        ),
    ],
)
def test_precision_errors_name_the_argument(rng, cuda_stand_in, kwargs, message):
    a, b = _pairs(rng, 10, 4)
    with pytest.raises(ValueError) as err:
        alignscope.alignment_difficulty(a, b, **kwargs)
    assert str(err.value) == message


def _documented_bound(precision: str, kdim: int, z_norm: float, w_norm: float, offs: float):
    """The docstring's per-pair bound, restated from alignment_difficulty's documentation."""
    u = {"fp16": 2.0**-11, "bf16": 2.0**-8, "tf32": 2.0**-11, "fp32": 0.0}[precision]
    bound = (2 * u + u * u + (kdim + 4) * 1.01 * 2.0**-24) * z_norm * w_norm + 2.0**-23 * offs
    if precision == "fp16":
        bound += 2.0**-25 * np.sqrt(kdim) * (z_norm + w_norm) * 1.01
    return bound


def test_each_precision_stays_within_its_documented_bound(rng, no_cuda):
    n, d, alpha = 400, 16, 0.8
    a, b = _pairs(rng, n, d)
    ref = _reference.alignment_difficulty(a, b, alpha=alpha)
    # structure-term scales of the reference's bounds: D = (1 - cos - lo) / (hi - lo)
    (lo_a, hi_a), (lo_b, hi_b) = ref["bounds"][1], ref["bounds"][2]
    s_a, s_b = 1.0 / (hi_a - lo_a), 1.0 / (hi_b - lo_b)
    z_norm = float(np.hypot(s_a, s_b))  # z_i = [s_a a_i, -s_b b_i] of unit a_i, b_i
    offs = abs((1 - lo_a) * s_a - (1 - lo_b) * s_b)
    errors = {}
    for precision in ("fp32", "tf32", "fp16", "bf16"):
        r = alignscope.alignment_difficulty(
            a, b, alpha=alpha, per_sample=True, backend="torch", precision=precision
        )
        bound = _documented_bound(precision, 2 * d, z_norm, np.sqrt(2.0), offs)
        errors[precision] = np.abs(r.per_sample.d_s - ref["d_s"]).max()
        assert errors[precision] <= bound, precision
        assert abs(r.ad - ref["ad"]) <= (1 - alpha) * bound, precision
        assert r.feature == pytest.approx(ref["feature"], abs=1e-12)  # float64 whatever it is
    # the rounding really happens: 7 mantissa bits err more than 10, and 10 more than fp32
    assert errors["bf16"] > 4 * errors["fp16"] > 0 and errors["fp16"] > 100 * errors["fp32"]
    # auto with bf16 picks the torch engine and gives the same numbers
    auto = alignscope.alignment_difficulty(a, b, alpha=alpha, precision="bf16")
    explicit = alignscope.alignment_difficulty(a, b, alpha=alpha, precision="bf16", backend="torch")
    assert auto.backend == "torch" and auto.ad == explicit.ad
    assert auto.note == "precision=bf16 on backend 'torch'"


def test_fp16_refuses_scales_beyond_its_range(rng):
    a, b = _pairs(rng, 50, 4)
    with pytest.raises(ValueError, match=r"^precision='fp16' cannot hold this profile's scale"):
        alignscope.alignment_difficulty(
            a,
            b,
            profile=alignscope.Bounds((0.0, 1.0), (0.3, 0.30001), (0.0, 2.0)),
            backend="torch",
            precision="fp16",
        )


# ----------------------------------------------------------------- streaming through the device


def _dense(rows, cols, zscale, c0, lr, lc, c_label, ir, ic, symmetric, block):
    """|c0 + <zscale * rows_i, cols_k>| (+ c_label [l_i != l_k]) in float64, every pair."""
    z = rows.astype(np.float64) * (1.0 if zscale is None else zscale.astype(np.float64))
    v = c0 + z @ cols.astype(np.float64).T
    if lr is not None:
        v = v + c_label * (lr[:, None] != lc[None, :])
    v = np.abs(v)
    if symmetric:
        np.fill_diagonal(v, 0.0)
    if ir is not None:
        v[ir[:, None] == ic[None, :]] = 0.0
    if block is not None:
        keep = (np.arange(len(rows))[:, None] // block) == (np.arange(len(cols))[None, :] // block)
        v = np.where(keep, v, 0.0)
    return v


@pytest.mark.parametrize("device_bytes", [None, 1, 40_000])
def test_torch_engine_streams_columns_that_do_not_fit(rng, device_bytes):
    n, m, k = 150, 130, 12
    rows = rng.normal(size=(n, k)).astype(np.float32)
    cols = rng.normal(size=(m, k)).astype(np.float32)
    zscale = rng.uniform(0.5, 2.0, size=k).astype(np.float32)
    lr, lc = rng.integers(0, 3, size=n), rng.integers(0, 3, size=m)
    ir, ic = rng.integers(0, 60, size=n), rng.integers(0, 60, size=m)
    tol = {"rtol": 1e-5, "atol": 1e-4}
    opts = {"device_bytes": device_bytes, "block_rows": 37}
    # symmetric with labels: columns 1 at a time (device_bytes=1) or a few dozen
    v = _dense(rows, rows, zscale, 0.3, lr, lr, 0.7, None, None, True, None)
    rs, sq, cs = _torch_engine.pair_abs_sum(
        rows, zscale=zscale, c0=0.3, row_labels=lr, c_label=0.7, squares=True, **opts
    )
    np.testing.assert_allclose(rs, v.sum(axis=1), **tol)
    np.testing.assert_allclose(sq, (v**2).sum(axis=1), **tol)
    assert cs is None
    # rectangular with labels and sample ids: row and column sums
    v = _dense(rows, cols, None, -0.2, lr, lc, 0.4, ir, ic, False, None)
    rs, _, cs = _torch_engine.pair_abs_sum(
        rows, cols, c0=-0.2, row_labels=lr, col_labels=lc, c_label=0.4, row_ids=ir, col_ids=ic,
        **opts,
    )  # fmt: skip
    np.testing.assert_allclose(rs, v.sum(axis=1), **tol)
    np.testing.assert_allclose(cs, v.sum(axis=0), **tol)
    # diagonal blocks of 25 rows
    square = cols[:n] if m >= n else np.vstack([cols, cols])[:n]
    v = _dense(rows, square, None, 0.1, None, None, 0.0, None, None, False, 25)
    rs, _, cs = _torch_engine.pair_abs_sum(rows, square, c0=0.1, block=25, **opts)
    np.testing.assert_allclose(rs, v.sum(axis=1), **tol)
    assert cs is None


def test_column_blocks_follow_the_memory_budget():
    # 4 bytes per value: a column costs its operand (k) and two product columns (2 x rows)
    assert _torch_engine.column_block(1000, 10, 100, None) == 1000
    assert _torch_engine.column_block(1000, 10, 100, 4 * 100 * 10 + 4 * 210 * 50) == 50
    assert _torch_engine.column_block(1000, 10, 100, 1) == 1
    with pytest.raises(ValueError, match=r"^device_bytes must be >= 1, got 0$"):
        _torch_engine.pair_abs_sum(np.ones((2, 2), np.float32), device_bytes=0)
