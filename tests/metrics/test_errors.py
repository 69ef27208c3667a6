"""Every bad input gets a clear error that names the argument (and row)."""

from __future__ import annotations

import numpy as np
import pytest

import alignscope
from alignscope import Bounds, _reference

AD = alignscope.alignment_difficulty


@pytest.fixture
def pair(rng):
    return rng.normal(size=(20, 4)), rng.normal(size=(20, 4))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_value_names_the_row(pair, bad):
    a, b = pair
    a[7, 2] = bad
    with pytest.raises(ValueError, match=r"^image_emb row 7 contains NaN or inf"):
        AD(a, b)
    a[7, 2] = 0.1
    b[13, 0] = bad
    with pytest.raises(ValueError, match=r"^text_emb row 13 contains NaN or inf"):
        AD(a, b)


def test_nan_beyond_the_first_chunk(rng):
    from alignscope.metrics import _inputs

    n = _inputs.CHUNK_ROWS + 5
    a = rng.normal(size=(n, 2)).astype(np.float32)
    a[n - 2, 1] = np.nan
    with pytest.raises(ValueError, match=rf"image_emb row {n - 2} contains NaN"):
        AD(a, a)


def test_zero_row_names_the_row(pair):
    a, b = pair
    b[4] = 0.0
    with pytest.raises(ValueError, match=r"^text_emb row 4 is all zeros"):
        AD(a, b)


@pytest.mark.parametrize("scale", [1e300, 1e-150])
def test_extreme_magnitudes_give_the_unscaled_result(pair, scale):
    """AD depends on directions only: rows whose squares overflow float64 (1e300), or come
    near its subnormal range (1e-150), give the AD of the unscaled rows."""
    a, b = pair
    result = AD(a * scale, b * scale, per_sample=True)
    ref = _reference.alignment_difficulty(a, b)
    assert result.feature == pytest.approx(ref["feature"], abs=1e-12)
    assert result.structure == pytest.approx(ref["structure"], abs=1e-6)
    assert result.ad == pytest.approx(ref["ad"], abs=1e-6)
    np.testing.assert_allclose(result.per_sample.d_s, ref["d_s"], atol=1e-6)
    same = AD(a * scale, a * scale)  # one view twice: both terms vanish
    assert same.feature == 0.0
    assert same.structure == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "scale", [1e-160, 1e-300, 1e-310]
)  # squares underflow; 1e-310 is subnormal
def test_tiny_float64_rows_are_not_zero_rows(pair, scale):
    """Rows whose squares underflow are rescaled, not refused as zero rows, and keep their
    direction (feature and per-sample terms as at scale 1)."""
    a, b = pair
    ref = _reference.alignment_difficulty(a, b)
    result = AD(a * scale, b * scale, per_sample=True)
    assert result.feature == pytest.approx(ref["feature"], abs=1e-9)
    np.testing.assert_allclose(result.per_sample.d_s, ref["d_s"], atol=1e-6)
    assert result.ad == pytest.approx(ref["ad"], abs=1e-6)


def test_row_count_mismatch(pair):
    a, b = pair
    with pytest.raises(ValueError, match=r"image_emb has 20 rows but text_emb has 19"):
        AD(a, b[:19])


@pytest.mark.parametrize("shape", [(20,), (2, 10, 4)])
def test_wrong_ndim(shape):
    with pytest.raises(ValueError, match=r"image_emb must be 2-D with shape \(N, d\); got shape"):
        AD(np.ones(shape), np.ones((20, 4)))


def test_feature_term_needs_equal_dimensions(pair):
    a, _ = pair
    with pytest.raises(
        ValueError,
        match=r"feature term .* needs equal dimensions; image_emb has d=4, text_emb has d=5",
    ):
        AD(a, np.ones((20, 5)))


def test_empty_input():
    with pytest.raises(ValueError, match=r"image_emb is empty \(0 rows\)"):
        AD(np.ones((0, 4)), np.ones((0, 4)))
    with pytest.raises(ValueError, match=r"image_emb has 0 columns"):
        AD(np.ones((3, 0)), np.ones((3, 0)))


