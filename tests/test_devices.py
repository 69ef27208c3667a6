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


def test_pick_device_defaults_to_the_gpu_when_torch_sees_one(monkeypatch):
    from alignscope._devices import pick_device

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == "cpu"
    assert pick_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"^--device must be cpu, cuda, cuda:N or mps; got 'gpu'$"):
        pick_device("gpu", "--device")


def test_every_default_to_gpu_device_gets_one_message(tmp_path):
    """The classifiers, the availability poisons' surrogate and the defences take their device
    from one rule: a bad one is refused in the same words, before any folder is written."""
    import numpy as np

    pytest.importorskip("torch")
    from alignscope._devices import pick_device
    from alignscope.defend import models
    from alignscope.poison.availability import error_minimising_noise
    from alignscope.train.classifier import ClassifierConfig, ClassImages, train_classifier

    want = r"^device must be cpu, cuda, cuda:N or mps; got 'gpu'$"
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=want):
        error_minimising_noise(images, np.array([0, 1]), 2, device="gpu")
    data = ClassImages(images, np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match=want):
        train_classifier(data, tmp_path / "out", ClassifierConfig(device="gpu"), progress=False)
    assert not (tmp_path / "out").exists()
    assert models.pick_device is pick_device  # the defences' name for the same function
