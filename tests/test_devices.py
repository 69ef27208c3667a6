"""Device arguments fail with a clear message before any model moves."""

from __future__ import annotations

import pytest

from alignscope._devices import array_device, check_device


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


def test_array_device_tells_host_from_device_memory():
    import numpy as np

    torch = pytest.importorskip("torch")

    class Interface:  # a CuPy-like array: only the CUDA array interface
        def __init__(self) -> None:
            self.__cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (1, 0)}

    assert array_device(np.zeros(3)) is None
    assert array_device([1.0, 2.0]) is None
    # torch.Tensor's class has the interface property for every tensor; CPU ones are host
    assert array_device(torch.zeros(3)) is None
    assert array_device(torch.zeros(3, device="meta")) == "meta"
    assert array_device(Interface()) == "a CUDA device (__cuda_array_interface__)"