def test_wrong_dtype():
    with pytest.raises(
        TypeError, match=r"image_emb must be float16, float32 or float64; got dtype int64"
    ):
        AD(np.ones((3, 2), dtype=np.int64), np.ones((3, 2)))
    with pytest.raises(
        TypeError, match=r"text_emb must be a float16, float32 or float64 array; got dtype <U1"
    ):
        AD(np.ones((3, 2)), np.array([["a", "b"]] * 3))


def test_labels_of_wrong_length_or_dtype(pair):
    a, _ = pair
    with pytest.raises(ValueError, match=r"labels has 19 entries but image_emb has 20 rows"):
        AD(a, labels=np.zeros(19, dtype=int), true_labels=np.zeros(20, dtype=int))
    with pytest.raises(
        TypeError, match=r"labels must be an integer array \(class ids\); got dtype float64"
    ):
        AD(a, labels=np.zeros(20), true_labels=np.zeros(20, dtype=int))
    with pytest.raises(ValueError, match=r"true_labels has 3 entries"):
        AD(a, labels=np.zeros(20, dtype=int), true_labels=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"labels must be 1-D"):
        AD(a, labels=np.zeros((20, 1), dtype=int), true_labels=np.zeros(20, dtype=int))


def test_labels_need_true_labels_unless_alpha_is_zero(pair):
    a, _ = pair
    labels = np.arange(20) % 3
    with pytest.raises(ValueError, match=r"labels need true_labels"):
        AD(a, labels=labels)
    assert AD(a, labels=labels, alpha=0.0).feature is None


def test_text_and_labels_together(pair):
    a, b = pair
    with pytest.raises(ValueError, match=r"either text_emb or labels"):
        AD(a, b, labels=np.zeros(20, dtype=int))


def test_missing_second_view(pair):
    with pytest.raises(TypeError, match=r"give text_emb"):
        AD(pair[0])


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval(pair, alpha):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        AD(*pair, alpha=alpha)


def test_unknown_profile(pair):
    with pytest.raises(
        ValueError, match=r"unknown profile 'cosine'; choose one of 'paper', 'half', 'minmax'"
    ):
        AD(*pair, profile="cosine")
    with pytest.raises(TypeError, match=r"profile must be one of"):
        AD(*pair, profile=3)


def test_bad_bounds():
    with pytest.raises(ValueError, match=r"Bounds.image needs lo <= hi, got \(1.0, 0.5\)"):
        Bounds(image=(1.0, 0.5))
    with pytest.raises(TypeError, match=r"Bounds.feature must be a \(lo, hi\) pair"):
        Bounds(feature=0.5)


def test_bad_threads_and_backend(pair):
    with pytest.raises(ValueError, match=r"threads must be >= 1, got 0"):
        AD(*pair, threads=0)
    with pytest.raises(
        ValueError, match=r"backend must be one of 'auto', 'cpu', 'cuda', 'torch', 'ray'; got 'tpu'"
    ):
        AD(*pair, backend="tpu")


def test_cuda_backend_without_a_device_says_why(pair):
    from alignscope._backend import cuda_status

    built, devices, _ = cuda_status()
    if devices:
        pytest.skip("a CUDA device is present")
    expected = "CUDA backend not built" if not built else "no CUDA device"
    with pytest.raises(ValueError, match=rf"backend='cuda' is unavailable: {expected}; "):
        AD(*pair, backend="cuda")


def test_finetune_ad_refuses_mixed_profiles(pair):
    paper = AD(*pair, profile="paper")
    half = AD(*pair, profile="half")
    with pytest.raises(ValueError, match=r"same profile and bounds; got base profile='paper'"):
        alignscope.finetune_ad(paper, half, 0.5)
    minmax_a = AD(pair[0][:10], pair[1][:10], profile="minmax")
    minmax_b = AD(pair[0][10:], pair[1][10:], profile="minmax")
    with pytest.raises(ValueError, match=r"same profile and bounds"):
        alignscope.finetune_ad(minmax_a, minmax_b, 0.5)
    with pytest.raises(ValueError, match=r"lam must be in \(0, 1\)"):
        alignscope.finetune_ad(paper, paper, 1.0)
    with pytest.raises(TypeError, match=r"finetune must be an ADResult"):
        alignscope.finetune_ad(paper, 0.4, 0.5)
