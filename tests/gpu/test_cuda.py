"""CUDA kernels against the CPU engine and the torch reference. Skipped without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

import alignscope
from alignscope import Bounds, _backend, _reference

_built, _devices, _reason = _backend.cuda_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(_reason), reason=_reason or "ready")]

TILE = 128


@pytest.mark.parametrize("n", [1, 2, TILE - 1, TILE, TILE + 1, 3 * TILE + 5, 2000])
@pytest.mark.parametrize("d", [3, 17, 64, 512])
def test_symmetric_matches_cpu(rng, n, d):
    w = rng.normal(size=(n, 2 * d)).astype(np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    zscale = np.concatenate([np.full(d, -1.0), np.full(d, 1.0)]).astype(np.float32)
    gpu, _, _ = _backend.pair_abs_sum(w, zscale=zscale, c0=0.1, backend="cuda")
    cpu, _, _ = _backend.pair_abs_sum(w, zscale=zscale, c0=0.1, backend="cpu")
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=5e-3 * max(n, 1) / 100 + 1e-4)


@pytest.mark.parametrize(
    "profile", ["paper", "half", "minmax", Bounds(image=(0.1, 1.4), text=(0.0, 1.2))]
)
def test_profiles_within_the_documented_bound(rng, profile):
    a = rng.normal(size=(1500, 64))
    b = 0.5 * a + rng.normal(size=(1500, 64))
    gpu = alignscope.alignment_difficulty(a, b, profile=profile, per_sample=True, backend="cuda")
    ref_profile = (
        (profile.feature, profile.image, profile.text) if isinstance(profile, Bounds) else profile
    )
    ref = _reference.alignment_difficulty(a, b, profile=ref_profile)
    assert gpu.ad == pytest.approx(ref["ad"], abs=1e-5)  # the documented fp16 bound
    np.testing.assert_allclose(gpu.per_sample.d_s, ref["d_s"], atol=5e-5)


def test_label_metrics(rng):
    a = rng.normal(size=(900, 32))
    labels = rng.integers(0, 7, size=900)
    truth = labels.copy()
    truth[::9] = (truth[::9] + 1) % 7
    gpu = alignscope.alignment_difficulty(a, labels=labels, true_labels=truth, backend="cuda")
    torch_ref = alignscope.alignment_difficulty(
        a, labels=labels, true_labels=truth, backend="torch"
    )
    assert gpu.ad == pytest.approx(torch_ref.ad, abs=1e-5)


def test_rectangular_and_block_forms(rng):
    rows = rng.normal(size=(300, 40)).astype(np.float32)
    cols = rng.normal(size=(300, 40)).astype(np.float32)
    ids_r = rng.integers(0, 50, size=300)
    ids_c = rng.integers(0, 50, size=300)
    for block in (None, 64):
        g = _backend.pair_abs_sum(
            rows, cols, c0=0.2, row_ids=ids_r, col_ids=ids_c, block=block, backend="cuda"
        )
        c = _backend.pair_abs_sum(
            rows, cols, c0=0.2, row_ids=ids_r, col_ids=ids_c, block=block, backend="cpu"
        )
        np.testing.assert_allclose(g[0], c[0], atol=0.05)
        if block is None:
            np.testing.assert_allclose(g[2], c[2], atol=0.05)


def test_sampled_on_gpu(rng):
    a = rng.normal(size=(5000, 64))
    b = 0.5 * a + rng.normal(size=(5000, 64))
    # explicit: "auto" runs the CUDA engine on this machine
    cpu = alignscope.alignment_difficulty(a, b, method="sampled", seed=1, backend="cpu")
    gpu = alignscope.alignment_difficulty(a, b, method="sampled", seed=1, backend="cuda")
    assert gpu.ad == pytest.approx(cpu.ad, abs=1e-5)


def test_auto_picks_the_built_engine_on_a_device(rng):
    a = rng.normal(size=(400, 32))
    b = 0.5 * a + rng.normal(size=(400, 32))
    result = alignscope.alignment_difficulty(a, b)
    assert result.backend == "cuda"
    assert result.ad == pytest.approx(_reference.alignment_difficulty(a, b)["ad"], abs=1e-5)


def test_device_tensors_are_refused_with_the_documented_message(rng):
    torch = pytest.importorskip("torch")
    x = torch.randn(64, 8, device="cuda")
    with pytest.raises(TypeError) as err:
        alignscope.alignment_difficulty(x, x)
    assert str(err.value) == (
        "image_emb is in device memory on cuda:0; alignscope reads host arrays only (the CUDA "
        "backend copies host rows to the GPU itself): pass image_emb.cpu() for a torch tensor "
        "or cupy.asnumpy(image_emb) for a CuPy array"
    )
