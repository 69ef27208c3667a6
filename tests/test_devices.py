"""Device arguments fail with a clear message before any model moves."""

from __future__ import annotations

import pytest

from alignscope._devices import check_device


def test_device_strings():
    assert check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="--device must be cpu, cuda, cuda:N or mps; got 'bogus'"):
        check_device("bogus", "--device")
    with pytest.raises(ValueError, match="device must be cpu"):
        check_device(0)


def test_cuda_without_a_device_is_named():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(ValueError, match="'cuda:1': torch sees no CUDA device here"):
        check_device("cuda:1")
